"""Tests of sttn_sim.safetensors_format, the pure-NumPy safetensors reader/writer."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sttn_sim.errors import CheckpointError
from sttn_sim.safetensors_format import (
    MAX_HEADER_SIZE,
    load_tensors,
    read_header,
    save_tensors,
)

# --------------------------------------------------------------------------- helpers


def build_file(header: dict | str | bytes, data: bytes = b"", pad: bool = True) -> bytes:
    """Assemble a safetensors file by hand: u64 LE size, header bytes, data."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def write(tmp_path: Path, content: bytes, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def assert_bit_identical(loaded: np.ndarray, original: np.ndarray) -> None:
    assert loaded.shape == original.shape
    assert loaded.dtype == original.dtype.newbyteorder("=")
    assert loaded.dtype.isnative
    assert loaded.tobytes() == np.ascontiguousarray(original).astype(loaded.dtype).tobytes()


def assert_owned_writable(array: np.ndarray) -> None:
    assert array.flags.writeable
    assert array.flags.owndata or (array.base is not None and array.base.flags.owndata)
    assert array.flags.c_contiguous
    assert array.flags.aligned


# --------------------------------------------------------------------------- round trips


def _float_extremes(dtype: type) -> np.ndarray:
    info = np.finfo(dtype)
    bits_dtype = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    values = np.array(
        [0.0, -0.0, 1.0, -1.5, np.inf, -np.inf, np.nan, info.max, info.min,
         info.tiny, info.smallest_subnormal, info.eps],
        dtype=dtype,
    )
    # NaNs with unusual payloads and sign bits must survive bit-exactly.
    nbits = np.dtype(dtype).itemsize * 8
    nmant = info.nmant
    exp_all_ones = ((1 << (nbits - 1 - nmant)) - 1) << nmant
    payload_nans = np.array(
        [exp_all_ones | 1, exp_all_ones | (1 << (nmant - 1)) | 5,
         (1 << (nbits - 1)) | exp_all_ones | 3],
        dtype=bits_dtype,
    ).view(dtype)
    return np.concatenate([values, payload_nans])


def _int_extremes(dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1, info.max // 3, info.min // 2], dtype=dtype)


ROUND_TRIP_CASES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "U8": _int_extremes(np.uint8),
    "I8": _int_extremes(np.int8),
    "I16": _int_extremes(np.int16),
    "U16": _int_extremes(np.uint16),
    "I32": _int_extremes(np.int32),
    "U32": _int_extremes(np.uint32),
    "I64": _int_extremes(np.int64),
    "U64": _int_extremes(np.uint64),
    "F16": _float_extremes(np.float16),
    "F32": _float_extremes(np.float32),
    "F64": _float_extremes(np.float64),
}


@pytest.mark.parametrize("code", sorted(ROUND_TRIP_CASES))
def test_round_trip_each_dtype(tmp_path: Path, code: str) -> None:
    values = ROUND_TRIP_CASES[code]
    shaped = values.reshape(2, -1) if values.size % 2 == 0 else values
    tensors = {
        "flat": values,
        "shaped": shaped,
        "scalar": values.reshape(-1)[:1].reshape(()),
        "empty": values[:0].reshape(0, 3),
    }
    path = tmp_path / f"{code}.safetensors"
    save_tensors(path, tensors, {"dtype": code})

    infos, metadata = read_header(path)
    assert metadata == {"dtype": code}
    assert {info["dtype"] for info in infos.values()} == {code}
    assert infos["scalar"]["shape"] == ()
    assert infos["empty"]["shape"] == (0, 3)

    loaded, metadata = load_tensors(path)
    assert metadata == {"dtype": code}
    assert set(loaded) == set(tensors)
    for name, original in tensors.items():
        assert_bit_identical(loaded[name], original)
        assert_owned_writable(loaded[name])
        loaded[name][...] = loaded[name]  # really writable


def test_round_trip_names_and_unicode_metadata(tmp_path: Path) -> None:
    tensors = {
        "layer.0/weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a.b.c": np.array([1, 2, 3], dtype=np.int8),
        "ünïcödé/名前": np.array([7], dtype=np.uint16),
        "with \"quotes\" and \\ backslash": np.zeros(2, dtype=np.float64),
    }
    metadata = {
        "format": "np",
        "描述": "三值神经网络 — ternary ✓",
        "emoji": "🧠",
        "empty": "",
        "json-ish": '{"not": "parsed"}',
    }
    path = tmp_path / "names.safetensors"
    save_tensors(path, tensors, metadata)
    loaded, loaded_meta = load_tensors(path)
    assert loaded_meta == metadata
    assert set(loaded) == set(tensors)
    for name in tensors:
        assert_bit_identical(loaded[name], tensors[name])


def test_no_metadata_and_empty_dict(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"x": np.ones(1, np.float32)})
    assert load_tensors(path)[1] == {}
    assert "__metadata__" not in path.read_bytes().decode("utf-8", "replace")
    save_tensors(path, {}, {})
    tensors, metadata = load_tensors(path)
    assert tensors == {} and metadata == {}


def test_non_contiguous_and_big_endian_inputs(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    big = np.arange(5, dtype=">i4") * -1000
    big_float = np.array([1.5, -0.0, np.nan], dtype=">f8")
    tensors = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "reversed": base[:, ::-1],
        "fortran": np.asfortranarray(base),
        "big_int": big,
        "big_float": big_float,
        "big_strided": np.arange(10, dtype=">u2")[::3],
    }
    path = tmp_path / "layout.safetensors"
    save_tensors(path, tensors)
    loaded, _ = load_tensors(path)
    for name, original in tensors.items():
        assert loaded[name].dtype.isnative, name
        assert loaded[name].flags.c_contiguous, name
        np.testing.assert_array_equal(loaded[name], original, err_msg=name)
    assert loaded["big_float"].view(np.uint64)[1] == np.uint64(1 << 63)  # -0.0 kept
    # The bytes on disk are little-endian, C order.
    infos, _ = read_header(path)
    raw = path.read_bytes()
    data_start = 8 + struct.unpack("<Q", raw[:8])[0]
    b, e = infos["big_int"]["data_offsets"]
    assert raw[data_start + b: data_start + e] == big.astype("<i4").tobytes()
    b, e = infos["transposed"]["data_offsets"]
    assert raw[data_start + b: data_start + e] == np.ascontiguousarray(base.T).tobytes()


def test_numpy_scalar_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    save_tensors(path, {"s": np.float32(2.5), "i": np.int64(-3)})
    loaded, _ = load_tensors(path)
    assert loaded["s"].shape == () and loaded["s"] == np.float32(2.5)
    assert loaded["i"].dtype == np.int64 and loaded["i"] == -3


def test_overwrite_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "o.safetensors"
    save_tensors(path, {"a": np.zeros(1000, np.float64)})
    save_tensors(path, {"b": np.ones(2, np.int8)})
    loaded, _ = load_tensors(path)
    assert list(loaded) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["o.safetensors"]


# --------------------------------------------------------------------------- byte-level


def test_reads_hand_built_file(tmp_path: Path) -> None:
    header = (
        '{"__metadata__":{"format":"np","k\\u00e9y":"v"},'
        '"w":{"dtype":"I16","shape":[2,2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[],"data_offsets":[8,12]},'
        '"e":{"dtype":"F64","shape":[0,5],"data_offsets":[12,12]},'
        '"f":{"dtype":"BOOL","shape":[3],"data_offsets":[12,15]}}'
    )
    data = (
        b"\x01\x00" b"\xff\xff" b"\x00\x80" b"\xff\x7f"  # I16: 1, -1, -32768, 32767
        b"\x00\x00\xc0\xbf"  # F32: -1.5
        b"\x01\x00\x01"  # BOOL: T F T
        b"\x00"  # trailing byte not used by any tensor (tolerated gap)
    )
    raw = build_file(header, data)
    assert len(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]) % 8 == 0
    path = write(tmp_path, raw)

    infos, metadata = read_header(path)
    assert metadata == {"format": "np", "kéy": "v"}
    assert list(infos) == ["w", "b", "e", "f"]
    assert infos["w"] == {"dtype": "I16", "shape": (2, 2), "data_offsets": (0, 8)}
    assert infos["b"] == {"dtype": "F32", "shape": (), "data_offsets": (8, 12)}

    tensors, metadata = load_tensors(path)
    assert metadata == {"format": "np", "kéy": "v"}
    np.testing.assert_array_equal(tensors["w"], np.array([[1, -1], [-32768, 32767]]))
    assert tensors["w"].dtype == np.int16
    assert tensors["b"].shape == () and tensors["b"].dtype == np.float32
    assert float(tensors["b"]) == -1.5
    assert tensors["e"].shape == (0, 5) and tensors["e"].dtype == np.float64
    np.testing.assert_array_equal(tensors["f"], [True, False, True])
    for array in tensors.values():
        assert_owned_writable(array)


def test_reads_unpadded_header_and_odd_offsets(tmp_path: Path) -> None:
    # Header not padded, so the data section (and the F64 tensor) is not 8-byte aligned.
    header = '{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},' \
             '"y":{"dtype":"F64","shape":[1],"data_offsets":[1,9]}}'
    raw = build_file(header, b"\x2a" + struct.pack("<d", 3.25), pad=False)
    tensors, _ = load_tensors(write(tmp_path, raw))
    assert tensors["x"].tolist() == [42]
    assert tensors["y"].tolist() == [3.25]
    assert_owned_writable(tensors["y"])


def test_reads_bf16_as_exact_float32(tmp_path: Path) -> None:
    bits = np.array([0x3F80, 0xC040, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x7F7F],
                    dtype="<u2")
    header = {"h": {"dtype": "BF16", "shape": [3, 3], "data_offsets": [0, 18]}}
    tensors, _ = load_tensors(write(tmp_path, build_file(header, bits.tobytes())))
    h = tensors["h"]
    assert h.dtype == np.float32 and h.shape == (3, 3)
    assert_owned_writable(h)
    expected_bits = bits.astype(np.uint32) << 16
    assert h.reshape(-1).view(np.uint32).tolist() == expected_bits.tolist()
    assert h.reshape(-1)[:2].tolist() == [1.0, -3.0]


def test_writer_layout_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "layout.safetensors"
    save_tensors(
        path,
        {"b": np.array([1, 2], dtype=">u2"), "a": np.array([True]), "c": np.float64(0.5)},
        {"x": "y"},
    )
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = raw[8:8 + n]
    expected = (
        b'{"__metadata__":{"x":"y"},'
        b'"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]},'
        b'"b":{"dtype":"U16","shape":[2],"data_offsets":[1,5]},'
        b'"c":{"dtype":"F64","shape":[],"data_offsets":[5,13]}}'
    )
    assert header.rstrip(b" ") == expected
    assert header == expected + b" " * (n - len(expected))
    assert n - len(expected) < 8
    # Tensors contiguous in sorted-name order, little-endian, nothing after them.
    assert raw[8 + n:] == b"\x01" + b"\x01\x00\x02\x00" + struct.pack("<d", 0.5)


def test_writer_non_ascii_header_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "u.safetensors"
    save_tensors(path, {"é": np.zeros(1, np.uint8)}, {"ключ": "значение"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert header["__metadata__"] == {"ключ": "значение"}
    assert header["é"]["data_offsets"] == [0, 1]


# --------------------------------------------------------------------------- save errors


class ExplodingArray(np.ndarray):
    """An array whose serialisation fails, to simulate a failure mid-write."""

    def tobytes(self, order="C"):  # noqa: D102
        raise RuntimeError("disk on fire")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_atomic_failure_mid_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"old": np.arange(4, dtype=np.int32)}, {"v": "1"})
    before = _snapshot(tmp_path)
    bad = np.arange(8, dtype=np.float32).view(ExplodingArray)
    # "a" is written first (sorted order), so the failure happens with data on disk.
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_tensors(path, {"a": np.ones(100, np.float64), "z": bad})
    assert _snapshot(tmp_path) == before
    tensors, metadata = load_tensors(path)
    assert list(tensors) == ["old"] and metadata == {"v": "1"}


def test_atomic_failure_in_replace_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"old": np.arange(4, dtype=np.int32)})
    before = _snapshot(tmp_path)

    def failing_replace(src, dst):
        assert Path(src).parent == tmp_path  # temp file lives in the same directory
        assert Path(src).exists()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="ckpt.safetensors"):
        save_tensors(path, {"new": np.zeros(3, np.float32)})
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before


def test_atomic_failure_new_file_leaves_nothing(tmp_path: Path) -> None:
    bad = np.arange(2, dtype=np.int8).view(ExplodingArray)
    with pytest.raises(RuntimeError):
        save_tensors(tmp_path / "new.safetensors", {"x": bad})
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "f.safetensors"
    with pytest.raises(CheckpointError, match="f.safetensors"):
        save_tensors(target, {"x": np.zeros(1)})


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"ok": "1", "epoch": 3}, "epoch"),
        ({"ok": "1", 7: "seven"}, "7"),
        ({"none": None}, "none"),
        ({"bytes": b"raw"}, "bytes"),
    ],
)
def test_save_rejects_non_str_metadata(tmp_path: Path, metadata, needle) -> None:
    path = tmp_path / "meta.safetensors"
    with pytest.raises(CheckpointError, match=needle) as info:
        save_tensors(path, {"x": np.zeros(1)}, metadata)
    assert "meta.safetensors" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_non_mapping_metadata(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="metadata"):
        save_tensors(tmp_path / "m.safetensors", {"x": np.zeros(1)}, [("a", "b")])


@pytest.mark.parametrize("name", ["", 3, None, ("a",), "__metadata__"])
def test_save_rejects_bad_names(tmp_path: Path, name) -> None:
    with pytest.raises(CheckpointError, match="n.safetensors"):
        save_tensors(tmp_path / "n.safetensors", {name: np.zeros(1)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(2, np.complex64),
        np.array(["a", "b"]),
        np.array([b"x"]),
        np.array([1, "a"], dtype=object),
        np.zeros(2, "datetime64[ns]"),
        np.zeros(2, "timedelta64[s]"),
        np.zeros(2, [("a", "f4"), ("b", "i4")]),
        np.zeros(2, "V4"),
    ],
    ids=lambda a: str(a.dtype),
)
def test_save_rejects_unsupported_dtype(tmp_path: Path, array) -> None:
    path = tmp_path / "d.safetensors"
    with pytest.raises(CheckpointError) as info:
        save_tensors(path, {"ok": np.zeros(1), "layer.bad": array})
    message = str(info.value)
    assert "layer.bad" in message and str(array.dtype) in message and "d.safetensors" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 here")
def test_save_rejects_longdouble(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="float128|longdouble|float96"):
        save_tensors(tmp_path / "l.safetensors", {"x": np.zeros(1, np.longdouble)})


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, "abc", None])
def test_save_rejects_non_arrays(tmp_path: Path, value) -> None:
    with pytest.raises(CheckpointError, match="'x'"):
        save_tensors(tmp_path / "a.safetensors", {"x": value})


def test_save_rejects_non_mapping_tensors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="mapping"):
        save_tensors(tmp_path / "a.safetensors", [("x", np.zeros(1))])


def test_save_rejects_unencodable_strings(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="UTF-8"):
        save_tensors(tmp_path / "s.safetensors", {"x": np.zeros(1)}, {"k": "\ud800"})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- load errors


def _tensor(dtype="F32", shape=(2,), offsets=(0, 8)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


EIGHT = bytes(range(8))

CORRUPT = {
    # name: (file bytes, substring the message must contain besides the file name)
    "empty_file": (b"", "too short"),
    "five_bytes": (b"\x10\x00\x00\x00\x00", "too short"),
    "header_larger_than_file": (struct.pack("<Q", 64) + b"{}      ", "larger than the file"),
    "header_absurd": (struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "limit"),
    "header_u64_max": (b"\xff" * 8 + b"{}", "limit"),
    "header_not_utf8": (build_file(b'{"\xff\xfe":1}'), "UTF-8"),
    "header_not_json": (build_file("{not json"), "JSON"),
    "header_empty": (struct.pack("<Q", 0), "JSON"),
    "header_trailing_garbage": (build_file('{}{"x":1}'), "JSON"),
    "header_nan_constant": (build_file('{"x":NaN}'), "JSON"),
    "header_is_list": (build_file("[1, 2]"), "object"),
    "header_is_number": (build_file("42"), "object"),
    "duplicate_key": (
        build_file('{"w":' + json.dumps(_tensor()) + ',"w":' + json.dumps(_tensor()) + "}",
                   EIGHT),
        "duplicate",
    ),
    "entry_not_object": (build_file({"w": [1, 2]}), "'w'"),
    "missing_dtype": (build_file({"w": {"shape": [2], "data_offsets": [0, 8]}}, EIGHT), "'w'"),
    "unknown_dtype": (build_file({"w": _tensor(dtype="F128")}, EIGHT), "F128"),
    "dtype_not_str": (build_file({"w": _tensor(dtype=4)}, EIGHT), "'w'"),
    "lowercase_dtype": (build_file({"w": _tensor(dtype="f32")}, EIGHT), "f32"),
    "shape_not_list": (build_file({"w": {**_tensor(), "shape": 2}}, EIGHT), "'w'"),
    "shape_negative": (build_file({"w": _tensor(shape=(-2,))}, EIGHT), "'w'"),
    "shape_float": (build_file({"w": _tensor(shape=(2.0,))}, EIGHT), "'w'"),
    "shape_bool": (build_file({"w": _tensor(shape=(True, 2))}, EIGHT), "'w'"),
    "shape_str": (build_file({"w": _tensor(shape=("2",))}, EIGHT), "'w'"),
    "shape_too_many_dims": (build_file({"w": _tensor(shape=(1,) * 65, offsets=(0, 4))},
                                       EIGHT), "'w'"),
    "shape_huge_zero_size": (
        build_file({"w": _tensor(shape=(0, 2**62, 2**62), offsets=(0, 0))}), "'w'"),
    "offsets_not_list": (build_file({"w": {**_tensor(), "data_offsets": "0:8"}}, EIGHT), "'w'"),
    "offsets_three": (build_file({"w": _tensor(offsets=(0, 8, 8))}, EIGHT), "'w'"),
    "offsets_one": (build_file({"w": _tensor(offsets=(8,))}, EIGHT), "'w'"),
    "offsets_float": (build_file({"w": _tensor(offsets=(0.0, 8))}, EIGHT), "'w'"),
    "offsets_negative": (build_file({"w": _tensor(offsets=(-8, 0))}, EIGHT), "'w'"),
    "offsets_reversed": (build_file({"w": _tensor(offsets=(8, 0))}, EIGHT), "'w'"),
    "offsets_past_end": (build_file({"w": _tensor(offsets=(4, 12))}, EIGHT), "'w'"),
    "data_truncated": (build_file({"w": _tensor()}, EIGHT[:5]), "'w'"),
    "huge_declared_tensor": (
        build_file({"w": _tensor(shape=(10**12,), offsets=(0, 4 * 10**12))}, EIGHT), "'w'"),
    "size_mismatch": (build_file({"w": _tensor(shape=(3,), offsets=(0, 8))}, EIGHT), "'w'"),
    "size_mismatch_scalar": (build_file({"w": _tensor(shape=(), offsets=(0, 8))}, EIGHT),
                             "'w'"),
    "overlap": (
        build_file({"a": _tensor(offsets=(0, 8)),
                    "b": _tensor(dtype="I16", shape=(2,), offsets=(6, 10))}, EIGHT * 2),
        "overlap",
    ),
    "overlap_same_range": (
        build_file({"a": _tensor(offsets=(0, 8)), "b": _tensor(offsets=(0, 8))}, EIGHT),
        "overlap",
    ),
    "metadata_not_object": (build_file({"__metadata__": ["a", "b"]}), "__metadata__"),
    "metadata_value_int": (build_file({"__metadata__": {"epoch": 3}}), "epoch"),
    "metadata_value_null": (build_file({"__metadata__": {"note": None}}), "note"),
    "metadata_value_object": (build_file({"__metadata__": {"nested": {"a": "b"}}}), "nested"),
    "empty_tensor_name": (build_file({"": _tensor()}, EIGHT), "empty"),
    "bool_not_0_or_1": (build_file({"m": _tensor(dtype="BOOL", shape=(2,), offsets=(0, 2))},
                                   b"\x01\x02"), "'m'"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_load_rejects_corrupt_file(tmp_path: Path, case: str) -> None:
    content, needle = CORRUPT[case]
    path = write(tmp_path, content, name=f"bad-{case}.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_tensors(path)
    message = str(info.value)
    assert f"bad-{case}.safetensors" in message
    assert needle in message, message


def test_read_header_rejects_header_problems(tmp_path: Path) -> None:
    path = write(tmp_path, CORRUPT["overlap"][0], name="hdr.safetensors")
    with pytest.raises(CheckpointError, match="hdr.safetensors.*overlap"):
        read_header(path)
    path = write(tmp_path, CORRUPT["header_absurd"][0], name="hdr2.safetensors")
    with pytest.raises(CheckpointError, match="hdr2.safetensors"):
        read_header(path)


def test_read_header_does_not_need_data_to_be_valid(tmp_path: Path) -> None:
    # BOOL bytes are only checked when loading the data, not by read_header.
    content = CORRUPT["bool_not_0_or_1"][0]
    infos, _ = read_header(write(tmp_path, content))
    assert infos == {"m": {"dtype": "BOOL", "shape": (2,), "data_offsets": (0, 2)}}


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_tensors(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        read_header(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match=str(tmp_path.name)):
        load_tensors(tmp_path)


def test_accepts_str_path(tmp_path: Path) -> None:
    path = str(tmp_path / "s.safetensors")
    save_tensors(path, {"x": np.arange(3, dtype=np.uint32)})
    np.testing.assert_array_equal(load_tensors(path)[0]["x"], [0, 1, 2])


# --------------------------------------------------------------------------- fuzzing


def _valid_file_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "seed.safetensors")
        save_tensors(
            path,
            {
                "w": np.arange(6, dtype=np.float32).reshape(2, 3),
                "b": np.array([-1, 0, 1], dtype=np.int8),
                "m": np.array([True, False]),
                "s": np.float64(1.5),
                "e": np.zeros((0, 2), np.uint16),
            },
            {"format": "np"},
        )
        with open(path, "rb") as f:
            return f.read()


VALID = _valid_file_bytes()
HEADER_END = 8 + struct.unpack("<Q", VALID[:8])[0]

# Positions biased towards the prefix and the header, where mutations are interesting.
positions = st.one_of(
    st.integers(0, 7), st.integers(8, HEADER_END - 1), st.integers(0, len(VALID) - 1)
)
mutation = st.tuples(positions, st.integers(0, 255))
interesting_bytes = st.sampled_from(list(b'{}[]",:0123456789-. eE\x00\xff') + [0x80])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.one_of(mutation, st.tuples(positions, interesting_bytes)),
                       max_size=6),
    truncate=st.one_of(st.none(), st.integers(0, len(VALID))),
    append=st.binary(max_size=16),
)
def test_fuzz_mutations_only_raise_checkpoint_error(
    tmp_path: Path, mutations, truncate, append
) -> None:
    content = bytearray(VALID)
    for position, value in mutations:
        content[position] = value
    if truncate is not None:
        content = content[:truncate]
    content += append
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(content))
    try:
        tensors, metadata = load_tensors(path)
    except CheckpointError as exc:
        assert "fuzz.safetensors" in str(exc)
        return
    assert all(isinstance(v, str) for v in metadata.values())
    infos, _ = read_header(path)
    assert set(infos) == set(tensors)
    for name, array in tensors.items():
        assert isinstance(array, np.ndarray) and array.shape == infos[name]["shape"]
        assert array.flags.writeable


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "__metadata__",
                                       "w", "x"]), children, max_size=4),
    max_leaves=12,
), data=st.binary(max_size=24))
def test_fuzz_structured_headers_only_raise_checkpoint_error(tmp_path: Path, header, data):
    path = tmp_path / "hdr.safetensors"
    path.write_bytes(build_file(json.dumps(header), data))
    try:
        load_tensors(path)
    except CheckpointError as exc:
        assert "hdr.safetensors" in str(exc)


# --------------------------------------------------------------------------- interop


def _reference_numpy():
    return pytest.importorskip(
        "safetensors.numpy",
        reason="the `safetensors` package is not installed; interop test skipped "
               "(it is optional and deliberately not a dependency)",
    )


def test_interop_reference_reads_our_files(tmp_path: Path) -> None:
    ref = _reference_numpy()
    tensors = {name: array for name, array in ROUND_TRIP_CASES.items()}
    tensors["scalar"] = np.float32(3.5).reshape(())
    path = tmp_path / "ours.safetensors"
    save_tensors(path, tensors, {"format": "np", "ключ": "✓"})
    loaded = ref.load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, original in tensors.items():
        assert loaded[name].tobytes() == original.tobytes(), name
        assert loaded[name].shape == original.shape, name


def test_interop_we_read_reference_files(tmp_path: Path) -> None:
    ref = _reference_numpy()
    tensors = {name: array for name, array in ROUND_TRIP_CASES.items()}
    tensors["empty"] = np.zeros((0, 4), np.float32)
    path = tmp_path / "theirs.safetensors"
    ref.save_file(tensors, str(path), metadata={"format": "np", "ключ": "✓"})
    loaded, metadata = load_tensors(path)
    assert metadata == {"format": "np", "ключ": "✓"}
    for name, original in tensors.items():
        assert_bit_identical(loaded[name], original)

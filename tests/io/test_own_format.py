"""Tests of sttn_sim.io.own_format: the project's safetensors model format.

The file layout is the ``safetensors`` package's, so files are also checked with the
package itself (``safetensors.numpy.load_file`` / ``safe_open``) in both directions.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import sttn_sim.io.atomic as atomic
import sttn_sim.io.own_format as own_format
from sttn_sim.errors import CheckpointError, ModelError
from sttn_sim.fold import fold
from sttn_sim.graph import Model
from sttn_sim.io import load_checkpoint
from sttn_sim.io.own_format import (
    FORMAT_NAME,
    SCHEMA_VERSION,
    TENSOR_DTYPES,
    load_own_format,
    save_model,
    write_tensors,
)
from sttn_sim.reference import reference_forward
from sttn_sim.synthetic import synthetic_input, synthetic_model

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- fixtures

BUILDERS = {
    "sttn_resnet18": {"width": 0.125, "input_size": 32, "num_classes": 10},
    "plain_ternary_cnn": {"channels": (8, 16), "input_size": 8},
    "ternary_mlp": {"hidden": (32, 16)},
}


@pytest.fixture(scope="module")
def latent_models() -> dict[str, Model]:
    """Latent models with calibrated (non-trivial) BN, one per builder."""
    return {name: synthetic_model(name, seed=5, **kw) for name, kw in BUILDERS.items()}


@pytest.fixture(scope="module")
def models(latent_models) -> dict[tuple[str, str], Model]:
    out = {}
    for name, m in latent_models.items():
        out[(name, "latent")] = m
        out[(name, "folded")] = fold(m)
    return out


CASES = [(name, form) for name in BUILDERS for form in ("latent", "folded")]


def assert_models_identical(a: Model, b: Model) -> None:
    assert type(b) is Model
    assert b.arch == a.arch
    assert b.form == a.form
    assert b.input_shape == a.input_shape
    assert b.metadata == a.metadata
    assert b.layer_names == a.layer_names
    for la, lb in zip(a.layers, b.layers):
        assert lb.kind == la.kind, la.name
        assert lb.inputs == la.inputs, la.name
        assert lb.attrs == la.attrs, la.name
        assert list(lb.params) == list(la.params), la.name
        for key, va in la.params.items():
            vb = lb.params[key]
            assert isinstance(vb, np.ndarray)
            assert vb.dtype == va.dtype, f"{la.name}.{key}: {vb.dtype} != {va.dtype}"
            assert vb.shape == va.shape, f"{la.name}.{key}"
            assert np.array_equal(vb, va), f"{la.name}.{key}"


def _package_read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata as the safetensors package reads them."""
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    return stnp.load_file(str(path)), meta


def _rewrite(src: Path, dst: Path, *, tensors=None, meta=None, graph=None) -> Path:
    """Copy a saved model with the safetensors package, replacing tensors / metadata / the graph."""
    t, m = _package_read(src)
    if tensors is not None:
        t = tensors(t)
    if graph is not None:
        g = graph(json.loads(m["graph"]))
        m = dict(m, graph=g if isinstance(g, str) else json.dumps(g))
    if meta is not None:
        m = meta(dict(m))
    stnp.save_file(t, str(dst), metadata=m or None)
    return dst


def _raw_file(header: dict, data: bytes) -> bytes:
    """A safetensors file assembled by hand: u64 LE header size, JSON header, data."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture
def saved_mlp(tmp_path, latent_models) -> Path:
    return save_model(latent_models["ternary_mlp"], tmp_path / "mlp.safetensors")


@pytest.fixture
def saved_cnn(tmp_path, latent_models) -> Path:
    return save_model(latent_models["plain_ternary_cnn"], tmp_path / "cnn.safetensors")


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name, form", CASES)
def test_round_trip_exact(tmp_path, models, name, form):
    model = models[(name, form)]
    path = save_model(model, tmp_path / "m.safetensors")
    assert path == tmp_path / "m.safetensors"
    loaded = load_checkpoint(path)
    assert_models_identical(model, loaded)
    assert_models_identical(model, load_own_format(str(path)))


def test_folded_models_hold_integer_and_float64_params(models):
    """The round trip is only a strong check if the folded form has varied dtypes."""
    folded = models[("plain_ternary_cnn", "folded")]
    dtypes = {(l.kind, k): v.dtype for l in folded for k, v in l.params.items()}
    assert dtypes[("ternary_conv", "codes")] == np.int8
    assert dtypes[("ternary_conv", "scale")] == np.float64
    assert dtypes[("threshold", "direction")] == np.int8
    assert np.dtype(np.int64) in {v.dtype for l in folded if l.kind == "threshold" for v in l.params.values()}
    assert np.dtype(np.float32) in {v.dtype for l in folded for v in l.params.values()}


@pytest.mark.parametrize("name, form", CASES)
def test_reference_forward_of_loaded_model_is_bit_identical(tmp_path, models, name, form):
    model = models[(name, form)]
    loaded = load_checkpoint(save_model(model, tmp_path / "m.safetensors"))
    x = synthetic_input(model, batch=2, seed=9)
    a = reference_forward(model, x)
    b = reference_forward(loaded, x)
    assert a.dtype == b.dtype == np.float64
    assert np.array_equal(a, b)


def test_loaded_arrays_are_writable_native_and_their_own(tmp_path, latent_models):
    path = save_model(latent_models["ternary_mlp"], tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    for layer in loaded:
        for key, value in layer.params.items():
            assert value.flags.writeable and value.flags.c_contiguous and value.dtype.isnative, (layer.name, key)
    w = loaded["fc1"].params["weight1"]
    w[...] = 0.25  # editing a loaded model never touches the file or another model
    assert np.array_equal(load_checkpoint(path)["fc1"].params["weight1"], latent_models["ternary_mlp"]["fc1"].params["weight1"])


def test_shipped_default_model_still_loads():
    """Files written by the former hand-written writer keep loading (same layout and metadata)."""
    path = ROOT / "sttn_sim" / "data" / "default_model.safetensors"
    model = load_checkpoint(path)
    tensors, meta = _package_read(path)
    assert meta["format"] == "sttn_sim" and meta["schema_version"] == "1"
    assert set(tensors) == {f"{l.name}.{k}" for l in model for k in l.params}
    for layer in model:
        for key, value in layer.params.items():
            assert np.array_equal(value, tensors[f"{layer.name}.{key}"]) and value.dtype == tensors[f"{layer.name}.{key}"].dtype


def test_file_layout(tmp_path, latent_models):
    model = latent_models["plain_ternary_cnn"]
    path = save_model(model, tmp_path / "m.safetensors")
    tensors, meta = _package_read(path)
    assert set(meta) == {"format", "schema_version", "graph"}
    assert meta["format"] == "sttn_sim" == FORMAT_NAME
    assert meta["schema_version"] == "1" == str(SCHEMA_VERSION)
    assert set(tensors) == {f"{l.name}.{k}" for l in model for k in l.params}
    assert "features.3.weight1" in tensors and "features.3.bias2" in tensors
    graph = json.loads(meta["graph"])
    assert set(graph) == {"arch", "form", "input_shape", "metadata", "layers"}
    assert graph["arch"] == "plain_ternary_cnn"
    assert [e["name"] for e in graph["layers"]] == model.layer_names
    assert set(graph["layers"][0]) == {"name", "kind", "inputs", "attrs", "params"}


def test_metadata_argument_is_merged(tmp_path, latent_models):
    model = latent_models["ternary_mlp"]
    before = dict(model.metadata)
    extra = {"dataset": "digits", "accuracy": 0.875, "seed": 123, "tags": ("a", "b"), "np": np.float32(0.5)}
    loaded = load_checkpoint(save_model(model, tmp_path / "m.safetensors", metadata=extra))
    assert model.metadata == before  # the model itself is not changed
    expected = dict(before, dataset="digits", accuracy=0.875, seed=123, tags=["a", "b"], np=0.5)
    assert loaded.metadata == expected
    assert before["seed"] == 5  # overridden by the argument above
    loaded.metadata = dict(before)
    assert_models_identical(model, loaded)  # everything else is unchanged


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_unserialisable_metadata_raises_before_writing(tmp_path, latent_models, bad):
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        save_model(latent_models["ternary_mlp"], path, metadata=bad)
    assert os.listdir(tmp_path) == []


def test_save_model_rejects_non_model(tmp_path):
    with pytest.raises(ModelError, match="expects a sttn_sim Model, got dict"):
        save_model({"a": np.zeros(2)}, tmp_path / "m.safetensors")


# --------------------------------------------------------------------------- dtypes


def _float_extremes(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    bits_dtype = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    values = np.array([0.0, -0.0, 1.0, -1.5, np.inf, -np.inf, np.nan, info.max, info.min,
                       info.tiny, info.smallest_subnormal, info.eps], dtype=dtype)
    # NaNs with unusual payloads and sign bits must survive bit-exactly
    nbits, nmant = np.dtype(dtype).itemsize * 8, info.nmant
    exp_all_ones = ((1 << (nbits - 1 - nmant)) - 1) << nmant
    payload_nans = np.array([exp_all_ones | 1, exp_all_ones | (1 << (nmant - 1)) | 5,
                             (1 << (nbits - 1)) | exp_all_ones | 3], dtype=bits_dtype).view(dtype)
    return np.concatenate([values, payload_nans])


def _int_extremes(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1, info.max // 3, info.min // 2], dtype=dtype)


DTYPE_VALUES = {
    "BOOL": np.array([True, False, True, True, False]),
    **{code: _int_extremes(TENSOR_DTYPES[code]) for code in ("U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64")},
    **{code: _float_extremes(TENSOR_DTYPES[code]) for code in ("F16", "F32", "F64")},
}


def test_every_supported_dtype_is_covered():
    assert set(DTYPE_VALUES) == set(TENSOR_DTYPES)


@pytest.mark.parametrize("code", sorted(DTYPE_VALUES))
def test_model_round_trip_of_every_dtype(tmp_path, latent_models, code):
    """A parameter of each dtype sttn_sim writes comes back bit for bit (NaN payloads included)."""
    model = latent_models["ternary_mlp"].copy()
    values = np.resize(DTYPE_VALUES[code], 32 * 64).reshape(32, 64)
    model["fc1"].params["weight1"] = values
    loaded = load_checkpoint(save_model(model, tmp_path / f"{code}.safetensors"))
    got = loaded["fc1"].params["weight1"]
    assert got.dtype == values.dtype and got.shape == values.shape
    assert got.tobytes() == values.tobytes()


@pytest.mark.parametrize("code", sorted(DTYPE_VALUES))
def test_package_reads_our_tensors_bit_exactly(tmp_path, code):
    values = DTYPE_VALUES[code]
    tensors = {"flat": values, "shaped": values[: values.size // 2 * 2].reshape(2, -1),
               "scalar": values[:1].reshape(()), "empty": values[:0].reshape(0, 3)}
    path = write_tensors(tmp_path / f"{code}.safetensors", tensors, {"dtype": code, "ключ": "✓"})
    loaded, meta = _package_read(path)
    assert meta == {"dtype": code, "ключ": "✓"}
    assert set(loaded) == set(tensors)
    for name, original in tensors.items():
        assert loaded[name].dtype == original.dtype, name
        assert loaded[name].shape == original.shape, name
        assert loaded[name].tobytes() == original.tobytes(), name
    with safe_open(str(path), framework="numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {code}


def test_non_contiguous_and_big_endian_params(tmp_path, latent_models):
    model = latent_models["ternary_mlp"].copy()
    base = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 7
    model["fc1"].params["weight1"] = base.T                                   # transposed view
    model["fc1"].params["weight2"] = np.asfortranarray(base.T)                # Fortran order
    model["fc1"].params["bias1"] = np.arange(64, dtype=">f8")[::2] * -1.5     # big-endian, strided
    model["bn0"].params["running_mean"] = np.linspace(-1, 1, 64).astype(">f4")
    path = save_model(model, tmp_path / "layout.safetensors")
    loaded = load_checkpoint(path)
    for layer, key in (("fc1", "weight1"), ("fc1", "weight2"), ("fc1", "bias1"), ("bn0", "running_mean")):
        got, want = loaded[layer].params[key], model[layer].params[key]
        assert got.dtype.isnative and got.flags.c_contiguous, key
        assert got.dtype == want.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, want, err_msg=key)
    raw, _ = _package_read(path)  # the bytes on disk are little-endian, C order
    assert raw["fc1.bias1"].tobytes() == (np.arange(64)[::2] * -1.5).astype("<f8").tobytes()


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((32, 64), np.complex64),
        np.full((32, 64), "a"),
        np.full((32, 64), b"x"),
        np.zeros((32, 64), object),
        np.zeros((32, 64), "datetime64[ns]"),
        np.zeros((32, 64), "timedelta64[s]"),
        np.zeros((32, 64), [("a", "f4"), ("b", "i4")]),
        np.zeros((32, 64), "V4"),
    ],
    ids=lambda a: str(a.dtype),
)
def test_save_rejects_unsupported_dtype(tmp_path, latent_models, array):
    model = latent_models["ternary_mlp"].copy()
    model["fc1"].params["weight1"] = array
    path = tmp_path / "d.safetensors"
    with pytest.raises(CheckpointError) as info:
        save_model(model, path)
    message = str(info.value)
    assert message.startswith(f"{path}: tensor 'fc1.weight1' has unsupported dtype {array.dtype}")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 on this platform")
def test_save_rejects_longdouble(tmp_path):
    with pytest.raises(CheckpointError, match="float128|longdouble|float96"):
        write_tensors(tmp_path / "l.safetensors", {"x": np.zeros(1, np.longdouble)}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, "abc", None])
def test_write_tensors_rejects_non_arrays(tmp_path, value):
    with pytest.raises(CheckpointError, match=r"tensor 'x' must be a numpy array"):
        write_tensors(tmp_path / "a.safetensors", {"x": value}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["", 3, None, "__metadata__"])
def test_write_tensors_rejects_bad_names(tmp_path, name):
    with pytest.raises(CheckpointError, match="n.safetensors: tensor names must be non-empty strings"):
        write_tensors(tmp_path / "n.safetensors", {name: np.zeros(1)}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata, key", [({"ok": "1", "epoch": 3}, "epoch"), ({7: "seven"}, 7), ({"n": None}, "n")])
def test_write_tensors_rejects_non_str_metadata(tmp_path, metadata, key):
    with pytest.raises(CheckpointError, match=re.escape(f"meta.safetensors: metadata must map str to str (key {key!r})")):
        write_tensors(tmp_path / "meta.safetensors", {"x": np.zeros(1)}, metadata)
    assert os.listdir(tmp_path) == []


def test_names_unicode_metadata_and_numpy_scalars(tmp_path):
    tensors = {"layer.0/weight": np.arange(6, dtype=np.float32).reshape(2, 3), "ünïcödé/名前": np.array([7], np.uint16),
               'with "quotes" and \\ backslash': np.zeros(2), "s": np.float32(2.5), "i": np.int64(-3)}
    metadata = {"描述": "三值神经网络 — ternary ✓", "emoji": "🧠", "empty": "", "json-ish": '{"not": "parsed"}'}
    loaded, meta = _package_read(write_tensors(tmp_path / "names.safetensors", tensors, metadata))
    assert meta == metadata and set(loaded) == set(tensors)
    assert loaded["s"].shape == () and loaded["s"].dtype == np.float32 and float(loaded["s"]) == 2.5
    assert loaded["i"].dtype == np.int64 and int(loaded["i"]) == -3
    assert loaded["ünïcödé/名前"].tolist() == [7] and loaded["layer.0/weight"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("tensors, metadata", [({"x": np.zeros(1)}, {"k": "\ud800"}), ({"\ud800": np.zeros(1)}, {}),
                                               ({"x": np.zeros(1)}, {"\udfff": "v"})])
def test_unencodable_strings_are_refused_before_writing(tmp_path, tensors, metadata):
    with pytest.raises(CheckpointError, match=r"s\.safetensors: the tensor name or metadata string .* is not valid UTF-8"):
        write_tensors(tmp_path / "s.safetensors", tensors, metadata)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- atomic saving


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_full_disk_after_the_data_keeps_the_old_file(tmp_path, latent_models, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model(latent_models["plain_ternary_cnn"], path)
    before = _snapshot(tmp_path)
    sizes = []

    def save_then_fail(tensors, filename, metadata=None):
        stnp.save_file(tensors, filename, metadata=metadata)  # the whole new file is in the temporary
        sizes.append((Path(filename).parent, Path(filename).name, os.path.getsize(filename)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(own_format, "save_file", save_then_fail)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: cannot write file (No space left on device)")):
        save_model(latent_models["ternary_mlp"], path)
    monkeypatch.undo()
    assert len(sizes) == 1 and sizes[0][0] == tmp_path and sizes[0][1] != "m.safetensors" and sizes[0][2] > 1000
    assert _snapshot(tmp_path) == before
    assert_models_identical(latent_models["plain_ternary_cnn"], load_checkpoint(path))


def test_package_error_while_writing_is_a_checkpoint_error(tmp_path, latent_models, monkeypatch):
    from safetensors import SafetensorError

    path = tmp_path / "m.safetensors"

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: IoError")

    monkeypatch.setattr(own_format, "save_file", failing)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: cannot write safetensors file (Error while")):
        save_model(latent_models["ternary_mlp"], path)
    assert os.listdir(tmp_path) == []


def test_save_is_atomic_when_fsync_fails(tmp_path, latent_models, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model(latent_models["plain_ternary_cnn"], path)
    old = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*No space left"):
        save_model(latent_models["ternary_mlp"], path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_to_missing_directory(tmp_path, latent_models):
    path = tmp_path / "no" / "such" / "m.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        save_model(latent_models["ternary_mlp"], path)


def test_resave_keeps_mode_and_follows_symlink(tmp_path, latent_models):
    real = tmp_path / "store" / "model.safetensors"
    real.parent.mkdir()
    save_model(latent_models["ternary_mlp"], real)
    real.chmod(0o600)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(real)
    save_model(latent_models["plain_ternary_cnn"], link)
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    assert load_checkpoint(real).arch == "plain_ternary_cnn"
    assert sorted(p.name for p in real.parent.iterdir()) == ["model.safetensors"]


# --------------------------------------------------------------------------- what is read


class _Spy:
    """Wraps safe_open and records which tensors are read."""

    def __init__(self, monkeypatch):
        self.read: list[str] = []
        real = own_format.safe_open
        spy = self

        class Handle:
            def __init__(self, *args, **kwargs):
                self.inner = real(*args, **kwargs)

            def __enter__(self):
                self.f = self.inner.__enter__()
                return self

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

            def get_tensor(self, key):
                spy.read.append(key)
                return self.f.get_tensor(key)

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(own_format, "safe_open", Handle)


def test_each_graph_tensor_is_read_once(tmp_path, saved_mlp, monkeypatch):
    spy = _Spy(monkeypatch)
    model = load_checkpoint(saved_mlp)
    assert sorted(spy.read) == sorted(f"{l.name}.{k}" for l in model for k in l.params)


def test_tensors_outside_the_graph_are_refused_unread(tmp_path, saved_mlp, monkeypatch):
    path = _rewrite(saved_mlp, tmp_path / "extra.safetensors",
                    tensors=lambda t: dict(t, ghost=np.zeros(1_000_000, np.float64)))
    spy = _Spy(monkeypatch)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: unexpected tensors not described by the graph: ghost")):
        load_checkpoint(path)
    assert spy.read == []


def test_a_tensor_named_twice_by_the_graph_is_refused(tmp_path, saved_mlp, monkeypatch):
    def twice(g):
        g["layers"][1]["params"].append("weight")
        return g

    path = _rewrite(saved_mlp, tmp_path / "twice.safetensors", graph=twice)
    spy = _Spy(monkeypatch)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: tensor 'bn0.weight' is named twice by the graph")):
        load_checkpoint(path)
    assert spy.read == []


# --------------------------------------------------------------------------- interop: the package's files read by us


def test_we_read_a_model_file_written_by_the_package(tmp_path, models):
    model = models[("plain_ternary_cnn", "folded")]
    ours = save_model(model, tmp_path / "ours.safetensors")
    tensors, meta = _package_read(ours)
    theirs = tmp_path / "theirs.safetensors"
    stnp.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(theirs), metadata=meta)
    assert theirs.read_bytes() != b""
    assert_models_identical(model, load_checkpoint(theirs))


def test_we_read_package_bytes_with_unusual_header_order(tmp_path, saved_mlp):
    """A file assembled by hand (tensors in reverse order, header not padded by the package)."""
    tensors, meta = _package_read(saved_mlp)
    names = sorted(tensors, reverse=True)
    header, data, offset = {"__metadata__": meta}, b"", 0
    for name in names:
        raw = tensors[name].astype(tensors[name].dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": {"float32": "F32"}[tensors[name].dtype.name], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    path = tmp_path / "hand.safetensors"
    path.write_bytes(_raw_file(header, data))
    assert_models_identical(load_checkpoint(saved_mlp), load_checkpoint(path))


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize("meta", [None, {"format": "pt"}, {"graph": "{}"}])
def test_generic_safetensors_file_is_refused(tmp_path, meta):
    path = tmp_path / "generic.safetensors"
    stnp.save_file({"weight": np.zeros((2, 3), np.float32)}, str(path), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "without sttn_sim metadata" in msg


@pytest.mark.parametrize("version", ["2", "0", "1.0", "", None])
def test_wrong_schema_version(tmp_path, saved_mlp, version):
    def meta(m):
        if version is None:
            del m["schema_version"]
        else:
            m["schema_version"] = version
        return m

    path = _rewrite(saved_mlp, tmp_path / "v.safetensors", meta=meta)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"schema_version {version!r} is not supported" in msg


@pytest.mark.parametrize(
    "graph, expect",
    [
        (lambda g: "{not json", "metadata key 'graph' is not valid JSON"),
        (lambda g: "", "metadata key 'graph' is not valid JSON"),
        (lambda g: [1, 2], "metadata key 'graph' must be a JSON object"),
        (lambda g: {k: v for k, v in g.items() if k != "layers"}, "graph key 'layers' missing"),
        (lambda g: dict(g, arch=3), "graph key 'arch' missing or not a str"),
        (lambda g: dict(g, input_shape="64"), "graph key 'input_shape' missing or not a list"),
        (lambda g: dict(g, layers=[{"name": "x"}]), "graph layer #0 must have name, kind, inputs, attrs and params"),
        (lambda g: dict(g, layers=[]), "unexpected tensors not described by the graph"),
    ],
)
def test_invalid_graph(tmp_path, saved_mlp, graph, expect):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", graph=graph)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expect in str(info.value)


def test_graph_without_layers(tmp_path, saved_mlp):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", tensors=lambda t: {}, graph=lambda g: dict(g, layers=[]))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: model 'ternary_mlp' has no layers")):
        load_checkpoint(path)


def test_graph_missing_from_metadata(tmp_path, saved_mlp):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", meta=lambda m: {k: v for k, v in m.items() if k != "graph"})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: metadata key 'graph'")):
        load_checkpoint(path)


def _set_layer(layer_name, /, **changes):
    def edit(g):
        for entry in g["layers"]:
            if entry["name"] == layer_name:
                entry.update(changes)
        return g

    return edit


def _drop_attr(name, attr):
    def edit(g):
        for entry in g["layers"]:
            if entry["name"] == name:
                del entry["attrs"][attr]
        return g

    return edit


@pytest.mark.parametrize(
    "edit, expect",
    [
        (_set_layer("fc1", kind="dense"), "layer 'fc1': unknown kind 'dense'"),
        (_set_layer("bn1", inputs=["fc2"]), "layer 'bn1': input 'fc2' is not an earlier layer"),
        (_set_layer("fc1", attrs=[1, 2]), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", inputs="tact0"), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", inputs=5), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", params="weight1"), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", name=7), "graph layer #3 (7)"),
        (lambda g: dict(g, input_shape=["a", 8, 8]), "graph is malformed"),
        (lambda g: dict(g, metadata=[1, 2]), "graph is malformed"),
    ],
)
def test_inconsistent_graph(tmp_path, saved_mlp, edit, expect):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", graph=edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expect in str(info.value)


@pytest.mark.parametrize("layer, attr", [("features.3", "stride"), ("features.6", "padding"), ("avgpool", "kernel")])
def test_graph_missing_layer_attribute(tmp_path, saved_cnn, layer, attr):
    path = _rewrite(saved_cnn, tmp_path / "g.safetensors", graph=_drop_attr(layer, attr))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"layer {layer!r}" in msg and f"attribute {attr!r} must be an integer" in msg


@pytest.mark.parametrize("key, layer", [("fc.bias", "fc"), ("fc1.weight2", "fc1"), ("bn0.running_var", "bn0")])
def test_missing_tensor(tmp_path, saved_mlp, key, layer):
    path = _rewrite(saved_mlp, tmp_path / "t.safetensors", tensors=lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"tensor {key!r} (layer {layer!r}) is missing" in msg


@pytest.mark.parametrize("extra", ["ghost.weight", "fc.running_mean", "fc1.weight3"])
def test_extra_tensor(tmp_path, saved_mlp, extra):
    path = _rewrite(saved_mlp, tmp_path / "t.safetensors", tensors=lambda t: dict(t, **{extra: np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "unexpected tensors" in msg and extra in msg


@pytest.mark.parametrize(
    "key, array, layer",
    [
        ("fc.weight", np.zeros((10, 5), np.float32), "fc"),             # 16 inputs expected
        ("fc2.weight1", np.zeros((16, 31), np.float32), "fc2"),
        ("bn1.weight", np.ones(7, np.float32), "bn1"),                  # 32 channels expected
        ("fc1.weight1", np.zeros((32, 64, 1, 1), np.float32), "fc1"),   # a 4-d kernel in a linear layer
    ],
)
def test_shapes_that_do_not_fit(tmp_path, saved_mlp, key, array, layer):
    path = _rewrite(saved_mlp, tmp_path / "s.safetensors", tensors=lambda t: dict(t, **{key: array}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"layer {layer!r}" in msg


def test_conv_shape_that_does_not_fit(tmp_path, saved_cnn):
    path = _rewrite(saved_cnn, tmp_path / "s.safetensors",
                    tensors=lambda t: dict(t, **{"features.6.weight1": np.full((16, 4, 3, 3), 0.5, np.float32)}))
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*layer 'features.6'.*does not fit"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- corrupt files: the package's errors, named


def _graph_file(tmp_path, name: str, tensor: dict, data: bytes) -> Path:
    """A one-layer model file (a prelu with parameter 'weight') whose tensor entry is given raw."""
    graph = {"arch": "t", "form": "latent", "input_shape": [3], "metadata": {},
             "layers": [{"name": "p", "kind": "prelu", "inputs": ["input"], "attrs": {}, "params": ["weight"]}]}
    meta = {"format": "sttn_sim", "schema_version": "1", "graph": json.dumps(graph)}
    path = tmp_path / name
    path.write_bytes(_raw_file({"__metadata__": meta, "p.weight": tensor}, data))
    return path


def test_hand_built_one_layer_file_loads(tmp_path):
    """The control for the cases below: a valid file built the same way loads."""
    path = _graph_file(tmp_path, "ok.safetensors", {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                       np.array([0.25, 0.5, 1.0], "<f4").tobytes())
    model = load_checkpoint(path)
    assert model["p"].params["weight"].tolist() == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    "tensor, data, expect",
    [
        ({"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}, b"\x00" * 6,
         "tensor 'p.weight' (layer 'p') has dtype BF16, which sttn_sim does not read"),
        ({"dtype": "C64", "shape": [3], "data_offsets": [0, 24]}, b"\x00" * 24,
         "tensor 'p.weight' (layer 'p') has dtype C64, which sttn_sim does not read"),
        ({"dtype": "F8_E4M3", "shape": [3], "data_offsets": [0, 3]}, b"\x00" * 3,
         "tensor 'p.weight' (layer 'p') has dtype F8_E4M3"),
        ({"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}, b"\x01\x02\x00",
         "tensor 'p.weight' (layer 'p'): BOOL data holds byte values other than 0 and 1"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}, b"\x00" * 16, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}, b"\x00" * 16, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, b"\x00" * 8, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, b"\x00" * 20, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [2**62, 4], "data_offsets": [0, 12]}, b"\x00" * 12, "not a valid safetensors file"),
        ({"dtype": "F33", "shape": [3], "data_offsets": [0, 12]}, b"\x00" * 12, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [-3], "data_offsets": [0, 12]}, b"\x00" * 12, "not a valid safetensors file"),
        ({"dtype": "F32", "shape": [3]}, b"\x00" * 12, "not a valid safetensors file"),
    ],
    ids=["bf16", "c64", "f8", "bool-byte-2", "offsets-too-long", "gap", "truncated", "trailing-bytes",
         "huge-shape", "unknown-dtype", "negative-shape", "no-offsets"],
)
def test_bad_tensor_entries(tmp_path, tensor, data, expect):
    path = _graph_file(tmp_path, "bad.safetensors", tensor, data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert expect in msg, msg


@pytest.mark.parametrize(
    "content",
    [
        struct.pack("<Q", 64) + b"{}      ",                   # header larger than the file
        b"\xff" * 8 + b"{}",                                   # absurd header size
        struct.pack("<Q", 8) + b"{notjson",
        struct.pack("<Q", 8) + b'{"a":3} ',
        struct.pack("<Q", 16) + b'{"__metadata__":' + b"1}",
        struct.pack("<Q", 8) + b"{\xff\xfe}    "[:8],
    ],
    ids=["header-larger-than-file", "absurd-header", "not-json", "entry-not-object", "metadata-not-object",
         "not-utf8"],
)
def test_corrupt_headers(tmp_path, content):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a valid safetensors file")):
        load_own_format(path)


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00"])
def test_too_short_for_a_header(tmp_path, content):
    path = tmp_path / "short.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a valid safetensors file")):
        load_own_format(path)


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.7, 0.999])
def test_truncated_model_file(tmp_path, saved_cnn, fraction):
    data = saved_cnn.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: ")):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'absent.safetensors'}: cannot be read")):
        load_own_format(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path}: ")):
        load_own_format(tmp_path)
    with pytest.raises(CheckpointError, match="expected a file path"):
        load_own_format(3.5)


# --------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory, latent_models) -> bytes:
    return save_model(latent_models["ternary_mlp"], tmp_path_factory.mktemp("seed") / "seed.safetensors").read_bytes()


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
                                    st.sampled_from(list(b'{}[]",:0123456789-. eE\x00\xff\x80'))), max_size=6),
       truncate=st.one_of(st.none(), st.floats(0, 1)),
       append=st.binary(max_size=16))
def test_fuzz_mutations_only_raise_checkpoint_error(tmp_path, valid_bytes, mutations, truncate, append):
    """Byte mutations biased to the prefix and header: the result is a Model or a CheckpointError naming the file."""
    content = bytearray(valid_bytes)
    header_end = 8 + struct.unpack("<Q", valid_bytes[:8])[0]
    for where, in_header, value in mutations:
        pos = int(where * header_end) if in_header < 0.8 else int(where * len(content))
        content[pos] = value
    if truncate is not None:
        content = content[: int(truncate * len(content))]
    content += append
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(content))
    try:
        model = load_own_format(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert isinstance(model, Model)

"""Tests of sttn_sim.io.torch_writer: PyTorch checkpoints written without PyTorch.

Every file is read back twice: by sttn_sim's reader and by ``torch.load(path,
weights_only=True)`` (PyTorch is a test dependency), against the arrays written.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import sttn_sim.io.torch_writer as tw
from sttn_sim.errors import CheckpointError
from sttn_sim.io.torch_reader import read_torch_file
from sttn_sim.io.torch_writer import TorchTensor, torch_pickle_bytes, write_torch_legacy, write_torch_zip


# --------------------------------------------------------------------------- writer round trip


def _all_dtypes():
    rng = np.random.default_rng(0)
    return OrderedDict(
        f32=rng.standard_normal((2, 3)).astype(np.float32),
        f64=rng.standard_normal(4),
        f16=np.array([1.5, -2.25], np.float16),
        i64=np.array([-(2**40), 7], np.int64),
        i32=np.array([-5, 6], np.int32),
        i16=np.array([-300, 300], np.int16),
        i8=np.array([-1, 0, 1], np.int8),
        u8=np.array([0, 255], np.uint8),
        b=np.array([True, False, True]),
        scalar=np.array(3.5, np.float32),
        empty=np.zeros((0, 5), np.float32),
    )


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy])
def test_round_trip_every_dtype_and_plain_values(tmp_path, writer):
    tensors = _all_dtypes()
    obj = {"t": tensors, "list": [1, -2, 2**40, -(2**70), 2.5, "s", None, True, False, (1, 2, 3, 4), ()],
           "nested": {"a": [{"b": (np.arange(3, dtype=np.int64),)}]}}
    path = writer(tmp_path / "f.pth", obj)
    got = read_torch_file(path).obj
    for k, v in tensors.items():
        assert got["t"][k].dtype == v.dtype and got["t"][k].shape == v.shape and np.array_equal(got["t"][k], v), k
    assert got["list"] == obj["list"]
    assert np.array_equal(got["nested"]["a"][0]["b"][0], np.arange(3))


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy])
def test_views_strides_offsets_devices_bfloat16(tmp_path, writer):
    base = np.arange(40, dtype=np.float32)
    bits = np.array([0x3F80, 0xC000, 0x4049], np.uint16)  # bfloat16 1, -2, 3.140625
    obj = {
        "transposed": TorchTensor(base, (3, 4), (1, 3), offset=2),
        "block": TorchTensor(base, (2, 2), (10, 1), offset=5, location="cuda:0"),
        "broadcast_row": TorchTensor(base, (2, 3), (0, 1), offset=1),
        "scalar_view": TorchTensor(base, (), (), offset=39, location="cuda:1"),
        "bf16": TorchTensor(bits, (3,), storage_type="BFloat16Storage"),
    }
    tf = read_torch_file(writer(tmp_path / "v.pth", obj))
    got = tf.obj
    strided = np.lib.stride_tricks.as_strided
    assert np.array_equal(got["transposed"], strided(base[2:], (3, 4), (4, 12)))
    assert np.array_equal(got["block"], [[5, 6], [15, 16]])
    assert np.array_equal(got["broadcast_row"], [[1, 2, 3], [1, 2, 3]])
    assert got["scalar_view"].shape == () and float(got["scalar_view"]) == 39
    assert got["bf16"].dtype == np.float32 and got["bf16"].tolist() == [1.0, -2.0, 3.140625]
    assert tf.storages == 2  # the four views share one storage
    assert set(tf.devices) == {"cpu", "cuda:0", "cuda:1"}


def test_any_archive_name_and_records(tmp_path):
    path = write_torch_zip(tmp_path / "m.pth", {"x": np.ones(3, np.float32)}, archive_name="model_best")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        for info in zf.infolist():  # 64-byte aligned data, like torch's writer
            if info.filename.startswith("model_best/data/"):
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    head = f.read(30)
                n, m = struct.unpack("<HH", head[26:30])
                assert (info.header_offset + 30 + n + m) % 64 == 0
    assert names[0] == "model_best/data.pkl"
    assert {"model_best/byteorder", "model_best/version", "model_best/data/0"} <= set(names)
    assert read_torch_file(path).archive_name == "model_best"


def test_writer_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.pth"
    path.write_bytes(b"old content")

    def boom(f, records, alignment=64):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tw, "_write_aligned_zip", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_torch_zip(path, {"x": np.ones(2, np.float32)})
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pth"]


def test_writer_refuses_unsupported_values(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write a set"):
        write_torch_zip(tmp_path / "x.pth", {"s": {1, 2}})
    with pytest.raises(CheckpointError, match="complex"):
        write_torch_zip(tmp_path / "x.pth", {"c": np.ones(2, np.complex64)})
    assert not (tmp_path / "x.pth").exists()




def test_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "keep.pth"
    path.write_bytes(b"old content")

    def full_disk(f, records, alignment=64):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tw, "_write_aligned_zip", full_disk)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: cannot write file (No space left on device)")):
        write_torch_zip(path, {"x": np.ones(2, np.float32)})
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pth"]


def test_writer_rejects_a_bad_archive_name(tmp_path):
    for name in ("", "a/b"):
        with pytest.raises(CheckpointError, match="archive_name must be a non-empty name without '/'"):
            write_torch_zip(tmp_path / "x.pth", {}, archive_name=name)
    assert list(tmp_path.iterdir()) == []


def test_pickle_is_protocol_2_with_torch_persistent_ids():
    pkl, storages = torch_pickle_bytes({"w": np.arange(3, dtype=np.float32)})
    assert pkl[:2] == b"\x80\x02" and pkl[-1:] == b"."
    assert b"ctorch._utils\n_rebuild_tensor_v2\n" in pkl and b"ctorch\nFloatStorage\n" in pkl
    assert storages == [("0", "FloatStorage", np.arange(3, dtype="<f4").tobytes())]


# --------------------------------------------------------------------------- torch.load(weights_only=True)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy])
def test_torch_loads_what_we_write(tmp_path, writer):
    tensors = _all_dtypes()
    obj = {"t": tensors, "list": [1, -2, 2**40, -(2**70), 2.5, "s", None, True, False, (1, 2, 3, 4), ()],
           "nested": {"a": [{"b": (np.arange(3, dtype=np.int64),)}]}, "od": OrderedDict(z=1, a=2)}
    path = writer(tmp_path / "f.pth", obj)
    got = torch.load(path, weights_only=True)
    assert type(got["t"]) is OrderedDict and list(got["t"]) == list(tensors)
    for k, v in tensors.items():
        t = got["t"][k]
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu", k
        a = t.numpy()
        assert a.dtype == v.dtype and a.shape == v.shape and a.tobytes() == v.tobytes(), k
    assert got["list"] == obj["list"]
    assert torch.equal(got["nested"]["a"][0]["b"][0], torch.arange(3))
    assert type(got["od"]) is OrderedDict and list(got["od"].items()) == [("z", 1), ("a", 2)]


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy])
def test_torch_loads_views_strides_offsets_devices_bfloat16(tmp_path, writer):
    base = np.arange(40, dtype=np.float32)
    bits = np.array([0x3F80, 0xC000, 0x4049], np.uint16)  # bfloat16 1, -2, 3.140625
    obj = {
        "transposed": TorchTensor(base, (3, 4), (1, 3), offset=2),
        "block": TorchTensor(base, (2, 2), (10, 1), offset=5, location="cuda:0"),
        "broadcast_row": TorchTensor(base, (2, 3), (0, 1), offset=1),
        "scalar_view": TorchTensor(base, (), (), offset=39),
        "bf16": TorchTensor(bits, (3,), storage_type="BFloat16Storage"),
    }
    path = writer(tmp_path / "v.pth", obj)
    got = torch.load(path, weights_only=True, map_location="cpu")  # 'cuda:0' is only a tag here
    strided = np.lib.stride_tricks.as_strided
    assert np.array_equal(got["transposed"].numpy(), strided(base[2:], (3, 4), (4, 12)))
    assert got["transposed"].stride() == (1, 3) and got["transposed"].storage_offset() == 2
    assert got["block"].tolist() == [[5, 6], [15, 16]]
    assert got["broadcast_row"].tolist() == [[1, 2, 3], [1, 2, 3]]
    assert got["scalar_view"].shape == () and float(got["scalar_view"]) == 39
    assert got["bf16"].dtype == torch.bfloat16 and got["bf16"].float().tolist() == [1.0, -2.0, 3.140625]
    ptrs = {k: got[k].untyped_storage().data_ptr() for k in ("transposed", "block", "broadcast_row", "scalar_view")}
    assert len(set(ptrs.values())) == 1  # one shared storage, as written
    assert got["transposed"].untyped_storage().nbytes() == base.nbytes
    # our reader and torch agree on every value
    ours = read_torch_file(path).obj
    for k, t in got.items():
        assert ours[k].tobytes() == np.ascontiguousarray(_as_numpy(t)).tobytes(), k


def test_torch_loads_every_record_of_the_zip_layout(tmp_path):
    path = write_torch_zip(tmp_path / "m.pth", {"x": np.ones(3, np.float32)}, archive_name="model_best")
    with zipfile.ZipFile(path) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    assert records["model_best/byteorder"] == b"little" and records["model_best/version"] == b"3\n"
    assert records["model_best/.format_version"] == b"1" and records["model_best/.storage_alignment"] == b"64"
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))

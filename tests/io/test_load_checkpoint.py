"""Tests of sttn_sim.io (the package's entry points): sniff_format and load_checkpoint
choose the reader by content, never by file name, and never unpickle anything."""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sttn_sim
from sttn_sim.errors import CheckpointError
from sttn_sim.io import load_checkpoint, load_official, save_model, save_official, sniff_format
from sttn_sim.synthetic import synthetic_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def mlp():
    return synthetic_model("ternary_mlp", seed=5, hidden=(32, 16))


def test_public_entry_points_are_re_exported():
    for name in ("load_checkpoint", "save_model", "load_official", "save_official", "load_qonnx"):
        assert getattr(sttn_sim, name) is getattr(sttn_sim.io, name)
    assert set(sttn_sim.io.__all__) == {"load_checkpoint", "save_model", "sniff_format", "load_official",
                                        "save_official", "load_qonnx"}
    assert load_official is sttn_sim.io.official.load_official and save_official is sttn_sim.io.official.save_official


# --------------------------------------------------------------------------- PyTorch files: never unpickled


class _Payload:
    """Unpickling this creates ``marker`` (the proof that a pickle ran)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bytes(marker: Path, protocol: int) -> bytes:
    return pickle.dumps({"state_dict": _Payload(marker)}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_payload_is_live(tmp_path, protocol):
    """Sanity check of the test itself: the payload really runs when unpickled."""
    marker = tmp_path / "ran"
    pickle.loads(_pickle_bytes(marker, protocol))["state_dict"].close()
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_pickle_is_refused_without_unpickling(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth.tar"
    path.write_bytes(_pickle_bytes(marker, protocol))
    assert path.read_bytes()[:2] == bytes([0x80, protocol])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "PyTorch checkpoint" in msg and "pytorch-legacy" in msg
    assert not marker.exists()


def test_zip_checkpoint_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle_bytes(marker, 2))
        z.writestr("archive/version", "3\n")
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "PyTorch checkpoint" in msg and "pytorch-zip" in msg
    assert not marker.exists()


def test_file_name_does_not_decide_the_reader(tmp_path, mlp):
    """A safetensors model named .pth loads; a pickle named .safetensors is refused."""
    good = save_model(mlp, tmp_path / "model.pth")
    loaded = load_checkpoint(good)
    assert loaded.layer_names == mlp.layer_names
    assert all(np.array_equal(loaded[l.name].params[k], v) for l in mlp for k, v in l.params.items())
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_pickle_bytes(marker, 2))
    with pytest.raises(CheckpointError, match="PyTorch checkpoint"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_official_fixture_goes_to_the_official_reader():
    model = load_checkpoint(FIXTURES / "sttn_bwx2_zip.pth.tar", input_size=32)
    assert model.form == "latent" and model.metadata["official_arch"] == "resnet18_bwx2"
    assert model.input_shape == (3, 32, 32)


def test_legacy_tar_format_is_refused(tmp_path):
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x80\x02N."))
    assert sniff_format(path) == "pytorch-tar"
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: PyTorch checkpoint (pytorch-tar): the very old "
                                                        "tar-based PyTorch format is not supported")):
        load_checkpoint(path)


# --------------------------------------------------------------------------- sniff_format


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"PK\x03\x04" + b"\x00" * 30, "pytorch-zip"),
        (b"\x80\x02}q\x00.", "pytorch-legacy"),
        (b"\x80\x05\x95", "pytorch-legacy"),
        (b"\x80\x01", "unknown"),   # protocol 1 never starts like this; not a torch file
        (b"\x80\x06", "unknown"),
        (b"\x80", "unknown"),
        (b"", "unknown"),
        (b"hello world, just text", "unknown"),
        (b"PK\x05\x06" + b"\x00" * 18, "unknown"),  # an empty zip is not a checkpoint
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ", "safetensors"),
        (b"\x80\x02\x00\x00\x00\x00\x00\x00{" + b" " * 639, "safetensors"),  # a header size starting 0x80 0x02
    ],
)
def test_sniff_format_bytes(tmp_path, content, kind):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert sniff_format(path) == kind


def test_sniff_format_real_files(tmp_path, mlp):
    st = save_model(mlp, tmp_path / "m.safetensors")
    assert sniff_format(st) == "safetensors"
    z = tmp_path / "z.pth"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("archive/data.pkl", b"x")
    assert sniff_format(z) == "pytorch-zip"
    assert sniff_format(FIXTURES / "sttn_bwx2_legacy.pth.tar") == "pytorch-legacy"
    assert sniff_format(FIXTURES / "sttn_ter_zip.pth") == "pytorch-zip"


@pytest.mark.parametrize("content", [b"", b"hello", b"\x00" * 64])
def test_unknown_file_is_refused(tmp_path, content):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a recognised checkpoint")):
        load_checkpoint(path)


@pytest.mark.parametrize("func", [load_checkpoint, sniff_format])
def test_directory_and_missing_file(tmp_path, func):
    directory = tmp_path / "adir"
    directory.mkdir()
    with pytest.raises(CheckpointError, match=re.escape(f"{directory}: cannot be read")):
        func(directory)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(f"{missing}: cannot be read")):
        func(missing)

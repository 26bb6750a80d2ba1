"""Tests of sttn_sim.io.torch_reader: the restricted PyTorch checkpoint reader.

Fixtures in tests/fixtures/ were written by real PyTorch (see make_official_fixtures.py);
the last section writes state dicts with ``torch.save`` (PyTorch is a test dependency)
and compares the reader's arrays with ``torch.load(weights_only=True)`` of the same
files.  Nothing here ever unpickles a file the test did not make itself.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import shutil
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sttn_sim.io.torch_reader as tr
from sttn_sim.errors import CheckpointError, SttnError
from sttn_sim.graph import Model
from sttn_sim.io import load_checkpoint
from sttn_sim.io.torch_reader import ALLOWED_GLOBALS, read_torch_file, scan_pickle
from sttn_sim.io.torch_writer import TorchTensor, torch_pickle_bytes, write_torch_zip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZIP = FIXTURES / "sttn_bwx2_zip.pth.tar"
LEGACY = FIXTURES / "sttn_bwx2_legacy.pth.tar"
TER = FIXTURES / "sttn_ter_zip.pth"


# --------------------------------------------------------------------------- real PyTorch files


def test_fixture_sizes_are_small():
    """The checkpoint fixtures (the image fixtures beside them are another test's)."""
    total = sum(p.stat().st_size for p in (ZIP, LEGACY, TER))
    assert total < 300_000


def test_zip_fixture_contents():
    tf = read_torch_file(ZIP)
    assert tf.container == "pytorch-zip"
    assert tf.archive_name == "sttn_bwx2_zip.pth"  # torch names the folder after the file, not 'archive'
    assert tf.version == "3" and tf.byteorder == "little"
    assert set(tf.devices) == {"cpu", "cuda:0"}
    obj = tf.obj
    assert set(obj) == {"epoch", "arch", "state_dict", "best_prec1", "optimizer"}
    assert obj["epoch"] == 42 and obj["arch"] == "resnet18_bwx2"
    best = obj["best_prec1"]
    assert isinstance(best, np.ndarray) and best.shape == () and best.dtype == np.float32 and float(best) == 61.25
    sd = obj["state_dict"]
    assert all(k.startswith("module.") for k in sd)
    assert sd["module.features.4.conv1_1.weight"].dtype == np.float32
    assert sd["module.features.4.conv1_1.weight"].shape == (1, 1, 3, 3)
    assert sd["module.features.1.num_batches_tracked"].dtype == np.int64
    assert sd["module.features.1.num_batches_tracked"].shape == ()
    opt = obj["optimizer"]
    assert set(opt) == {"state", "param_groups"}
    assert all("momentum_buffer" in s and isinstance(s["momentum_buffer"], np.ndarray) for s in opt["state"].values())
    assert opt["param_groups"][0]["momentum"] == 0.9
    assert tf.tensors == tf.storages  # every tensor has its own storage in a state_dict


def test_legacy_fixture_equals_zip_fixture():
    z, leg = read_torch_file(ZIP), read_torch_file(LEGACY)
    assert leg.container == "pytorch-legacy" and set(leg.devices) == {"cpu", "cuda:0"}

    def same(a, b):
        if isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        else:
            assert a == b

    same(z.obj, leg.obj)


def test_arrays_are_owned_writable_native():
    sd = read_torch_file(LEGACY).obj["state_dict"]
    a = sd["module.fc.weight"]
    assert a.flags.owndata and a.flags.writeable and a.flags.c_contiguous and a.dtype.isnative


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_python_values_through_the_allow_list(tmp_path, protocol):
    """bytes (protocol 2: _codecs.encode), bytearray, set, frozenset, complex, OrderedDict."""
    value = {"bytes": b"\x00\xffabc", "empty": b"", "ba": bytearray(b"xy"), "set": {1, 2}, "fs": frozenset({"a"}),
             "c": 1 + 2j, "od": OrderedDict(b=1, a=2), "t": (1, (2, [3])), "f": -0.0, "big": 10**30}
    path = _zip_with_pickle(tmp_path / "plain.pth", pickle.dumps(value, protocol=protocol))
    got = read_torch_file(path).obj
    assert got["bytes"] == b"\x00\xffabc" and got["empty"] == b"" and got["ba"] == b"xy"
    assert got["set"] == {1, 2} and got["fs"] == frozenset({"a"}) and got["c"] == 1 + 2j
    assert list(got["od"].items()) == [("b", 1), ("a", 2)] and type(got["od"]) is dict
    assert got["t"] == (1, (2, [3])) and got["big"] == 10**30


def test_absurd_dimension_next_to_a_zero(tmp_path):
    path = _zip_with_pickle(tmp_path / "dims.pth", _tensor_pickle(4, (0, 2**62), (1, 1)), {"data/0": b"\x00" * 16})
    with pytest.raises(CheckpointError, match="absurdly large"):
        read_torch_file(path)


def test_big_endian_archive(tmp_path):
    path = tmp_path / "be.pth"
    pkl, storages = torch_pickle_bytes({"w": np.array([1.5, -2.0, 3.25], np.float32), "i": np.array([258], np.int16)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("be/data.pkl", pkl)
        zf.writestr("be/byteorder", "big")
        for key, type_name, data in storages:
            dt = {"FloatStorage": "f4", "ShortStorage": "i2"}[type_name]
            zf.writestr(f"be/data/{key}", np.frombuffer(data, "<" + dt).astype(">" + dt).tobytes())
    tf = read_torch_file(path)
    assert tf.byteorder == "big"
    assert tf.obj["w"].tolist() == [1.5, -2.0, 3.25] and tf.obj["w"].dtype.isnative
    assert tf.obj["i"].tolist() == [258]


def test_deflated_archive_is_read(tmp_path):
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    a, b = read_torch_file(ZIP).obj["state_dict"], read_torch_file(path).obj["state_dict"]
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- malicious pickles


class _Payload:
    """Unpickling this runs os.system (creating ``marker``): the attack under test."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path: Path, pkl: bytes, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/{name}", data)
    return path


def _legacy_with_pickle(path: Path, pkl: bytes) -> Path:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2)
    path.write_bytes(magic + sys_info + pkl + pickle.dumps([], protocol=2))
    return path


def test_payload_is_live(tmp_path):
    """The test's own payload really runs under plain pickle (so the refusals below mean something)."""
    marker = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("container", ["zip", "legacy", "bare"])
def test_reduce_payload_is_refused_and_never_runs(tmp_path, protocol, container):
    marker = tmp_path / "pwned"
    pkl = pickle.dumps({"state_dict": OrderedDict(w=_Payload(marker))}, protocol=protocol)
    path = tmp_path / "evil.pth"
    if container == "zip":
        _zip_with_pickle(path, pkl)
    elif container == "legacy":
        _legacy_with_pickle(path, pkl)
    else:  # a bare pickle stream, as from pickle.dump
        path.write_bytes(pkl)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "posix.system" in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    "pkl, named",
    [
        (b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.", "builtins.eval"),
        (b"\x80\x02c__builtin__\neval\nX\x03\x00\x00\x001+1\x85R.", "__builtin__.eval"),
        (b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94.", "builtins.exec"),  # STACK_GLOBAL
        (b"\x80\x02ctorch\nload\n.", "torch.load"),
        (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n.", "numpy.core.multiarray._reconstruct"),
        (b"\x80\x02ccopyreg\n_reconstructor\n.", "copyreg._reconstructor"),
        (b"\x80\x02ctorch.nn.modules.conv\nConv2d\n.", "torch.nn.modules.conv.Conv2d"),
        (b"\x80\x02ctorch\nComplexFloatStorage\n.", "torch.ComplexFloatStorage"),
        (b"\x80\x02cos\nsystem\n\xff\xff garbage after the refused global", "os.system"),
    ],
)
def test_disallowed_globals_are_named(tmp_path, pkl, named):
    path = _zip_with_pickle(tmp_path / "g.pth", pkl)
    with pytest.raises(CheckpointError, match=f"refused to load global '{named}'"):
        read_torch_file(path)


@pytest.mark.parametrize(
    "pkl, reason",
    [
        (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
        (b"(ibuiltins\nlist\n.", "INST"),
        (b"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),
        (b"\x80\x02\x82\x01.", "EXT1"),
        (b"Pabc\n.", "PERSID"),
        (b"\x80\x02N\x8a\x01\x00r\xff\xff\xff\x7f.", "memo index"),
        (b"\x80\x02Nq\x00j\xff\xff\x00\x00.", "memo index"),
        # BUILD on an allow-listed callable (would set attributes on our function)
        (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00__defaults__Nsb.", "BUILD"),
        # BUILD on an OrderedDict with state other than _metadata
        (b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00xNsb.", "BUILD on an OrderedDict"),
        # BUILD on a plain list
        (b"\x80\x02]}X\x01\x00\x00\x00xNsb.", "malformed"),
        # allow-listed callables with arguments they do not accept
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "_codecs.encode"),
        (b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85R.", "bytearray"),
        (b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\x10\xa5\xd4\xe8\x85R.", "builtins.bytes is allowed only"),
        (b"\x80\x02ctorch\nFloatStorage\n)R.", "calling torch.FloatStorage"),
        (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)))\x89NtR.", "must be a storage"),
        (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n.", "callable torch._utils._rebuild_tensor_v2"),
        # persistent ids that are not torch storages
        (b"\x80\x02(X\x06\x00\x00\x00moduleNNNtQ.", "persistent id of type 'module'"),
        (b"\x80\x02X\x03\x00\x00\x00abcQ.", "not a torch storage id"),
        (b"\x80\x02(X\x07\x00\x00\x00storageNX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.", "not a torch storage type"),
        (b"\x80\x02(X\x07\x00\x00\x00storagectorch.storage\nTypedStorage\nX\x01\x00\x00\x000"
         b"X\x03\x00\x00\x00cpuK\x01tQ.", "carries no dtype"),
        (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff\xfftQ.",
         "non-negative"),
        (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x009X\x03\x00\x00\x00cpuK\x01tQ.",
         "has no entry 'archive/data/9'"),
        (b"\x80\x02N", "corrupt or truncated"),
        (b"\x80\x02N.garbage", "bytes after the end of the pickle"),
        (b"\x80\x07N.", "protocol 7"),
        (b"\x80\x02" + b"]" * 200 + b"a" * 199 + b".", "nest deeper"),
    ],
)
def test_malformed_or_hostile_pickles(tmp_path, pkl, reason):
    path = _zip_with_pickle(tmp_path / "m.pth", pkl)
    with pytest.raises(CheckpointError, match=str(tmp_path)) as info:
        read_torch_file(path)
    assert reason in str(info.value)


def test_build_refusal_leaves_allow_listed_functions_untouched(tmp_path):
    before = tr._rebuild_tensor_v2.__defaults__
    path = _zip_with_pickle(tmp_path / "b.pth",
                            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(N}X\x0c\x00\x00\x00__defaults__Ns\x86b.")
    with pytest.raises(CheckpointError):
        read_torch_file(path)
    assert tr._rebuild_tensor_v2.__defaults__ == before


def test_scan_pickle_rejects_before_unpickling():
    with pytest.raises(Exception, match="posix.system"):
        scan_pickle(pickle.dumps(_Payload("/nonexistent/x"), protocol=2))
    assert "collections.OrderedDict" in ALLOWED_GLOBALS and "torch._utils._rebuild_tensor_v2" in ALLOWED_GLOBALS
    assert not any(g.startswith(("os.", "posix.", "subprocess.")) or g.endswith((".eval", ".exec", ".getattr"))
                   for g in ALLOWED_GLOBALS)


# --------------------------------------------------------------------------- sizes, truncation, corruption


def _rewrite_zip(src: Path, dst: Path, change) -> Path:
    with zipfile.ZipFile(src) as zf:
        records = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in records:
            result = change(name, data)
            if result is not None:
                zf.writestr(name, result)
    return dst


def test_storage_size_mismatch_in_zip(tmp_path):
    path = _rewrite_zip(ZIP, tmp_path / "short.pth",
                        lambda n, d: d[:-4] if n.endswith("/data/0") else d)
    with pytest.raises(CheckpointError, match=r"storage '0': entry 'sttn_bwx2_zip.pth/data/0' holds 584 bytes but "
                                              r"the pickle declares torch.FloatStorage of 588 bytes"):
        read_torch_file(path)


def test_missing_storage_entry(tmp_path):
    path = _rewrite_zip(ZIP, tmp_path / "missing.pth", lambda n, d: None if n.endswith("/data/3") else d)
    with pytest.raises(CheckpointError, match="storage '3'.*has no entry"):
        read_torch_file(path)


def _tensor_pickle(numel: int, size: tuple, stride: tuple, legacy=False) -> bytes:
    w = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" \
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    w += b"\x8a\x08" + struct.pack("<q", numel) + (b"N" if legacy else b"") + b"tQK\x00"
    w += b"(" + b"".join(b"\x8a\x08" + struct.pack("<q", d) for d in size) + b"t"
    w += b"(" + b"".join(b"\x8a\x08" + struct.pack("<q", d) for d in stride) + b"t"
    return w + b"\x89NtRs."


def _bounded(fn):
    """Run fn, returning the exception it raises and the peak memory (bytes) it allocated."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned for inspection
        result = exc
    else:
        result = None
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak


def test_absurd_declared_storage_size_is_refused_unallocated_zip(tmp_path):
    path = _zip_with_pickle(tmp_path / "huge.pth", _tensor_pickle(10**12, (10**12,), (1,)),
                            {"data/0": b"\x00" * 16})
    exc, peak = _bounded(lambda: read_torch_file(path))
    assert isinstance(exc, CheckpointError) and "holds 16 bytes but the pickle declares" in str(exc)
    assert peak < 20 * 2**20  # nothing near the declared size was allocated


def test_absurd_declared_storage_size_is_refused_unallocated_legacy(tmp_path):
    path = tmp_path / "huge_legacy.pth"
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"little_endian": True}, protocol=2)
    path.write_bytes(magic + sys_info + _tensor_pickle(10**12, (10**12,), (1,), legacy=True)
                     + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 10**12) + b"\x00" * 64)
    exc, peak = _bounded(lambda: read_torch_file(path))
    assert isinstance(exc, CheckpointError) and "storage '0' needs 4000000000000 bytes" in str(exc)
    assert "truncated" in str(exc)
    assert peak < 20 * 2**20  # nothing near the declared size was allocated


def test_tensor_larger_than_its_storage_is_refused_unallocated(tmp_path):
    path = _zip_with_pickle(tmp_path / "big_view.pth", _tensor_pickle(4, (10**6, 10**6), (1, 1)),
                            {"data/0": b"\x00" * 16})
    exc, peak = _bounded(lambda: read_torch_file(path))
    assert isinstance(exc, CheckpointError)
    assert "reaches element 1999998, but the storage holds 4 elements" in str(exc)
    assert peak < 20 * 2**20  # nothing near the declared size was allocated


def test_many_views_of_one_storage_hit_the_budget(tmp_path):
    base = np.zeros(200_000, np.float32)  # 800 KB storage
    views = [TorchTensor(base, (base.size - k,), offset=k) for k in range(40)]  # 40 x 800 KB = 32 MB of copies
    path = write_torch_zip(tmp_path / "amplify.pth", {"views": views})
    with pytest.raises(CheckpointError, match="more than the file can justify"):
        read_torch_file(path)


def test_legacy_record_count_mismatch(tmp_path):
    data = bytearray(LEGACY.read_bytes())
    tf = read_torch_file(LEGACY)
    # the first storage record follows the key-list pickle: find it by its element count
    sd = tf.obj["state_dict"]
    first = next(iter(sd.values()))
    # corrupt the size field of the storage records by scanning for the 8-byte counts
    idx = data.find(struct.pack("<q", first.size) + first.astype("<f4").tobytes()[:8])
    assert idx > 0
    data[idx: idx + 8] = struct.pack("<q", first.size + 1)
    path = tmp_path / "count.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"the file records \d+ elements but the pickle declares \d+"):
        read_torch_file(path)


@pytest.mark.parametrize("src", [ZIP, LEGACY, TER])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.7, 0.999])
def test_truncated_files(tmp_path, src, fraction):
    data = src.read_bytes()
    path = tmp_path / src.name
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_crc_corruption_is_caught(tmp_path):
    data = bytearray(ZIP.read_bytes())
    with zipfile.ZipFile(ZIP) as zf:
        info = zf.getinfo("sttn_bwx2_zip.pth/data/0")
    # flip a byte inside the first storage's data (after its local header)
    n, m = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + n + m + 3] ^= 0x55
    path = tmp_path / "crc.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="data/0.*cannot be read.*CRC"):
        read_torch_file(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda n, d: b"middle" if n.endswith("/byteorder") else d, "expected 'little' or 'big'"),
        (lambda n, d: b"three" if n.endswith("/version") else d, "expected a version number"),
        (lambda n, d: None if n.endswith("/data.pkl") else d, "not a PyTorch checkpoint"),
    ],
)
def test_bad_records(tmp_path, change, message):
    path = _rewrite_zip(ZIP, tmp_path / "rec.pth", change)
    with pytest.raises(CheckpointError, match=message):
        read_torch_file(path)


def test_torchscript_and_npz_archives_are_refused(tmp_path):
    ts = tmp_path / "scripted.pt"
    with zipfile.ZipFile(ts, "w") as zf:
        zf.writestr("scripted/constants.pkl", b"\x80\x02).")
        zf.writestr("scripted/code/__torch__.py", "")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_checkpoint(ts)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(npz)


def test_legacy_bad_magic_number(tmp_path):
    path = tmp_path / "nomagic.pth"
    path.write_bytes(pickle.dumps(12345, protocol=2) + pickle.dumps(1001, protocol=2))
    with pytest.raises(CheckpointError, match="expected the magic number 0x1950a86a20f9469cfc6c"):
        read_torch_file(path)


# --------------------------------------------------------------------------- fuzz


def _outcome(path: Path):
    """load_checkpoint either returns a Model or raises the project's own error."""
    try:
        result = load_checkpoint(path, input_size=32)
    except SttnError:
        return "error"
    assert isinstance(result, Model)
    return "model"


_FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pickle_region():
    """Byte range of the main pickle in the legacy fixture (where mutations matter most)."""
    data = LEGACY.read_bytes()
    stream = io.BytesIO(data)
    for _ in range(3):
        list(pickletools.genops(stream))
    start = stream.tell()
    list(pickletools.genops(stream))
    return data, start, stream.tell()


@_FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       st.booleans())
def test_fuzz_legacy_byte_mutations(tmp_path_factory, pickle_region, mutations, in_pickle):
    data, start, end = pickle_region
    buf = bytearray(data)
    lo, hi = (start, end) if in_pickle else (0, len(data))
    for where, value in mutations:
        buf[lo + int(where * (hi - lo))] = value
    path = tmp_path_factory.mktemp("fuzz") / "m.pth"
    path.write_bytes(bytes(buf))
    _outcome(path)


@pytest.fixture(scope="module")
def zip_records():
    with zipfile.ZipFile(ZIP) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


@_FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       st.sampled_from(["raw", "pickle"]))
def test_fuzz_zip_mutations(tmp_path_factory, zip_records, mutations, target):
    """``raw``: bytes of the archive itself (headers, directory, data, caught by CRCs);
    ``pickle``: bytes of data.pkl, re-zipped with valid CRCs so the pickle reader is hit."""
    path = tmp_path_factory.mktemp("fuzz") / "m.pth"
    if target == "raw":
        buf = bytearray(ZIP.read_bytes())
        for where, value in mutations:
            buf[int(where * len(buf))] = value
        path.write_bytes(bytes(buf))
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in zip_records:
                if name.endswith("/data.pkl"):
                    buf = bytearray(data)
                    for where, value in mutations:
                        buf[int(where * len(buf))] = value
                    data = bytes(buf)
                zf.writestr(name, data)
    _outcome(path)


@_FUZZ
@given(st.integers(0, 2000), st.binary(min_size=0, max_size=16))
def test_fuzz_pickle_truncation_and_insertion(tmp_path_factory, pickle_region, cut, junk):
    data, start, end = pickle_region
    pos = start + min(cut, end - start)
    path = tmp_path_factory.mktemp("fuzz") / "m.pth"
    path.write_bytes(data[:pos] + junk + data[pos:])
    _outcome(path)


def test_unmodified_fixtures_pass_the_fuzz_oracle(tmp_path):
    for src in (ZIP, LEGACY, TER):
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        assert _outcome(dst) == "model"


# --------------------------------------------------------------------------- against PyTorch's own load


def _torch_checkpoint() -> dict:
    """A checkpoint as training code saves it: a module's state_dict (an OrderedDict with
    ``_metadata``, int64 ``num_batches_tracked``), a Parameter, every storage dtype,
    views sharing one storage, and plain values."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.PReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(16, 5))
    net(torch.randn(2, 3, 4, 4))  # training-mode BN: running statistics and num_batches_tracked change
    base = torch.arange(40, dtype=torch.float32) / 3
    return {
        "state_dict": net.state_dict(),
        "epoch": 3,
        "best_prec1": torch.tensor(61.25),
        "param": torch.nn.Parameter(torch.randn(2, 3)),
        "dtypes": {
            "f64": torch.randn(3, dtype=torch.float64),
            "f16": torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16),
            "bf16": torch.tensor([1.0, -2.0, 3.140625, 1e30], dtype=torch.bfloat16),
            "i64": torch.tensor([-(2**40), 7]), "i32": torch.tensor([-5, 6], dtype=torch.int32),
            "i16": torch.tensor([-300, 300], dtype=torch.int16), "i8": torch.tensor([-1, 0, 1], dtype=torch.int8),
            "u8": torch.tensor([0, 255], dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
            "nan": torch.tensor([float("nan"), float("inf"), -0.0]),
        },
        "views": {"base": base, "transposed": base.view(5, 8).t(), "block": base[3:11].view(2, 4),
                  "strided": base[::3], "scalar": base[7]},
        "shapes": {"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "ones": torch.ones(1, 1, 1)},
        "plain": [1, 2.5, "s", None, True, (1, (2, "x"))],
    }


def _torch_to_numpy(value):
    if value.dtype == torch.bfloat16:
        return value.float().numpy()  # exact: bfloat16 is the upper half of a float32
    return value.detach().numpy()


def _assert_same(ours, theirs, where="obj"):
    """Our reader's object against torch.load's, exactly (dtypes, shapes, bits, order)."""
    if isinstance(theirs, torch.Tensor):
        expected = _torch_to_numpy(theirs)
        assert isinstance(ours, np.ndarray), where
        assert ours.dtype == expected.dtype and ours.shape == expected.shape, (where, ours.dtype, expected.dtype)
        assert ours.tobytes() == np.ascontiguousarray(expected).tobytes(), where
    elif isinstance(theirs, dict):
        assert type(ours) is dict and list(ours) == list(theirs), where
        for k in theirs:
            _assert_same(ours[k], theirs[k], f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs and type(ours) is type(theirs), where


def _unique_storages(obj) -> set[int]:
    if isinstance(obj, torch.Tensor):
        return {obj.untyped_storage().data_ptr()}
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return set().union(*(_unique_storages(v) for v in obj)) if obj else set()
    return set()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_files_written_by_torch_save_read_like_torch_load(tmp_path, zip_format):
    obj = _torch_checkpoint()
    path = tmp_path / "model.pth.tar"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    theirs = torch.load(path, weights_only=True)  # a file this test just wrote with torch
    tf = read_torch_file(path)
    assert tf.container == ("pytorch-zip" if zip_format else "pytorch-legacy")
    _assert_same(tf.obj, theirs)
    assert tf.devices == ("cpu",)
    assert tf.storages == len(_unique_storages(obj))  # the five views of `base` share one storage
    if zip_format:
        assert tf.archive_name == "model.pth" and tf.version == "3" and tf.byteorder == "little"


def test_torch_state_dict_of_the_official_model_loads(tmp_path):
    """torch.save of the fixture script's official model: our mapping gives PyTorch's logits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_official_fixtures", FIXTURES / "make_official_fixtures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(3)
    net = script.ResNet18STTN(merged=False)
    path = tmp_path / "fresh.pth"
    torch.save({"state_dict": net.state_dict(), "arch": "resnet18_bwx2", "epoch": 1}, path)
    model = load_checkpoint(path, input_size=32)
    theirs = torch.load(path, weights_only=True)["state_dict"]
    for layer in model:
        if layer.kind == "sttn_conv":
            np.testing.assert_array_equal(layer.params["weight1"], theirs[f"{layer.name}_1.weight"].numpy())
            np.testing.assert_array_equal(layer.params["weight2"], theirs[f"{layer.name}_2.weight"].numpy())
        elif layer.kind == "batchnorm":
            np.testing.assert_array_equal(layer.params["running_var"], theirs[f"{layer.name}.running_var"].numpy())
    assert model.metadata["epoch"] == 1 and model.metadata["module_prefix"] is False

"""Regression tests of the readers' hardening audit: untrusted files give a project error
(never a crash, a traceback or a blow-up of memory or time).

1. nesting: pickles nested 300,000 deep (a tuple chain hashed as a dict key or frozenset
   item overflowed the C stack: SIGSEGV) are refused by the opcode scan, before the
   unpickler runs; so is the one way around a depth measured at build time (growing a
   container after it was referenced from the memo);
2. tracebacks: numbers beyond float range in ``epoch`` / ``best_prec1``, a graph JSON
   nested 2000 deep, and the other inputs found on the way give a CheckpointError
   naming the file and key;
3. resources: a stride-0 stem of a 512-wide model in a 1.5 KiB file (the old reader built
   a 3 GB template), a deflated storage of 128 MiB zeros of which one element is used
   (inflated whole before: 2 x 128 MiB), a data.pkl that inflates 1000-fold, adversarial
   data.pkl of single-byte objects: refused (or read) with memory and time proportional
   to the file.

The crafted files that crashed or blew up the old reader are loaded in a child process
(``reader_child.py``) with an address-space limit, so a regression fails the test
instead of killing the run or the machine; the child also reports each load's peak of
traced memory (tracemalloc: NumPy, zlib and Python objects).
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim import synthetic_model
from sttn_sim.errors import CheckpointError
from sttn_sim.io import load_checkpoint, save_model
from sttn_sim.io.official import load_official
from sttn_sim.io.own_format import MAX_GRAPH_DEPTH, write_tensors
from sttn_sim.io.pickle_scan import MAX_DEPTH, MAX_STACK, ScanRefused
from sttn_sim.io.pickle_scan import scan_pickle as scan_opcodes
from sttn_sim.io.torch_reader import (
    INFLATE_RATIO,
    INFLATE_SLACK,
    MATERIALISE_SLACK,
    OBJECTS_PER_FILE_BYTE,
    OBJECTS_SLACK,
    PICKLE_RATIO,
    PICKLE_SLACK,
    read_torch_file,
    scan_pickle,
)
from sttn_sim.io.torch_writer import TorchTensor, write_torch_zip

_spec = importlib.util.spec_from_file_location("reader_child", Path(__file__).with_name("reader_child.py"))
reader_child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reader_child)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZIP = FIXTURES / "sttn_bwx2_zip.pth.tar"
MIB = 1 << 20
CHILD_LIMIT_MB = 512  # the child's address space above its start-up size: the old reader needed 1-3 GiB here
DEEP = 300_000
LEGACY_HEAD = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
SYS_INFO = pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2)
NO_KEYS = pickle.dumps([], protocol=2)


def _zip(records: dict[str, bytes], deflated: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    return out.getvalue()


def _tuple_chain(depth: int) -> bytes:
    """Pickle opcodes pushing a tuple nested ``depth`` deep: ``()`` then TUPLE1 ``depth`` times."""
    return b")" + b"\x85" * depth


# =========================================================================== 1. nesting (crashes)

_P2 = b"\x80\x02"
NESTING_CASES = {
    # name: (file bytes, what the message must say)
    "zip_tuple_chain": (_zip({"archive/data.pkl": _P2 + _tuple_chain(DEEP) + b"."}, deflated=True), "nest deeper"),
    "zip_mark_tuples": (_zip({"archive/data.pkl": _P2 + b"(" * DEEP + b"N" + b"t" * DEEP + b"."}, deflated=True),
                        "nest deeper"),
    "zip_tuple_chain_as_dict_key": (_zip({"archive/data.pkl": _P2 + b"}" + _tuple_chain(DEEP) + b"Ns."},
                                         deflated=True), "nest deeper"),
    "zip_tuple_chain_in_frozenset": (_zip({"archive/data.pkl": _P2 + b"cbuiltins\nfrozenset\n]" + _tuple_chain(DEEP)
                                           + b"a\x85R."}, deflated=True), "nest deeper"),
    "legacy_main_pickle": (LEGACY_HEAD + SYS_INFO + _P2 + b"}" + _tuple_chain(DEEP) + b"Ns." + NO_KEYS,
                           "nest deeper"),
    "legacy_sys_info_pickle": (LEGACY_HEAD + _P2 + b"}" + _tuple_chain(DEEP) + b"Ns." + pickle.dumps({}) + NO_KEYS,
                               "nest deeper"),
    "legacy_magic_pickle": (_P2 + b"}" + _tuple_chain(DEEP) + b"Ns.", "nest deeper"),
    # lists L0..Ln-1 in the memo, chained last to first: L[k].append(L[k-1]) after L[k] was referenced
    "zip_list_chain_grown_through_the_memo": (_zip({"archive/data.pkl": _P2 + b"".join(
        b"]r" + struct.pack("<I", k) + b"0" for k in range(2000)) + b"".join(
        b"j" + struct.pack("<I", k) + b"j" + struct.pack("<I", k - 1) + b"a0" for k in range(1999, 0, -1))
        + b"j" + struct.pack("<I", 1999) + b"."}), "after referencing it from the memo"),
}


@pytest.fixture(scope="module")
def nesting_outcomes(tmp_path_factory):
    """The outcome of each nesting case, all loaded by one child process."""
    folder = tmp_path_factory.mktemp("nesting")
    paths = {}
    for name, (data, _) in NESTING_CASES.items():
        paths[name] = folder / f"{name}.pth"
        paths[name].write_bytes(data)
    results, failure = reader_child.run_child(["files", *map(str, paths.values())], limit_mb=CHILD_LIMIT_MB)
    assert failure is None, failure
    return {name: results[str(path)] for name, path in paths.items()}, paths


@pytest.mark.slow  # (a child interpreter)
@pytest.mark.parametrize("name", list(NESTING_CASES))
def test_deep_nesting_is_a_checkpoint_error_not_a_crash(nesting_outcomes, name):
    outcomes, paths = nesting_outcomes
    outcome, detail = outcomes[name]
    assert outcome == "error" and detail["type"] == "CheckpointError", (outcome, detail)
    assert detail["message"].startswith(f"{paths[name]}: PyTorch checkpoint")
    assert NESTING_CASES[name][1] in detail["message"]


def test_nesting_files_are_small():
    """The audit's 0.6 KiB crash files (a deflated tuple chain of 300,000 levels)."""
    assert max(len(NESTING_CASES[name][0]) for name in NESTING_CASES if name.startswith("zip_tuple_chain")) < 1024


def _nested_list(depth: int):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_depth_limit_is_exact(protocol):
    """A list nested MAX_DEPTH deep passes the scan (and unpickles); one level more is refused."""
    ok = pickle.dumps(_nested_list(MAX_DEPTH), protocol=protocol)
    assert scan_pickle(ok) == len(ok)
    with pytest.raises(Exception, match=f"nest deeper than {MAX_DEPTH} levels"):
        scan_pickle(pickle.dumps(_nested_list(MAX_DEPTH + 1), protocol=protocol))


def test_open_marks_are_bounded():
    with pytest.raises(ScanRefused, match="nest deeper"):
        scan_opcodes(_P2 + b"(" * (MAX_DEPTH + 1) + b"N.")


def test_cycles_are_refused_by_the_scan():
    """A self-containing list is the only way to grow an object after nesting it."""
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(ScanRefused, match="after referencing it from the memo"):
        scan_opcodes(pickle.dumps(cyclic, protocol=2))


def test_stack_height_and_object_count_are_bounded():
    with pytest.raises(ScanRefused, match=f"more than {MAX_STACK} objects on the unpickler's stack"):
        scan_opcodes(_P2 + b"N" * (MAX_STACK + 1) + b".")
    with pytest.raises(ScanRefused, match="builds more than 10 objects"):
        scan_opcodes(_P2 + b"(" + b"K\x01" * 11 + b"l.", max_objects=10)
    assert scan_opcodes(_P2 + b"(" + b"K\x01" * 9 + b"l.", max_objects=10) == 23


def _depth(value) -> int:
    """Nesting depth of plain data, computed independently of the scan (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((max(_depth(k), _depth(v)) for k, v in value.items()), default=0)
    if isinstance(value, (list, tuple, set, frozenset)):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                     st.text(max_size=8), st.binary(max_size=8))
_hashables = st.recursive(_scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
                          max_leaves=6)
_plain = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(_hashables, inner, max_size=3) | st.frozensets(_hashables, max_size=3),
                      max_leaves=25)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_plain, st.integers(0, 5))
def test_scan_accepts_every_plain_pickle_and_measures_its_depth(value, protocol):
    """Whatever pickle.dumps writes for acyclic plain data passes the scan (whose stack
    simulation must end exactly at STOP); from protocol 4 on (sets by opcode, not by a
    call) the depth it measures is the data's depth, checked at the limit."""
    data = pickle.dumps(value, protocol=protocol)
    assert scan_pickle(data) == len(data)
    if protocol >= 4 and _depth(value) > 0:
        wrapped = value
        for _ in range(MAX_DEPTH - _depth(value)):
            wrapped = [wrapped]
        assert scan_pickle(pickle.dumps(wrapped, protocol=protocol)) > 0  # exactly MAX_DEPTH: accepted
        with pytest.raises(Exception, match="nest deeper"):
            scan_pickle(pickle.dumps([wrapped], protocol=protocol))


# =========================================================================== 2. tracebacks


@pytest.fixture(scope="module")
def training_obj():
    return read_torch_file(ZIP).obj


@pytest.mark.parametrize("key", ["epoch", "best_prec1"])
def test_number_beyond_float_range_names_file_and_key(tmp_path, training_obj, key):
    path = write_torch_zip(tmp_path / "big.pth", {**training_obj, key: 10**400})
    with pytest.raises(CheckpointError, match=rf"^{path}: key '{key}' holds 1000.*, a number beyond the float range"):
        load_checkpoint(path, input_size=32)


def test_huge_integer_key_names_the_file(tmp_path):
    """repr() of an integer of 5001 digits raises ValueError: the message must not need it."""
    path = tmp_path / "keys.pth"
    path.write_bytes(_zip({"archive/data.pkl": pickle.dumps({10**5000: 1, "other": 2}, protocol=2)}))
    with pytest.raises(CheckpointError, match=rf"^{path}: expected a dict with a 'state_dict' entry .* found <int>"):
        load_checkpoint(path)


def test_stem_bias_is_accepted(tmp_path, training_obj):
    """The stem conv may carry a bias (the official code has none): it used to raise KeyError."""
    state = OrderedDict(training_obj["state_dict"])
    state["module.features.0.bias"] = np.full(1, 0.5, np.float32)
    model = load_checkpoint(write_torch_zip(tmp_path / "bias.pth", {**training_obj, "state_dict": state}),
                            input_size=32)
    assert model["features.0"].params["bias"].tolist() == [0.5]


def _own_format_with_graph(path: Path, graph: str) -> Path:
    model = synthetic_model("plain_ternary_cnn", seed=0)
    tensors = {f"{layer.name}.{p}": v for layer in model.layers for p, v in layer.params.items()}
    write_tensors(path, tensors, {"format": "sttn_sim", "schema_version": "1", "graph": graph})
    return path


@pytest.mark.parametrize("graph, message", [
    ("[" * 2000, "nests too deeply"),
    ("[" * 500 + "]" * 500, f"more than {MAX_GRAPH_DEPTH} levels deep"),
    ('{"arch": ' + "1" * 5000 + "}", "is not valid JSON"),
])
def test_graph_json_errors_name_file_and_key(tmp_path, graph, message):
    path = _own_format_with_graph(tmp_path / "graph.safetensors", graph)
    with pytest.raises(CheckpointError, match=rf"^{path}: metadata key 'graph' .*{message}"):
        load_checkpoint(path)


def test_graph_nesting_at_the_limit_is_read(tmp_path):
    model = synthetic_model("plain_ternary_cnn", seed=0)
    deep = "x"
    for _ in range(MAX_GRAPH_DEPTH - 2):  # graph object -> metadata object -> 30 lists
        deep = [deep]
    path = save_model(model, tmp_path / "deep.safetensors", metadata={"deep": deep})
    assert load_checkpoint(path).metadata["deep"] == deep


# =========================================================================== 3. resources


def _stride0(shape) -> TorchTensor:
    """A tensor of ``shape`` whose every element is the one element of its storage."""
    return TorchTensor(np.zeros(1, np.float32), tuple(shape), stride=(0,) * len(shape))


def _stride0_stem_file() -> dict:
    """The audit's file: a 512-channel stem (width 8) as a stride-0 view, and little else."""
    return {"state_dict": {"module.features.0.weight": _stride0((512, 3, 7, 7)),
                           "module.fc.weight": _stride0((10, 4096)),
                           "module.features.4.conv1_1.weight": _stride0((512, 512, 3, 3))}}


def _stride0_all_keys_file() -> dict:
    """Every key of the width-8 layout, each a stride-0 view: the arrays alone would take 1.4 GB."""
    from sttn_sim.io.official import official_layout

    layout = official_layout(512, 3, 10, "bwx2")
    return {"state_dict": {f"module.{k}": _stride0(shape) for k, (_, _, shape) in layout.items()}}


def _deflated_storage_file(path: Path, nbytes: int, offsets: list[int]) -> Path:
    """A zip checkpoint whose one float storage holds ``nbytes`` zero bytes, deflated (streamed
    in, so the test never holds it), with a one-element tensor at each element offset."""
    numel = nbytes // 4
    body = b"\x80\x02}("
    for k, offset in enumerate(offsets):
        body += (b"X" + struct.pack("<I", len(f"t{k}")) + f"t{k}".encode() + b"ctorch._utils\n_rebuild_tensor_v2\n("
                 b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu\x8a\x08"
                 + struct.pack("<q", numel) + b"tQ\x8a\x08" + struct.pack("<q", offset) + b"K\x01\x85K\x01\x85\x89NtR")
    body += b"u."
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("archive/data.pkl", body)
        with zf.open("archive/data/0", "w", force_zip64=True) as entry:
            zeros = bytes(MIB)
            for _ in range(nbytes // MIB):
                entry.write(zeros)
    return path


def _pickle_bomb_file(path: Path, head: bytes, filler: bytes, count: int, tail: bytes) -> Path:
    """A zip checkpoint whose data.pkl is ``head + filler * count + tail``, deflated (streamed)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as entry:
            entry.write(head)
            block = filler * max(1, MIB // len(filler))
            whole, rest = divmod(count * len(filler), len(block))
            for _ in range(whole):
                entry.write(block)
            entry.write(filler * (rest // len(filler)))
            entry.write(tail)
    return path


RESOURCE_CASES = {
    # name: (reader, builder(path) -> path, expected outcome, what the message must say)
    "stride0_stem_512_wide": ("checkpoint", lambda p: write_torch_zip(p, _stride0_stem_file()), "error",
                              "missing keys"),
    "stride0_every_key_512_wide": ("checkpoint", lambda p: write_torch_zip(p, _stride0_all_keys_file()), "error",
                                   "more than the file can justify"),
    "deflated_128MiB_storage_first_element_used": (
        "torch", lambda p: _deflated_storage_file(p, 128 * MIB, [0]), "read", ""),
    "deflated_128MiB_storage_last_element_used": (
        "torch", lambda p: _deflated_storage_file(p, 128 * MIB, [32 * MIB - 1]), "error", "inflating them would exceed"),
    "deflated_128MiB_storage_first_and_last_used": (
        "torch", lambda p: _deflated_storage_file(p, 128 * MIB, [0, 32 * MIB - 1]), "error",
        "inflating them would exceed"),
    "data_pkl_inflating_to_256MiB": ("torch", lambda p: _pickle_bomb_file(p, _P2 + b"(", b"N", 256 * MIB, b"l."),
                                     "error", "more than the limit of"),
    "data_pkl_of_1MiB_single_byte_objects": ("torch", lambda p: _pickle_bomb_file(p, _P2 + b"(", b"]", MIB - 8, b"l."),
                                             "error", "builds more than"),
    "data_pkl_of_1MiB_none_pushes": ("torch", lambda p: _pickle_bomb_file(p, _P2 + b"]", b"Na", MIB // 2 - 4, b"."),
                                     "error", "builds more than"),
}


@pytest.fixture(scope="module")
def resource_outcomes(tmp_path_factory):
    """The outcome of each resource case (with its traced peak), all loaded by one child."""
    folder = tmp_path_factory.mktemp("resources")
    paths = {name: case[1](folder / f"{name}.pth") for name, case in RESOURCE_CASES.items()}
    args = {name: f"{RESOURCE_CASES[name][0]}={path}" for name, path in paths.items()}
    results, failure = reader_child.run_child(["files", "--trace", *args.values()], limit_mb=CHILD_LIMIT_MB)
    assert failure is None, failure
    return {name: results[arg] for name, arg in args.items()}, paths


@pytest.mark.slow  # (a child interpreter, and files holding 128-256 MiB deflated)
@pytest.mark.parametrize("name", list(RESOURCE_CASES))
def test_resources_stay_proportional_to_the_file(resource_outcomes, name):
    """Each crafted file is answered (read or refused) within the child's memory limit, with a
    traced peak under 8 x its size + 40 MiB (the budgets' slack is 16 MiB each)."""
    outcomes, paths = resource_outcomes
    outcome, detail = outcomes[name]
    _, _, expected, message = RESOURCE_CASES[name]
    assert outcome == expected, (outcome, detail)
    if expected == "error":
        assert detail["message"].startswith(str(paths[name])) and message in detail["message"], detail
    assert detail["peak"] < 8 * detail["size"] + 40 * MIB, detail


@pytest.mark.slow
def test_crafted_resource_files_are_small(resource_outcomes):
    outcomes, _ = resource_outcomes
    sizes = {name: detail["size"] for name, (_, detail) in outcomes.items()}
    assert sizes["stride0_stem_512_wide"] < 1600  # the audit's 1.5 KiB
    assert sizes["deflated_128MiB_storage_first_element_used"] < 150_000  # 0.13 MiB for 128 MiB of storage
    assert sizes["data_pkl_inflating_to_256MiB"] < 300_000


def test_budget_constants_are_proportional():
    """The documented constants (module docstring of torch_reader)."""
    assert (PICKLE_RATIO, PICKLE_SLACK) == (8, MIB)
    assert (INFLATE_RATIO, INFLATE_SLACK, MATERIALISE_SLACK) == (8, 16 * MIB, 16 * MIB)
    assert (OBJECTS_PER_FILE_BYTE, OBJECTS_SLACK) == (16, 1 << 15)


def test_partial_reads_of_deflated_and_stored_storages(tmp_path):
    """Tensors using parts of a storage read exactly those elements, stored or deflated."""
    base = np.arange(1000, dtype=np.float32) * 1.5
    obj = {"head": TorchTensor(base, (3,), offset=0), "middle": TorchTensor(base, (2, 5), stride=(7, 2), offset=400),
           "tail": TorchTensor(base, (1,), offset=999)}
    stored = write_torch_zip(tmp_path / "stored.pth", obj)
    deflated = tmp_path / "deflated.pth"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    expected = {"head": base[:3], "middle": np.lib.stride_tricks.as_strided(base[400:], (2, 5), (28, 8)),
                "tail": base[999:]}
    for path in (stored, deflated):
        got = read_torch_file(path).obj
        for key, want in expected.items():
            assert got[key].tolist() == want.tolist(), (path.name, key)


def test_crc_of_a_partly_used_stored_storage_is_checked(tmp_path):
    """A stored entry is read to its end even when a tensor uses its first element only."""
    base = np.arange(64, dtype=np.float32)
    path = Path(write_torch_zip(tmp_path / "crc.pth", {"first": TorchTensor(base, (1,))}))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("archive/data/0")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 200] ^= 0xFF  # element 50, unused
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="data/0.*cannot be read.*CRC"):
        read_torch_file(path)


def test_layout_is_checked_before_the_model_is_built(tmp_path, training_obj, monkeypatch):
    """A shape error is found without building the builder template."""
    import sttn_sim.io.official as official

    state = OrderedDict(training_obj["state_dict"])
    state["module.features.11.conv2_2.weight"] = np.zeros((8, 8, 3, 5), np.float32)
    path = write_torch_zip(tmp_path / "shape.pth", {**training_obj, "state_dict": state})

    def no_template(*args, **kwargs):
        raise AssertionError("the template was built before the shapes were checked")

    monkeypatch.setattr(official, "sttn_resnet18", no_template)
    with pytest.raises(CheckpointError, match=r"key 'module\.features\.11\.conv2_2\.weight' has shape \[8, 8, 3, 5\], "
                                              r"expected \[8, 8, 3, 3\]"):
        load_official(path, input_size=32)

"""Child process of the reader hardening and fuzz tests (not a test module).

``python reader_child.py [--limit-mb N] files [--reader torch] [--stats] [--trace] PATH...``
loads each file with ``sttn_sim.load_checkpoint`` (or ``read_torch_file``, also for a
path written ``torch=PATH``; ``--stats``: and reports time and peak-RSS growth,
``--trace``: and the peak of traced memory); ``python reader_child.py [--limit-mb N] fuzz --seed S
--first A --count N`` loads the fuzz cases ``A .. A+N-1`` of seed ``S`` (made by
:func:`fuzz_case` from the fixtures; ``--write DIR`` also keeps each case's file there,
to reproduce one).  The child caps its own address space at ``N`` MiB above what it
uses after start-up (``resource.setrlimit(RLIMIT_AS)``) and reports on stdout, one line
each, flushed: ``ready``, then per case ``start <id>`` and
``done <id> <outcome> <json detail>`` where the outcome is

* ``model`` -- a :class:`~sttn_sim.graph.Model` was returned (``read``: a ``TorchFile``);
* ``error`` -- a project error (:class:`~sttn_sim.errors.SttnError`), detail = class and
  message;
* ``memory`` -- a project error caused by running out of memory (the memory limit was
  hit: a blow-up, not an answer);
* ``exception`` -- any other exception, detail = class, message and traceback.

A crash (a signal) or a hang shows to the parent as a ``start`` without its ``done``:
:func:`run_child` turns that into a failure naming the case.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import pickle
import pickletools
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import traceback
import warnings
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TORCH_FIXTURES = ("sttn_bwx2_zip.pth.tar", "sttn_bwx2_legacy.pth.tar", "sttn_ter_zip.pth")


# ===================================================================== parent side


def run_child(args: list[str], *, case_timeout: float = 60.0, ready_timeout: float = 300.0,
              limit_mb: int = 1024) -> tuple[dict[str, tuple[str, dict]], str | None]:
    """Run the child with ``args``; return (case id -> (outcome, detail), failure).

    ``failure`` is None when the child reported every case and exited normally;
    otherwise it says what happened (a signal, an exit code, or no progress for
    ``case_timeout`` seconds) and which case was running.  The timeouts only detect a
    hang; they are far above any case's cost."""
    cmd = [sys.executable, str(Path(__file__)), "--limit-mb", str(limit_mb), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    results: dict[str, tuple[str, dict]] = {}
    running, failure, ready = None, None, False
    try:
        while True:
            ready_now, _, _ = select.select([proc.stdout], [], [], case_timeout if ready else ready_timeout)
            if not ready_now:
                proc.kill()
                failure = (f"no progress for {case_timeout if ready else ready_timeout:.0f} s "
                           f"({'case ' + running if running else 'starting up'}): a hang")
                break
            line = proc.stdout.readline()
            if not line:
                break
            word, _, rest = line.rstrip("\n").partition(" ")
            if word == "ready":
                ready = True
            elif word == "start":
                running = rest
            elif word == "done":
                case, outcome, detail = rest.split(" ", 2)
                results[case] = (outcome, json.loads(detail))
                running = None
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait()
    if failure is None and (code != 0 or running is not None):
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        failure = f"child {how} while running case {running}; stderr: {err[-2000:]}"
    return results, failure


# ===================================================================== child side


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(path, reader: str):
    from sttn_sim.io import load_checkpoint
    from sttn_sim.io.torch_reader import read_torch_file

    if reader == "torch":
        return read_torch_file(path)
    return load_checkpoint(path, input_size=32) if _is_torch(path) else load_checkpoint(path)


def _outcome(path, reader: str = "checkpoint") -> tuple[str, dict]:
    from sttn_sim.errors import SttnError
    from sttn_sim.graph import Model
    from sttn_sim.io.torch_reader import TorchFile

    try:
        result = _load(path, reader)
    except SttnError as exc:
        message = str(exc)
        kind = "memory" if ("out of memory" in message or "MemoryError" in message) else "error"
        return kind, {"type": type(exc).__name__, "message": _one_line(message)}
    except MemoryError as exc:
        return "memory", {"type": "MemoryError", "message": _one_line(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return "exception", {"type": type(exc).__name__, "message": _one_line(exc),
                             "traceback": _one_line(" | ".join(traceback.format_exc().splitlines()[-6:]), 1500)}
    if reader == "torch" and isinstance(result, TorchFile):
        return "read", {"tensors": result.tensors}
    if not isinstance(result, Model):
        return "exception", {"type": "NotAModel", "message": type(result).__name__}
    return "model", {"layers": len(result.layers)}


def _is_torch(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return not (len(head) == 9 and head[8:9] == b"{")


def _limit_memory(limit_mb: int) -> None:
    """Cap the address space at what the process maps now plus ``limit_mb`` MiB."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + (limit_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _report(case: str, path, reader: str = "checkpoint", trace: bool = False, stats: bool = False) -> None:
    """Load one case and print its outcome.  ``stats``: the detail also holds the file size,
    the time and how much the process's peak resident size grew (bytes; meaningful for
    the first case of a child); ``trace``: and the peak of memory traced by tracemalloc
    (NumPy, zlib and Python objects; tracing slows the load)."""
    print(f"start {case}", flush=True)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    outcome, detail = _outcome(path, reader)
    if trace or stats:
        detail.update(seconds=time.perf_counter() - start, size=Path(path).stat().st_size,
                      maxrss_growth=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) << 10)
    if trace:
        detail.update(peak=tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    print(f"done {case} {outcome} {json.dumps(detail)}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-mb", type=int, default=1024)
    sub = parser.add_subparsers(dest="mode", required=True)
    files = sub.add_parser("files")
    files.add_argument("--reader", choices=["checkpoint", "torch"], default="checkpoint")
    files.add_argument("--trace", action="store_true")
    files.add_argument("--stats", action="store_true")
    files.add_argument("paths", nargs="+")
    fuzz = sub.add_parser("fuzz")
    fuzz.add_argument("--seed", type=int, required=True)
    fuzz.add_argument("--first", type=int, default=0)
    fuzz.add_argument("--count", type=int, default=1)
    fuzz.add_argument("--write", default=None)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import sttn_sim  # noqa: F401 - start-up cost before the limit and the clock
    from sttn_sim.io.torch_reader import scan_pickle

    scan_pickle(b"\x80\x02N.")  # compiles or loads the scan kernel before the first case
    warnings.simplefilter("ignore")  # zipfile warns about the duplicate entries some cases write
    sources = _fuzz_sources() if args.mode == "fuzz" else None
    _limit_memory(args.limit_mb)
    print("ready", flush=True)
    if args.mode == "files":
        for path in args.paths:
            reader, _, name = path.rpartition("=") if path.startswith(("torch=", "checkpoint=")) else ("", "", path)
            _report(path, name, reader or args.reader, args.trace, args.stats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.first, args.first + args.count):
            what, data = fuzz_case(args.seed, index, sources)
            folder = Path(args.write) if args.write else Path(tmp)
            path = folder / f"case-{args.seed}-{index}.bin"
            path.write_bytes(data)
            _report(f"{index}:{what}", path)
            if not args.write:
                path.unlink()


# ===================================================================== fuzz cases


def _fuzz_sources() -> dict[str, bytes]:
    """The files the cases start from: the PyTorch fixtures and own-format files of small
    models (a synthetic model written by save_model, and the shipped default model)."""
    from sttn_sim import save_model, synthetic_model

    sources = {name: (FIXTURES / name).read_bytes() for name in TORCH_FIXTURES}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plain.safetensors"
        save_model(synthetic_model("plain_ternary_cnn", seed=0), path)
        sources["plain_ternary_cnn.safetensors"] = path.read_bytes()
    sources["default_model.safetensors"] = (ROOT / "sttn_sim" / "data" / "default_model.safetensors").read_bytes()
    return sources


_EXTREME_INTS = [0, 1, -1, 2, 7, 255, 256, 2**31 - 1, 2**31, 2**32, 2**48, 2**62, 2**63 - 1, 2**63, 2**64,
                 10**30, 10**400, -(2**63)]


def _bytes_mutation(rng: random.Random, data: bytes, region: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """A byte-level change: flips, a truncation, an insertion, a deleted or repeated slice."""
    lo, hi = region or (0, len(data))
    hi = max(hi, lo + 1)
    buf = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "insert", "delete", "repeat", "zero"])
    at = rng.randrange(lo, min(hi, len(buf)) if len(buf) > lo else lo + 1)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(lo, min(hi, len(buf)))
            buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
    elif kind == "truncate":
        del buf[at:]
    elif kind == "insert":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        buf[at:at] = junk
    elif kind == "delete":
        del buf[at: at + rng.randint(1, 256)]
    elif kind == "repeat":
        piece = bytes(buf[at: at + rng.randint(1, 256)])
        buf[at:at] = piece * rng.randint(1, 20)
    else:
        buf[at: at + rng.randint(1, 64)] = bytes(len(buf[at: at + rng.randint(1, 64)]))
    return kind, bytes(buf)


# ------------------------------------------------------------------ pickles


@functools.lru_cache(maxsize=64)
def _opcodes(pkl: bytes) -> tuple[tuple[str, object, int, int], ...]:
    """(name, argument, start, end) of every opcode of the first pickle in ``pkl`` (cached:
    the sources' pickles are parsed once)."""
    ops = list(pickletools.genops(pkl))
    spans = []
    for k, (op, arg, pos) in enumerate(ops):
        end = ops[k + 1][2] if k + 1 < len(ops) else pos + 1
        spans.append((op.name, arg, pos, end))
    return tuple(spans)


def _long1(value: int) -> bytes:
    body = pickle.encode_long(value)
    return (b"\x8a" + bytes([len(body)]) + body) if len(body) < 256 else (b"\x8b" + struct.pack("<i", len(body)) + body)


def _int_opcode(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    return _long1(value)


_SNIPPETS = [
    b"(", b"0", b"1", b"2", b"t", b")", b"]", b"}", b"N", b"\x85", b"\x86", b"\x87", b"a", b"e", b"s", b"u", b"l",
    b"d", b"R", b"b", b"Q", b".", b"h\x00", b"h\x01", b"q\x00", b"\x94", b"\x8f", b"\x90", b"\x91",
    b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n", b"ccollections\nOrderedDict\n",
    b"cbuiltins\nfrozenset\n", b"cbuiltins\nset\n", b"c_codecs\nencode\n", b"cbuiltins\nbytearray\n",
    b"cos\nsystem\n", b"cbuiltins\neval\n", b"ctorch\ndevice\n", b"\x93", b"\x81", b"i", b"o",
    b"X\x07\x00\x00\x00storage", b"X\x03\x00\x00\x00cpu", b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", b"T\xff\xff\xff\xff", b"\x95\x10\x00\x00\x00\x00\x00\x00\x00",
    b"\x80\x05", b"\x80\x09", b"I99999999999999999999\n", b"F1e400\n", b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
]


def _nest_snippet(rng: random.Random) -> bytes:
    """A self-contained pickle fragment pushing one deeply nested object (a tuple chain
    hashed as a dict key or frozenset item crashes an unguarded reader)."""
    depth = rng.choice([99, 100, 101, 1000, 300_000, 300_000])
    kind = rng.choice(["tuple1", "list_append", "mark_tuple", "frozenset_item", "dict_key", "dict_key"])
    if kind == "tuple1":
        return b")" + b"\x85" * depth
    if kind == "list_append":
        return b"]" * depth + b"a" * (depth - 1)
    if kind == "mark_tuple":
        return b"(" * depth + b"N" + b"t" * depth
    if kind == "frozenset_item":
        return b"cbuiltins\nfrozenset\n]N" + b"\x85" * depth + b"a\x85R"
    return b"}N" + b"\x85" * depth + b"Ns"


def _pickle_mutation(rng: random.Random, pkl: bytes) -> tuple[str, bytes]:
    """An opcode-level change of the first pickle in ``pkl`` (the rest is kept)."""
    try:
        spans = _opcodes(pkl)
    except Exception:  # noqa: BLE001 - an already broken pickle: fall back to bytes
        return _bytes_mutation(rng, pkl)
    end = spans[-1][3]
    body, tail = pkl[:end], pkl[end:]
    kind = rng.choice(["delete", "duplicate", "swap", "int", "string", "insert", "insert", "nest", "nest", "global",
                       "memo"])
    name, arg, a, b = spans[rng.randrange(len(spans))]
    if kind == "delete":
        new = body[:a] + body[b:]
    elif kind == "duplicate":
        new = body[:b] + body[a:b] * rng.randint(1, 3) + body[b:]
    elif kind == "swap":
        _, _, c, d = spans[rng.randrange(len(spans))]
        (a, b), (c, d) = sorted([(a, b), (c, d)])
        new = body if b > c else body[:a] + body[c:d] + body[b:c] + body[a:b] + body[d:]
    elif kind == "int":
        ints = [s for s in spans if s[0] in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4")]
        if not ints:
            return _bytes_mutation(rng, pkl)
        _, _, a, b = rng.choice(ints)
        new = body[:a] + _int_opcode(rng.choice(_EXTREME_INTS)) + body[b:]
    elif kind == "string":
        texts = [s for s in spans if s[0] in ("BINUNICODE", "SHORT_BINUNICODE", "BINSTRING", "SHORT_BINSTRING")]
        if not texts:
            return _bytes_mutation(rng, pkl)
        _, _, a, b = rng.choice(texts)
        choice = rng.choice([texts[rng.randrange(len(texts))][1], "", "x" * rng.randint(1, 300),
                             "features.0.weight", "module.fc.weight", "storage", "cuda:7", "state_dict", "0",
                             "\udcff", "é" * 10])
        raw = str(choice).encode("utf-8", "surrogatepass")
        new = body[:a] + b"X" + struct.pack("<I", len(raw)) + raw + body[b:]
    elif kind in ("insert", "nest"):
        piece = rng.choice(_SNIPPETS) if kind == "insert" else _nest_snippet(rng)
        new = body[:a] + piece + body[a:]
    elif kind == "global":
        globals_ = [s for s in spans if s[0] == "GLOBAL"]
        if not globals_:
            return _bytes_mutation(rng, pkl)
        _, _, a, b = rng.choice(globals_)
        new = body[:a] + rng.choice([s for s in _SNIPPETS if s.startswith(b"c")]) + body[b:]
    else:  # memo: a GET/PUT index changed
        memos = [s for s in spans if s[0] in ("BINGET", "BINPUT", "LONG_BINGET", "LONG_BINPUT")]
        if not memos:
            return _bytes_mutation(rng, pkl)
        name, _, a, b = rng.choice(memos)
        op = b"j" if "GET" in name else b"r"
        new = body[:a] + op + struct.pack("<I", rng.choice([0, 1, 5, 200, 255, 256, 5000, 2**20, 2**32 - 1])) \
            + body[b:]
    return f"pickle-{kind}-{name}", new + tail


# ------------------------------------------------------------------ zip archives


def _zip_records(data: bytes) -> list[tuple[str, bytes]]:
    return list(_zip_records_cached(data))


@functools.lru_cache(maxsize=8)
def _zip_records_cached(data: bytes) -> tuple[tuple[str, bytes], ...]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return tuple((i.filename, zf.read(i)) for i in zf.infolist())


def _zip_bytes(records: list[tuple[str, bytes]], deflate: set[str] | bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in records:
            deflated = deflate if isinstance(deflate, bool) else name in deflate
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED)
    return out.getvalue()


def _zip_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    records = _zip_records(data)
    names = [n for n, _ in records]
    pkl_index = next(i for i, n in enumerate(names) if n.endswith("/data.pkl"))
    storages = [i for i, n in enumerate(names) if "/data/" in n]
    kind = rng.choice(["pickle-opcodes", "pickle-opcodes", "pickle-opcodes", "pickle-bytes", "storage", "drop",
                       "duplicate", "deflate", "records", "junk", "rename"])
    deflate: set[str] | bool = False
    if kind == "pickle-opcodes":
        what, pkl = _pickle_mutation(rng, records[pkl_index][1])
        records[pkl_index] = (names[pkl_index], pkl)
        kind = what
    elif kind == "pickle-bytes":
        what, pkl = _bytes_mutation(rng, records[pkl_index][1])
        records[pkl_index] = (names[pkl_index], pkl)
        kind = f"pickle-bytes-{what}"
    elif kind == "storage":
        i = rng.choice(storages)
        what, body = _bytes_mutation(rng, records[i][1])
        records[i] = (names[i], body)
        kind = f"storage-{what}"
    elif kind == "drop":
        del records[rng.randrange(len(records))]
    elif kind == "duplicate":
        records.append(records[rng.randrange(len(records))])
    elif kind == "deflate":
        deflate = True if rng.random() < 0.5 else {n for n in names if rng.random() < 0.5}
        if rng.random() < 0.5:  # and a bigger storage of zeros, used or not
            i = rng.choice(storages)
            records[i] = (names[i], records[i][1] + bytes(rng.choice([1 << 10, 1 << 20, 1 << 24])))
    elif kind == "records":
        prefix = names[pkl_index].split("/")[0]
        entry = rng.choice(["byteorder", "version", ".data/version"])
        value = rng.choice([b"big", b"little", b"middle", b"", b"3", b"x" * 100, b"99999999999999999999"])
        records = [r for r in records if r[0] != f"{prefix}/{entry}"] + [(f"{prefix}/{entry}", value)]
    elif kind == "junk":
        prefix = names[pkl_index].split("/")[0]
        records.append((rng.choice([f"{prefix}/data/99999", "other/data.pkl", f"{prefix}/constants.pkl", "x"]),
                        bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))))
    else:  # rename: the whole archive under another folder name, or one storage renamed
        if rng.random() < 0.5:
            new_prefix = rng.choice(["archive", "a" * 200, "x/y", ""])
            records = [(new_prefix + "/" + n.split("/", 1)[1], d) for n, d in records]
        else:
            i = rng.choice(storages)
            records[i] = (names[i] + rng.choice(["0", "x", "/"]), records[i][1])
    return f"zip-{kind}", _zip_bytes(records, deflate)


# ------------------------------------------------------------------ legacy streams


@functools.lru_cache(maxsize=8)
def _legacy_starts(data: bytes) -> tuple[int, ...]:
    """Where the legacy stream's five pickles start, and where the last one ends."""
    starts = [0]
    for _ in range(5):
        starts.append(_opcodes(data[starts[-1]:])[-1][3] + starts[-1])
    return tuple(starts)


def _legacy_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """An opcode-level change of one of the legacy stream's five pickles, or of a storage record."""
    starts = _legacy_starts(data)
    if rng.random() < 0.8:
        k = rng.choice([0, 1, 2, 3, 3, 3, 4])  # magic, protocol, sys info, object (most often), key list
        a, b = starts[k], starts[k + 1]
        what, piece = _pickle_mutation(rng, data[a:b])
        return f"legacy-{k}-{what}", data[:a] + piece + data[b:]
    what, new = _bytes_mutation(rng, data, (starts[5], len(data)))
    return f"legacy-records-{what}", new


# ------------------------------------------------------------------ safetensors files


def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<Q", data, 0)
    return json.loads(data[8: 8 + n]), data[8 + n:]


def _with_header(header: dict | str, body: bytes, rng: random.Random) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode("utf-8", "surrogatepass")
    n = len(raw) if rng.random() < 0.9 else rng.choice([0, len(raw) - 1, len(raw) + 1, 2**40, len(raw) + len(body)])
    return struct.pack("<Q", n) + raw + body


_JSON_VALUES = [None, True, 0, -1, 1, 3, 2**31, 2**63, 10**30, 1.5, -0.0, 1e308, "", "x", "conv", "input", [],
                {}, [0], [1, 1, 1], [[]], {"a": 1}, "features.0", [2**62, 2**62], [-1, 3, 3], "F32", "I64", "BOOL"]


def _mutate_json(rng: random.Random, value):
    """``value`` with one node replaced, deleted or added (a copy)."""
    value = json.loads(json.dumps(value))
    path, node = [], value
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    choice = rng.random()
    if not path:
        return rng.choice(_JSON_VALUES) if choice < 0.5 else value
    parent, key = path[-1]
    if choice < 0.6:
        parent[key] = rng.choice(_JSON_VALUES + ["[" * 50 + "]" * 50])
    elif choice < 0.8:
        del parent[key]
    elif isinstance(parent, dict):
        parent[rng.choice(["extra", "weight", "__metadata__", "stride", "lo"])] = rng.choice(_JSON_VALUES)
    else:
        parent.append(rng.choice(_JSON_VALUES))
    return value


def _safetensors_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    header, body = _header(data)
    kind = rng.choice(["graph", "graph", "graph", "graph-text", "tensor-entry", "metadata", "header-text",
                       "body", "deep"])
    meta = header.get("__metadata__", {})
    if kind == "graph":
        graph = json.loads(meta["graph"])
        for _ in range(rng.randint(1, 3)):
            graph = _mutate_json(rng, graph)
        header["__metadata__"] = {**meta, "graph": json.dumps(graph)}
    elif kind == "graph-text":
        _, text = _bytes_mutation(rng, meta["graph"].encode())
        header["__metadata__"] = {**meta, "graph": text.decode("utf-8", "replace")}
    elif kind == "deep":
        depth = rng.choice([33, 200, 2000, 100_000])
        header["__metadata__"] = {**meta, "graph": "[" * depth + "]" * depth * rng.randint(0, 1)}
    elif kind == "tensor-entry":
        names = [k for k in header if k != "__metadata__"]
        name = rng.choice(names)
        header[name] = _mutate_json(rng, header[name])
    elif kind == "metadata":
        header["__metadata__"] = _mutate_json(rng, meta)
    elif kind == "header-text":
        _, text = _bytes_mutation(rng, json.dumps(header).encode())
        return "st-header-text", _with_header(text.decode("utf-8", "replace"), body, rng)
    else:
        _, body = _bytes_mutation(rng, body)
    return f"st-{kind}", _with_header(header, body, rng)


def fuzz_case(seed: int, index: int, sources: dict[str, bytes]) -> tuple[str, bytes]:
    """Case ``index`` of fuzz seed ``seed``: (short description, file bytes); deterministic."""
    rng = random.Random(f"{seed}:{index}")
    name = rng.choice(sorted(sources))
    data = sources[name]
    short = name.split(".")[0]
    try:
        if rng.random() < 0.25:
            what, new = _bytes_mutation(rng, data)
            what = f"bytes-{what}"
        elif name.endswith(".safetensors"):
            what, new = _safetensors_mutation(rng, data)
        elif data.startswith(b"PK"):
            what, new = _zip_mutation(rng, data)
        else:
            what, new = _legacy_mutation(rng, data)
    except Exception as exc:  # noqa: BLE001 - a mutation that does not apply: a plain byte flip instead
        what, new = _bytes_mutation(rng, data)
        what = f"bytes-{what}-fallback-{type(exc).__name__}"
    if rng.random() < 0.1:  # sometimes two mutations
        more, new = _bytes_mutation(rng, new)
        what += f"+{more}"
    return f"{short}:{what}", new


if __name__ == "__main__":
    main()

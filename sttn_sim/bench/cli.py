"""The benchmark command: ``python -m sttn_sim.bench [--repeats N] [--skip-*] [--threads N]
[--target CLASS] [--contention] [--json]``.

``--target CLASS`` measures another CPU class's kernels on this machine: the benchmark
re-runs itself in a subprocess whose numba compiles for the class's stand-in target
(:data:`sttn_sim.kernels.cpu.STAND_INS`, e.g. ``avx2``: ``haswell``), with numpy's
OpenBLAS on the matching kernel (``OPENBLAS_CORETYPE``, e.g. ``Haswell``) and PyTorch's
oneDNN / ATen limited to the same instruction set (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``); onnxruntime has no such switch and keeps the host's.

:func:`add_arguments` and :func:`run` are the pieces a command-line front end reuses
(``parser = ...; add_arguments(parser); sys.exit(run(parser.parse_args()))``);
:func:`main` is ``python -m sttn_sim.bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import pandas as pd

from ..kernels.cpu import STAND_INS
from ..kernels.selection import kernel_set
from .contention import benchmark_contention
from .end_to_end import benchmark_end_to_end, summary
from .evaluate import benchmark_evaluate
from .gemm import benchmark_gemm
from .recording import benchmark_recording
from .targets import check_targets
from .timing import busy_machine_warning, openblas_env_warning, set_blas_threads, thread_info

DESCRIPTION = "How fast is packed ternary inference on this CPU?"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def thread_setting(text: str):
    """An argparse type: ``auto`` or an integer >= 1."""
    return "auto" if text == "auto" else positive_int(text)


#: what --target sets besides numba's target, per class: numpy's OpenBLAS kernel and
#: PyTorch's instruction sets
TARGET_LIBRARY_ENV = {
    "avx512": {"OPENBLAS_CORETYPE": "SkylakeX", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"OPENBLAS_CORETYPE": "Haswell", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "generic": {"OPENBLAS_CORETYPE": "Prescott", "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
}

#: set in the --target subprocess (its OPENBLAS_CORETYPE is then intended)
TARGET_ENV = "STTN_BENCH_TARGET"


def target_environment(cpu_class: str, base: dict | None = None) -> dict:
    """The environment of a benchmark compiled for ``cpu_class``'s stand-in target."""
    name, features = STAND_INS[cpu_class]
    env = dict(os.environ if base is None else base, NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=features,
               NUMBA_CACHE_DIR=str(Path(tempfile.gettempdir()) / "sttn_sim-numba-cache" / cpu_class),
               **TARGET_LIBRARY_ENV[cpu_class])
    env[TARGET_ENV] = cpu_class
    env.pop("STTN_CPU_CLASS", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (returned)."""
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=thread_setting, default="auto",
                        help="engine threads: auto (default: the usable CPUs, fewer while another process competes) "
                             "or a count; the peers use the same count (auto: the usable CPUs)")
    parser.add_argument("--target", choices=list(STAND_INS),
                        help="measure that CPU class's kernels here, compiled for its stand-in target")
    parser.add_argument("--contention", action="store_true",
                        help="also measure engine throughput against a competing process (busy loop, PyTorch)")
    parser.add_argument("--skip-gemm", action="store_true", help="leave out the packed GEMM against numpy")
    parser.add_argument("--skip-end-to-end", action="store_true", help="leave out the ResNet-18 engine/PyTorch times")
    parser.add_argument("--skip-recording", action="store_true", help="leave out the recording overhead")
    parser.add_argument("--evaluate", action="store_true", help="also time `sttn evaluate` on generated 224x224 "
                        "JPEGs: decode vs engine images/s, time outside the engine, LocalCluster of 2 vs one process")
    parser.add_argument("--json", action="store_true", help="print the tables as JSON (messages go to stderr)")
    return parser


def build_parser(prog: str = "python -m sttn_sim.bench") -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    return add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    """``args`` as command-line options, without ``--target`` (for its subprocess)."""
    argv = ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    for flag in ("skip_gemm", "skip_end_to_end", "skip_recording", "contention", "evaluate", "json"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks ``args`` selects, print their tables (or one JSON document
    with ``args.json``); returns the exit code (0)."""
    if getattr(args, "target", None):
        command = [sys.executable, "-m", "sttn_sim.bench", *forwarded_arguments(args)]
        return subprocess.call(command, env=target_environment(args.target))
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    stand_in = os.environ.get(TARGET_ENV)
    if stand_in:
        say(f"--target {stand_in}: numba compiles for {STAND_INS[stand_in][0]}; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} is the stand-in's numpy baseline")
    warnings = [w for w in (None if stand_in else openblas_env_warning(), busy_machine_warning()) if w]
    if isinstance(args.threads, int):  # the GEMM's numba and numpy threads too
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        set_blas_threads(args.threads)
    for warning in warnings:
        say(warning)
    info = thread_info()
    kernels = kernel_set()
    result: dict = {"kernels": kernels.as_dict(), "threads": info, "warnings": warnings}
    say(kernels.describe())
    say(f"threads: {info}")
    if not args.skip_gemm:
        say("packed ternary GEMM against numpy float32 GEMM ...")
        result["gemm"] = benchmark_gemm(repeats=args.repeats)
        if not args.json:
            print(result["gemm"].to_string(index=False))
    if not args.skip_end_to_end:
        say("full-width ResNet-18, 224x224, each runtime in its own process, interleaved rounds ...")
        table = benchmark_end_to_end(args.repeats, progress=say, threads=args.threads)
        result["end_to_end"] = table
        result["end_to_end_summary"] = summary(table)
        if not args.json:
            print(table.to_string(index=False))
            print(json.dumps(result["end_to_end_summary"], indent=2))
            if set(table["runtime"]) == {"engine"}:
                print("(PyTorch / onnxruntime are not installed: the engine alone)")
    if not args.skip_recording:
        say("recording overhead ...")
        result["recording"] = benchmark_recording(max(5, args.repeats // 2))
        if not args.json:
            print(result["recording"].to_string(index=False))
    if args.evaluate:
        say("sttn evaluate on generated JPEGs ...")
        result["evaluate"] = benchmark_evaluate(progress=say)
        if not args.json:
            print(result["evaluate"].to_string(index=False))
    if args.contention:
        say("engine throughput against a competing process ...")
        result["contention"] = benchmark_contention(max(5, args.repeats))
        if not args.json:
            print(result["contention"].to_string(index=False))
    result["targets"] = check_targets(result)
    if not args.json:
        print("targets (docs: sttn_sim/bench/targets.py):")
        print(result["targets"].to_string(index=False))
    if args.json:
        print(json.dumps({k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
                          for k, v in result.items()}, indent=2, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sttn_sim.bench``."""
    return run(build_parser().parse_args(argv))


__all__ = ["DESCRIPTION", "positive_int", "thread_setting", "TARGET_LIBRARY_ENV", "TARGET_ENV", "target_environment",
           "add_arguments", "build_parser", "forwarded_arguments", "run", "main"]

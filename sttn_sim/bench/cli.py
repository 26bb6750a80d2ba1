"""The benchmark command: ``python -m sttn_sim.bench [--repeats N] [--skip-*] [--json]``.

:func:`add_arguments` and :func:`run` are the pieces a command-line front end reuses
(``parser = ...; add_arguments(parser); sys.exit(run(parser.parse_args()))``);
:func:`main` is ``python -m sttn_sim.bench``.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from ..kernels.selection import kernel_set
from .end_to_end import benchmark_end_to_end
from .gemm import benchmark_gemm
from .recording import benchmark_recording
from .timing import busy_machine_warning, openblas_env_warning, thread_info

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


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (returned)."""
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed runs per measurement (median reported)")
    parser.add_argument("--skip-gemm", action="store_true", help="leave out the packed GEMM against numpy")
    parser.add_argument("--skip-end-to-end", action="store_true", help="leave out the ResNet-18 engine/PyTorch times")
    parser.add_argument("--skip-recording", action="store_true", help="leave out the recording overhead")
    parser.add_argument("--json", action="store_true", help="print the tables as JSON (messages go to stderr)")
    return parser


def build_parser(prog: str = "python -m sttn_sim.bench") -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    return add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks ``args`` selects, print their tables (or one JSON document
    with ``args.json``); returns the exit code (0)."""
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    warnings = [w for w in (openblas_env_warning(), busy_machine_warning()) if w]
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
        say("full-width STTN ResNet-18, 224x224 ...")
        result["end_to_end"] = benchmark_end_to_end(args.repeats, progress=say)
        if not args.json:
            print(result["end_to_end"].to_string(index=False))
            if "pytorch_ms" not in result["end_to_end"]:
                print("(PyTorch is not installed: no PyTorch column)")
    if not args.skip_recording:
        say("recording overhead ...")
        result["recording"] = benchmark_recording(max(5, args.repeats // 2))
        if not args.json:
            print(result["recording"].to_string(index=False))
    if args.json:
        print(json.dumps({k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
                          for k, v in result.items()}, indent=2, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sttn_sim.bench``."""
    return run(build_parser().parse_args(argv))


__all__ = ["DESCRIPTION", "positive_int", "add_arguments", "build_parser", "run", "main"]

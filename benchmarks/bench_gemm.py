"""Packed ternary GEMM vs numpy float32 matmul on ResNet-18 im2col shapes.

Usage::

    python benchmarks/bench_gemm.py [--json] [--repeats N]

Prints a table (or JSON with ``--json``) of median times, GMAC/s and the
numpy/ternary ratio, measured in the same run, plus numba's and numpy's BLAS thread
counts.  The work is done by :func:`sttn_sim.kernels.bench_gemm.benchmark_gemm`.

Fair baseline: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (set in some CI/tox
environments) push OpenBLAS onto a slower path on this AVX-512 machine.  Run with both
unset::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py

The script prints a warning when they are set.  Another job using the cores skews
the numbers (it also warns when the CPUs are busy): repeat the run and compare medians.

Measured on the 2-core AMD EPYC (Zen 5, AVX-512 VPOPCNTDQ) dev VM, idle, OpenBLAS
variables unset (OpenBLAS SkylakeX kernel, 2 threads; numba 2 threads, omp layer),
two runs of ``--repeats 60``::

    shape (MxKxN)      ternary GMAC/s   numpy f32 GMAC/s   ratio
    64x576x3136          1876-1934         194-198          9.7-9.8
    128x1152x784         1867-2250         186-192         10.0-11.7
    256x2304x196         2202-2269         189-202         11.2-11.7
    512x4608x49          1843-1853         158-159         11.7

(packing the int8 activation codes into the kernel layout: 0.01-0.04 ms per shape.)
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per shape (median)")
    args = parser.parse_args(argv)

    from sttn_sim.kernels.bench_gemm import (
        benchmark_gemm,
        busy_machine_warning,
        openblas_env_warning,
        thread_info,
    )

    warnings = [w for w in (openblas_env_warning(), busy_machine_warning()) if w]
    for w in warnings:
        print(w, file=sys.stderr)
    df = benchmark_gemm(repeats=args.repeats)
    info = thread_info()
    if args.json:
        print(json.dumps({"threads": info, "warnings": warnings,
                          "results": df.to_dict(orient="records")}, indent=2, default=str))
    else:
        print(f"numba threads: {info['numba_threads']} ({info['numba_threading_layer']}); "
              f"numpy BLAS threads: {info['blas_threads']}; BLAS: {info['blas']}; "
              f"load average (1 min): {info['loadavg_1min']}")
        cols = ["shape", "M", "K", "N", "ternary_ms", "ternary_gmacs", "pack_act_ms",
                "pack_weights_ms", "numpy_f32_ms", "numpy_f32_gmacs", "ratio"]
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

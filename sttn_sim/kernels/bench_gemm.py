"""Benchmark of the packed ternary GEMM against numpy float32 matmul, same run.

Shapes are ResNet-18's 3x3 convolutions as im2col GEMMs ``M x K x N`` (C_out x
9*C_in x output pixels for one 224x224 image).  For each shape:

* ``ternary_ms``: median time of :func:`~.gemm.ternary_gemm` with both operands
  pre-packed (:class:`~.gemm.GemmWeights`, :class:`~.gemm.GemmColumns`), output
  allocated by the call as in normal use;
* ``pack_act_ms``: median time to pack the int8 activation codes ``[N, K]`` into the
  kernel layout (done per inference); ``pack_weights_ms``: the same for the weights
  (done once at model load);
* ``numpy_f32_ms``: median time of ``A_f32 @ BT_f32`` (``BT`` pre-transposed to
  ``[K, N]``, C-contiguous), the float baseline;
* GMAC/s = ``M*K*N / time`` and ``ratio = numpy_f32_ms / ternary_ms``.

Ternary and numpy runs alternate in ``rounds`` blocks of ``repeats / rounds`` timed
calls (each block after a short idle pause and warm-up: OpenBLAS and OpenMP worker
threads busy-wait after a call, and two spinning pools on 2 cores would distort both
timings), so both see the same machine load; medians over all calls are reported.  The ternary result is checked against the
float32 product (exact: every partial sum is an integer below 2**24).

OpenBLAS: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` in the environment (e.g.
``OPENBLAS_CORETYPE=Haswell``) force a slower code path on this AVX-512 machine; for a
fair baseline run with both unset, e.g.
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py``.
:func:`openblas_env_warning` returns the warning text when they are set.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .gemm import prepack_gemm_columns, prepack_gemm_weights, ternary_gemm

__all__ = [
    "RESNET18_SHAPES",
    "benchmark_gemm",
    "thread_info",
    "openblas_env_warning",
    "busy_machine_warning",
]

#: (name, M, K, N): ResNet-18 3x3 convolutions of stages 1-4 as im2col GEMMs
RESNET18_SHAPES = (
    ("layer1 3x3 64", 64, 576, 3136),
    ("layer2 3x3 128", 128, 1152, 784),
    ("layer3 3x3 256", 256, 2304, 196),
    ("layer4 3x3 512", 512, 4608, 49),
)

_OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def openblas_env_warning() -> str | None:
    """A warning string if OpenBLAS tuning variables that slow numpy are set, else None."""
    found = {k: os.environ[k] for k in _OPENBLAS_VARS if k in os.environ}
    if not found:
        return None
    setting = ", ".join(f"{k}={v}" for k, v in found.items())
    return (
        f"WARNING: {setting} is set; OpenBLAS may use a slower kernel than this CPU "
        f"supports, which flatters the ternary/numpy ratio. For a fair baseline run with "
        f"`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`."
    )


def thread_info() -> dict:
    """Numba threads / threading layer and numpy's BLAS threads (threadpoolctl if any)."""
    import numba

    info = {"numba_threads": int(numba.get_num_threads())}
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        info["numba_threading_layer"] = "not initialised"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threads, desc = _openblas_via_ctypes()
        info["blas_threads"] = threads if threads is not None else "unknown"
        info["blas"] = desc or "unknown (threadpoolctl not installed)"
    else:
        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["blas_threads"] = ", ".join(str(p.get("num_threads")) for p in blas) or "unknown"
        info["blas"] = ", ".join(
            f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')})" for p in blas
        ) or "unknown"
    info["openblas_env"] = {k: os.environ.get(k) for k in _OPENBLAS_VARS}
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        info["loadavg_1min"] = None
    return info


def _openblas_via_ctypes():
    """(threads, description) of an OpenBLAS loaded by numpy, read through ctypes.

    Fallback when threadpoolctl is not installed: finds the OpenBLAS shared library in
    this process's memory map (Linux) and calls its ``*openblas_get_num_threads*`` and
    ``*openblas_get_corename*``.  Returns ``(None, None)`` when not possible.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return None, None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("64_", ""):
                try:
                    nthreads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                except AttributeError:
                    continue
                nthreads.restype = ctypes.c_int
                desc = "OpenBLAS"
                try:
                    core = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
                    core.restype = ctypes.c_char_p
                    desc = f"OpenBLAS (core: {core().decode()})"
                except (AttributeError, UnicodeDecodeError):
                    pass
                return int(nthreads()), f"{desc}, {path.rsplit('/', 1)[-1]} (via ctypes)"
    return None, None


def busy_machine_warning(window: float = 0.5, threshold: float = 0.15) -> str | None:
    """A warning if other work is using the CPUs right now.

    Samples ``/proc/stat`` over ``window`` seconds (Linux) and warns when more than
    ``threshold`` of the CPU time was busy; falls back to the 1-minute load average.
    """
    def sample():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)

    try:
        t1, i1 = sample()
        time.sleep(window)
        t2, i2 = sample()
        busy = 1.0 - (i2 - i1) / max(t2 - t1, 1)
        what = f"{100 * busy:.0f}% of the CPU time was busy over {window:g} s"
    except (OSError, ValueError, IndexError):
        try:
            busy = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:  # pragma: no cover
            return None
        what = f"1-minute load average per CPU is {busy:.2f}"
    if busy <= threshold:
        return None
    return (
        f"WARNING: {what} before the benchmark; other processes compete for the cores "
        f"(a parallel region stalls when one of its threads is descheduled), so times "
        f"are inflated. Re-run when the machine is idle."
    )


def timed_calls(fn, repeats: int, warmup: int = 0, settle: float = 0.0) -> list:
    """Sleep ``settle`` seconds, call ``fn`` ``warmup`` times, then time ``repeats`` calls (seconds).

    OpenBLAS worker threads busy-wait for a while after each call, as do OpenMP
    workers; timing numpy and numba calls back to back would make the two pools fight
    over the cores, so each block starts after a short sleep.
    """
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def median_time(fn, repeats: int, warmup: int = 2, settle: float = 0.5) -> float:
    """Median of :func:`timed_calls` (the settle also lets the previous measurement's
    OpenMP/OpenBLAS/PyTorch workers stop busy-waiting)."""
    return float(np.median(timed_calls(fn, repeats, warmup, settle)))


def benchmark_gemm(repeats: int = 30, warmup: int = 3, rounds: int = 3,
                   shapes=RESNET18_SHAPES, density: float = 2 / 3, seed: int = 0):
    """Time the packed ternary GEMM and numpy float32 matmul on ``shapes``.

    Returns a pandas DataFrame, one row per shape, with the columns described in the
    module docstring.  ``density`` is the fraction of non-zero codes (the kernel's speed
    does not depend on it).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for name, m, k, n in shapes:
        a = _random_codes(rng, (m, k), density)
        b = _random_codes(rng, (n, k), density)
        a_f32 = a.astype(np.float32)
        bt_f32 = np.ascontiguousarray(b.T.astype(np.float32))

        wts = prepack_gemm_weights(a)
        cols = prepack_gemm_columns(b)
        c = ternary_gemm(wts, cols)
        expect = a_f32 @ bt_f32
        if not np.array_equal(c, expect.astype(np.int32)):
            raise AssertionError(f"ternary GEMM result differs from float32 matmul for {name}")

        def run_ternary():
            return ternary_gemm(wts, cols)

        def run_numpy():
            return a_f32 @ bt_f32

        t_tern, t_np = [], []
        per_round = max(1, -(-repeats // rounds))
        for _ in range(rounds):
            t_tern += timed_calls(run_ternary, per_round, warmup, settle=0.2)
            t_np += timed_calls(run_numpy, per_round, warmup, settle=0.2)
        t_tern = float(np.median(t_tern))
        t_np = float(np.median(t_np))
        pack_reps = max(3, repeats // 3)
        time.sleep(0.2)
        t_pack_b = median_time(lambda: prepack_gemm_columns(b), pack_reps, warmup=0, settle=0.0)
        t_pack_a = median_time(lambda: prepack_gemm_weights(a), pack_reps, warmup=0, settle=0.0)
        macs = m * k * n
        rows.append({
            "shape": name,
            "M": m,
            "K": k,
            "N": n,
            "ternary_ms": t_tern * 1e3,
            "ternary_gmacs": macs / t_tern / 1e9,
            "pack_act_ms": t_pack_b * 1e3,
            "pack_weights_ms": t_pack_a * 1e3,
            "numpy_f32_ms": t_np * 1e3,
            "numpy_f32_gmacs": macs / t_np / 1e9,
            "ratio": t_np / t_tern,
        })
    return pd.DataFrame(rows)


def _random_codes(rng, shape, density):
    nz = rng.random(shape) < density
    sign = rng.random(shape) < 0.5
    return np.where(nz, np.where(sign, -1, 1), 0).astype(np.int8)

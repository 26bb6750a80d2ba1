"""Timing helpers of the benchmarks: medians of timed calls, interleaved rounds, and
what the machine was doing (threads, BLAS, OpenBLAS environment, load).

* :func:`timed_calls` / :func:`median_time` — ``repeats`` timed calls of one function
  (or more, for a minimum time) after an idle pause (``settle``) and ``warmup`` calls;
  the median is reported.
* :func:`interleaved_medians` — several functions timed in alternating blocks
  (``rounds`` blocks of ``ceil(repeats / rounds)`` calls each), so that a drift of the
  host's load hits all of them alike; the median of each function's calls.
* :func:`thread_info`, :func:`openblas_env_warning`, :func:`busy_machine_warning` —
  printed with every benchmark so that its numbers can be judged.

Why the pause: OpenBLAS and OpenMP worker threads (numpy, numba, PyTorch) busy-wait for
a while after each call; timing one pool right after another would make them fight over
the cores.

OpenBLAS: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` in the environment (e.g.
``OPENBLAS_CORETYPE=Haswell``) force a slower code path on an AVX-512 machine; for a
fair numpy baseline run with both unset, e.g.
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m sttn_sim.bench``.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Callable

import numba
import numpy as np

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# --------------------------------------------------------------------------------------
# timing


def timed_calls(fn: Callable[[], object], repeats: int, warmup: int = 0, settle: float = 0.0,
                warmup_seconds: float = 0.0, min_seconds: float = 0.0) -> list[float]:
    """Sleep ``settle`` seconds, call ``fn`` ``warmup`` times and for at least
    ``warmup_seconds``, then time ``repeats`` calls, and more until they add up to
    ``min_seconds`` (seconds each, ``time.perf_counter``).

    ``warmup_seconds`` is for sub-millisecond calls: after the pause a parallel kernel
    needs a few milliseconds of calls before it runs at its speed again (sleeping
    threads woken, clock back up: on a 2-vCPU Zen 3 guest the 0.55 ms GEMM took 1.0,
    0.8, 0.7, 0.6 ms in its first four calls), which a count of warm-up calls does
    not cover for every call length."""
    time.sleep(settle)
    start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - start < warmup_seconds:
        fn()
        calls += 1
    times = []
    total = 0.0
    while len(times) < repeats or total < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return times


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2, settle: float = 0.5) -> float:
    """Median of :func:`timed_calls` in seconds (the settle also lets the previous
    measurement's OpenMP/OpenBLAS/PyTorch workers stop busy-waiting)."""
    return float(np.median(timed_calls(fn, repeats, warmup, settle)))


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, rounds: int, warmup: int = 0,
                        settle: float = 0.0, warmup_seconds: float = 0.0) -> dict[str, float]:
    """Median time in seconds of each function of ``fns``, timed in alternation.

    ``rounds`` times, each function in turn gets a block of :func:`timed_calls`
    (``ceil(repeats / rounds)`` calls after ``settle`` seconds and ``warmup`` calls, for
    at least ``warmup_seconds``);
    the median is over all of a function's calls.  ``rounds == repeats`` alternates
    call by call.
    """
    per_round = max(1, -(-repeats // max(1, rounds)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            times[name] += timed_calls(fn, per_round, warmup, settle, warmup_seconds)
    return {name: float(np.median(ts)) for name, ts in times.items()}


# --------------------------------------------------------------------------------------
# what the machine was doing


def openblas_env_warning() -> str | None:
    """A warning if OpenBLAS tuning variables that may slow numpy are set, else None."""
    found = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    if not found:
        return None
    setting = ", ".join(f"{k}={v}" for k, v in found.items())
    return (
        f"WARNING: {setting} is set; OpenBLAS may use a slower kernel than this CPU "
        f"supports, which flatters the ternary/numpy ratio. For a fair baseline run with "
        f"`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`."
    )


def thread_info() -> dict:
    """Numba threads and threading layer, numpy's BLAS (threadpoolctl if installed, else
    read from the loaded OpenBLAS through ctypes), the OpenBLAS variables and the
    1-minute load average."""
    info: dict = {"numba_threads": int(numba.get_num_threads())}
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        info["numba_threading_layer"] = "not initialised"
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415  (optional dependency)
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
    info["openblas_env"] = {k: os.environ.get(k) for k in OPENBLAS_VARS}
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        info["loadavg_1min"] = None
    return info


def _openblas_function(name: str):
    """``(function, library path)`` of the first OpenBLAS in this process's memory map
    (Linux) that exports ``name`` under one of its symbol prefixes/suffixes (``scipy_``,
    ``64_``), else ``(None, None)``."""
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
                fn = getattr(lib, f"{prefix}{name}{suffix}", None)
                if fn is not None:
                    return fn, path
    return None, None


def _openblas_via_ctypes() -> tuple[int | None, str | None]:
    """(threads, description) of an OpenBLAS loaded by numpy, read through ctypes.

    Fallback when threadpoolctl is not installed: calls the library's
    ``openblas_get_num_threads`` and ``openblas_get_corename``
    (:func:`_openblas_function`).  Returns ``(None, None)`` when not possible.
    """
    nthreads, path = _openblas_function("openblas_get_num_threads")
    if nthreads is None:
        return None, None
    nthreads.restype = ctypes.c_int
    desc = "OpenBLAS"
    core, _ = _openblas_function("openblas_get_corename")
    if core is not None:
        core.restype = ctypes.c_char_p
        try:
            desc = f"OpenBLAS (core: {core().decode()})"
        except UnicodeDecodeError:
            pass
    return int(nthreads()), f"{desc}, {path.rsplit('/', 1)[-1]} (via ctypes)"


def set_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS numpy loaded (through ctypes,
    :func:`_openblas_function`); False when that is not possible."""
    fn, _ = _openblas_function("openblas_set_num_threads")
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int]
    fn(int(n))
    return True


def busy_machine_warning(window: float = 0.5, threshold: float = 0.15) -> str | None:
    """A warning if other work is using the CPUs right now, else None.

    Samples ``/proc/stat`` over ``window`` seconds (Linux) and warns when more than
    ``threshold`` of the CPU time was busy; falls back to the 1-minute load average
    per CPU.
    """
    def sample():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait

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


__all__ = ["OPENBLAS_VARS", "timed_calls", "median_time", "interleaved_medians", "openblas_env_warning",
           "thread_info", "set_blas_threads", "busy_machine_warning"]

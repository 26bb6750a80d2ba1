"""How many threads the kernels' parallel regions use, and when to use fewer.

* :func:`usable_cpus` -- the CPUs this process may actually run on: its affinity mask
  (``os.sched_getaffinity``) and its cgroup CPU quota (``cpu.max`` of cgroup v2, or
  ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1), not the machine's core count.
* :func:`thread_count` -- a requested count (or the default) within numba's pool.
* :class:`ThreadChooser` -- the engine's default (``threads="auto"``): every parallel
  region of a run waits for its slowest thread, so when another process takes a core
  and the OS deschedules one of the engine's threads, each of the dozens of short
  regions per image stalls for a scheduler slice (measured on a 2-core machine against
  a PyTorch loop: 20x slower with 2 threads, 1.5x slower with 1).  The chooser times
  each run; when :data:`SLOW_RUNS` runs in a row at all threads are much slower than
  the best seen there (one slow run is noise on a shared VM), it drops to one thread.
  It goes back only on a probe of all threads (now and then, less and less often while
  the probes lose) that looks idle: within :data:`SLOWDOWN` of the best at all threads,
  or :data:`SLOWDOWN` times faster than the recent mean at one thread.  A probe that is
  merely faster than the one-thread runs does not count: under contention two threads
  have a fast median and a long tail (a 2-vCPU Zen 4 guest against a PyTorch loop:
  median 8.8 ms, mean 32 ms, runs up to 280 ms; one thread: median 8.0, mean 11), so
  a chooser that compared single runs went back and forth and lost the tail each time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numba

from ..errors import SttnError

#: a run this much slower than the best at its thread count means contention
SLOWDOWN = 1.5
#: consecutive slow runs at the current count before the chooser tries the other one
#: (on an idle but noisy VM single runs 1.5x slower than the best came in 7 of 40 runs
#: at batch 8; two in a row are contention)
SLOW_RUNS = 2
#: at the smaller count, probe the larger one after this many runs; each probe that
#: loses doubles the interval (a contended probe can cost 20 runs' time), up to MAX_PROBE_EVERY
PROBE_EVERY = 8
MAX_PROBE_EVERY = 512
#: weight of the newest run in the mean of the one-thread runs
MEAN_WEIGHT = 0.2


class ThreadCountError(SttnError, ValueError):
    """A thread count that is not a positive integer or ``"auto"``."""


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (fractional), or None when unlimited/unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: min(affinity mask, ceil(cgroup quota)), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def thread_count(requested: int | None = None) -> int:
    """``requested`` (default :func:`usable_cpus`) capped at numba's thread pool size."""
    if requested is None:
        requested = usable_cpus()
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ThreadCountError(f"threads: expected a positive integer or 'auto', got {requested!r}")
    return min(requested, numba.config.NUMBA_NUM_THREADS)


class ThreadChooser:
    """Thread count per run (see the module docstring), per input shape.

    Per shape it keeps the current count ``n``, the best time at each count (which
    rises 1 % per run at that count, so that a faster period long ago does not hold
    forever) and the mean of recent one-thread runs (exponential, weight
    :data:`MEAN_WEIGHT` on the newest, so that the tail counts)."""

    def __init__(self, most: int):
        self.most = max(1, most)
        self._state: dict = {}

    def _entry(self, key):
        return self._state.setdefault(key, {"n": self.most, "best": {}, "mean_one": None, "wait": 0,
                                            "every": PROBE_EVERY, "slow": 0})

    def choose(self, key) -> int:
        entry = self._entry(key)
        if entry["n"] < self.most:
            entry["wait"] += 1
            if entry["wait"] >= entry["every"]:
                entry["wait"] = 0
                return self.most  # probe: is the machine idle again?
        return entry["n"]

    def record(self, key, threads: int, seconds: float) -> None:
        if self.most == 1:
            return
        entry = self._entry(key)
        best = entry["best"]
        idle_best = best.get(self.most)
        best[threads] = seconds if threads not in best else min(1.01 * best[threads], seconds)
        if threads == 1:
            mean = entry["mean_one"]
            entry["mean_one"] = seconds if mean is None else mean + MEAN_WEIGHT * (seconds - mean)
        if threads != self.most:
            return
        mean_one = entry["mean_one"]
        if entry["n"] == self.most:  # running at all threads: contended?
            if idle_best is not None and seconds > SLOWDOWN * idle_best:
                entry["slow"] += 1
                # drop unless one thread has lately been slower still
                if entry["slow"] >= SLOW_RUNS and (mean_one is None or mean_one < seconds):
                    entry["n"] = 1
                    entry["wait"], entry["every"], entry["slow"] = 0, PROBE_EVERY, 0
            else:
                entry["slow"] = 0
        else:  # a probe: back to all threads only if the machine looks idle again
            looks_idle = (idle_best is not None and seconds <= SLOWDOWN * idle_best) or \
                (mean_one is not None and SLOWDOWN * seconds <= mean_one)
            if looks_idle:
                entry["n"], entry["slow"] = self.most, 0
            else:
                entry["every"] = min(2 * entry["every"], MAX_PROBE_EVERY)


__all__ = ["SLOWDOWN", "SLOW_RUNS", "PROBE_EVERY", "MAX_PROBE_EVERY", "MEAN_WEIGHT", "ThreadCountError", "usable_cpus", "thread_count", "ThreadChooser"]

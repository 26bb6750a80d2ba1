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
  each run; when :data:`SLOW_RUNS` runs in a row at the current count are much slower
  than the best seen at that count (one slow run is noise on a shared VM), it tries the
  other count and keeps whichever is faster, probing the
  larger count again now and then (less and less often while the probes lose) so that
  an idle machine gets all its cores back.
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
    """Thread count per run (see the module docstring), per input shape."""

    def __init__(self, most: int):
        self.most = max(1, most)
        self._state: dict = {}

    def _entry(self, key):
        return self._state.setdefault(key, {"n": self.most, "best": {}, "last": {}, "wait": 0,
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
        entry = self._entry(key)
        best, last = entry["best"], entry["last"]
        if self.most == 1:
            return
        previous = best.get(threads)
        best[threads] = seconds if previous is None else min(previous, seconds)
        if threads == entry["n"] and seconds > SLOWDOWN * best[threads]:
            entry["slow"] += 1
            # contended at this count: switch when the other count has done better lately
            other = 1 if threads == self.most else self.most
            if entry["slow"] >= SLOW_RUNS and (other not in last or last[other] < seconds):
                entry["n"] = other
                entry["wait"], entry["every"], entry["slow"] = 0, PROBE_EVERY, 0
        elif threads == entry["n"]:
            entry["slow"] = 0
        else:  # a probe of the larger count
            if seconds < last.get(entry["n"], float("inf")):
                entry["n"] = threads  # faster than the current count now: back to it
            else:
                entry["every"] = min(2 * entry["every"], MAX_PROBE_EVERY)
        last[threads] = seconds
        # forget old bests slowly, so that a faster period long ago does not hold forever
        for n in best:
            best[n] *= 1.01


__all__ = ["SLOWDOWN", "SLOW_RUNS", "PROBE_EVERY", "MAX_PROBE_EVERY", "ThreadCountError", "usable_cpus", "thread_count", "ThreadChooser"]

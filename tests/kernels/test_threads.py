"""Thread counts: usable CPUs (affinity, cgroup quota) and the contention-aware chooser."""

import os

import numba
import pytest

from sttn_sim.kernels.threads import (
    PROBE_EVERY,
    SLOW_RUNS,
    SLOWDOWN,
    ThreadChooser,
    ThreadCountError,
    thread_count,
    usable_cpus,
)


def test_usable_cpus_follows_affinity_and_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity  # unlimited quota
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{(affinity + 3) * 100000} 100000\n")  # quota above the mask
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # cgroup v1: 1.5 CPUs -> 2
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == min(2, affinity)


def test_thread_count_is_capped_by_the_pool_and_checked():
    assert thread_count(1) == 1
    assert thread_count(10_000) == numba.config.NUMBA_NUM_THREADS
    assert 1 <= thread_count() <= numba.config.NUMBA_NUM_THREADS
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ThreadCountError, match="threads: expected a positive integer or 'auto'"):
            thread_count(bad)


def test_chooser_keeps_all_threads_when_idle():
    chooser = ThreadChooser(2)
    for _ in range(50):
        n = chooser.choose("shape")
        assert n == 2
        chooser.record("shape", n, 0.010)


def test_chooser_drops_to_one_thread_under_contention_and_comes_back():
    chooser = ThreadChooser(2)
    time_at = {2: 0.010, 1: 0.018}  # idle: 2 threads faster
    for _ in range(5):
        n = chooser.choose("s")
        chooser.record("s", n, time_at[n])
    time_at = {2: 0.200, 1: 0.025}  # contention: 2 threads stall in every parallel region
    seen = []
    for _ in range(15 * PROBE_EVERY):
        n = chooser.choose("s")
        seen.append(n)
        chooser.record("s", n, time_at[n])
    assert SLOW_RUNS == 2
    assert seen[:3] == [2, 2, 1]  # two slow runs in a row, then one thread
    probes = [i for i, n in enumerate(seen) if n == 2][2:]
    assert probes == [p + 1 for p in (PROBE_EVERY, 3 * PROBE_EVERY, 7 * PROBE_EVERY)]  # intervals 8, 16, 32
    assert len(probes) == 3  # each losing probe doubles the interval
    assert time_at[2] > SLOWDOWN * 0.010
    time_at = {2: 0.010, 1: 0.018}  # idle again: the next probe brings both threads back
    for _ in range(PROBE_EVERY + 1):
        n = chooser.choose("s")
        chooser.record("s", n, time_at[n])
    assert chooser.choose("s") == 2


def test_chooser_stays_at_one_thread_when_two_have_a_fast_median_and_a_long_tail():
    # measured against a PyTorch loop on 2 vCPUs: two threads' median beats one thread's
    # runs, but one run in ten stalls for a scheduler slice, so one thread is faster overall
    chooser = ThreadChooser(2)
    for _ in range(5):  # idle
        n = chooser.choose("s")
        chooser.record("s", n, {2: 0.0045, 1: 0.008}[n])
    two = [0.0095] * 9 + [0.2]
    one = [0.008, 0.014, 0.014]
    seen = []
    for i in range(1000):
        n = chooser.choose("s")
        seen.append(n)
        chooser.record("s", n, (two if n == 2 else one)[i % (10 if n == 2 else 3)])
    probes = [i for i, n in enumerate(seen) if n == 2][2:]  # after the two slow runs that dropped it
    assert seen[:3] == [2, 2, 1]
    assert len(probes) == 6  # every 8, 16, ..., 256 runs: each probe loses, none brings two threads back
    assert all(seen[p + 1] == 1 for p in probes)


def test_chooser_ignores_isolated_slow_runs():
    # an idle but noisy machine: every fourth run 1.6x slower than the best, never two in a row
    chooser = ThreadChooser(2)
    for i in range(100):
        n = chooser.choose("s")
        assert n == 2, f"run {i} dropped to one thread"
        chooser.record("s", n, 0.016 if i % 4 == 3 else 0.010)


def test_chooser_is_per_shape_and_single_cpu_does_nothing():
    chooser = ThreadChooser(2)
    chooser.record("a", 2, 0.01)
    chooser.record("a", 2, 1.0)
    assert chooser.choose("a") == 2  # one slow run is not contention
    chooser.record("a", 2, 1.0)
    assert chooser.choose("a") == 1 and chooser.choose("b") == 2
    single = ThreadChooser(1)
    single.record("a", 1, 0.01)
    single.record("a", 1, 1.0)
    assert single.choose("a") == 1

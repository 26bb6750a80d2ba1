"""Timing helpers: call order and counts of the interleaved rounds, the warnings, the
thread report (structure only: no wall-clock assertion)."""

import numpy as np
import pytest

from sttn_sim.bench.timing import (
    OPENBLAS_VARS,
    busy_machine_warning,
    interleaved_medians,
    median_time,
    openblas_env_warning,
    thread_info,
    timed_calls,
)


def test_timed_calls_warms_up_then_times_each_call():
    calls = []
    times = timed_calls(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4
    assert all(t >= 0 for t in times)


def test_timed_calls_warms_up_for_at_least_warmup_seconds(monkeypatch):
    clock = [0.0]

    def call():  # each call takes 0.25 s of a fake clock
        clock[0] += 0.25

    monkeypatch.setattr("sttn_sim.bench.timing.time.perf_counter", lambda: clock[0])
    times = timed_calls(call, repeats=2, warmup=1, warmup_seconds=1.0)
    assert clock[0] == 6 * 0.25  # 4 warm-up calls (1.0 s), then 2 timed
    assert times == [0.25, 0.25]
    clock[0] = 0.0
    timed_calls(call, repeats=1, warmup=6, warmup_seconds=1.0)
    assert clock[0] == 7 * 0.25  # the count wins when it is longer


def test_timed_calls_times_at_least_min_seconds(monkeypatch):
    clock = [0.0]

    def call():  # each call takes 0.25 s of a fake clock
        clock[0] += 0.25

    monkeypatch.setattr("sttn_sim.bench.timing.time.perf_counter", lambda: clock[0])
    assert len(timed_calls(call, repeats=2, min_seconds=1.6)) == 7  # 7 x 0.25 s is the first total >= 1.6 s
    assert len(timed_calls(call, repeats=9, min_seconds=1.0)) == 9  # the count wins when it is longer


def test_median_time_is_the_median_of_the_timed_calls(monkeypatch):
    monkeypatch.setattr("sttn_sim.bench.timing.timed_calls", lambda fn, repeats, warmup, settle: [3.0, 1.0, 2.0])
    assert median_time(lambda: None, 3) == 2.0


def test_interleaved_medians_alternate_blocks_of_calls():
    order = []
    medians = interleaved_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                  repeats=3, rounds=2, warmup=1)
    # 2 rounds; each block: 1 warm-up + ceil(3 / 2) = 2 timed calls
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert set(medians) == {"a", "b"} and all(np.isfinite(v) and v >= 0 for v in medians.values())


def test_interleaved_medians_call_by_call():
    order = []
    interleaved_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, rounds=3)
    assert order == ["a", "b"] * 3


def test_openblas_warning_names_the_variables(monkeypatch):
    for name in OPENBLAS_VARS:
        monkeypatch.delenv(name, raising=False)
    assert openblas_env_warning() is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    warning = openblas_env_warning()
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in warning


def test_busy_machine_warning_follows_the_threshold():
    assert busy_machine_warning(window=0.05, threshold=1.0) is None  # never more than 100 % busy
    warning = busy_machine_warning(window=0.05, threshold=-1.0)  # always more than -100 %
    assert warning.startswith("WARNING:") and "busy" in warning


def test_thread_info_reports_numba_blas_and_load():
    info = thread_info()
    assert isinstance(info["numba_threads"], int) and info["numba_threads"] >= 1
    for key in ("numba_threading_layer", "blas_threads", "blas", "loadavg_1min"):
        assert key in info
    assert set(info["openblas_env"]) == set(OPENBLAS_VARS)


def test_set_blas_threads_changes_what_openblas_reports():
    from sttn_sim.bench.timing import set_blas_threads, thread_info

    before = thread_info()["blas_threads"]
    if not set_blas_threads(1):
        pytest.fail("numpy's OpenBLAS was not found in this process")
    try:
        assert str(thread_info()["blas_threads"]) == "1"
    finally:
        set_blas_threads(int(before) if str(before).isdigit() else 1)

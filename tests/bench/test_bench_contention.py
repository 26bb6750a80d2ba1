"""The contention benchmark on a test-size model: its table (no wall-clock assertion)."""

import numpy as np
import pytest

from sttn_sim.bench.contention import benchmark_contention, throughput


def test_throughput_is_images_over_total_time_not_the_median_run():
    # nine runs of 1/128 s and one stalled run (binary fractions, so the sum is exactly 1 s):
    # the median run says 128 runs per second, the total 10
    times = [2.0**-7] * 9 + [1.0 - 9 * 2.0**-7]
    assert throughput(times, 1) == 10 / 1.0
    assert throughput(times, 8) == 80 / 1.0
    assert throughput([0.25, 0.25], 2) == 8.0


@pytest.mark.slow  # ~20 s: three engine processes, each against a busy loop
def test_contention_table():
    df = benchmark_contention(repeats=3, competitors=["busy"], width=0.125, input_size=32, num_classes=10,
                              idle_seconds=0.2, contended_seconds=0.3)
    assert list(df.columns) == ["competitor", "threads", "idle_images_per_s", "contended_images_per_s", "idle_runs",
                                "contended_runs", "contended_median_ms", "ratio", "ratio_to_best_idle"]
    # at least the requested runs (how many more the minimum times add is machine-dependent;
    # test_timed_calls_times_at_least_min_seconds checks the rule on a fake clock)
    assert (df["idle_runs"] >= 3).all() and (df["contended_runs"] >= 3).all()
    assert set(df["competitor"]) == {"busy"} and "auto" in set(df["threads"]) and "1" in set(df["threads"])
    assert np.isfinite(df[["idle_images_per_s", "contended_images_per_s"]].to_numpy()).all()
    assert (df["ratio"] == df["contended_images_per_s"] / df["idle_images_per_s"]).all()
    assert (df["ratio_to_best_idle"] <= df["ratio"] + 1e-12).all()

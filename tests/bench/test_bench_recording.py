"""Recording-overhead benchmark on a test-size ResNet-18: columns (no wall-clock assertion)."""

import numpy as np

from sttn_sim.bench.recording import benchmark_recording
from sttn_sim.bench.workload import resnet18_workload


def test_a_tiny_run_returns_every_column():
    workload = resnet18_workload(width=0.125, input_size=32, num_classes=10)
    df = benchmark_recording(repeats=2, batches=(2, 1), workload=workload)
    assert list(df.columns) == ["batch", "engine_ms", "engine_with_recorder_ms", "recording_overhead",
                                "recorder_setup_ms"]
    assert list(df["batch"]) == [2, 1]
    assert (df.drop(columns="batch") > 0).all().all()
    np.testing.assert_allclose(df["recording_overhead"], df["engine_with_recorder_ms"] / df["engine_ms"], rtol=1e-12)

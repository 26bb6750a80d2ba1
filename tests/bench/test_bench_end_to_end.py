"""End-to-end benchmark on a test-size ResNet-18: columns and agreement (no wall-clock
assertion)."""

import numpy as np
import pytest

from sttn_sim.bench.end_to_end import benchmark_end_to_end, torch_available
from sttn_sim.bench.workload import resnet18_workload

ENGINE_COLUMNS = ["batch", "engine_ms", "engine_ms_per_image"]
PYTORCH_COLUMNS = ["pytorch_ms", "engine_vs_pytorch", "top1_agree_with_pytorch"]


@pytest.fixture(scope="module")
def workload():
    return resnet18_workload(width=0.125, input_size=32, num_classes=10)


def test_the_workload_is_the_folded_resnet18(workload):
    assert workload.model.form == "latent" and workload.folded.form == "folded"
    assert workload.folded.input_shape == (3, 32, 32)
    x = workload.batch(2)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert np.array_equal(x, workload.batch(2))  # seeded


def test_torch_is_installed_by_the_test_extra():
    assert torch_available()


@pytest.mark.slow  # ~12 s: TorchScript tracing and freezing, twice
def test_with_pytorch_every_column_and_the_engine_agrees_with_pytorch(workload):
    messages = []
    df = benchmark_end_to_end(repeats=1, batches=(1, 2), progress=messages.append, workload=workload)
    assert list(df.columns) == ENGINE_COLUMNS + PYTORCH_COLUMNS
    assert list(df["batch"]) == [1, 2]
    assert messages == ["end-to-end batch 1 done", "end-to-end batch 2 done"]
    assert (df[["engine_ms", "pytorch_ms"]] > 0).all().all()
    np.testing.assert_allclose(df["engine_ms_per_image"], df["engine_ms"] / df["batch"], rtol=1e-12)
    np.testing.assert_allclose(df["engine_vs_pytorch"], df["engine_ms"] / df["pytorch_ms"], rtol=1e-12)
    # both compute the folded model (tests/bench/test_torch_baseline.py: no near-tie on these inputs)
    assert list(df["top1_agree_with_pytorch"]) == [1, 2]


def test_without_pytorch_the_pytorch_columns_are_left_out(workload):
    df = benchmark_end_to_end(repeats=1, batches=(1,), workload=workload, with_torch=False)
    assert list(df.columns) == ENGINE_COLUMNS

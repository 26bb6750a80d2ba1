"""End-to-end benchmark on a test-size ResNet-18, each runtime in its own process:
columns, ratios and agreement (no wall-clock assertion)."""

import numpy as np
import pandas as pd
import pytest

from sttn_sim.bench.end_to_end import COLUMNS, benchmark_end_to_end, summary, torch_available
from sttn_sim.bench.peers import PEERS, available_peers
from sttn_sim.bench.workload import resnet18_workload

TINY = dict(width=0.125, input_size=32, num_classes=10)


def test_the_workload_is_the_folded_resnet18():
    workload = resnet18_workload(**TINY)
    assert workload.model.form == "latent" and workload.folded.form == "folded"
    assert workload.folded.input_shape == (3, 32, 32)
    x = workload.batch(2)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert np.array_equal(x, workload.batch(2))  # seeded


def test_torch_is_installed_by_the_test_extra():
    assert torch_available()
    assert {"engine", "pytorch_fp32", "pytorch_int8"} <= set(available_peers())


def test_engine_alone_in_its_process():
    messages = []
    df = benchmark_end_to_end(repeats=2, batches=(1, 2), progress=messages.append, peers=["engine"], **TINY)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["runtime"]) == ["engine", "engine"] and list(df["batch"]) == [1, 2]
    assert messages == ["end-to-end batch 1 done", "end-to-end batch 2 done"]
    assert (df["min_ms"] <= df["ms"]).all() and (df["ms"] <= df["max_ms"]).all()
    np.testing.assert_allclose(df["ms_per_image"], df["ms"] / df["batch"], rtol=1e-12)
    assert (df["engine_ratio"] == 1.0).all()
    assert df.attrs["kernels"]["ternary"] and df.attrs["kernels"]["threads"].startswith("auto")


@pytest.mark.slow  # ~40 s: five worker processes, PyTorch tracing, FX quantization, ONNX export
def test_every_peer_and_the_same_model_agrees_with_pytorch():
    peers = available_peers()
    df = benchmark_end_to_end(repeats=1, batches=(1, 2), peers=peers, rounds=1, **TINY)
    assert set(df["runtime"]) == set(peers) and set(peers) <= set(PEERS)
    engine = df[df["runtime"] == "engine"].set_index("batch")["ms"]
    for _, row in df.iterrows():
        assert row["engine_ratio"] == pytest.approx(engine[row["batch"]] / row["ms"], rel=1e-12)
    # the frozen PyTorch module is the same folded model (no near-tie on these inputs)
    assert list(df[df["runtime"] == "pytorch_fp32"]["top1_agree_with_engine"]) == [1, 2]
    s = summary(df)
    assert s["batch 1"]["engine_vs_pytorch_int8"] == pytest.approx(
        engine[1] / float(df[(df["runtime"] == "pytorch_int8") & (df["batch"] == 1)]["ms"].iloc[0]))
    assert "engine batch 2 vs batch 1, per image" in s


def test_summary_by_hand():
    df = pd.DataFrame([
        {"batch": 1, "runtime": "engine", "ms": 4.0, "ms_per_image": 4.0},
        {"batch": 1, "runtime": "pytorch_fp32", "ms": 40.0, "ms_per_image": 40.0},
        {"batch": 1, "runtime": "onnxruntime_fp32", "ms": 20.0, "ms_per_image": 20.0},
        {"batch": 1, "runtime": "pytorch_int8", "ms": 8.0, "ms_per_image": 8.0},
        {"batch": 8, "runtime": "engine", "ms": 24.0, "ms_per_image": 3.0},
    ])
    s = summary(df)
    assert s["batch 1"] == {"engine_vs_fastest_fp32": 0.2, "fastest_fp32": "onnxruntime_fp32",
                            "engine_vs_pytorch_fp32": 0.1, "engine_vs_pytorch_int8": 0.5}
    assert s["engine batch 8 vs batch 1, per image"] == 0.75


@pytest.mark.parametrize("int8", [False, True])
def test_the_onnxruntime_peer_leaves_no_file_behind(tmp_path, monkeypatch, int8):
    """The exported models are read into the session, then their folder is removed: every
    bench run used to leave 46-92 MB in the temporary directory."""
    import tempfile

    import torch

    from sttn_sim.bench import torch_peers

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    plain = dict(width=0.125, num_classes=10)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    run = torch_peers.onnxruntime_session(x, int8=int8, threads=1, **plain)
    assert list(tmp_path.iterdir()) == []
    y = run(x)
    with torch.no_grad():
        expected = torch_peers.PlainResNet18(**plain).eval()(torch.from_numpy(x)).numpy()
    assert y.shape == expected.shape == (2, 10)
    if not int8:  # float32 graph against float32 PyTorch: summation order only
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)

"""Tests of sttn_sim.synthetic: seeded models with non-trivial BatchNorm, and inputs."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim.reference import run_reference
from sttn_sim.synthetic import synthetic_input, synthetic_model

CONFIGS = [
    ("sttn_resnet18", dict(width=0.0625, input_size=32, num_classes=5)),
    ("sttn_resnet18", dict(width=0.0625, input_size=8, num_classes=10, stem="small", blocks=3, in_channels=1)),
    ("plain_ternary_cnn", {}),
    ("plain_ternary_cnn", dict(channels=(6, 10), input_size=9, in_channels=2)),
    ("ternary_mlp", {}),
    ("ternary_mlp", dict(hidden=(12, 8), input_shape=(2, 3, 3))),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]


def _params(model):
    return {(l.name, k): v for l in model.layers for k, v in l.params.items()}


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_deterministic_for_a_seed(name, kwargs):
    a, b = synthetic_model(name, seed=5, **kwargs), synthetic_model(name, seed=5, **kwargs)
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].dtype == pb[key].dtype
        assert np.array_equal(pa[key], pb[key]), key
    assert a.metadata == b.metadata
    assert np.array_equal(synthetic_input(a, 3, seed=2), synthetic_input(b, 3, seed=2))


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_differs_across_seeds(name, kwargs):
    m5 = synthetic_model(name, seed=5, **kwargs)
    kinds = {l.name: l.kind for l in m5.layers}
    a, b = _params(m5), _params(synthetic_model(name, seed=6, **kwargs))
    for key in a:
        if a[key].size > 1 and kinds[key[0]] != "prelu":  # PReLU slopes are a constant 0.25
            assert not np.array_equal(a[key], b[key]), key
    m = synthetic_model(name, seed=5, **kwargs)
    assert not np.array_equal(synthetic_input(m, 2, seed=0), synthetic_input(m, 2, seed=1))


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_activation_hits_all_three_codes(name, kwargs, seed):
    m = synthetic_model(name, seed=seed, **kwargs)
    x = synthetic_input(m, 4)
    assert x.shape == (4,) + m.input_shape and x.dtype == np.float32
    run = run_reference(m, x)
    acts = [l.name for l in m.layers if l.kind == "ternary_act"]
    assert acts
    for act in acts:
        codes = run.outputs[act]
        counts = {c: int(np.count_nonzero(codes == c)) for c in (-1, 0, 1)}
        assert all(v > 0 for v in counts.values()), (act, counts)
        assert sum(counts.values()) == codes.size


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 3])
def test_batchnorm_statistics(name, kwargs, seed):
    m = synthetic_model(name, seed=seed, **kwargs)
    bns = [l for l in m.layers if l.kind == "batchnorm"]
    assert bns
    negatives = total = 0
    for bn in bns:
        gamma, var = bn.params["weight"], bn.params["running_var"]
        c = gamma.size
        assert np.all(var > 0) and np.all(np.isfinite(var)), bn.name
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert bn.params[key].shape == (c,) and bn.params[key].dtype == np.float32
        if c >= 4:
            assert np.count_nonzero(gamma == 0) == 1, bn.name  # exactly one exact zero
        else:
            assert np.count_nonzero(gamma == 0) == 0, bn.name
        nonzero = gamma[gamma != 0]
        assert np.all((np.abs(nonzero) >= 0.5) & (np.abs(nonzero) <= 1.5)), bn.name  # ±U(0.5, 1.5)
        if c >= 16:  # P(no negative among >= 15 channels at rate 1/3) < 3e-3
            assert np.any(gamma < 0), bn.name
        negatives += int(np.count_nonzero(gamma < 0))
        total += nonzero.size
        assert not np.array_equal(bn.params["running_mean"], np.zeros(c))  # calibrated, not identity
    assert negatives > 0
    assert 0.15 < negatives / total < 0.55  # "about a third negative"


def test_running_stats_are_batch_statistics():
    """running_mean / running_var of the first BN equal the calibration batch statistics."""
    m = synthetic_model("ternary_mlp", seed=4, calibration_batch=8, hidden=(6,), input_shape=(1, 3, 3))
    # synthetic_model calibrates on synthetic_input(model, calibration_batch, seed + 1)
    x = synthetic_input(m, 8, seed=5).reshape(8, -1).astype(np.float64)  # bn0 reads the flattened input
    bn0 = m["bn0"].params
    mean = x.sum(axis=0) / 8
    var = ((x - mean) ** 2).sum(axis=0) / 8  # biased variance of the batch
    # tolerance: float32 storage of the statistics (relative 2**-24)
    np.testing.assert_allclose(bn0["running_mean"], mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn0["running_var"], var, rtol=1e-6, atol=1e-7)


def test_synthetic_input_shape_and_seed():
    m = synthetic_model("plain_ternary_cnn", seed=0)
    x = synthetic_input(m, 5, seed=9)
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.float32
    assert np.array_equal(x, np.random.default_rng(9).standard_normal((5, 1, 8, 8)).astype(np.float32))
    assert m.metadata["synthetic"] is True and m.metadata["synthetic_seed"] == 0

"""Fixtures shared across the test tree."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim.graph import Layer, Model
from sttn_sim.quantizers import Method, TernaryWeights, hard_threshold


def _codes(rng, shape) -> np.ndarray:
    return rng.integers(-1, 2, shape).astype(np.float64)


def dyadic_tie_model(tie: str = "sttn", ttq: bool = False, seed: int = 3) -> Model:
    """A small merged model whose values are dyadic (multiples of 1/4), so pre-activations
    land exactly on the ±0.5 thresholds (the ties of both tie rules) in float64 and float32:

    ``input → act0 → conv1 → bn1 → act1 → conv2 → bn2 (γ = ±1) → add(·, input) → bn3 →
    act3 → flatten → fc``.  ``ttq=True`` gives conv1, conv2 and fc two magnitudes per
    channel (``ternary_method="ttq"``: W_p on +1, W_n on −1)."""
    rng = np.random.default_rng(seed)
    c, size = 6, 5

    def kernel(shape, pos, neg):
        t = _codes(rng, shape)
        return np.where(t > 0, pos, 0.0) - np.where(t < 0, neg, 0.0) if ttq else pos * t

    def bn(name, src, gamma):
        ones = np.ones(c)
        return Layer(name, "batchnorm", [src], {"eps": 0.0},
                     {"weight": np.asarray(gamma, np.float64), "bias": np.zeros(c), "running_mean": np.zeros(c),
                      "running_var": ones})

    merged = {"ternary_method": "ttq"} if ttq else {}
    conv = {"stride": 1, "padding": 1}
    layers = [
        Layer("act0", "ternary_act", ["input"], {"tie": tie}),
        Layer("conv1", "ter_conv", ["act0"], dict(conv, **merged),
              {"weight": kernel((c, c, 3, 3), 0.25, 0.5), "bias": np.zeros(c)}),
        bn("bn1", "conv1", np.ones(c)),
        Layer("act1", "ternary_act", ["bn1"], {"tie": tie}),
        Layer("conv2", "ter_conv", ["act1"], dict(conv, **merged),
              {"weight": kernel((c, c, 3, 3), 0.5, 0.25), "bias": np.full(c, 0.25)}),
        bn("bn2", "conv2", np.array([1.0, -1.0] * (c // 2))),
        Layer("add", "add", ["bn2", "input"]),
        bn("bn3", "add", np.array([1.0, 1.0, -1.0] * (c // 3))),
        Layer("act3", "ternary_act", ["bn3"], {"tie": tie}),
        Layer("flat", "flatten", ["act3"]),
        Layer("fc", "ter_linear", ["flat"], dict(merged),
              {"weight": kernel((10, c * size * size), 0.25, 0.125), "bias": np.zeros(10)}),
    ]
    return Model("dyadic_ties", (c, size, size), layers, "merged")


def dyadic_input(model: Model, batch: int, seed: int = 0) -> np.ndarray:
    """Inputs on the quarter grid in [-1.5, 1.5] (so ±0.5 occurs exactly)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-6, 7, (batch,) + tuple(model.input_shape)) / 4.0).astype(np.float64)


@pytest.fixture
def tie_model():
    """``tie_model(tie, ttq=False)`` → :func:`dyadic_tie_model`; ``tie_model.input(model, n)``."""
    dyadic_tie_model.input = dyadic_input
    return dyadic_tie_model


def toy_ternarize(w, *, granularity="tensor", name="weights"):
    """A toy hard-threshold method for the registry tests: Δ = 0.25·max|w| per tensor or
    per output channel, α = mean |w| over the non-zeros."""
    w = np.asarray(w, np.float64)
    rows = w.reshape(1, -1) if granularity == "tensor" else w.reshape(w.shape[0], -1)
    d = 0.25 * np.abs(rows).max(axis=1)
    tw = hard_threshold(w, d if granularity == "channel" else float(d[0]), granularity=granularity, name=name)
    return TernaryWeights(tw.codes, tw.scale, "toy", granularity, tw.delta)


@pytest.fixture
def toy_method():
    """``Method("toy", …)`` on :func:`toy_ternarize` (not registered: use
    ``sttn_sim.quantizers.registered_method``)."""
    return Method("toy", "toy (0.25·max|w|)", "toy", "#17becf", "p", toy_ternarize)

"""The model profile: sizes, MACs and BOPs against hand-computed values."""

from __future__ import annotations

import numpy as np

from sttn_sim import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.stats.profile import model_profile


def toy() -> Model:
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.uniform(0.1, 1, s) * rng.choice([-1, 1], s)).astype(np.float32)  # noqa: E731
    layers = [
        Layer("stem", "conv", ["input"], {"stride": 1, "padding": 1}, {"weight": w(4, 3, 3, 3)}),
        Layer("act", "ternary_act", ["stem"]),
        Layer("t", "sttn_conv", ["act"], {"stride": 2, "padding": 0},
              {"weight1": w(5, 4, 3, 3), "weight2": w(5, 4, 3, 3)}),  # 9x9 -> 4x4
        Layer("flat", "flatten", ["t"]),
        Layer("fc", "linear", ["flat"], {}, {"weight": w(2, 80).astype(np.float64), "bias": w(2)}),
    ]
    return Model("toy", (3, 9, 9), layers)


def test_sizes_macs_and_bops_by_hand():
    p = model_profile(toy())
    stem, t, fc = p["stem"], p["t"], p["fc"]
    assert stem.macs == 4 * 3 * 3 * 3 * 9 * 9 and stem.bops == stem.macs * 32 * 32 and stem.weight_bits == 32
    assert t.weights == 5 * 4 * 9 and t.macs == 5 * 4 * 9 * 16 and t.bops == t.macs * 2 * 2
    assert t.stored_params == 2 * 180 and t.packed_bytes == 45 and t.float32_bytes == 720
    assert fc.macs == 2 * 80 and fc.weight_bits == 64 and fc.bops == 160 * 64 * 32
    assert p["act"].macs == 0 and p["act"].weight_bits is None
    assert p.totals()["macs"] == stem.macs + t.macs + fc.macs and p.totals()["ternary_weights"] == 180


def test_nonzero_weights_are_where_the_signs_agree():
    model = toy()
    w1, w2 = model["t"].params["weight1"], model["t"].params["weight2"]
    agree = int(np.count_nonzero(np.sign(w1) == np.sign(w2)))
    p = model_profile(model)["t"]
    assert p.nonzero_weights == agree and p.macs_nonzero_weight == agree * 16
    # the folded model has the same profile for the ternary layer
    q = model_profile(fold(model))["t"]
    assert (q.weights, q.nonzero_weights, q.macs, q.bops, q.packed_bytes) == \
        (p.weights, p.nonzero_weights, p.macs, p.bops, p.packed_bytes)

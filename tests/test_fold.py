"""Tests of sttn_sim.fold: threshold derivation, BN folding and the fold rewrites."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sttn_sim.errors import FoldError, ModelError
from sttn_sim.fold import (
    FoldAccumulatorThreshold,
    FoldBareThreshold,
    FoldBatchNormThreshold,
    FoldTernaryWeights,
    fold,
)
from sttn_sim.graph import Layer, Model
from sttn_sim.reference import reference_forward, run_reference
from sttn_sim.rules import apply_threshold, batchnorm_affine, thresholds_from_affine
from sttn_sim.synthetic import synthetic_input, synthetic_model

# --------------------------------------------------------------------------- helpers


def direct_rule(y, lo, hi):
    """The activation of docs/design.md §2.2 applied to y: +1 iff y >= hi, -1 iff y < lo."""
    return (y >= hi).astype(np.int64) - (y < lo).astype(np.int64)


def folded_rule(x, gain, offset, lo, hi, integer=False):
    """Apply thresholds_from_affine's thresholds to a 1-D x (one channel)."""
    d, t_lo, t_hi, c = thresholds_from_affine(np.array([gain]), np.array([offset]), lo, hi, integer=integer)
    return apply_threshold(np.asarray(x).reshape(-1, 1), d, t_lo, t_hi, c)[:, 0].astype(np.int64)


def exact_rule(x_int, gain, offset, lo, hi):
    """The activation of y = gain·x + offset in exact rational arithmetic of the float64 inputs."""
    g, o, L, H = Fraction(gain), Fraction(offset), Fraction(lo), Fraction(hi)
    out = []
    for x in x_int:
        y = g * int(x) + o
        out.append(1 if y >= H else (-1 if y < L else 0))
    return np.array(out, np.int64)


def hand_sign(w):
    w = np.asarray(w, np.float64)
    return (w > 0).astype(np.int64) - (w < 0).astype(np.int64)


def hand_alpha(w1, w2):
    """α_o = (Σ|clamp W1_o| + Σ|clamp W2_o|) / (2n), exactly rounded sums (docs/design.md §2.1)."""
    a = np.abs(np.clip(np.asarray(w1, np.float64), -1, 1)).reshape(w1.shape[0], -1)
    b = np.abs(np.clip(np.asarray(w2, np.float64), -1, 1)).reshape(w2.shape[0], -1)
    n = a.shape[1]
    return np.array([math.fsum(list(a[o]) + list(b[o])) / (2 * n) for o in range(a.shape[0])])


# --------------------------------------------------------------------------- thresholds_from_affine, float x

GAINS = [2.0, 0.37, 1e-3, -1.3, -0.05, -7.0]
OFFSETS = [-0.7, -0.5, 0.0, 0.2, 0.5, 0.9]
LOHI = [(-0.5, 0.5), (-0.2, 0.9), (-1.0, -0.3), (0.25, 0.25)]


@pytest.mark.parametrize("lo,hi", LOHI)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("gain", GAINS)
def test_float_thresholds_match_direct_rule_off_ties(gain, offset, lo, hi):
    # grid around the two switching points x = (t - offset)/gain, plus a wide sweep
    pts = [(lo - offset) / gain, (hi - offset) / gain]
    x = np.concatenate([np.linspace(-2000, 2000, 4001)] + [p + np.linspace(-3, 3, 6001) * abs(p) * 1e-3 + np.linspace(-1, 1, 6001) for p in pts])
    y = gain * x + offset  # float64, the direct evaluation
    # avoid (near-)ties: within 1e-9 of a threshold the float rounding of y decides
    keep = (np.abs(y - lo) > 1e-9) & (np.abs(y - hi) > 1e-9)
    x, y = x[keep], y[keep]
    want = direct_rule(y, lo, hi)
    got = folded_rule(x, gain, offset, lo, hi)
    assert np.array_equal(got, want)
    expected_codes = {-1, 1} if lo == hi else {-1, 0, 1}
    assert set(np.unique(want).tolist()) == expected_codes  # the grid crosses both thresholds


@pytest.mark.parametrize("offset,lo,hi", [(0.3, -0.5, 0.5), (-0.8, -0.5, 0.5), (0.5, -0.5, 0.5), (-0.5, -0.2, 0.9)])
def test_float_thresholds_zero_gain_is_constant(offset, lo, hi):
    d, t_lo, t_hi, c = thresholds_from_affine(np.array([0.0]), np.array([offset]), lo, hi)
    assert d.tolist() == [0]
    assert c.tolist() == [1 if offset >= hi else (-1 if offset < lo else 0)]
    x = np.linspace(-1e6, 1e6, 101)
    assert np.all(folded_rule(x, 0.0, offset, lo, hi) == c[0])


# exact ties: with dyadic gain/offset/threshold values, y = gain·x + offset and the derived
# thresholds are computed without rounding, so a tie falls on the same side as the direct
# rule (y == hi -> +1, y == lo -> 0), also for gain < 0 (z = -x, no second rule).
# For non-dyadic values a "tie" exists only up to float rounding: the side it falls on is
# decided by an ulp and may differ between the folded and the direct evaluation
# (docs/design.md §2.2: such ties are reported by the tie audit, not hidden).
@pytest.mark.parametrize("gain", [2.0, 0.25, -4.0, -0.5, 1.0])
@pytest.mark.parametrize("offset", [0.5, -0.75, 0.0])
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (-0.25, 1.5)])
def test_float_thresholds_exact_dyadic_ties(gain, offset, lo, hi):
    x = np.array([(lo - offset) / gain, (hi - offset) / gain])  # exact for dyadic values
    y = gain * x + offset
    assert y.tolist() == [lo, hi]  # really tied
    assert folded_rule(x, gain, offset, lo, hi).tolist() == [0, 1] == direct_rule(y, lo, hi).tolist()


# --------------------------------------------------------------------------- thresholds_from_affine, integer x


def _check_integer(gain, offset, lo, hi):
    d, t_lo, t_hi, c = thresholds_from_affine(np.array([gain]), np.array([offset]), lo, hi, integer=True)
    assert t_lo.dtype == np.int64 and t_hi.dtype == np.int64
    x = np.arange(-300, 301)
    got = apply_threshold(x.reshape(-1, 1), d, t_lo, t_hi, c)[:, 0].astype(np.int64)
    assert np.array_equal(got, exact_rule(x, gain, offset, lo, hi))


@given(
    gain=st.one_of(st.just(0.0), st.floats(-50, 50, allow_nan=False, allow_subnormal=False)),
    offset=st.floats(-100, 100, allow_nan=False),
    lo=st.floats(-20, 20, allow_nan=False),
    width=st.floats(0, 20, allow_nan=False),
)
@settings(max_examples=120, deadline=None)
@example(gain=0.1, offset=0.2, lo=-0.5, width=1.0)
@example(gain=-0.1, offset=0.2, lo=-0.5, width=1.0)
@example(gain=1.0, offset=0.5, lo=-0.5, width=1.0)  # y == hi at x = 0
@example(gain=-2.0, offset=0.0, lo=-0.5, width=1.0)
def test_integer_thresholds_exact_on_every_integer(gain, offset, lo, width):
    hi = lo + width
    assume(lo <= hi)
    _check_integer(gain, offset, lo, hi)


# adversarial near-ties: gain chosen one ulp around (hi - offset)/k so that the real
# quotient (hi - offset)/gain lies within an ulp of the integer k; a ceil of the rounded
# float64 quotient is then off by one at x = k.
NEAR_TIES = [(k, off, step) for k in (-45, -12, -3, 7, 12, 41) for off in (0.2, 0.7, 1 / 3, -0.3) for step in (-1, 0, 1)]


@pytest.mark.parametrize("k,offset,step", NEAR_TIES)
@pytest.mark.parametrize("which", ["hi", "lo"])
def test_integer_thresholds_exact_near_ties(k, offset, step, which):
    lo, hi = -0.5, 0.5
    g = ((hi if which == "hi" else lo) - offset) / k
    if step:
        g = float(np.nextafter(g, np.inf if step > 0 else -np.inf))
    _check_integer(g, offset, lo, hi)


def test_integer_thresholds_vectorised_and_asymmetric():
    gain = np.array([3.0, -3.0, 0.0, 0.5, -0.125])
    offset = np.array([0.1, 0.1, 0.95, -2.0, 0.0])
    d, t_lo, t_hi, c = thresholds_from_affine(gain, offset, -0.25, 1.0, integer=True)
    assert d.tolist() == [1, -1, 0, 1, -1]
    assert c[2] == 0  # 0.95 is in [-0.25, 1.0)
    x = np.arange(-40, 41)
    got = apply_threshold(np.repeat(x[:, None], 5, axis=1), d, t_lo, t_hi, c)
    for j in range(5):
        assert np.array_equal(got[:, j].astype(np.int64), exact_rule(x, gain[j], offset[j], -0.25, 1.0))


def test_integer_thresholds_tiny_gain_clipped():
    d, t_lo, t_hi, c = thresholds_from_affine(np.array([1e-300]), np.array([0.0]), -0.5, 0.5, integer=True)
    assert t_hi.dtype == np.int64 and t_hi[0] == 2**62 and t_lo[0] == -(2**62)
    _check_integer(1e-300, 0.0, -0.5, 0.5)


# --------------------------------------------------------------------------- batchnorm_affine


def _bn(name="blk.bn1", var=(1.0, 4.0), gamma=(1.0, -2.0), eps=1e-5):
    p = {"weight": np.array(gamma), "bias": np.array([0.5, 0.25]),
         "running_mean": np.array([0.1, -0.3]), "running_var": np.array(var)}
    return Layer(name, "batchnorm", ["x"], {"eps": eps}, p)


def test_batchnorm_affine_formula():
    g, h = batchnorm_affine(_bn())
    g_want = np.array([1.0 / math.sqrt(1.0 + 1e-5), -2.0 / math.sqrt(4.0 + 1e-5)])
    # tolerance: same formula, scalar vs vector evaluation (an ulp)
    np.testing.assert_allclose(g, g_want, rtol=1e-15)
    np.testing.assert_allclose(h, np.array([0.5, 0.25]) - g_want * np.array([0.1, -0.3]), rtol=1e-15)


def test_batchnorm_affine_negative_var():
    with pytest.raises(FoldError, match=r"'blk\.bn1'.*running_var is negative.*channel 1"):
        batchnorm_affine(_bn(var=(1.0, -0.5)))
    with pytest.raises(FoldError, match=r"'blk\.bn1'.*running_var \+ eps must be > 0"):
        batchnorm_affine(_bn(var=(0.0, 1.0), eps=0.0))


# --------------------------------------------------------------------------- fold() on synthetic models

BUILDERS = [
    ("sttn_resnet18", dict(width=0.0625, input_size=32, num_classes=5)),
    ("plain_ternary_cnn", dict(channels=(8, 12, 16), input_size=9)),
    ("ternary_mlp", dict(hidden=(24, 16), input_shape=(1, 6, 6))),
]
IDS = [b[0] for b in BUILDERS]


@pytest.fixture(scope="module", params=BUILDERS, ids=IDS)
def latent(request):
    name, kwargs = request.param
    m = synthetic_model(name, seed=3, **kwargs)
    # push some latent weights beyond [-1, 1]: the clamp must act in α and in the fold
    first = m.ternary_layers()[0]
    first.params["weight1"] = (first.params["weight1"] * 1.5).astype(np.float32)
    return m


@pytest.fixture(scope="module")
def folded(latent):
    return fold(latent)


def test_fold_logits_and_codes_match_latent(latent, folded):
    x = synthetic_input(latent, 4, seed=11)
    r_lat, r_fold = run_reference(latent, x), run_reference(folded, x)
    # every activation keeps its name and produces the very same codes
    for act in latent.activation_quantizers():
        assert folded[act.name].kind == "threshold"
        assert np.array_equal(r_fold.outputs[act.name], r_lat.outputs[act.name]), act.name
    # tolerance: the fold reorders float64 algebra (α·acc1 + α·acc2 -> 2α·acc, BN folded into
    # thresholds); observed ~1e-15, while a single flipped activation moves logits by >> 1e-9
    np.testing.assert_allclose(r_fold.logits, r_lat.logits, rtol=1e-9, atol=1e-9)
    assert folded.form == "folded" and latent.form == "latent"


def test_fold_codes_scales_biases(latent, folded):
    assert len(latent.ternary_layers()) == len(folded.ternary_layers()) > 0
    assert np.any(np.abs(latent.ternary_layers()[0].params["weight1"]) > 1)  # the clamp is exercised
    for lat in latent.ternary_layers():
        f = folded[lat.name]
        p = lat.params
        assert f.kind == lat.kind.replace("sttn_", "ternary_")
        want_codes = (hand_sign(p["weight1"]) + hand_sign(p["weight2"])) // 2  # {-2, 0, 2} -> {-1, 0, 1}
        assert f.params["codes"].dtype == np.int8
        assert np.array_equal(f.params["codes"], want_codes)
        # tolerance: α summed in a different order (numpy pairwise vs fsum): relative ~1e-16·log n
        np.testing.assert_allclose(f.params["scale"], 2 * hand_alpha(p["weight1"], p["weight2"]), rtol=1e-13, atol=0)
        assert np.array_equal(f.params["bias"], p["bias1"].astype(np.float64) + p["bias2"].astype(np.float64))
        assert f.attrs.get("stride") == lat.attrs.get("stride")


def test_fold_removes_bn_before_activations(latent, folded):
    names = set(folded.layer_names)
    fed = 0
    for act in [l for l in latent.layers if l.kind == "ternary_act"]:
        src = latent[act.inputs[0]]
        assert folded[act.name].kind == "threshold"
        if src.kind == "batchnorm":
            fed += 1
            assert src.name not in names
    assert fed == len([l for l in latent.layers if l.kind == "ternary_act"])  # every builder puts BN first
    # BNs that feed something else (bn_add* of the ResNet) stay
    for bn in [l for l in latent.layers if l.kind == "batchnorm"]:
        if latent.consumers(bn.name)[0].kind != "ternary_act":
            assert folded[bn.name].kind == "batchnorm"
    assert not any(l.kind in ("ternary_act", "sttn_conv", "sttn_linear") for l in folded.layers)


def test_fold_handles_negative_and_zero_gamma(latent, folded):
    neg = zero = 0
    for act in [l for l in latent.layers if l.kind == "ternary_act"]:
        bn = latent[act.inputs[0]]
        gamma = bn.params["weight"]
        th = folded[act.name].params
        src = latent[bn.inputs[0]]
        s = np.ones_like(gamma, dtype=np.float64)
        if src.kind.startswith("sttn"):
            s = 2 * hand_alpha(src.params["weight1"], src.params["weight2"])
        assert np.array_equal(th["direction"], np.sign(gamma.astype(np.float64) * s).astype(np.int8))
        for c in np.flatnonzero(gamma == 0):
            zero += 1
            # γ = 0: y = β everywhere (for an accumulator: g·b + h = β as well)
            beta = float(bn.params["bias"][c])
            assert th["constant"][c] == (1 if beta >= 0.5 else (-1 if beta < -0.5 else 0))
        neg += int(np.sum(gamma < 0))
    assert neg > 0 and zero > 0


def test_plain_cnn_integer_thresholds():
    m = synthetic_model("plain_ternary_cnn", seed=4, channels=(4, 6, 8), input_size=8)
    f = fold(m)
    ternary = [l for l in f.layers if l.kind == "ternary_conv"]
    assert [l.name for l in ternary] == ["features.3", "features.6", "features.9"]
    for conv in ternary:
        # every ternary conv of this builder feeds BN -> tact directly: integer accumulator out
        assert conv.attrs["epilogue"] == "none"
        (th,) = f.consumers(conv.name)
        assert th.kind == "threshold" and th.attrs["integer"] is True
        assert th.params["lo"].dtype == np.int64 and th.params["hi"].dtype == np.int64
    stem = f["features.2"]  # after the float stem conv: float thresholds on the pre-BN value
    assert stem.attrs["integer"] is False and stem.params["lo"].dtype == np.float64
    assert stem.inputs == ["features.0"]
    x = synthetic_input(m, 3, seed=5)
    run = run_reference(f, x)
    assert run.outputs["features.3"].dtype == np.int64
    # tolerance: reordered float64 algebra only (codes are identical), see above
    np.testing.assert_allclose(run.logits, reference_forward(m, x), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- zero latent weights


def test_zero_latent_weight():
    m = synthetic_model("ternary_mlp", seed=5, hidden=(8,), input_shape=(1, 3, 3))
    m["fc1"].params["weight1"][2, 4] = 0.0
    with pytest.raises(FoldError, match=r"'fc1'.*\b1 latent weight"):
        fold(m)
    f = fold(m, zero_policy="round_to_zero")
    w1, w2 = m["fc1"].params["weight1"], m["fc1"].params["weight2"]
    want = (hand_sign(w1) + hand_sign(w2)) // 2
    want[2, 4] = 0  # odd sum ±1 rounded to 0
    assert np.array_equal(f["fc1"].params["codes"], want)


def test_zero_latent_weight_count():
    m = synthetic_model("ternary_mlp", seed=5, hidden=(8,), input_shape=(1, 3, 3))
    m["fc1"].params["weight1"][0, :3] = 0.0
    m["fc1"].params["weight2"][1, 0] = -0.0
    with pytest.raises(FoldError, match=r"'fc1'.*\b4 latent weight"):
        fold(m)


# --------------------------------------------------------------------------- merged form


def _merge(model, names=None):
    """Replace latent layers by merged ('ter_*') layers holding α(B1+B2) and b1+b2."""
    m = model.copy()
    out = []
    for l in m.layers:
        if l.kind in ("sttn_conv", "sttn_linear") and (names is None or l.name in names):
            p = l.params
            alpha = hand_alpha(p["weight1"], p["weight2"]).reshape((-1,) + (1,) * (p["weight1"].ndim - 1))
            weight = alpha * (hand_sign(p["weight1"]) + hand_sign(p["weight2"]))
            bias = p["bias1"].astype(np.float64) + p["bias2"].astype(np.float64)
            out.append(Layer(l.name, l.kind.replace("sttn_", "ter_"), l.inputs, dict(l.attrs),
                             {"weight": weight, "bias": bias}))
        else:
            out.append(l)
    return Model(m.arch, m.input_shape, out, "merged", m.metadata)


@pytest.mark.parametrize("name,kwargs", BUILDERS, ids=IDS)
def test_merged_fold_matches_latent_fold(name, kwargs):
    m = synthetic_model(name, seed=6, **kwargs)
    merged = _merge(m)
    assert merged.ternary_layers()[0].kind.startswith("ter_")
    f_lat, f_mer = fold(m), fold(merged)
    for lat in f_lat.ternary_layers():
        mer = f_mer[lat.name]
        assert mer.kind == lat.kind
        assert np.array_equal(mer.params["codes"], lat.params["codes"])
        # tolerance: the merged scale is the mean of identical float64 magnitudes (rounding of the sum)
        np.testing.assert_allclose(mer.params["scale"], lat.params["scale"], rtol=1e-13, atol=0)
        assert np.array_equal(mer.params["bias"], lat.params["bias"])
        assert mer.attrs == lat.attrs | {"folded_from": mer.attrs["folded_from"]}
    x = synthetic_input(m, 2, seed=1)
    # tolerance: scales differ by ~1e-16 relative (see above); codes are identical
    np.testing.assert_allclose(reference_forward(f_mer, x), reference_forward(f_lat, x), rtol=1e-9, atol=1e-9)


def test_merged_two_magnitudes_rejected():
    m = synthetic_model("plain_ternary_cnn", seed=6, channels=(4, 6), input_size=8)
    merged = _merge(m)
    w = merged["features.6"].params["weight"]
    nz = np.flatnonzero(w[3])
    w[3].flat[nz[0]] *= 1.5  # channel 3 now holds two magnitudes
    with pytest.raises(FoldError, match=r"'features\.6'.*channel 3"):
        fold(merged)


# --------------------------------------------------------------------------- NaN parameters / negative variance via fold()


@pytest.mark.parametrize("layer_name,param", [
    ("features.1", "weight"), ("features.4", "running_mean"), ("features.4", "bias"),
    ("features.3", "weight1"), ("features.3", "bias2"), ("features.7", "running_var"),
])
def test_fold_nan_parameter_named(layer_name, param):
    m = synthetic_model("plain_ternary_cnn", seed=7, channels=(4, 6), input_size=8)
    m[layer_name].params[param].flat[1] = np.nan
    with pytest.raises(ModelError, match=rf"'{re.escape(layer_name)}'.*'{param}'.*NaN"):
        fold(m)


@pytest.mark.parametrize("layer_name", ["features.1", "features.4", "features.7"])
def test_fold_negative_running_var_named(layer_name):
    m = synthetic_model("plain_ternary_cnn", seed=7, channels=(4, 6), input_size=8)
    m[layer_name].params["running_var"][2] = -1.0
    with pytest.raises(FoldError, match=rf"'{re.escape(layer_name)}'.*running_var is negative"):
        fold(m)


# --------------------------------------------------------------------------- rewrites one at a time


def _same_layer(a, b):
    return (a.name == b.name and a.kind == b.kind and a.inputs == b.inputs and a.attrs == b.attrs
            and a.params.keys() == b.params.keys()
            and all(np.array_equal(a.params[k], b.params[k]) and a.params[k].dtype == b.params[k].dtype
                    for k in a.params))


def _float_model():
    rng = np.random.default_rng(0)
    bn = lambda c: {"weight": np.array([1.0, -0.5, 0.0][:c]), "bias": np.array([0.1, 0.2, 0.6][:c]),  # noqa: E731
                    "running_mean": rng.normal(size=c), "running_var": rng.uniform(0.5, 2, c)}
    layers = [
        Layer("conv", "conv", ["input"], {"stride": 1, "padding": 1}, {"weight": rng.normal(size=(3, 2, 3, 3))}),
        Layer("bn", "batchnorm", ["conv"], {"eps": 1e-5}, bn(3)),
        Layer("act", "ternary_act", ["bn"], {"lo": -0.4, "hi": 0.7}),
        Layer("conv2", "conv", ["act"], {"stride": 1, "padding": 0}, {"weight": rng.normal(size=(3, 3, 1, 1))}),
        Layer("bn2", "batchnorm", ["conv2"], {"eps": 1e-5}, bn(3)),
        Layer("relu", "relu", ["bn2"]),
        Layer("bare", "ternary_act", ["relu"]),
        Layer("flat", "flatten", ["bare"]),
    ]
    return Model("float_toy", (2, 4, 4), layers, "float")


def test_bn_threshold_alone_on_float_model():
    m = _float_model()
    out, changed = FoldBatchNormThreshold().apply(m)
    assert changed
    assert out.layer_names == ["conv", "act", "conv2", "bn2", "relu", "bare", "flat"]
    th = out["act"]
    assert th.kind == "threshold" and th.inputs == ["conv"] and th.attrs["integer"] is False
    assert th.params["direction"].tolist() == [1, -1, 0]
    for name in ["conv", "conv2", "bn2", "relu", "bare", "flat"]:
        assert _same_layer(out[name], m[name])
    assert m["act"].kind == "ternary_act" and "bn" in m.layer_names  # input untouched
    x = np.random.default_rng(1).normal(size=(5, 2, 4, 4))
    assert np.array_equal(reference_forward(out, x), reference_forward(m, x))  # codes -> identical outputs


def test_bare_threshold_alone():
    m = _float_model()
    out, changed = FoldBareThreshold().apply(m)
    assert changed
    assert [l.kind for l in out.layers] == ["conv", "batchnorm", "threshold", "conv", "batchnorm", "relu",
                                             "threshold", "flatten"]
    for name in ["act", "bare"]:
        p = out[name].params
        assert p["direction"].tolist() == [1, 1, 1]
    assert out["act"].params["lo"].tolist() == [-0.4] * 3 and out["act"].params["hi"].tolist() == [0.7] * 3
    assert out["bare"].params["lo"].tolist() == [-0.5] * 3 and out["bare"].params["hi"].tolist() == [0.5] * 3
    for name in ["conv", "bn", "conv2", "bn2", "relu", "flat"]:
        assert _same_layer(out[name], m[name])
    x = np.random.default_rng(2).normal(size=(5, 2, 4, 4))
    assert np.array_equal(reference_forward(out, x), reference_forward(m, x))


@pytest.fixture(scope="module")
def cnn():
    return synthetic_model("plain_ternary_cnn", seed=8, channels=(4, 6), input_size=8)


def test_ternary_weights_alone(cnn):
    out, changed = FoldTernaryWeights().apply(cnn)
    assert changed
    for lat, new in zip(cnn.layers, out.layers):
        if lat.kind == "sttn_conv":
            assert new.kind == "ternary_conv" and new.attrs["epilogue"] == "affine" and new.name == lat.name
        else:
            assert _same_layer(new, lat)
    x = synthetic_input(cnn, 2, seed=3)
    # tolerance: α·acc1 + α·acc2 vs 2α·acc, reordered float64
    np.testing.assert_allclose(reference_forward(out, x), reference_forward(cnn, x), rtol=1e-9, atol=1e-9)


def test_accumulator_threshold_alone(cnn):
    untouched, changed = FoldAccumulatorThreshold().apply(cnn)  # no ternary_* layer yet: nothing to do
    assert not changed
    assert untouched.layer_names == cnn.layer_names
    assert all(_same_layer(a, b) for a, b in zip(untouched.layers, cnn.layers))
    step1, _ = FoldTernaryWeights().apply(cnn)
    out, changed = FoldAccumulatorThreshold().apply(step1)
    assert changed
    assert "features.4" not in out.layer_names and "features.7" not in out.layer_names  # BN after ternary convs
    assert out["features.1"].kind == "batchnorm" and out["features.2"].kind == "ternary_act"  # float stem chain
    assert out["features.5"].kind == "threshold" and out["features.5"].attrs["integer"] is True
    assert out["features.3"].attrs["epilogue"] == "none"


def test_bn_threshold_alone_leaves_latent_layers(cnn):
    out, changed = FoldBatchNormThreshold().apply(cnn)
    assert changed
    assert [l.kind for l in out.layers].count("sttn_conv") == 2
    assert not any(l.kind in ("batchnorm", "ternary_act") for l in out.layers)
    assert all(out[n].attrs["integer"] is False for n in ("features.2", "features.5", "features.8"))
    x = synthetic_input(cnn, 2, seed=4)
    # tolerance: BN folded into float thresholds; outputs differ only if a code flips
    np.testing.assert_allclose(reference_forward(out, x), reference_forward(cnn, x), rtol=1e-12, atol=1e-12)


def test_fold_of_folded_is_equal_copy(folded):
    again = fold(folded)
    assert again is not folded and again.form == "folded"
    assert again.layer_names == folded.layer_names
    for a, b in zip(again.layers, folded.layers):
        assert _same_layer(a, b)
        for k in a.params:
            assert a.params[k] is not b.params[k]


def test_fold_rejects_float_model():
    with pytest.raises(FoldError, match=r"'float_toy'.*no ternary layers"):
        fold(_float_model())


def test_fold_checks_every_batchnorm_not_only_those_before_activations():
    """A NaN or a negative variance in a BN that feeds no ternary activation (bn_add)
    would only show up as NaN logits at run time: fold refuses it and names the layer."""
    import numpy as np
    import pytest

    from sttn_sim import FoldError, ModelError, fold, synthetic_model

    model = synthetic_model("sttn_resnet18", seed=0, width=0.0625, input_size=32, num_classes=4)
    bad = model.copy()
    bad["features.5.bn_add2"].params["bias"][1] = np.nan
    with pytest.raises(ModelError, match=r"features\.5\.bn_add2.*'bias'"):
        fold(bad)
    bad = model.copy()
    bad["features.6.bn_add1"].params["running_var"][0] = -1.0
    with pytest.raises(FoldError, match=r"features\.6\.bn_add1.*negative"):
        fold(bad)


# --------------------------------------------------------------------------------------
# tie rules and asymmetric (TTQ) scales


@pytest.mark.parametrize("ttq", [False, True])
@pytest.mark.parametrize("tie", ["sttn", "half_even"])
def test_fold_keeps_the_tie_rule_on_exact_ties(tie_model, tie, ttq):
    model = tie_model(tie, ttq)
    x = tie_model.input(model, 6)
    folded = fold(model)
    assert {l.attrs.get("tie") for l in folded.layers if l.kind == "threshold"} == {tie}
    want = run_reference(model, x)
    got = run_reference(folded, x)
    ties = sum(int(np.sum(np.abs(v) == 0.5)) for k, v in want.pre_activations.items())
    assert ties > 50  # the quarter grid puts many pre-activations exactly on ±0.5
    for name in ("act0", "act1", "act3"):
        assert np.array_equal(want.outputs[name], got.outputs[name]), name
    # same float64 terms in another order (docs/design.md §2.6)
    assert np.max(np.abs(want.logits - got.logits)) <= 1e-9 * max(1.0, np.max(np.abs(want.logits)))
    integer = [l for l in folded.layers if l.kind == "threshold" and l.attrs["integer"]]
    assert [l.name for l in integer] == ([] if ttq else ["act1"])  # TTQ: two partial sums, no integer threshold
    if ttq:
        assert all("scale_neg" in l.params for l in folded.ternary_layers())


def test_the_two_tie_rules_differ_on_ties(tie_model):
    sttn, half = tie_model("sttn"), tie_model("half_even")
    x = tie_model.input(sttn, 6)
    a, b = run_reference(fold(sttn), x), run_reference(fold(half), x)
    assert not np.array_equal(a.outputs["act0"], b.outputs["act0"])
    pre = a.pre_activations["act0"]
    # exactly at +0.5: sttn says +1, half_even says 0; elsewhere the same
    assert (a.outputs["act0"][pre == 0.5] == 1).all() and (b.outputs["act0"][pre == 0.5] == 0).all()
    assert np.array_equal(a.outputs["act0"][pre != 0.5], b.outputs["act0"][pre != 0.5])


def test_ttq_fold_recovers_both_scales(tie_model):
    folded = fold(tie_model("sttn", ttq=True))
    conv1 = folded["conv1"]
    assert np.all(conv1.params["scale"] == 0.25) and np.all(conv1.params["scale_neg"] == 0.5)
    tw = conv1.spec.ternary_weights(conv1)
    assert tw.method == "ttq" and np.array_equal(tw.dequantize(), tie_model("sttn", ttq=True)["conv1"].params["weight"])


def test_ttq_merged_layer_with_three_magnitudes_is_refused(tie_model):
    model = tie_model("sttn", ttq=True)
    model["conv1"].params["weight"][0, 0, 0, 0] = 0.3  # a second positive magnitude, if positive
    model["conv1"].params["weight"][0, 0, 0, 1] = -0.7
    with pytest.raises(FoldError, match=r"layer 'conv1'.*channel 0.*(positive|negative)"):
        fold(model)

"""Tests for sttn_sim.quantizers.

Integer codes are compared exactly (np.array_equal). Floats are compared against an
independent float64 computation (Python loops, math.fsum, hand-derived numbers) with a
tolerance stated next to each comparison together with the reason for it.
"""

from __future__ import annotations

import dataclasses
import math

import matplotlib.colors
import matplotlib.markers
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sttn_sim.errors import ModelError, QuantizationError
from sttn_sim.quantizers import (
    HARD_THRESHOLD_METHODS,
    METHODS,
    Method,
    TernaryActivations,
    TernaryWeights,
    absmean_ternarize,
    all_methods,
    get_method,
    register_method,
    registered_method,
    unregister_method,
    fixed_ternarize,
    hard_threshold,
    optimal_ternarize,
    quantization_error,
    recover_merged_ternary,
    sparsity_ternarize,
    sttn_equivalent_weight,
    sttn_ternarize,
    ternarize_activations,
    ttq_ternarize,
    twn_ternarize,
)
from sttn_sim.train import TRAIN_METHODS, make_quantizer

# Hand-written decimal numbers (0.7, 0.45, ...) are not exact binary fractions and the
# code sums them in a different order than a hand derivation, so hand-derived scales are
# compared with rel=1e-12: far above float64 rounding of a handful of terms (~1e-16 each),
# far below any real mistake (the numbers differ in their 2nd-3rd digit).
HAND = dict(rel=1e-12, abs=1e-15)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codes_of(*rows):
    return np.array(rows, dtype=np.int8)


# --------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------

shapes_2d_plus = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)


@st.composite
def nonzero_weights(draw, shape=None):
    """Float32 or float64 array without exact zeros; magnitudes up to 2 (exercises clamp)."""
    if shape is None:
        shape = draw(shapes_2d_plus)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    width = 32 if dtype == np.float32 else 64
    mag = draw(hnp.arrays(dtype, shape, elements=st.floats(0.0009765625, 2.0, width=width)))  # 2**-10
    neg = draw(hnp.arrays(np.bool_, shape))
    return np.where(neg, -mag, mag).astype(dtype)


@st.composite
def sttn_pairs(draw):
    shape = draw(shapes_2d_plus)
    return draw(nonzero_weights(shape=shape)), draw(nonzero_weights(shape=shape))


# Elements mixing arbitrary floats with a small set of exactly representable values, so
# that ties of magnitudes (and exact zeros) occur often.
tie_prone = st.one_of(
    st.floats(-1.0, 1.0, width=64),
    st.sampled_from([0.0, 0.25, -0.25, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0]),
)


@st.composite
def weights_any(draw, min_dims=2):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=5))
    return draw(hnp.arrays(np.float64, shape, elements=tie_prone))


# --------------------------------------------------------------------------------------
# Independent reference computations (plain Python / loops, not the module's code)
# --------------------------------------------------------------------------------------


def ref_sign(v: float) -> int:
    return (v > 0) - (v < 0)


def ref_sttn(w1, w2):
    """Codes and per-channel alpha from docs/design.md §2.1 with Python loops and math.fsum."""
    a = np.asarray(w1, dtype=np.float64)
    b = np.asarray(w2, dtype=np.float64)
    c = a.shape[0]
    ra = a.reshape(c, -1)
    rb = b.reshape(c, -1)
    n = ra.shape[1]
    codes = np.zeros(ra.shape, dtype=np.int8)
    alpha = np.zeros(c)
    for o in range(c):
        ca = [min(1.0, max(-1.0, float(v))) for v in ra[o]]
        cb = [min(1.0, max(-1.0, float(v))) for v in rb[o]]
        alpha[o] = (math.fsum(abs(v) for v in ca) + math.fsum(abs(v) for v in cb)) / (2 * n)
        for i in range(n):
            codes[o, i] = (ref_sign(ca[i]) + ref_sign(cb[i])) // 2
    return codes.reshape(a.shape), alpha


def ref_rows(w, granularity):
    w = np.asarray(w, dtype=np.float64)
    return w.reshape(w.shape[0], -1) if granularity == "channel" else w.reshape(1, -1)


def ref_error_for_codes(mags, keep_mask):
    """L2 error of |w| vs alpha*|t| for given non-zero mask with the optimal alpha."""
    kept = [m for m, k in zip(mags, keep_mask) if k]
    dropped = [m for m, k in zip(mags, keep_mask) if not k]
    alpha = math.fsum(kept) / len(kept) if kept else 0.0
    return math.fsum((m - alpha) ** 2 for m in kept) + math.fsum(m * m for m in dropped)


def ref_brute_force_optimum(mags):
    """min over k = 0..n of the error of keeping the k largest magnitudes (own alpha)."""
    order = sorted(range(len(mags)), key=lambda i: -mags[i])
    best = math.inf
    for k in range(len(mags) + 1):
        keep = [False] * len(mags)
        for i in order[:k]:
            keep[i] = True
        best = min(best, ref_error_for_codes(mags, keep))
    return best


def row_errors(w, tw, granularity):
    """Per-row L2 error of tw.dequantize() against w, via fsum."""
    rw = ref_rows(w, granularity)
    rq = ref_rows(tw.dequantize(), granularity)
    return [math.fsum((x - y) ** 2 for x, y in zip(rw[o], rq[o])) for o in range(rw.shape[0])]


# Error sums of at most ~100 squares of numbers <= 1: float64 rounding is ~1e-14 in
# absolute terms; 1e-9 is a safe bound that still catches any sub-optimal choice of codes
# (a wrong choice changes the error by at least the square of a magnitude gap).
L2_TOL = 1e-9


# --------------------------------------------------------------------------------------
# STTN (docs/design.md §2.1)
# --------------------------------------------------------------------------------------


def test_sttn_hand_example():
    # W1 row0 clamps to [0.5, -0.3, 0.2, -1.0], W2 row1 clamps to [-1.0, 0.2, -0.4, -0.1].
    w1 = np.array([[0.5, -0.3, 0.2, -2.0], [0.1, 0.4, -0.6, 0.8]])
    w2 = np.array([[0.7, 0.3, -0.2, -0.5], [-1.5, 0.2, -0.4, -0.1]])
    tw = sttn_ternarize(w1, w2, name="conv")
    # row0 signs: W1 (+,-,+,-), W2 (+,+,-,-) -> (B1+B2)/2 = (1, 0, 0, -1)
    # row1 signs: W1 (+,+,-,+), W2 (-,+,-,-) -> (0, 1, -1, 0)
    assert tw.codes.dtype == np.int8
    assert np.array_equal(tw.codes, codes_of([1, 0, 0, -1], [0, 1, -1, 0]))
    # alpha0 = (0.5+0.3+0.2+1.0 + 0.7+0.3+0.2+0.5) / 8 = 3.7/8 = 0.4625 -> s0 = 0.925
    # alpha1 = (0.1+0.4+0.6+0.8 + 1.0+0.2+0.4+0.1) / 8 = 3.6/8 = 0.45   -> s1 = 0.9
    assert tw.scale.shape == (2,) and tw.scale.dtype == np.float64
    assert tw.scale[0] == pytest.approx(0.925, **HAND)
    assert tw.scale[1] == pytest.approx(0.9, **HAND)
    assert (tw.method, tw.granularity, tw.delta, tw.scale_neg) == ("sttn", "channel", None, None)
    np.testing.assert_allclose(tw.dequantize(), [[0.925, 0, 0, -0.925], [0, 0.9, -0.9, 0]], rtol=1e-12)
    assert tw.sparsity == pytest.approx(4 / 8, abs=0)  # 4 zeros out of 8: exact in float
    # Equivalent weight (docs/design.md §3): (clamp W1 + clamp W2)/2
    # row0: ((0.5+0.7)/2, (-0.3+0.3)/2, (0.2-0.2)/2, (-1.0-0.5)/2) = (0.6, 0, 0, -0.75)
    # row1: ((0.1-1.0)/2, (0.4+0.2)/2, (-0.6-0.4)/2, (0.8-0.1)/2) = (-0.45, 0.3, -0.5, 0.35)
    eq = sttn_equivalent_weight(w1, w2)
    assert eq.dtype == np.float64
    np.testing.assert_allclose(eq, [[0.6, 0, 0, -0.75], [-0.45, 0.3, -0.5, 0.35]], rtol=1e-12, atol=1e-15)


def test_sttn_4d_conv_shape_and_float32():
    # [C_out=2, C_in=1, kh=1, kw=2]; float32 latent weights, math in float64.
    w1 = np.array([[[[0.5, -0.25]]], [[[-0.75, 1.5]]]], dtype=np.float32)
    w2 = np.array([[[[0.25, 0.5]]], [[[-0.5, 0.25]]]], dtype=np.float32)
    tw = sttn_ternarize(w1, w2)
    # ch0: signs (+,-),(+,+) -> (1, 0); alpha0 = (0.5+0.25+0.25+0.5)/4 = 0.375 -> s0 = 0.75
    # ch1: signs (-,+),(-,+) -> (-1, 1); 1.5 clamps to 1: alpha1 = (0.75+1+0.5+0.25)/4 = 0.625 -> 1.25
    assert tw.codes.shape == (2, 1, 1, 2)
    assert np.array_equal(tw.codes.reshape(2, 2), codes_of([1, 0], [-1, 1]))
    # Binary fractions: the float64 result is exact.
    assert np.array_equal(tw.scale, np.array([0.75, 1.25]))
    assert np.array_equal(tw.dequantize().reshape(2, 2), np.array([[0.75, 0.0], [-1.25, 1.25]]))


@SETTINGS
@given(sttn_pairs())
def test_sttn_codes_and_alpha_match_definition(pair):
    w1, w2 = pair
    tw = sttn_ternarize(w1, w2)
    ref_codes, ref_alpha = ref_sttn(w1, w2)
    assert tw.codes.shape == w1.shape
    assert np.array_equal(tw.codes, ref_codes)
    # fsum (exact) vs numpy pairwise sums of <= 64 terms in [0, 1]: rounding < 1e-14 relative.
    np.testing.assert_allclose(tw.scale, 2.0 * ref_alpha, rtol=1e-12, atol=0)


@SETTINGS
@given(sttn_pairs())
def test_recover_merged_round_trip(pair):
    w1, w2 = pair
    tw = sttn_ternarize(w1, w2)
    ref_codes, ref_alpha = ref_sttn(w1, w2)
    c = w1.shape[0]
    bshape = (c,) + (1,) * (w1.ndim - 1)
    # The merged checkpoint value alpha*(B1+B2), built independently of dequantize().
    merged = ref_alpha.reshape(bshape) * (2 * ref_codes.astype(np.float64))
    for weight in (merged, tw.dequantize()):
        rec = recover_merged_ternary(weight)
        assert np.array_equal(rec.codes, ref_codes)
        assert (rec.method, rec.granularity, rec.delta) == ("sttn", "channel", None)
        has_nz = np.any(ref_codes.reshape(c, -1) != 0, axis=1)
        # mean of identical floats: at most a few ulps of rounding -> rtol 1e-12.
        np.testing.assert_allclose(rec.scale[has_nz], 2 * ref_alpha[has_nz], rtol=1e-12, atol=0)
        # A channel whose signs all disagree is all zero: its scale is recovered as 0.
        assert np.all(rec.scale[~has_nz] == 0.0)


ZERO_W1 = np.array([[0.0, 0.5], [-0.3, 0.0]])
ZERO_W2 = np.array([[0.2, -0.5], [0.0, 0.4]])


def test_sttn_zero_policy_error_names_layer_and_count():
    # 3 exact zeros: W1[0,0], W1[1,1], W2[1,0].
    with pytest.raises(QuantizationError, match=r"features\.4\.conv1.*\b3\b.*exactly 0") as ei:
        sttn_ternarize(ZERO_W1, ZERO_W2, name="features.4.conv1")
    assert isinstance(ei.value, ValueError)
    assert "zero_policy" in str(ei.value)


def test_sttn_negative_zero_counts_as_zero():
    w1 = np.array([[-0.0, 0.5]])
    w2 = np.array([[0.2, 0.4]])
    with pytest.raises(QuantizationError, match=r"L: 1 latent"):
        sttn_ternarize(w1, w2, name="L")


def test_sttn_zero_policy_positive():
    tw = sttn_ternarize(ZERO_W1, ZERO_W2, zero_policy="positive")
    # sign(0) := +1. row0: B1 (+1[0], +1), B2 (+1, -1) -> (1, 0)
    #                row1: B1 (-1, +1[0]), B2 (+1[0], +1) -> (0, 1)
    assert np.array_equal(tw.codes, codes_of([1, 0], [0, 1]))
    # alpha0 = (0 + 0.5 + 0.2 + 0.5)/4 = 0.3 -> 0.6; alpha1 = (0.3 + 0 + 0 + 0.4)/4 = 0.175 -> 0.35
    assert tw.scale[0] == pytest.approx(0.6, **HAND)
    assert tw.scale[1] == pytest.approx(0.35, **HAND)


def test_sttn_zero_policy_round_to_zero():
    tw = sttn_ternarize(ZERO_W1, ZERO_W2, zero_policy="round_to_zero")
    # sign(0) = 0. row0 sums (0+1, 1-1) = (1, 0) -> (0, 0); row1 (-1+0, 0+1) = (-1, 1) -> (0, 0)
    assert np.array_equal(tw.codes, codes_of([0, 0], [0, 0]))
    assert tw.scale[0] == pytest.approx(0.6, **HAND)
    # an even sum survives: W1 = W2 = -0.5 next to a zero
    tw2 = sttn_ternarize(np.array([[-0.5, 0.0]]), np.array([[-0.5, 0.25]]), zero_policy="round_to_zero")
    assert np.array_equal(tw2.codes, codes_of([-1, 0]))


def test_sttn_policies_agree_without_zeros():
    w1 = np.array([[0.5, -0.25], [0.75, -1.0]])
    w2 = np.array([[-0.5, -0.25], [0.5, 0.125]])
    ref = sttn_ternarize(w1, w2).codes
    for policy in ("positive", "round_to_zero"):
        assert np.array_equal(sttn_ternarize(w1, w2, zero_policy=policy).codes, ref)


def test_sttn_bad_inputs():
    with pytest.raises(QuantizationError, match=r"L.*\(2, 3\).*\(3, 2\)"):
        sttn_ternarize(np.ones((2, 3)), np.ones((3, 2)), name="L")
    with pytest.raises(QuantizationError, match=r"L.*\(2, 3\).*\(3, 2\)"):
        sttn_equivalent_weight(np.ones((2, 3)), np.ones((3, 2)), name="L")
    with pytest.raises(QuantizationError, match=r"L \(W2\).*finite.*1 NaN"):
        sttn_ternarize(np.ones((2, 2)), np.array([[1.0, np.nan], [1.0, 1.0]]), name="L")
    with pytest.raises(QuantizationError, match=r"L \(W1\).*finite.*1 \+Inf"):
        sttn_ternarize(np.array([[np.inf, 1.0]]), np.ones((1, 2)), name="L")
    with pytest.raises(QuantizationError, match=r"L.*ndim >= 2"):
        sttn_ternarize(np.ones(3), np.ones(3), name="L")
    with pytest.raises(QuantizationError, match=r"L.*ndim >= 1"):
        sttn_ternarize(np.float64(1.0), np.float64(1.0), name="L")
    with pytest.raises(QuantizationError, match=r"L.*zero_policy"):
        sttn_ternarize(np.ones((1, 2)), np.ones((1, 2)), zero_policy="ignore", name="L")
    with pytest.raises(QuantizationError, match=r"L \(W1\).*floating-point.*int"):
        sttn_ternarize(np.ones((1, 2), dtype=np.int32), np.ones((1, 2)), name="L")


# --------------------------------------------------------------------------------------
# Merged checkpoints
# --------------------------------------------------------------------------------------


def test_recover_merged_hand_example():
    w = np.array([[0.3, -0.3, 0.0], [0.0, 0.0, 0.0], [-0.125, -0.125, 0.125]])
    rec = recover_merged_ternary(w)
    assert np.array_equal(rec.codes, codes_of([1, -1, 0], [0, 0, 0], [-1, -1, 1]))
    # scale = mean of the non-zero magnitudes: 0.3, 0 (all-zero channel), 0.125.
    assert rec.scale[0] == pytest.approx(0.3, **HAND)
    assert rec.scale[1] == 0.0
    assert rec.scale[2] == 0.125  # exact binary fraction


def test_recover_merged_tolerance():
    w = np.array([[0.3, -0.3 * (1 + 1e-7), 0.0]])
    rec = recover_merged_ternary(w)  # default rtol=1e-5 accepts a 1e-7 relative spread
    assert np.array_equal(rec.codes, codes_of([1, -1, 0]))
    # mean of 0.3 and 0.3*(1+1e-7) = 0.3*(1+5e-8); rel 1e-12 covers float rounding.
    assert rec.scale[0] == pytest.approx(0.3 * (1 + 5e-8), rel=1e-12)
    with pytest.raises(QuantizationError, match="channel 0"):
        recover_merged_ternary(w, rtol=0.0)
    recover_merged_ternary(w, rtol=0.0, atol=1e-7)  # absolute tolerance also accepted


def test_recover_merged_not_ternary_names_channel_and_magnitudes():
    w = np.array([[0.3, -0.3, 0.0], [0.2, -0.4, 0.2]])
    with pytest.raises(QuantizationError, match=r"features\.5\.conv2.*channel 1.*0\.2, 0\.4") as ei:
        recover_merged_ternary(w, name="features.5.conv2")
    assert "channel 0" not in str(ei.value)


def test_recover_merged_five_levels_from_zero_latent():
    # alpha*(B1+B2) with an exactly-zero latent weight gives magnitudes {2a, a}: rejected.
    w = np.array([[0.5, 0.25, -0.5]])
    with pytest.raises(QuantizationError, match=r"ter.*channel 0.*0\.25, 0\.5"):
        recover_merged_ternary(w, name="ter")


def test_recover_merged_bad_inputs():
    with pytest.raises(QuantizationError, match=r"M.*finite"):
        recover_merged_ternary(np.array([[np.nan, 1.0]]), name="M")
    with pytest.raises(QuantizationError, match=r"M.*ndim >= 2"):
        recover_merged_ternary(np.array([1.0, -1.0]), name="M")
    with pytest.raises(QuantizationError, match=r"M.*rtol"):
        recover_merged_ternary(np.ones((1, 2)), rtol=-1.0, name="M")
    with pytest.raises(QuantizationError, match=r"M.*atol.*finite"):
        recover_merged_ternary(np.ones((1, 2)), atol=np.nan, name="M")


# --------------------------------------------------------------------------------------
# Hard-threshold baselines: hand examples
# --------------------------------------------------------------------------------------

W6 = np.array([0.9, -0.2, 0.05, -0.6, 0.3, 0.1])  # sum|w| = 2.15, mean|w| = 0.358333...


def test_twn_hand_tensor():
    tw = twn_ternarize(W6)
    # Δ = 0.7 * 2.15/6 = 0.2508333...; |w| > Δ: 0.9, 0.6, 0.3
    assert np.array_equal(tw.codes, codes_of(1, 0, 0, -1, 1, 0))
    assert tw.delta.shape == () and tw.scale.shape == ()
    assert float(tw.delta) == pytest.approx(0.7 * 2.15 / 6, **HAND)
    assert float(tw.scale) == pytest.approx((0.9 + 0.6 + 0.3) / 3, **HAND)  # 0.6
    assert (tw.method, tw.granularity, tw.scale_neg) == ("twn", "tensor", None)


def test_twn_hand_channel():
    w = np.array([[1.0, -0.1, 0.5, 0.2], [-0.04, 0.02, 0.01, 0.05]])
    tw = twn_ternarize(w, granularity="channel")
    # row0: mean|w| = 1.8/4 = 0.45, Δ = 0.315 -> (1, 0, 1, 0), α = (1.0+0.5)/2 = 0.75
    # row1: mean|w| = 0.12/4 = 0.03, Δ = 0.021 -> (-1, 0, 0, 1), α = (0.04+0.05)/2 = 0.045
    assert np.array_equal(tw.codes, codes_of([1, 0, 1, 0], [-1, 0, 0, 1]))
    np.testing.assert_allclose(tw.delta, [0.315, 0.021], rtol=1e-12)  # decimal inputs, see HAND
    np.testing.assert_allclose(tw.scale, [0.75, 0.045], rtol=1e-12)
    assert tw.granularity == "channel"


def test_absmean_hand():
    tw = absmean_ternarize(W6)
    # Δ = 0.5 * 2.15/6 = 0.1791667; |w| > Δ: 0.9, 0.2, 0.6, 0.3 -> α = 2.0/4 = 0.5
    assert np.array_equal(tw.codes, codes_of(1, -1, 0, -1, 1, 0))
    assert float(tw.delta) == pytest.approx(0.5 * 2.15 / 6, **HAND)
    assert float(tw.scale) == pytest.approx(0.5, **HAND)
    assert tw.method == "absmean"
    twc = absmean_ternarize(np.array([[0.5, -0.25, 0.0, 0.125], [0.0, 0.0, 0.0, 0.0]]), granularity="channel")
    # row0: mean = 0.875/4 = 0.21875, Δ = 0.109375 -> (1, -1, 0, 1), α = 0.875/3
    # row1: all zero -> Δ = 0, codes 0, α = 0
    assert np.array_equal(twc.codes, codes_of([1, -1, 0, 1], [0, 0, 0, 0]))
    assert np.array_equal(twc.delta, np.array([0.109375, 0.0]))  # binary fractions: exact
    np.testing.assert_allclose(twc.scale, [0.875 / 3, 0.0], rtol=1e-15)


def test_ttq_hand_tensor():
    w = np.array([0.8, -0.4, 0.03, -0.02, 0.5, -0.05])
    tw = ttq_ternarize(w)
    # Δ = 0.05 * 0.8 = 0.04 -> (1, -1, 0, 0, 1, -1); W_p = (0.8+0.5)/2 = 0.65, W_n = (0.4+0.05)/2 = 0.225
    assert np.array_equal(tw.codes, codes_of(1, -1, 0, 0, 1, -1))
    assert float(tw.delta) == pytest.approx(0.04, **HAND)
    assert float(tw.scale) == pytest.approx(0.65, **HAND)
    assert float(tw.scale_neg) == pytest.approx(0.225, **HAND)
    np.testing.assert_allclose(tw.dequantize(), [0.65, -0.225, 0, 0, 0.65, -0.225], rtol=1e-12)
    # t = 0.5: Δ = 0.4 (0.5*0.8 is exactly float(0.4)); |-0.4| <= Δ -> 0 (boundary is inclusive)
    tw2 = ttq_ternarize(w, t=0.5)
    assert np.array_equal(tw2.codes, codes_of(1, 0, 0, 0, 1, 0))
    assert float(tw2.scale_neg) == 0.0  # no -1 codes
    assert float(tw2.scale) == pytest.approx(0.65, **HAND)


def test_ttq_hand_channel():
    w = np.array([[0.2, -1.0, 0.04], [0.3, 0.01, -0.02]])
    tw = ttq_ternarize(w, granularity="channel")
    # row0: Δ = 0.05 -> (1, -1, 0), W_p = 0.2, W_n = 1.0; row1: Δ = 0.015 -> (1, 0, -1), W_p = 0.3, W_n = 0.02
    assert np.array_equal(tw.codes, codes_of([1, -1, 0], [1, 0, -1]))
    np.testing.assert_allclose(tw.delta, [0.05, 0.015], rtol=1e-12)
    np.testing.assert_allclose(tw.scale, [0.2, 0.3], rtol=1e-12)
    np.testing.assert_allclose(tw.scale_neg, [1.0, 0.02], rtol=1e-12)
    np.testing.assert_allclose(tw.dequantize(), [[0.2, -1.0, 0.0], [0.3, 0.0, -0.02]], rtol=1e-12)


def test_optimal_hand():
    tw = optimal_ternarize(np.array([1.0, -0.9, 0.2, -0.1]))
    # sorted 1.0, 0.9, 0.2, 0.1; S = 1, 1.9, 2.1, 2.2; S^2/k = 1, 1.805, 1.47, 1.21 -> k = 2
    # α = 0.95, Δ = 0.475 (separates 0.9 > 0.475 >= 0.2)
    assert np.array_equal(tw.codes, codes_of(1, -1, 0, 0))
    assert float(tw.scale) == pytest.approx(0.95, **HAND)
    assert float(tw.delta) == pytest.approx(0.475, **HAND)
    assert tw.method == "optimal"


def test_optimal_ties():
    # (3, 1, 1, 1): S = 3, 4, 5, 6; S^2/k = 9, 8, 8.33, 9 -> k = 1 and k = 4 tie (both L2
    # error 3: k=1 leaves 1+1+1, k=4 with α = 1.5 leaves 2.25 + 3*0.25). The smallest k wins.
    tw = optimal_ternarize(np.array([-3.0, 1.0, -1.0, 1.0]))
    assert np.array_equal(tw.codes, codes_of(-1, 0, 0, 0))
    assert float(tw.scale) == 3.0 and float(tw.delta) == 1.5
    # (2, 1, 1): S^2/k = 4, 4.5, 5.33 -> k = 3, α = 4/3: the tied ones are kept together.
    tw = optimal_ternarize(np.array([2.0, 1.0, -1.0]))
    assert np.array_equal(tw.codes, codes_of(1, 1, -1))
    assert float(tw.scale) == pytest.approx(4 / 3, rel=1e-15)  # one rounding of 4/3
    # (4, 1, 1, 1, 1): S^2/k = 16, 12.5, 12, 12.25, 12.8 -> k = 1: the tied ones dropped together.
    tw = optimal_ternarize(np.array([4.0, 1.0, 1.0, -1.0, 1.0]))
    assert np.array_equal(tw.codes, codes_of(1, 0, 0, 0, 0))
    # All equal: S^2/k = k -> k = n.
    tw = optimal_ternarize(np.array([0.5, -0.5, 0.5]))
    assert np.array_equal(tw.codes, codes_of(1, -1, 1))
    assert float(tw.scale) == 0.5 and float(tw.delta) == 0.25


def test_optimal_all_zero_and_channel():
    tw = optimal_ternarize(np.zeros((2, 3)), granularity="channel")
    assert np.array_equal(tw.codes, np.zeros((2, 3), dtype=np.int8))
    assert np.array_equal(tw.scale, [0.0, 0.0]) and np.array_equal(tw.delta, [0.0, 0.0])
    tw = optimal_ternarize(np.array([[1.0, -0.9, 0.2, -0.1], [-3.0, 1.0, -1.0, 1.0]]), granularity="channel")
    assert np.array_equal(tw.codes, codes_of([1, -1, 0, 0], [-1, 0, 0, 0]))
    np.testing.assert_allclose(tw.scale, [0.95, 3.0], rtol=1e-12)
    np.testing.assert_allclose(tw.delta, [0.475, 1.5], rtol=1e-12)


def test_fixed_hand():
    w = np.array([0.5, -0.3, 0.3, 0.1])
    tw = fixed_ternarize(w, 0.3)
    # |w| <= 0.3 -> 0 (inclusive), so only 0.5 is kept: α = 0.5
    assert np.array_equal(tw.codes, codes_of(1, 0, 0, 0))
    assert float(tw.scale) == 0.5 and float(tw.delta) == 0.3
    assert tw.method == "fixed"
    tw0 = fixed_ternarize(w, 0)  # Δ = 0: every non-zero kept, α = 1.2/4
    assert np.array_equal(tw0.codes, codes_of(1, -1, 1, 1))
    assert float(tw0.scale) == pytest.approx(0.3, **HAND)
    # per channel Δ array
    wc = np.array([[0.5, -0.1, 0.2], [-0.3, 0.25, 0.0]])
    twc = fixed_ternarize(wc, np.array([0.1, 0.25]), granularity="channel")
    # row0 Δ=0.1: (1, 0, 1), α = 0.35; row1 Δ=0.25: (-1, 0, 0), α = 0.3
    assert np.array_equal(twc.codes, codes_of([1, 0, 1], [-1, 0, 0]))
    np.testing.assert_allclose(twc.scale, [0.35, 0.3], rtol=1e-12)
    assert np.array_equal(twc.delta, [0.1, 0.25])
    # scalar Δ with channel granularity is broadcast
    assert np.array_equal(fixed_ternarize(wc, 0.2, granularity="channel").delta, [0.2, 0.2])
    # hard_threshold is the same rule
    assert np.array_equal(hard_threshold(wc, np.array([0.1, 0.25]), granularity="channel").codes, twc.codes)


def test_sparsity_hand():
    w = np.array([0.1, -0.4, 0.3, -0.2, 0.05])
    tw = sparsity_ternarize(w, 0.4)
    # keep round((1-0.4)*5) = 3: 0.4, 0.3, 0.2; Δ = 4th largest = 0.1; α = 0.9/3 = 0.3
    assert np.array_equal(tw.codes, codes_of(0, -1, 1, -1, 0))
    assert float(tw.delta) == 0.1
    assert float(tw.scale) == pytest.approx(0.3, **HAND)
    assert tw.method == "sparsity"
    # 0.5 * 5 = 2.5 kept -> rounded half up to 3
    assert np.array_equal(sparsity_ternarize(w, 0.5).codes, codes_of(0, -1, 1, -1, 0))
    # 0.7 -> keep round(1.5) = 2
    assert np.array_equal(sparsity_ternarize(w, 0.7).codes, codes_of(0, -1, 1, 0, 0))
    # sparsity 1: nothing kept, Δ = max|w|; sparsity 0: everything kept, Δ = 0
    t1 = sparsity_ternarize(w, 1.0)
    assert np.array_equal(t1.codes, np.zeros(5, dtype=np.int8)) and float(t1.delta) == 0.4
    assert float(t1.scale) == 0.0
    t0 = sparsity_ternarize(w, 0.0)
    assert np.array_equal(t0.codes, codes_of(1, -1, 1, -1, 1)) and float(t0.delta) == 0.0
    # tie at the boundary: keep 2 of (0.5, 0.2, 0.2, 0.1) -> Δ = 0.2 drops both 0.2s
    tt = sparsity_ternarize(np.array([0.5, 0.2, -0.2, 0.1]), 0.5)
    assert np.array_equal(tt.codes, codes_of(1, 0, 0, 0))
    assert tt.sparsity == 0.75  # >= requested 0.5
    # per channel: rows keep 2 of 4
    tc = sparsity_ternarize(np.array([[0.1, -0.4, 0.3, -0.2], [1.0, 2.0, -3.0, 4.0]]), 0.5, granularity="channel")
    assert np.array_equal(tc.codes, codes_of([0, -1, 1, 0], [0, 0, -1, 1]))
    assert np.array_equal(tc.delta, [0.2, 2.0])
    np.testing.assert_allclose(tc.scale, [0.35, 3.5], rtol=1e-12)


def test_registry():
    assert set(HARD_THRESHOLD_METHODS) == {"twn", "ttq", "optimal", "absmean"}
    w = np.array([[0.5, -0.25, 0.125], [0.75, 0.0, -1.0]])
    for key, fn in HARD_THRESHOLD_METHODS.items():
        for gran in ("tensor", "channel"):
            tw = fn(w, granularity=gran, name="x")
            assert tw.method == key and tw.granularity == gran


# --------------------------------------------------------------------------------------
# Hard-threshold baselines: properties
# --------------------------------------------------------------------------------------

ALL_HARD = {
    "twn": lambda w, **kw: twn_ternarize(w, **kw),
    "ttq": lambda w, **kw: ttq_ternarize(w, **kw),
    "ttq_t02": lambda w, **kw: ttq_ternarize(w, 0.2, **kw),
    "optimal": lambda w, **kw: optimal_ternarize(w, **kw),
    "absmean": lambda w, **kw: absmean_ternarize(w, **kw),
    "fixed": lambda w, **kw: fixed_ternarize(w, 0.3, **kw),
    "hard": lambda w, **kw: hard_threshold(w, 0.3, **kw),
    "sparsity": lambda w, **kw: sparsity_ternarize(w, 0.6, **kw),
}


@pytest.mark.parametrize("method", sorted(ALL_HARD))
@SETTINGS
@given(w=weights_any())
def test_threshold_rule_and_granularity(method, w):
    fn = ALL_HARD[method]
    for gran in ("tensor", "channel"):
        tw = fn(w, granularity=gran)
        assert tw.codes.shape == w.shape and tw.codes.dtype == np.int8
        expected_shape = (w.shape[0],) if gran == "channel" else ()
        assert tw.scale.shape == expected_shape and tw.delta.shape == expected_shape
        rows = ref_rows(w, gran)
        crow = tw.codes.reshape(rows.shape)
        deltas = np.broadcast_to(tw.delta, (rows.shape[0],))
        scales = np.broadcast_to(tw.scale, (rows.shape[0],))
        for o in range(rows.shape[0]):
            d = float(deltas[o])
            expect = [1 if v > d else (-1 if v < -d else 0) for v in rows[o]]
            assert crow[o].tolist() == expect
            if method.startswith("ttq"):
                pos = [v for v, c in zip(rows[o], expect) if c == 1]
                neg = [-v for v, c in zip(rows[o], expect) if c == -1]
                wp = math.fsum(pos) / len(pos) if pos else 0.0
                wn = math.fsum(neg) / len(neg) if neg else 0.0
                # fsum vs numpy sum of <= 15 numbers <= 1: rounding ~1e-16; 1e-12 is safe.
                assert float(scales[o]) == pytest.approx(wp, rel=1e-12, abs=1e-15)
                assert float(np.broadcast_to(tw.scale_neg, scales.shape)[o]) == pytest.approx(wn, rel=1e-12, abs=1e-15)
            else:
                kept = [abs(v) for v, c in zip(rows[o], expect) if c != 0]
                alpha = math.fsum(kept) / len(kept) if kept else 0.0
                assert float(scales[o]) == pytest.approx(alpha, rel=1e-12, abs=1e-15)
        # per channel == per tensor on each channel slice
        if gran == "channel":
            for o in range(w.shape[0]):
                one = fn(w[o].reshape(-1), granularity="tensor")
                assert np.array_equal(one.codes, tw.codes[o].reshape(-1))
                # identical row computations; rtol only guards against summation blocking.
                assert float(one.scale) == pytest.approx(float(tw.scale[o]), rel=1e-12, abs=1e-15)
                assert float(one.delta) == pytest.approx(float(tw.delta[o]), rel=1e-12, abs=1e-15)


@SETTINGS
@given(w=weights_any(), gran=st.sampled_from(["tensor", "channel"]), data=st.data())
def test_optimal_is_l2_optimal(w, gran, data):
    tw = optimal_ternarize(w, granularity=gran)
    rows = ref_rows(w, gran)
    ours = row_errors(w, tw, gran)
    scales = np.broadcast_to(tw.scale, (rows.shape[0],))
    deltas = np.broadcast_to(tw.delta, (rows.shape[0],))
    crow = tw.codes.reshape(rows.shape)
    for o in range(rows.shape[0]):
        mags = [abs(float(v)) for v in rows[o]]
        # 1. brute force over all k
        best = ref_brute_force_optimum(mags)
        assert ours[o] <= best + L2_TOL
        assert ours[o] >= best - L2_TOL
        # 2. Δ = α/2 exactly (halving is exact in binary floating point) and it separates
        assert float(deltas[o]) == 0.5 * float(scales[o])
        kept = [m for m, c in zip(mags, crow[o]) if c != 0]
        dropped = [m for m, c in zip(mags, crow[o]) if c == 0]
        assert all(m > deltas[o] for m in kept)
        assert all(m <= deltas[o] for m in dropped)
        if kept:
            # equal magnitudes never straddle the boundary
            assert min(kept) > max(dropped, default=-1.0)
            # α = S_k/k vs fsum-based mean: rounding only -> rel 1e-12
            assert float(scales[o]) == pytest.approx(math.fsum(kept) / len(kept), rel=1e-12)
        else:
            assert float(scales[o]) == 0.0
    # 3. against other Δ rules, each with its own optimal-for-codes α (recomputed here)
    rand_delta = data.draw(st.floats(0.0, 1.2), label="random delta")
    rand_sparsity = data.draw(st.floats(0.0, 1.0), label="random sparsity")
    others = [
        twn_ternarize(w, granularity=gran),
        absmean_ternarize(w, granularity=gran),
        fixed_ternarize(w, rand_delta, granularity=gran),
        sparsity_ternarize(w, rand_sparsity, granularity=gran),
    ]
    for other in others:
        orow = other.codes.reshape(rows.shape)
        for o in range(rows.shape[0]):
            mags = [abs(float(v)) for v in rows[o]]
            theirs = ref_error_for_codes(mags, [c != 0 for c in orow[o]])
            assert ours[o] <= theirs + L2_TOL, other.method


@SETTINGS
@given(w=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1.0, 1.0)), p=st.floats(0.0, 1.0))
def test_sparsity_count(w, p):
    tw = sparsity_ternarize(w, p)
    n = w.size
    target = math.floor((1 - p) * n + 0.5)
    kept = int(np.count_nonzero(tw.codes))
    assert kept <= target
    mags = sorted((abs(float(v)) for v in w), reverse=True)
    # Without a tie at the boundary and without exact zeros among the top, exactly `target` are kept.
    if 0 < target < n and mags[target - 1] > mags[target] or target == n and mags[-1] > 0:
        assert kept == target


@pytest.mark.parametrize("method", sorted(ALL_HARD))
def test_float32_input_math_in_float64(method):
    rng = np.random.default_rng(7)
    w32 = rng.standard_normal((4, 3, 2)).astype(np.float32)
    a = ALL_HARD[method](w32, granularity="channel")
    b = ALL_HARD[method](w32.astype(np.float64), granularity="channel")
    # float32 -> float64 conversion is exact, so the results are bit-identical.
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.scale, b.scale) and a.scale.dtype == np.float64
    assert np.array_equal(a.delta, b.delta)


# --------------------------------------------------------------------------------------
# TernaryWeights
# --------------------------------------------------------------------------------------


def test_dequantize_broadcasts_along_axis0():
    codes = np.array([[[[1, -1]]], [[[0, 1]]]], dtype=np.int8)  # [2, 1, 1, 2]
    tw = TernaryWeights(codes=codes, scale=np.array([2.0, 0.5]), method="fixed", granularity="channel",
                        delta=np.array([1.0, 0.25]))
    assert np.array_equal(tw.dequantize().reshape(2, 2), [[2.0, -2.0], [0.0, 0.5]])
    assert tw.sparsity == 0.25
    ttq = TernaryWeights(codes=np.array([[1, -1], [-1, 0]], dtype=np.int8), scale=np.array([1.0, 0.5]),
                         method="ttq", granularity="channel", delta=np.array([0.1, 0.1]),
                         scale_neg=np.array([0.25, 2.0]))
    assert np.array_equal(ttq.dequantize(), [[1.0, -0.25], [-2.0, 0.0]])
    tensor = TernaryWeights(codes=np.array([1, 0, -1], dtype=np.int8), scale=np.array(0.5), method="twn",
                            granularity="tensor", delta=np.array(0.2))
    assert np.array_equal(tensor.dequantize(), [0.5, 0.0, -0.5])
    assert tensor.dequantize().dtype == np.float64


def test_ternary_weights_invariants():
    ok = dict(codes=np.array([1, 0], dtype=np.int8), scale=np.array(1.0), method="twn",
              granularity="tensor", delta=np.array(0.5))
    tw = TernaryWeights(**ok)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tw.method = "ttq"  # type: ignore[misc]
    bad_cases = [
        dict(codes=np.array([2, 0], dtype=np.int8)),
        dict(codes=np.array([0.0, 1.0])),
        dict(method="nope"),
        dict(granularity="layer"),
        dict(scale=np.array([1.0])),
        dict(scale=np.array(-1.0)),
        dict(method="ttq"),  # no scale_neg
        dict(scale_neg=np.array(1.0)),  # scale_neg without ttq
    ]
    for bad in bad_cases:
        with pytest.raises(QuantizationError, match="TernaryWeights"):
            TernaryWeights(**{**ok, **bad})


# --------------------------------------------------------------------------------------
# quantization_error
# --------------------------------------------------------------------------------------


def test_quantization_error_hand():
    w = np.array([1.0, -0.5, 0.0, 0.25])
    tw = fixed_ternarize(w, 0.3)  # codes (1, -1, 0, 0), α = 0.75
    err = quantization_error(w, tw)
    # residual (0.25, 0.25, 0, 0.25): l2 = 3 * 0.0625 = 0.1875 (exact binary fractions)
    assert err["l2"] == 0.1875
    # <w, ŵ> = 0.75 + 0.375 = 1.125; |w| = sqrt(1.3125); |ŵ| = 0.75*sqrt(2)
    # a few roundings in sqrt/division -> rel 1e-14
    assert err["cosine"] == pytest.approx(1.125 / (math.sqrt(1.3125) * 0.75 * math.sqrt(2)), rel=1e-14)
    zero = fixed_ternarize(w, 2.0)  # all codes 0 -> ŵ = 0 -> cosine defined as 0
    ez = quantization_error(w, zero)
    assert ez["cosine"] == 0.0 and ez["l2"] == 1.3125
    wz = np.zeros(3)
    assert quantization_error(wz, twn_ternarize(wz)) == {"l2": 0.0, "cosine": 0.0}
    # TTQ uses both scales
    wt = np.array([0.5, -0.25])
    et = quantization_error(wt, ttq_ternarize(wt))
    assert et["l2"] == 0.0 and et["cosine"] == pytest.approx(1.0, abs=1e-15)


@SETTINGS
@given(pair=sttn_pairs())
def test_quantization_error_matches_independent_formula(pair):
    w1, w2 = pair
    w = sttn_equivalent_weight(w1, w2)
    tw = sttn_ternarize(w1, w2)
    err = quantization_error(w, tw)
    wf = [float(v) for v in w.ravel()]
    qf = [float(v) for v in tw.dequantize().ravel()]
    l2 = math.fsum((a - b) ** 2 for a, b in zip(wf, qf))
    dot = math.fsum(a * b for a, b in zip(wf, qf))
    nw = math.sqrt(math.fsum(a * a for a in wf))
    nq = math.sqrt(math.fsum(b * b for b in qf))
    cos = 0.0 if nw == 0 or nq == 0 else dot / (nw * nq)
    # numpy pairwise sums vs fsum of <= 256 terms: rounding < 1e-13 relative/absolute.
    assert err["l2"] == pytest.approx(l2, rel=1e-11, abs=1e-13)
    assert err["cosine"] == pytest.approx(cos, rel=1e-11, abs=1e-13)


def test_quantization_error_bad_inputs():
    tw = twn_ternarize(np.ones((2, 3)))
    with pytest.raises(QuantizationError, match=r"Q.*\(3, 2\).*\(2, 3\)"):
        quantization_error(np.ones((3, 2)), tw, name="Q")
    with pytest.raises(QuantizationError, match=r"Q.*finite"):
        quantization_error(np.array([[np.nan, 1, 1], [1, 1, 1]]), tw, name="Q")
    with pytest.raises(QuantizationError, match=r"Q.*TernaryWeights"):
        quantization_error(np.ones((2, 3)), np.ones((2, 3)), name="Q")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Activations (docs/design.md §2.2)
# --------------------------------------------------------------------------------------


def test_activation_rule_at_thresholds():
    x = np.array([-0.6, -0.5, -0.4999, 0.0, 0.4999, 0.5, 0.7])
    ta = ternarize_activations(x)
    assert isinstance(ta, TernaryActivations)
    # x < -0.5 -> -1; -0.5 <= x < 0.5 -> 0; x >= 0.5 -> +1 (so -0.5 -> 0 and 0.5 -> +1)
    assert np.array_equal(ta.codes, codes_of(-1, 0, 0, 0, 0, 1, 1))
    assert ta.codes.dtype == np.int8
    assert (ta.lo, ta.hi, ta.exact_ties, ta.near_ties) == (-0.5, 0.5, 2, 2)


def test_activation_float32_ties():
    x = np.array([[-0.5, 0.5], [0.25, -0.75]], dtype=np.float32)  # exactly representable
    ta = ternarize_activations(x)
    assert np.array_equal(ta.codes, codes_of([0, 1], [0, -1]))
    assert ta.exact_ties == 2


def test_activation_asymmetric_and_near_ties():
    x = np.array([-0.3, -0.2, 0.5, 1.0, 0.99])
    ta = ternarize_activations(x, lo=-0.2, hi=1.0)
    assert np.array_equal(ta.codes, codes_of(-1, 0, 0, 1, 0))
    assert ta.exact_ties == 2 and ta.near_ties == 2
    # near ties are inclusive: |x - thr| == eps counts (binary fractions, exact differences)
    xs = np.array([0.75, 0.25, -0.25, -0.75, 0.0, 1.0])
    tn = ternarize_activations(xs, tie_eps=0.25)
    assert tn.exact_ties == 0 and tn.near_ties == 4
    assert np.array_equal(tn.codes, codes_of(1, 0, 0, -1, 0, 1))
    # lo == hi: a binary output, an element at the threshold is one (double) tie counted once
    tb = ternarize_activations(np.array([-1.0, 0.0, 1.0]), lo=0.0, hi=0.0)
    assert np.array_equal(tb.codes, codes_of(-1, 1, 1)) and tb.exact_ties == 1


@SETTINGS
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                 elements=st.one_of(st.floats(-2, 2), st.sampled_from([-0.5, 0.5, -0.25, 0.75]))),
    lo=st.sampled_from([-0.5, -0.25, 0.0]),
    hi=st.sampled_from([0.5, 0.75, 0.0]),
    eps=st.sampled_from([0.0, 0.01, 0.25]),
)
def test_activation_rule_property(x, lo, hi, eps):
    ta = ternarize_activations(x, lo, hi, tie_eps=eps)
    expect = [(-1 if v < lo else (1 if v >= hi else 0)) for v in x.ravel()]
    assert ta.codes.shape == x.shape
    assert ta.codes.ravel().tolist() == expect
    assert ta.exact_ties == sum(1 for v in x.ravel() if v == lo or v == hi)
    assert ta.near_ties == sum(1 for v in x.ravel() if abs(v - lo) <= eps or abs(v - hi) <= eps)


def test_activation_bad_inputs():
    with pytest.raises(QuantizationError, match=r"act.*lo <= hi"):
        ternarize_activations(np.zeros(3), lo=0.5, hi=-0.5, name="act")
    with pytest.raises(QuantizationError, match=r"act.*lo.*finite"):
        ternarize_activations(np.zeros(3), lo=np.nan, name="act")
    with pytest.raises(QuantizationError, match=r"act.*hi.*finite"):
        ternarize_activations(np.zeros(3), hi=np.inf, name="act")
    with pytest.raises(QuantizationError, match=r"act.*finite.*1 NaN"):
        ternarize_activations(np.array([0.0, np.nan]), name="act")
    with pytest.raises(QuantizationError, match=r"act.*finite.*1 -Inf"):
        ternarize_activations(np.array([0.0, -np.inf]), name="act")
    with pytest.raises(QuantizationError, match=r"act.*ndim >= 1"):
        ternarize_activations(np.float64(0.2), name="act")
    with pytest.raises(QuantizationError, match=r"act.*tie_eps"):
        ternarize_activations(np.zeros(3), tie_eps=-1e-3, name="act")
    with pytest.raises(QuantizationError, match=r"^activations:"):
        ternarize_activations(np.array([np.nan]))


# --------------------------------------------------------------------------------------
# Bad input, every weight quantizer
# --------------------------------------------------------------------------------------

BAD_WEIGHTS = {
    "nan": np.array([[0.1, np.nan], [0.2, 0.3]]),
    "inf": np.array([[0.1, np.inf], [0.2, 0.3]]),
    "ndim0": np.float64(0.5),
    "empty": np.zeros((0, 3)),
    "int": np.ones((2, 2), dtype=np.int64),
    "bool": np.ones((2, 2), dtype=bool),
    "complex": np.ones((2, 2), dtype=np.complex128),
    "ragged": [[0.1, 0.2], [0.3]],
    "string": "weights",
}


@pytest.mark.parametrize("method", sorted(ALL_HARD))
@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_weights_raise_with_name(method, case):
    with pytest.raises(QuantizationError, match=r"^layer3\.conv:") as ei:
        ALL_HARD[method](BAD_WEIGHTS[case], name="layer3.conv")
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("method", sorted(ALL_HARD))
def test_bad_granularity(method):
    with pytest.raises(QuantizationError, match=r"L.*granularity='channel'.*ndim >= 2"):
        ALL_HARD[method](np.ones(3), granularity="channel", name="L")
    with pytest.raises(QuantizationError, match=r"L.*granularity must be"):
        ALL_HARD[method](np.ones((2, 2)), granularity="row", name="L")


def test_bad_parameters():
    w = np.array([[0.5, -0.2], [0.1, 0.3]])
    for delta in (-0.1, np.nan, np.inf, "x", None, True):
        with pytest.raises(QuantizationError, match=r"^P: delta"):
            fixed_ternarize(w, delta, name="P")
    with pytest.raises(QuantizationError, match=r"P: delta.*channel 1"):
        fixed_ternarize(w, np.array([0.1, -0.1]), granularity="channel", name="P")
    with pytest.raises(QuantizationError, match=r"P: delta.*scalar.*shape \(2,\)"):
        fixed_ternarize(w, np.array([0.1, 0.1]), name="P")  # array Δ needs channel granularity
    with pytest.raises(QuantizationError, match=r"P: delta.*\(2,\).*shape \(3,\)"):
        hard_threshold(w, np.array([0.1, 0.1, 0.1]), granularity="channel", name="P")
    for p in (-0.01, 1.01, np.nan):
        with pytest.raises(QuantizationError, match=r"^P: sparsity"):
            sparsity_ternarize(w, p, name="P")
    for t in (-0.05, 1.5, np.nan):
        with pytest.raises(QuantizationError, match=r"^P: t "):
            ttq_ternarize(w, t, name="P")
    with pytest.raises(QuantizationError, match=r"name must be a str"):
        twn_ternarize(w, name=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# The method registry: one parametrized test over every registered method (the shape of
# larq's quantizers_test.py), then the registry's own behaviour
# --------------------------------------------------------------------------------------

# Values for the parameters a method takes; a new parameter needs a value here (the test
# fails with a KeyError naming it). The training knobs pass the same numbers.
PARAM_VALUES = {"delta": 0.3, "sparsity": 0.4, "t": 0.1}


def _latent(shape, seed):
    """Float32 latent weights in [-1, 1] without exact zeros (no sign(0) case)."""
    w = np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)
    w[w == 0] = 0.5
    return w


# STTN's scale is per output channel only; every hard-threshold method has both
METHOD_CASES = [pytest.param(m, g, id=f"{m.name}-{g}") for m in all_methods()
                for g in (("channel", "tensor") if m.hard_threshold else ("channel",))]


@pytest.mark.parametrize("method, granularity", METHOD_CASES)
def test_every_registered_method(method, granularity):
    shape = (4, 3, 3, 3)
    w1, w2 = _latent(shape, 1), _latent(shape, 2)
    params = {p.name: PARAM_VALUES[p.name] for p in method.params}
    if method.hard_threshold:
        tw = method.ternarize(w1, granularity=granularity, name="w", **params)
    else:
        tw = method.ternarize(w1, w2, name="w")
    assert get_method(method.name) is method and method.name in METHODS
    # the common result type, tagged with the method's name
    assert isinstance(tw, TernaryWeights) and tw.method == method.name
    assert tw.codes.dtype == np.int8 and tw.codes.shape == shape
    assert set(np.unique(tw.codes).tolist()) <= {-1, 0, 1}
    assert tw.dequantize().shape == shape and tw.dequantize().dtype == np.float64
    assert tw.granularity == (granularity if method.hard_threshold else "channel")
    assert (tw.delta is not None) == method.hard_threshold
    # presentation: matplotlib accepts the colour and the marker
    assert method.label and method.short
    assert matplotlib.colors.to_hex(method.color) == method.color.lower()
    matplotlib.markers.MarkerStyle(method.marker)
    # training: the quantizer's forward kernel IS the ternarize result, cast to float32
    if method.train_rule is None:
        assert method.name not in TRAIN_METHODS
        with pytest.raises(ModelError, match=f"method '{method.name}' has no weight quantizer"):
            make_quantizer(method.name)
        return
    assert method.name in TRAIN_METHODS
    q = make_quantizer(method.name, granularity=granularity, fixed_delta=PARAM_VALUES["delta"],
                       ttq_t=PARAM_VALUES["t"])
    assert q.method == method.name
    latent = {"weight1": w1, "weight2": w2} if method.train_rule == "sttn" else {"weight": w1}
    aux = q.init_aux(latent) if hasattr(q, "init_aux") else {}
    w_eff, _ = q.forward(latent, aux)
    # exact: both sides are the same float64 computation on the same float32 inputs,
    # rounded once to float32 (TTQ: W_p / W_n start at the method's scales)
    assert w_eff.dtype == np.float32
    np.testing.assert_array_equal(w_eff, tw.dequantize().astype(np.float32))
    codes, _ = q.codes_and_scale(latent, aux)
    np.testing.assert_array_equal(codes, tw.codes)


def test_hard_threshold_methods_view():
    hard = [m.name for m in all_methods() if m.hard_threshold and not m.required_params]
    assert list(HARD_THRESHOLD_METHODS) == hard == ["twn", "ttq", "optimal", "absmean"]
    assert HARD_THRESHOLD_METHODS["twn"] is twn_ternarize
    assert set(METHODS) == {"sttn", "twn", "ttq", "optimal", "absmean", "sparsity", "fixed"}
    assert get_method("fixed").required_params == ("delta",)
    assert get_method("sparsity").required_params == ("sparsity",) and get_method("ttq").required_params == ()


def test_get_method_unknown_name_lists_known_ones():
    with pytest.raises(QuantizationError, match=r"unknown method 'xnor'; known methods: sttn, twn, ttq"):
        get_method("xnor")


def test_registered_method_is_temporary_and_live(toy_method):
    toy = toy_method  # Δ = 0.25·max|w| (tests/conftest.py)
    before = METHODS[:]
    assert "toy" not in METHODS
    with registered_method(toy):
        assert "toy" in METHODS and METHODS[-1] == "toy" and "toy" in HARD_THRESHOLD_METHODS
        assert get_method("toy") is toy
        tw = toy.ternarize(np.array([[0.5, -0.1], [1.0, -2.0]]), granularity="channel")
        assert np.array_equal(tw.codes, codes_of([1, 0], [1, -1]))  # Δ = 0.125 and 0.5
        with pytest.raises(QuantizationError, match="'toy' is already registered"):
            register_method(toy)
    assert "toy" not in METHODS and METHODS[:] == before
    with pytest.raises(QuantizationError, match="method must be one of|registered method"):
        TernaryWeights(codes_of([1, 0]), np.ones(2), "toy", "channel", None)


def test_register_and_unregister(toy_method):
    toy = Method("toy", "toy", "toy", "#123456", "p", toy_method.ternarize, train_rule=None)
    try:
        assert register_method(toy) is toy and "toy" in METHODS
        replaced = Method("toy", "toy 2", "toy", "#123456", "p", toy_method.ternarize, train_rule=None)
        register_method(replaced, replace=True)
        assert get_method("toy").label == "toy 2"
    finally:
        assert unregister_method("toy").label == "toy 2"
    assert "toy" not in METHODS
    with pytest.raises(QuantizationError, match="register_method\\(\\) expects a Method"):
        register_method("toy")


@pytest.mark.parametrize("change, message", [
    (dict(name="two words"), "method name must be an identifier"),
    (dict(color="red"), "color must be '#rrggbb'"),
    (dict(marker=""), "marker must be a non-empty string"),
    (dict(ternarize=None), "ternarize must be callable"),
    (dict(train_rule="adam"), "train_rule must be one of"),
    (dict(train_rule="sttn"), "'sttn' training rule is for the method without a hard threshold"),
    (dict(params=("delta",)), "params must be MethodParam entries"),
])
def test_method_validation(change, message, toy_method):
    fields = dict(name="toy", label="toy", short="toy", color="#123456", marker="p", ternarize=toy_method.ternarize)
    with pytest.raises(QuantizationError, match=message):
        Method(**{**fields, **change})

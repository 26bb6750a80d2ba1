"""Tests of sttn_sim.reference: the float64 / int64 ground-truth execution.

Every expected value is computed here with independent, deliberately naive code
(explicit loops, hand-written formulas) or written down by hand.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.errors import ModelError, ShapeError
from sttn_sim.graph import Layer
from sttn_sim.ops.reference import avgpool2d, batchnorm, conv2d, integer_conv2d, integer_linear, maxpool2d
from sttn_sim.reference import ReferenceRun, check_input, run_layer, run_reference
from sttn_sim.rules import apply_threshold, ternary_activation
from sttn_sim.builders import plain_ternary_cnn, ternary_mlp
from sttn_sim.synthetic import synthetic_input, synthetic_model

# --------------------------------------------------------------------------- naive helpers (independent of the package)


def naive_conv(x, w, stride, padding, dtype=np.float64):
    """Cross-correlation by explicit loops over output position and kernel tap
    (each step a small (N, C) x (C, O) product; zero padding by skipping taps)."""
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    assert c == c2
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    x = np.asarray(x).astype(dtype)
    w = np.asarray(w).astype(dtype)
    out = np.zeros((n, o, oh, ow), dtype)
    for i in range(oh):
        for j in range(ow):
            for p in range(kh):
                for q in range(kw):
                    r, s = i * stride + p - padding, j * stride + q - padding
                    if 0 <= r < h and 0 <= s < wd:  # taps on the zero padding contribute nothing
                        out[:, :, i, j] += x[:, :, r, s] @ w[:, :, p, q].T
    return out


def naive_linear(x, w, dtype=np.float64):
    n, f = x.shape
    o = w.shape[0]
    out = np.zeros((n, o), dtype)
    for b in range(n):
        for oc in range(o):
            acc = dtype(0)
            for k in range(f):
                acc += dtype(w[oc, k]) * dtype(x[b, k])
            out[b, oc] = acc
    return out


def hand_sign(w):
    """sign with sign(0) = 0, written without np.sign."""
    w = np.asarray(w, np.float64)
    return (w > 0).astype(np.float64) - (w < 0).astype(np.float64)


def hand_alpha(w1, w2):
    """α_o = (Σ|clamp W1_o| + Σ|clamp W2_o|) / (2n), with math.fsum per channel (docs/design.md §2.1)."""
    w1 = np.asarray(w1, np.float64)
    w2 = np.asarray(w2, np.float64)
    out = np.zeros(w1.shape[0])
    n = w1[0].size
    for o in range(w1.shape[0]):
        a = [abs(min(max(float(v), -1.0), 1.0)) for v in w1[o].ravel()]
        b = [abs(min(max(float(v), -1.0), 1.0)) for v in w2[o].ravel()]
        out[o] = math.fsum(a + b) / (2 * n)
    return out


def hand_tact(y, lo=-0.5, hi=0.5):
    out = np.zeros(np.shape(y), np.int64)
    for idx in np.ndindex(np.shape(y)):
        v = y[idx]
        out[idx] = 1 if v >= hi else (-1 if v < lo else 0)
    return out


def ternary(rng, shape):
    return rng.integers(-1, 2, size=shape).astype(np.float64)


# --------------------------------------------------------------------------- conv2d / integer_conv2d

CONV_CASES = list(itertools.product((1, 3, 5), (1, 3, 7), (1, 2), (0, 1, 3), (1, 3)))


@pytest.mark.parametrize("c,k,stride,padding,batch", CONV_CASES)
def test_conv2d_and_integer_conv2d_match_naive_loops(c, k, stride, padding, batch):
    rng = np.random.default_rng(hash((c, k, stride, padding, batch)) % 2**32)
    h, w = 9, 7  # odd spatial sizes (k = 7, padding 0 still gives a 3x1 output)
    o = 2
    x = rng.standard_normal((batch, c, h, w))
    wt = rng.standard_normal((o, c, k, k))
    got = conv2d(x, wt, stride, padding)
    want = naive_conv(x, wt, stride, padding)
    assert got.shape == want.shape
    assert got.dtype == np.float64
    # tolerance: different summation order over <= 5*7*7 products of O(1) values (~1e-14)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    xc, wc = ternary(rng, x.shape).astype(np.int8), ternary(rng, wt.shape).astype(np.int8)
    got_i = integer_conv2d(xc, wc, stride, padding)
    want_i = naive_conv(xc.astype(np.int64), wc.astype(np.int64), stride, padding, dtype=np.int64)
    assert got_i.dtype == np.int64
    assert np.array_equal(got_i, want_i)


@pytest.mark.parametrize("kh,kw,stride,padding", [(3, 1, 1, 0), (1, 5, 2, 1), (2, 3, 2, 3)])
def test_conv2d_non_square_kernels(kh, kw, stride, padding):
    rng = np.random.default_rng(kh * 100 + kw * 10 + padding)
    x = rng.standard_normal((2, 3, 7, 9))
    w = rng.standard_normal((4, 3, kh, kw))
    # tolerance: different summation order over <= 15 products (~1e-15)
    np.testing.assert_allclose(conv2d(x, w, stride, padding), naive_conv(x, w, stride, padding), rtol=1e-12, atol=1e-12)
    xc, wc = ternary(rng, x.shape), ternary(rng, w.shape)
    assert np.array_equal(integer_conv2d(xc, wc, stride, padding), naive_conv(xc, wc, stride, padding, np.int64))


def test_integer_conv2d_large_accumulator_exact():
    # all-ones 512-channel 3x3 input and kernel: every interior accumulator is 4608 exactly
    x = np.ones((1, 512, 3, 3), np.int8)
    w = -np.ones((2, 512, 3, 3), np.int8)
    acc = integer_conv2d(x, w, 1, 1)
    assert acc[0, 0, 1, 1] == -4608
    assert acc[0, 1, 0, 0] == -512 * 4  # corner: 2x2 valid taps


@pytest.mark.parametrize("batch,f,o", [(1, 1, 1), (3, 7, 5), (2, 64, 9)])
def test_integer_linear_matches_loops(batch, f, o):
    rng = np.random.default_rng(f * 100 + o)
    x = rng.integers(-1, 2, (batch, f)).astype(np.int8)
    w = rng.integers(-1, 2, (o, f)).astype(np.int8)
    got = integer_linear(x, w)
    assert got.dtype == np.int64
    assert np.array_equal(got, naive_linear(x.astype(np.int64), w.astype(np.int64), dtype=np.int64))


# --------------------------------------------------------------------------- pooling


def naive_maxpool(x, k, s, p):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.empty((n, c, oh, ow))
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        vals = [x[b, ch, r, t]
                for r in range(i * s - p, i * s - p + k) for t in range(j * s - p, j * s - p + k)
                if 0 <= r < h and 0 <= t < w]  # only real (non-padding) positions
        out[b, ch, i, j] = max(vals)
    return out


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1), (5, 2, 2), (3, 3, 0)])
@pytest.mark.parametrize("h,w", [(7, 7), (8, 5), (9, 11)])
def test_maxpool2d_never_returns_padding(k, s, p, h, w):
    rng = np.random.default_rng(k * 31 + s * 7 + p + h * w)
    x = -1.0 - rng.random((2, 3, h, w))  # all negative: a zero pad would win every border window
    got = maxpool2d(x, k, s, p)
    assert np.all(np.isfinite(got))
    assert np.array_equal(got, naive_maxpool(x, k, s, p))  # max is exact: no tolerance


@pytest.mark.parametrize("k,s", [(2, 2), (3, 1), (3, 2), (7, 7), (4, 3)])
def test_avgpool2d_matches_loops(k, s):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 3, 7, 9))
    got = avgpool2d(x, k, s)
    oh, ow = (7 - k) // s + 1, (9 - k) // s + 1
    want = np.empty((2, 3, oh, ow))
    for b, c, i, j in itertools.product(range(2), range(3), range(oh), range(ow)):
        want[b, c, i, j] = math.fsum(x[b, c, i * s:i * s + k, j * s:j * s + k].ravel()) / (k * k)
    # tolerance: numpy's pairwise mean vs an exactly rounded fsum of <= 49 terms
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------- batchnorm


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 5)])
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.0])
def test_batchnorm_pytorch_formula(shape, eps):
    rng = np.random.default_rng(len(shape) + int(eps * 1e5))
    x = rng.standard_normal(shape).astype(np.float32)
    p = {
        "weight": np.array([1.5, -0.7, 0.0, 2.0], np.float32),
        "bias": np.array([0.1, -0.2, 0.3, 0.0], np.float32),
        "running_mean": np.array([0.5, -1.0, 0.0, 2.0], np.float32),
        "running_var": np.array([0.25, 4.0, 1.0, 0.01], np.float32),
    }
    got = batchnorm(x, p, eps)
    want = np.empty(shape)
    for idx in np.ndindex(shape):
        c = idx[1]
        # PyTorch eval: (x - running_mean) / sqrt(running_var + eps) * weight + bias
        want[idx] = ((float(x[idx]) - float(p["running_mean"][c])) / math.sqrt(float(p["running_var"][c]) + eps)
                     * float(p["weight"][c]) + float(p["bias"][c]))
    assert got.dtype == np.float64
    # tolerance: same formula, scalar Python vs broadcast numpy (at most an ulp or two)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    assert np.all(got[:, 2] == p["bias"][2])  # γ = 0 channel is exactly β


# --------------------------------------------------------------------------- ternary activation / threshold


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (-0.3, 0.9), (-1.0, 0.25), (0.2, 0.2), (-2.0, -1.0)])
def test_ternary_activation_ties_and_asymmetry(lo, hi):
    below_lo, above_hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    x = np.array([below_lo, lo, np.nextafter(lo, np.inf), np.nextafter(hi, -np.inf), hi, above_hi, -1e9, 1e9])
    got = ternary_activation(x, lo, hi)
    # rule: x < lo -> -1, lo <= x < hi -> 0, x >= hi -> +1 (exactly-at-lo is 0, exactly-at-hi is +1)
    if lo < hi:
        want = [-1, 0, 0, 0, 1, 1, -1, 1]
    else:  # lo == hi: the 0 band is empty; nextafter(lo, +inf) is already >= hi
        want = [-1, 1, 1, -1, 1, 1, -1, 1]
    assert got.dtype == np.int8
    assert got.tolist() == want


@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=1, max_size=30),
       st.floats(-2, 2), st.floats(0, 2))
@settings(max_examples=60, deadline=None)
def test_ternary_activation_matches_scalar_rule(values, lo, width):
    hi = lo + width
    x = np.array(values)
    assert np.array_equal(ternary_activation(x, lo, hi), hand_tact(x, lo, hi))


def test_apply_threshold_directions_integer_input():
    rng = np.random.default_rng(5)
    x = rng.integers(-20, 21, size=(2, 3, 4, 4)).astype(np.int64)
    direction = np.array([1, -1, 0], np.int8)
    lo = np.array([-3, 4, 0], np.int64)
    hi = np.array([2, 9, 0], np.int64)
    constant = np.array([0, 0, -1], np.int8)
    got = apply_threshold(x, direction, lo, hi, constant)
    want = np.empty(x.shape, np.int64)
    for idx in np.ndindex(x.shape):
        c = idx[1]
        if direction[c] == 0:
            want[idx] = constant[c]
            continue
        z = int(direction[c]) * int(x[idx])
        want[idx] = 1 if z >= hi[c] else (-1 if z < lo[c] else 0)
    assert got.dtype == np.int8
    assert np.array_equal(got, want)
    assert set(np.unique(got[:, 0]).tolist()) == {-1, 0, 1}
    assert set(np.unique(got[:, 1]).tolist()) == {-1, 0, 1}
    assert np.all(got[:, 2] == -1)


def test_apply_threshold_integer_input_is_compared_as_integers():
    # 2**53 + 1 is not a float64: a float comparison would see 2**53 >= 2**53 + 1 as true
    big = 2**53
    x = np.array([[big, big + 1]], np.int64).T.reshape(2, 1)  # (N=2, C=1)
    got = apply_threshold(x, np.array([1], np.int8), np.array([-big - 1], np.int64),
                          np.array([big + 1], np.int64), np.array([0], np.int8))
    assert got[:, 0].tolist() == [0, 1]


# z = direction·x: +1 -> [-0.5, -0.25, 0, 0.5, 0.75]; -1 -> [0.5, 0.25, 0, -0.5, -0.75]; 0 -> constant
@pytest.mark.parametrize("direction,expected", [(1, [-1, 0, 0, 1, 1]), (-1, [1, 0, 0, -1, -1]), (0, [1, 1, 1, 1, 1])])
def test_apply_threshold_float_ties(direction, expected):
    # thresholds lo = -0.25, hi = 0.5 on z = direction * x; z == lo -> 0, z == hi -> +1
    x = np.array([-0.5, -0.25, 0.0, 0.5, 0.75]).reshape(5, 1)
    got = apply_threshold(x, np.array([direction], np.int8), np.array([-0.25]), np.array([0.5]), np.array([1], np.int8))
    assert got[:, 0].tolist() == expected


# --------------------------------------------------------------------------- run_layer, every kind


def layer(kind, attrs=None, params=None, name="L", inputs=("prev",)):
    return Layer(name, kind, list(inputs), dict(attrs or {}), dict(params or {}))


def test_run_layer_conv_and_linear_with_bias():
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3)
    w = np.array([[[[1.0]], [[-2.0]]], [[[0.5]], [[0.25]]]])  # 1x1, 2 -> 2 channels
    y = run_layer(layer("conv", {"stride": 1, "padding": 0}, {"weight": w, "bias": np.array([1.0, -1.0])}), [x])
    assert np.array_equal(y[:, 0], x[:, 0] - 2 * x[:, 1] + 1)  # small integers: exact
    assert np.array_equal(y[:, 1], 0.5 * x[:, 0] + 0.25 * x[:, 1] - 1)
    # no bias
    y = run_layer(layer("conv", {"stride": 2, "padding": 0}, {"weight": w}), [x])
    assert y.shape == (2, 2, 2, 2)
    assert np.array_equal(y[:, 0], (x[:, 0] - 2 * x[:, 1])[:, ::2, ::2])

    xl = np.array([[1.0, 2.0, 3.0]])
    wl = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    y = run_layer(layer("linear", {}, {"weight": wl, "bias": np.array([10.0, 0.0])}), [xl])
    assert y.tolist() == [[8.0, 3.0]]


@pytest.mark.parametrize("kind", ["ter_conv", "ter_linear"])
def test_run_layer_merged_is_a_float_layer(kind):
    rng = np.random.default_rng(1)
    s = np.array([0.3, 0.7])
    t = rng.integers(-1, 2, (2, 3, 3, 3) if kind == "ter_conv" else (2, 5)).astype(np.float64)
    w = t * s.reshape((-1,) + (1,) * (t.ndim - 1))
    b = np.array([0.1, -0.2])
    if kind == "ter_conv":
        x = ternary(rng, (2, 3, 5, 5))
        got = run_layer(layer(kind, {"stride": 1, "padding": 1}, {"weight": w, "bias": b}), [x])
        want = naive_conv(x, w, 1, 1) + b.reshape(1, 2, 1, 1)
    else:
        x = ternary(rng, (3, 5))
        got = run_layer(layer(kind, {}, {"weight": w, "bias": b}), [x])
        want = naive_linear(x, w) + b
    # tolerance: summation order of <= 27 float products
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _latent_case(kind, rng):
    if kind == "sttn_conv":
        shape, xshape = (3, 2, 3, 3), (2, 2, 5, 5)
    else:
        shape, xshape = (3, 7), (4, 7)
    w1 = rng.uniform(-1.6, 1.6, shape)  # beyond [-1, 1]: exercises the clamp inside α
    w2 = rng.uniform(-1.6, 1.6, shape)
    w1.flat[0] = 0.0  # sign(0) = 0, executed as is
    w2.flat[0] = 0.8
    w2.flat[5] = -0.0
    params = {"weight1": w1, "weight2": w2, "bias1": np.array([0.1, -0.2, 0.3]), "bias2": np.array([0.05, 0.0, -0.4])}
    attrs = {"stride": 1, "padding": 1} if kind == "sttn_conv" else {}
    return layer(kind, attrs, params, name="blk.conv1"), xshape


def _latent_expected(kind, lyr, x):
    p = lyr.params
    alpha = hand_alpha(p["weight1"], p["weight2"])
    a = alpha.reshape((-1,) + (1,) * (p["weight1"].ndim - 1))
    k1, k2 = a * hand_sign(p["weight1"]), a * hand_sign(p["weight2"])
    f = (lambda w: naive_conv(x, w, 1, 1)) if kind == "sttn_conv" else (lambda w: naive_linear(x, w))
    bshape = (1, -1, 1, 1) if kind == "sttn_conv" else (1, -1)
    return f(k1) + p["bias1"].reshape(bshape) + f(k2) + p["bias2"].reshape(bshape)


@pytest.mark.parametrize("kind", ["sttn_conv", "sttn_linear"])
def test_run_layer_latent_ternary_input(kind):
    rng = np.random.default_rng(3)
    lyr, xshape = _latent_case(kind, rng)
    x = ternary(rng, xshape)
    x.flat[:] = np.where(x.ravel() == 0, 1.0, x.ravel())  # non-zero everywhere: sign(0) matters in every window
    run = ReferenceRun(logits=np.empty(0))
    got = run_layer(lyr, [x], run)
    # tolerance: different summation order (~1e-12) between α·acc1 + α·acc2 and two float convs
    np.testing.assert_allclose(got, _latent_expected(kind, lyr, x), rtol=1e-12, atol=1e-12)
    f = ((lambda w: naive_conv(x, w, 1, 1, np.int64)) if kind == "sttn_conv"
         else (lambda w: naive_linear(x, w, np.int64)))
    acc = run.accumulators["blk.conv1"]
    assert acc["acc1"].dtype == np.int64 and acc["acc2"].dtype == np.int64
    assert np.array_equal(acc["acc1"], f(hand_sign(lyr.params["weight1"]).astype(np.int64)))
    assert np.array_equal(acc["acc2"], f(hand_sign(lyr.params["weight2"]).astype(np.int64)))
    # sign(0) = 0 is really used: sign(0) = +1 would change acc1
    s_pos = hand_sign(lyr.params["weight1"]).astype(np.int64)
    s_pos.flat[0] = 1
    assert not np.array_equal(acc["acc1"], f(s_pos))


@pytest.mark.parametrize("kind", ["sttn_conv", "sttn_linear"])
def test_run_layer_latent_float_input(kind):
    rng = np.random.default_rng(4)
    lyr, xshape = _latent_case(kind, rng)
    x = rng.standard_normal(xshape)
    run = ReferenceRun(logits=np.empty(0))
    got = run_layer(lyr, [x], run)
    # tolerance: summation order of <= 18 float products (~1e-14)
    np.testing.assert_allclose(got, _latent_expected(kind, lyr, x), rtol=1e-12, atol=1e-12)
    assert "blk.conv1" not in run.accumulators  # no integer accumulators for float inputs


def test_run_layer_latent_sign_zero_by_hand():
    # 1x1 conv, one input channel: α = (|0| + |0.5|) / 2 = 0.25;  out = α·sign(0)·x + b1 + α·sign(0.5)·x + b2
    lyr = layer("sttn_conv", {"stride": 1, "padding": 0},
                {"weight1": np.array([[[[0.0]]]]), "weight2": np.array([[[[0.5]]]]),
                 "bias1": np.array([1.0]), "bias2": np.array([2.0])})
    x = np.array([[[[1.0, -1.0, 0.0]]]])
    assert run_layer(lyr, [x]).ravel().tolist() == [3.25, 2.75, 3.0]


@pytest.mark.parametrize("epilogue", ["affine", "none"])
@pytest.mark.parametrize("kind", ["ternary_conv", "ternary_linear"])
def test_run_layer_folded(kind, epilogue):
    rng = np.random.default_rng(8)
    if kind == "ternary_conv":
        codes = rng.integers(-1, 2, (3, 2, 3, 3)).astype(np.int8)
        x = ternary(rng, (2, 2, 4, 4)).astype(np.int8)
        acc = naive_conv(x.astype(np.int64), codes.astype(np.int64), 2, 1, np.int64)
        attrs = {"stride": 2, "padding": 1, "epilogue": epilogue}
        bshape = (1, -1, 1, 1)
    else:
        codes = rng.integers(-1, 2, (3, 6)).astype(np.int8)
        x = ternary(rng, (4, 6)).astype(np.int8)
        acc = naive_linear(x.astype(np.int64), codes.astype(np.int64), np.int64)
        attrs = {"epilogue": epilogue}
        bshape = (1, -1)
    scale, bias = np.array([0.5, 2.0, 0.125]), np.array([1.0, -3.0, 0.0])
    run = ReferenceRun(logits=np.empty(0))
    got = run_layer(layer(kind, attrs, {"codes": codes, "scale": scale, "bias": bias}, name="t"), [x], run)
    assert np.array_equal(run.accumulators["t"]["acc"], acc)
    if epilogue == "none":
        assert got.dtype == np.int64
        assert np.array_equal(got, acc)
    else:
        # dyadic scales/biases times small integers: float64 is exact
        assert np.array_equal(got, acc * scale.reshape(bshape) + bias.reshape(bshape))


@pytest.mark.parametrize("kind", ["ternary_conv", "ternary_linear"])
def test_run_layer_folded_rejects_non_ternary_input(kind):
    if kind == "ternary_conv":
        params = {"codes": np.ones((1, 1, 1, 1), np.int8), "scale": np.ones(1), "bias": np.zeros(1)}
        attrs, x = {"stride": 1, "padding": 0}, np.array([[[[1.0, 0.5]]]])
    else:
        params = {"codes": np.ones((1, 2), np.int8), "scale": np.ones(1), "bias": np.zeros(1)}
        attrs, x = {}, np.array([[2.0, 0.0]])
    with pytest.raises(ModelError, match=r"'features\.9\.conv2'.*ternary"):
        run_layer(layer(kind, attrs, params, name="features.9.conv2"), [x])


WRONG_CHANNEL_CASES = [
    ("conv", {"stride": 1, "padding": 0}, {"weight": np.ones((2, 3, 1, 1))}, (1, 4, 2, 2)),
    ("linear", {}, {"weight": np.ones((2, 3))}, (1, 4)),
    ("ter_conv", {"stride": 1, "padding": 0}, {"weight": np.ones((2, 3, 1, 1))}, (1, 2, 2, 2)),
    ("ter_linear", {}, {"weight": np.ones((2, 3))}, (1, 5)),
    ("sttn_conv", {"stride": 1, "padding": 1}, {"weight1": np.ones((2, 3, 3, 3)), "weight2": np.ones((2, 3, 3, 3))},
     (1, 4, 3, 3)),
    ("sttn_linear", {}, {"weight1": np.ones((2, 3)), "weight2": np.ones((2, 3))}, (1, 2)),
    ("ternary_conv", {"stride": 1, "padding": 0},
     {"codes": np.ones((2, 3, 1, 1), np.int8), "scale": np.ones(2), "bias": np.zeros(2)}, (1, 1, 2, 2)),
    ("ternary_linear", {}, {"codes": np.ones((2, 3), np.int8), "scale": np.ones(2), "bias": np.zeros(2)}, (1, 6)),
]


@pytest.mark.parametrize("kind,attrs,params,xshape", WRONG_CHANNEL_CASES, ids=[c[0] for c in WRONG_CHANNEL_CASES])
def test_run_layer_wrong_channel_count(kind, attrs, params, xshape):
    with pytest.raises(ShapeError, match=r"'my\.layer'.*expected 3 input channels"):
        run_layer(layer(kind, attrs, params, name="my.layer"), [np.zeros(xshape)])


def test_run_layer_elementwise_kinds():
    x = np.array([[[[-2.0, 0.0]], [[3.0, -0.5]]]])  # (1, 2, 1, 2)
    y = run_layer(layer("prelu", {}, {"weight": np.array([0.25, -1.0])}), [x])
    assert y.tolist() == [[[[-0.5, 0.0]], [[3.0, 0.5]]]]
    y = run_layer(layer("prelu", {}, {"weight": np.array([0.5])}), [x])
    assert y.tolist() == [[[[-1.0, 0.0]], [[3.0, -0.25]]]]
    assert run_layer(layer("relu"), [x]).tolist() == [[[[0.0, 0.0]], [[3.0, 0.0]]]]
    run = ReferenceRun(logits=np.empty(0))
    y = run_layer(layer("ternary_act", {"lo": -0.5, "hi": 2.0}, name="a"), [x], run)
    assert y.dtype == np.int8 and y.tolist() == [[[[-1, 0]], [[1, 0]]]]
    assert np.array_equal(run.pre_activations["a"], x)
    y = run_layer(layer("ternary_act"), [x])  # default thresholds ±0.5
    assert y.tolist() == [[[[-1, 0]], [[1, 0]]]]
    params = {"direction": np.array([-1, 1], np.int8), "lo": np.array([-1.0, -0.5]),
              "hi": np.array([1.0, 0.5]), "constant": np.zeros(2, np.int8)}
    y = run_layer(layer("threshold", {}, params, name="t"), [x], run)
    # channel 0: z = [2, 0] -> [+1, 0]; channel 1: z = [3, -0.5] -> [+1, 0]
    assert y.tolist() == [[[[1, 0]], [[1, 0]]]]
    assert np.array_equal(run.pre_activations["t"], x)
    y = run_layer(layer("add", inputs=("a", "b")), [x, np.ones_like(x)])
    assert np.array_equal(y, x + 1)
    with pytest.raises(ShapeError, match=r"'L'.*cannot add"):
        run_layer(layer("add", inputs=("a", "b")), [x, np.ones((1, 2, 1, 3))])
    y = run_layer(layer("channel_pad", {"out_channels": 5}), [x])
    assert y.shape == (1, 5, 1, 2) and np.array_equal(y[:, :2], x) and np.all(y[:, 2:] == 0)
    with pytest.raises(ShapeError, match=r"'L'.*out_channels=1"):
        run_layer(layer("channel_pad", {"out_channels": 1}), [x])
    assert run_layer(layer("flatten"), [x]).tolist() == [[-2.0, 0.0, 3.0, -0.5]]
    xp = np.arange(16.0).reshape(1, 1, 4, 4)
    assert run_layer(layer("maxpool", {"kernel": 2, "stride": 2}), [xp]).ravel().tolist() == [5, 7, 13, 15]
    assert run_layer(layer("avgpool", {"kernel": 2, "stride": 2}), [xp]).ravel().tolist() == [2.5, 4.5, 10.5, 12.5]
    bn = {"weight": np.array([2.0, 1.0]), "bias": np.array([1.0, 0.0]),
          "running_mean": np.array([1.0, 0.0]), "running_var": np.array([4.0, 1.0])}
    y = run_layer(layer("batchnorm", {"eps": 0.0}, bn), [x])
    assert y.tolist() == [[[[-2.0, 0.0]], [[3.0, -0.5]]]]  # (x-1)/2*2+1 = x on channel 0


def test_run_layer_unknown_kind():
    with pytest.raises(ModelError, match=r"'L'.*unknown kind 'softmax'; known kinds: conv, linear"):
        run_layer(layer("softmax"), [np.zeros((1, 2))])


# --------------------------------------------------------------------------- check_input


@pytest.fixture(scope="module")
def cnn():
    return plain_ternary_cnn(channels=(4, 8), input_size=8, in_channels=1, num_classes=3)


@pytest.mark.parametrize(
    "x,pattern",
    [
        (np.zeros((1, 8, 8), np.float32), r"expected shape \(N, 1, 8, 8\).*got \(1, 8, 8\)"),  # wrong rank
        (np.zeros((2, 1, 8, 8, 1)), r"expected shape \(N, 1, 8, 8\)"),
        (np.zeros((2, 1, 8, 9)), r"expected shape \(N, 1, 8, 8\).*got \(2, 1, 8, 9\)"),
        (np.zeros((2, 3, 8, 8)), r"expected shape \(N, 1, 8, 8\)"),
        (np.zeros((2, 1, 8, 8), np.int64), r"expected a float array, got dtype int64"),
        (np.zeros((2, 1, 8, 8), bool), r"expected a float array"),
        (np.zeros((0, 1, 8, 8)), r"empty.*expected at least one sample"),
        ([[0.0]], r"expected a numpy array"),
    ],
)
def test_check_input_rejects(cnn, x, pattern):
    with pytest.raises(ShapeError, match=pattern):
        check_input(cnn, x)
    with pytest.raises(ShapeError, match=pattern):
        run_reference(cnn, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_input_rejects_non_finite(cnn, bad):
    x = np.zeros((2, 1, 8, 8))
    x[1, 0, 3, 4] = bad
    with pytest.raises(ShapeError, match=r"1 NaN or Inf.*expected finite"):
        check_input(cnn, x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_input_accepts_floats(cnn, dtype):
    x = np.zeros((3, 1, 8, 8), dtype)
    assert check_input(cnn, x) is x


# --------------------------------------------------------------------------- run_reference


@pytest.mark.parametrize("name,kwargs", [
    ("sttn_resnet18", dict(width=0.0625, input_size=32, num_classes=5)),
    ("plain_ternary_cnn", {}),
    ("ternary_mlp", {}),
])
def test_run_reference_record_false_same_logits(name, kwargs):
    m = synthetic_model(name, seed=2, **kwargs)
    x = synthetic_input(m, 3, seed=7)
    rec = run_reference(m, x, record=True)
    bare = run_reference(m, x, record=False)
    assert np.array_equal(rec.logits, bare.logits)
    assert rec.logits.dtype == np.float64
    assert np.array_equal(rec.outputs[m.output], rec.logits)
    assert set(rec.outputs) == set(m.layer_names)
    assert bare.outputs == {} and bare.accumulators == {}


def test_mlp_record_shapes():
    m = ternary_mlp(hidden=(5,), num_classes=2, input_shape=(1, 2, 2))
    run = run_reference(m, np.ones((3, 1, 2, 2)))
    assert run.logits.shape == (3, 2)
    assert run.accumulators["fc1"]["acc1"].shape == (3, 5)


# --------------------------------------------------------------------------- the official block (docs/design.md §2.3)


def _bn(x, layer_):
    p = {k: np.asarray(v, np.float64) for k, v in layer_.params.items()}
    eps = layer_.attrs["eps"]
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = (x[:, c] - p["running_mean"][c]) / math.sqrt(p["running_var"][c] + eps) * p["weight"][c] + p["bias"][c]
    return out


def _prelu(x, slope):
    out = x.copy()
    for c in range(x.shape[1]):
        out[:, c] = np.where(x[:, c] >= 0, x[:, c], float(slope[c]) * x[:, c])
    return out


def _sttn_conv(x, layer_, stride):
    p = layer_.params
    alpha = hand_alpha(p["weight1"], p["weight2"]).reshape(-1, 1, 1, 1)
    kernel = alpha * (hand_sign(p["weight1"]) + hand_sign(p["weight2"]))  # α(B1 + B2)
    bias = np.asarray(p["bias1"], np.float64) + np.asarray(p["bias2"], np.float64)
    return naive_conv(x, kernel, stride, 1) + bias.reshape(1, -1, 1, 1)


def _maxpool2x2(x):
    n, c, h, w = x.shape
    out = np.empty((n, c, h // 2, w // 2))
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3))
    return out


def test_official_downsampling_block_by_hand():
    m = synthetic_model("sttn_resnet18", width=0.0625, input_size=32, num_classes=5, seed=1)
    run = run_reference(m, synthetic_input(m, 2, seed=3))
    blk = "features.6"
    x = run.outputs["features.5.prelu2"]
    assert x.shape == (2, 4, 8, 8)
    L = lambda s: m[f"{blk}.{s}"]  # noqa: E731

    pooled = _maxpool2x2(x)
    shortcut = np.concatenate([pooled, np.zeros_like(pooled)], axis=1)
    t1 = hand_tact(_bn(x, L("bn1")))
    a = _prelu(_bn(_sttn_conv(t1.astype(np.float64), L("conv1"), 2), L("bn_add1")) + shortcut, L("prelu1").params["weight"])
    t2 = hand_tact(_bn(a, L("bn2")))
    out = _prelu(_bn(_sttn_conv(t2.astype(np.float64), L("conv2"), 1), L("bn_add2")) + a, L("prelu2").params["weight"])

    # the quantized activations are integers: compared exactly
    assert np.array_equal(run.outputs[f"{blk}.tact1"], t1)
    assert np.array_equal(run.outputs[f"{blk}.tact2"], t2)
    assert out.shape == (2, 8, 4, 4)
    # tolerance: same algebra, different summation order (α·acc1 + α·acc2 vs α·(B1+B2) conv) ~1e-14
    np.testing.assert_allclose(run.outputs[f"{blk}.prelu1"], a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.outputs[f"{blk}.prelu2"], out, rtol=1e-10, atol=1e-12)
    # the zero half of the shortcut is really zero: upper channels of a come from the conv branch only
    assert np.any(np.abs(shortcut[:, :4]) > 0)

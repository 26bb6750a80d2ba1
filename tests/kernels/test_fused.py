"""Fused engine kernels against their pure-numpy references (exact ==)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.kernels.fused import (
    affine_epilogue,
    affine_epilogue_reference,
    apply_threshold_reference,
    asymmetric_epilogue,
    asymmetric_epilogue_reference,
    bias_prelu_to_nchw,
    bias_prelu_to_nchw_reference,
    float32_thresholds,
    global_avgpool,
    global_avgpool_reference,
    int32_thresholds,
    maxpool2d,
    maxpool2d_reference,
    threshold_codes,
    threshold_pack,
    threshold_pack_reference,
)

CHANNELS = [1, 63, 64, 65, 130]


def _thresholds(rng, c, integer):
    direction = rng.choice(np.array([-1, 0, 1], np.int8), size=c, p=[0.3, 0.1, 0.6]).astype(np.int8)
    lo = rng.normal(-0.5, 0.3, c)
    hi = lo + rng.uniform(0.0, 1.0, c)
    constant = rng.integers(-1, 2, c).astype(np.int8)
    if integer:
        return direction, int32_thresholds(np.round(lo * 10)), int32_thresholds(np.round(hi * 10)), constant
    return direction, float32_thresholds(lo), float32_thresholds(hi), constant


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (2, 4, 9), (2, 17, 19)])  # 323 pixels: two pack chunks
def test_threshold_pack_and_codes_match_reference(c, integer, shape):
    n, h, w = shape
    rng = np.random.default_rng(c * 100 + h)
    direction, lo, hi, constant = _thresholds(rng, c, integer)
    if integer:
        x = rng.integers(-20, 21, (n, c, h, w)).astype(np.int32)
        x.reshape(-1)[: min(4, x.size)] = hi[0]  # values exactly on a threshold
    else:
        x = rng.normal(0.0, 1.0, (n, c, h, w)).astype(np.float32)
        x[:, 0].reshape(-1)[:1] = hi[0]
    fast = threshold_pack(x, direction, lo, hi, constant)
    ref = threshold_pack_reference(x, direction, lo, hi, constant)
    assert fast.length == ref.length == c
    assert np.array_equal(fast.planes, ref.planes)
    packed, codes = threshold_pack(x, direction, lo, hi, constant, with_codes=True)
    assert np.array_equal(packed.planes, ref.planes)
    assert np.array_equal(codes, apply_threshold_reference(x, direction, lo, hi, constant))
    assert np.array_equal(threshold_codes(x, direction, lo, hi, constant),
                          apply_threshold_reference(x, direction, lo, hi, constant))


@pytest.mark.parametrize("c", CHANNELS)
def test_threshold_codes_2d(c):
    rng = np.random.default_rng(c)
    direction, lo, hi, constant = _thresholds(rng, c, False)
    x = rng.normal(0, 1, (3, c)).astype(np.float32)
    assert np.array_equal(threshold_codes(x, direction, lo, hi, constant),
                          apply_threshold_reference(x, direction, lo, hi, constant))


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e6, 1e6, allow_nan=False, width=32), st.floats(-1e6, 1e6, allow_nan=False))
def test_float32_rounded_threshold_is_the_float64_rule(z, t):
    """z >= ceil32(t) ⟺ z >= t and z < ceil32(t) ⟺ z < t for every float32 z."""
    t32 = float32_thresholds(np.array([t]))[0]
    z32 = np.float32(z)
    assert (z32 >= t32) == (float(z32) >= t)
    assert (z32 < t32) == (float(z32) < t)
    # and exactly on the threshold
    assert (t32 >= t32) and float(t32) >= t


@pytest.mark.parametrize("c, res_c", [(1, None), (63, 63), (64, 32), (65, None), (130, 65)])
@pytest.mark.parametrize("slope", ["channel", "shared", None])
@pytest.mark.parametrize("ndim", [2, 4])
def test_affine_epilogue_matches_reference_exactly(c, res_c, slope, ndim):
    rng = np.random.default_rng(c)
    shape = (3, c) if ndim == 2 else (3, c, 5, 7)
    acc = rng.integers(-500, 500, shape).astype(np.int32)
    a = rng.normal(0, 0.1, c).astype(np.float32)
    a[0] = -abs(a[0])  # a negative folded BN scale
    if c > 2:
        a[1] = 0.0  # a zero BN scale
    b = rng.normal(0, 1, c).astype(np.float32)
    residual = None if res_c is None else rng.normal(0, 1, (3, res_c) + shape[2:]).astype(np.float32)
    sl = {"channel": rng.uniform(0, 0.5, c).astype(np.float32), "shared": np.array([0.25], np.float32),
          None: None}[slope]
    fast = affine_epilogue(acc, a, b, residual, sl)
    ref = affine_epilogue_reference(acc, a, b, residual, sl)
    assert fast.dtype == np.float32 and np.array_equal(fast, ref)


@pytest.mark.parametrize("c, res_c", [(1, None), (64, 32), (65, 65), (130, None)])
@pytest.mark.parametrize("slope", ["channel", "shared", None])
@pytest.mark.parametrize("ndim", [2, 4])
def test_asymmetric_epilogue_matches_reference_and_float64(c, res_c, slope, ndim):
    rng = np.random.default_rng(c + 7)
    shape = (3, c) if ndim == 2 else (3, c, 4, 5)
    acc_pos = rng.integers(0, 500, shape).astype(np.int32)
    acc_neg = rng.integers(0, 500, shape).astype(np.int32)
    a_pos = rng.uniform(0, 0.2, c).astype(np.float32)
    a_neg = rng.uniform(0, 0.2, c).astype(np.float32)
    a_neg[0] = -a_neg[0]  # a negative folded BN gain scales both
    b = rng.normal(0, 1, c).astype(np.float32)
    residual = None if res_c is None else rng.normal(0, 1, (3, res_c) + shape[2:]).astype(np.float32)
    sl = {"channel": rng.uniform(0, 0.5, c).astype(np.float32), "shared": np.array([0.25], np.float32),
          None: None}[slope]
    fast = asymmetric_epilogue(acc_pos, acc_neg, a_pos, a_neg, b, residual, sl)
    ref = asymmetric_epilogue_reference(acc_pos, acc_neg, a_pos, a_neg, b, residual, sl)
    assert fast.dtype == np.float32 and np.array_equal(fast, ref)
    # independent float64 check of the formula: float32 rounding of three terms of order <= 100
    per = (1, -1) + (1,) * (ndim - 2)
    y = acc_pos * a_pos.astype(np.float64).reshape(per) - acc_neg * a_neg.astype(np.float64).reshape(per) \
        + b.astype(np.float64).reshape(per)
    if residual is not None:
        y[:, :res_c] += residual
    if sl is not None:
        s64 = sl.astype(np.float64).reshape(per) if sl.size > 1 else float(sl[0])
        y = np.where(y < 0, y * s64, y)
    assert np.max(np.abs(fast - y)) <= 1e-4 * max(1.0, np.max(np.abs(y)))


def test_asymmetric_epilogue_refuses_mismatched_partial_sums():
    with pytest.raises(Exception, match="acc_neg"):
        asymmetric_epilogue(np.zeros((2, 3), np.int32), np.zeros((2, 4), np.int32), *(np.ones(3, np.float32),) * 3)


@pytest.mark.parametrize("n, c, hw", [(1, 512, (7, 7)), (8, 3, (7, 7)), (2, 65, (1, 1)), (3, 5, (4, 34)), (1, 2, (56, 56))])
def test_global_avgpool_matches_float64_mean(n, c, hw):
    """Within float32 summation error of the float64 mean: a sum of S float32 terms in any
    order is off by at most (S - 1)·2^-24·Σ|x|, the division adds 2^-24 relative."""
    rng = np.random.default_rng(c)
    x = rng.normal(0.3, 2.0, (n, c) + hw).astype(np.float32)
    got = global_avgpool(x)
    ref = global_avgpool_reference(x)
    assert got.shape == ref.shape == (n, c, 1, 1) and got.dtype == np.float32
    s = hw[0] * hw[1]
    bound = (s + 1) * 2.0**-24 * np.abs(x.astype(np.float64)).mean(axis=(2, 3), keepdims=True) + 2.0**-23 * np.abs(ref)
    assert np.all(np.abs(got.astype(np.float64) - ref) <= bound)


def test_global_avgpool_is_exact_on_small_integers_over_a_power_of_two():
    # every partial sum is an integer below 2^24 and the division by 64 is exact
    x = np.random.default_rng(1).integers(-1000, 1000, (2, 70, 8, 8)).astype(np.float32)
    assert np.array_equal(global_avgpool(x), global_avgpool_reference(x))


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (3, 2, 0), (2, 2, 0), (2, 2, 1), (3, 1, 1), (1, 1, 0),
                                                     (3, 3, 1)])
@pytest.mark.parametrize("hw", [(7, 7), (8, 8), (5, 9), (4, 34), (14, 14), (3, 4), (9, 67)])
def test_maxpool_matches_reference(kernel, stride, padding, hw):
    """Bit for bit (odd sizes drop the last row/column of a 2x2 window; windows of -inf,
    +inf and all-negative values included)."""
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    x = rng.normal(0, 1, (2, 3) + hw).astype(np.float32)
    x[0, 0].flat[::5] = -np.inf
    x[0, 1].flat[::7] = np.inf
    x[1, 2] = -np.abs(x[1, 2]) - 1
    got = maxpool2d(x, kernel, stride, padding)
    assert np.array_equal(got.view(np.int32), maxpool2d_reference(x, kernel, stride, padding).view(np.int32))


@pytest.mark.parametrize("c", [1, 64, 65])
@pytest.mark.parametrize("slope", [None, "channel", "shared"])
def test_bias_prelu_to_nchw(c, slope):
    rng = np.random.default_rng(c)
    n, h, w = 2, 5, 3
    rows = rng.normal(0, 1, (n * h * w, c)).astype(np.float32)
    bias = rng.normal(0, 1, c).astype(np.float32)
    sl = {None: None, "channel": rng.uniform(0, 1, c).astype(np.float32), "shared": np.array([0.1], np.float32)}[slope]
    assert np.array_equal(bias_prelu_to_nchw(rows, bias, sl, n, h, w), bias_prelu_to_nchw_reference(rows, bias, sl, n, h, w))


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, hw", [
    (3, 64, 7, 2, 3, (23, 17)), (1, 5, 3, 1, 1, (8, 8)), (3, 65, 3, 2, 0, (9, 9)), (2, 1, 1, 1, 0, (4, 5)),
    (3, 24, 3, 1, 1, (5, 7)), (2, 13, 3, 1, 1, (6, 3)), (2, 70, 5, 3, 2, (17, 20)),
    (3, 7, 7, 2, 3, (6, 161)), (1, 9, 3, 1, 0, (3, 130))])  # rows of 81 and 128 pixels: several pixel blocks
@pytest.mark.parametrize("slope", [None, "channel"])
def test_direct_conv_against_float64(c_in, c_out, k, stride, padding, hw, slope, stem_kernel):
    from sttn_sim.kernels.fused import direct_conv2d, prepack_direct_conv_weights
    from sttn_sim.ops.reference import conv2d

    rng = np.random.default_rng(c_out)
    x = rng.normal(0, 1, (2, c_in) + hw).astype(np.float32)
    w = rng.normal(0, 0.3, (c_out, c_in, k, k)).astype(np.float32)
    b = rng.normal(0, 1, c_out).astype(np.float32)
    sl = None if slope is None else rng.uniform(0, 0.5, c_out).astype(np.float32)
    ref = conv2d(x, w, stride, padding) + b.reshape(1, -1, 1, 1)
    if sl is not None:
        ref = np.where(ref < 0, ref * sl.reshape(1, -1, 1, 1), ref)
    got = direct_conv2d(x, prepack_direct_conv_weights(w, stem_kernel), b, sl, stride, padding)
    # float32 sums of at most 147 products of O(1) terms: error well below 1e-5 of the scale
    assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, hw", [
    (3, 64, 7, 2, 3, (23, 17)), (1, 5, 3, 1, 1, (8, 8)), (3, 65, 3, 2, 0, (9, 9)), (2, 1, 1, 1, 0, (4, 5)),
    (3, 7, 7, 2, 3, (6, 161))])
@pytest.mark.parametrize("pool", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0), (4, 2, 2), (1, 1, 0)])
@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("slope", [None, "channel"])
def test_direct_conv_with_pooling_is_the_conv_then_the_pool(c_in, c_out, k, stride, padding, hw, pool, threads,
                                                            slope, stem_kernel):
    """``direct_conv2d(..., pool=window)`` is bit for bit the numpy max pooling of the
    unpooled direct convolution (tested above against float64), for every split of the
    pooled rows into bands (``threads``) and windows that overlap, touch or skip rows."""
    from sttn_sim.kernels.fused import direct_conv2d, prepack_direct_conv_weights

    rng = np.random.default_rng(c_out + pool[0])
    x = rng.normal(0, 1, (2, c_in) + hw).astype(np.float32)
    w = prepack_direct_conv_weights(rng.normal(0, 0.3, (c_out, c_in, k, k)).astype(np.float32), stem_kernel)
    b = rng.normal(0, 1, c_out).astype(np.float32)
    sl = None if slope is None else rng.uniform(-0.5, 0.5, c_out).astype(np.float32)
    conv = direct_conv2d(x, w, b, sl, stride, padding)
    got = direct_conv2d(x, w, b, sl, stride, padding, pool, threads=threads)
    expected = maxpool2d_reference(conv, *pool)
    assert got.shape == expected.shape
    assert np.array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("padding, stride, hw, extra", [
    (3, 2, (23, 17), 3), (0, 1, (4, 5), 0), (1, 1, (5, 7), 2), (2, 3, (17, 20), 1), (3, 2, (6, 161), 0),
    (0, 2, (1, 1), 4)])
def test_column_phases_match_the_padded_definition(padding, stride, hw, extra):
    """The stem's input layout: zero padding and the split by column phase in one pass,
    against numpy and against the definition ``out[n, c, p, y, j] = xp[n, c, y, j·s + p]``."""
    from sttn_sim.kernels.fused import column_phases, column_phases_reference

    rng = np.random.default_rng(sum(hw))
    x = rng.normal(0, 1, (2, 3) + hw).astype(np.float32)
    width = -(-(hw[1] + 2 * padding) // stride) + extra
    got = column_phases(x, padding, stride, width)
    assert got.shape == (2, 3, stride, hw[0] + 2 * padding, width)
    assert np.array_equal(got, column_phases_reference(x, padding, stride, width))
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    for p in range(stride):
        for j in range(width):
            col = j * stride + p
            expected = xp[:, :, :, col] if col < xp.shape[3] else 0.0
            assert np.array_equal(got[:, :, p, :, j], np.broadcast_to(expected, got[:, :, p, :, j].shape))


@pytest.mark.parametrize("n, k, o", [(1, 512, 1000), (5, 63, 7), (2, 1, 1)])
def test_linear_against_float64(n, k, o):
    from sttn_sim.kernels.fused import linear_f32

    rng = np.random.default_rng(k)
    x = rng.normal(0, 1, (n, k)).astype(np.float32)
    w = rng.normal(0, 0.1, (o, k)).astype(np.float32)
    b = rng.normal(0, 1, o).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    # float32 dot products of up to 512 O(0.1) terms in any order: error < 1e-5 of the scale
    assert np.max(np.abs(linear_f32(x, w, b) - ref)) <= 1e-5 * max(1.0, np.abs(ref).max())

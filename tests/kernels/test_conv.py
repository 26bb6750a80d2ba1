"""Packed ternary convolution vs the int64 numpy reference (exact ==), for every kernel
(``ternary_kernel``: tests/kernels/conftest.py)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.bench.gemm import random_codes
from sttn_sim.errors import ShapeError
from sttn_sim.kernels import (
    ConvWeights,
    pack_activations_nhwc,
    prepack_conv_weights,
    ternary_conv2d,
    ternary_conv2d_reference,
)
from sttn_sim.kernels import conv as conv_module
from sttn_sim.kernels.fused import AffineEpilogue, affine_epilogue_reference
from sttn_sim.kernels.selection import available_ternary_kernels


def brute_force_conv(x, w, stride, padding):
    """Direct six-fold loop (checks the reference itself on tiny inputs)."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, co, oh, ow), np.int64)
    for i, o, y, xx in itertools.product(range(n), range(co), range(oh), range(ow)):
        acc = 0
        for ci, dy, dx in itertools.product(range(c), range(kh), range(kw)):
            iy = y * sh - ph + dy
            ix = xx * sw - pw + dx
            if 0 <= iy < h and 0 <= ix < wd:
                acc += int(x[i, ci, iy, ix]) * int(w[o, ci, dy, dx])
        out[i, o, y, xx] = acc
    return out


def check(x, w, stride, padding, kernel):
    ref = ternary_conv2d_reference(x, w, stride, padding)
    got = ternary_conv2d(x, w, stride, padding, kernel=kernel)
    assert got.dtype == np.int32
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    return ref


@pytest.mark.parametrize("c_in", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("hw,batch", [((7, 7), 1), ((5, 9), 5)])
def test_conv_sweep(c_in, kernel, stride, padding, hw, batch, ternary_kernel):
    rng = np.random.default_rng(c_in * 100 + kernel * 10 + stride + padding + batch)
    c_out = {1: 3, 63: 17, 64: 1, 65: 6, 130: 11}[c_in]
    x = random_codes(rng, (batch, c_in) + hw)
    w = random_codes(rng, (c_out, c_in, kernel, kernel))
    check(x, w, stride, padding, ternary_kernel)


#: the lut kernels this machine can run (their B blocks can be built from nibble rows)
LUT_KERNELS = [k for k in available_ternary_kernels() if k.family == "lut"]


@pytest.mark.parametrize("kernel", LUT_KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("c_in,c_out", [(1, 3), (63, 17), (64, 70), (130, 11)])
@pytest.mark.parametrize("kh,kw,stride,padding", [(3, 3, (1, 1), (1, 1)), (1, 1, (1, 1), (0, 0)), (3, 3, (2, 1), (0, 1)),
                                                  (1, 5, (1, 1), (0, 2)), (5, 3, (1, 1), (2, 0))])
@pytest.mark.parametrize("hw,batch", [((7, 7), 3), ((5, 9), 2), ((9, 70), 1), ((4, 30), 5)])
@pytest.mark.parametrize("min_width", [1, 28])
def test_conv_lut_row_runs(kernel, c_in, c_out, kh, kw, stride, padding, hw, batch, min_width, monkeypatch):
    """The lut gather from nibble rows (runs of a row: ``uses_row_runs``), with runs
    that cross rows and images, 1 to 64 runs per column block, rows whose width is not a
    multiple of 8, and with and without the epilogue, against the reference."""
    monkeypatch.setattr(conv_module, "RUN_MIN_WIDTH", min_width)
    rng = np.random.default_rng(c_in * 7 + kh * 3 + batch + hw[1])
    x = random_codes(rng, (batch, c_in) + hw)
    w = random_codes(rng, (c_out, c_in, kh, kw))
    acc = check(x, w, stride, padding, kernel)
    ow = acc.shape[3]
    assert conv_module.uses_row_runs(kernel, stride[1], ow) == (stride[1] == 1 and ow >= min_width)
    e = _epilogue(rng, batch, c_out, acc.shape[2:], c_out, "channel")
    ref = affine_epilogue_reference(acc, e.scale, e.bias, e.residual, e.slope)
    got = ternary_conv2d(x, w, stride, padding, kernel=kernel, epilogue=e)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 140), co=st.integers(1, 12),
       h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 2), sw=st.integers(1, 2), ph=st.integers(0, 1), pw=st.integers(0, 1),
       seed=st.integers(0, 2**32 - 1))
def test_conv_property(n, c, co, h, w, kh, kw, sh, sw, ph, pw, seed, ternary_kernel):
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    rng = np.random.default_rng(seed)
    x = random_codes(rng, (n, c, h, w), rng.random())
    wt = random_codes(rng, (co, c, kh, kw), rng.random())
    check(x, wt, (sh, sw), (ph, pw), ternary_kernel)


@pytest.mark.parametrize(
    "kh,kw,stride,padding",
    [(5, 5, 1, 2), (3, 1, (2, 1), (1, 0)), (1, 3, (1, 2), (0, 1)), (2, 2, 2, 0), (3, 3, 3, 2)],
)
def test_conv_other_geometries(kh, kw, stride, padding, ternary_kernel):
    rng = np.random.default_rng(kh * 7 + kw)
    x = random_codes(rng, (2, 70, 9, 8))
    w = random_codes(rng, (9, 70, kh, kw))
    check(x, w, stride, padding, ternary_kernel)


@pytest.mark.parametrize("density_x,density_w", [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.1, 0.9), (0.5, 0.5)])
def test_conv_sparsity_extremes(density_x, density_w, ternary_kernel):
    rng = np.random.default_rng(int(10 * density_x + 100 * density_w))
    x = random_codes(rng, (3, 66, 7, 7), density_x)
    w = random_codes(rng, (13, 66, 3, 3), density_w)
    ref = check(x, w, 1, 1, ternary_kernel)
    if density_x == 0.0 or density_w == 0.0:
        assert not ref.any()


def test_conv_all_ones_counts_valid_taps(ternary_kernel):
    x = np.ones((1, 65, 5, 5), np.int8)
    w = -np.ones((2, 65, 3, 3), np.int8)
    ref = check(x, w, 1, 1, ternary_kernel)
    assert ref[0, 0, 0, 0] == -65 * 4  # corner sees 2x2 real taps
    assert ref[0, 0, 2, 2] == -65 * 9


def test_conv_larger_layer_many_tiles(ternary_kernel):
    rng = np.random.default_rng(11)
    x = random_codes(rng, (2, 64, 14, 14))
    w = random_codes(rng, (37, 64, 3, 3))
    check(x, w, 1, 1, ternary_kernel)
    check(x, w, 2, 1, ternary_kernel)


def test_conv_packed_inputs_and_prepacked_weights(ternary_kernel):
    rng = np.random.default_rng(12)
    x = random_codes(rng, (3, 100, 6, 5))
    w = random_codes(rng, (8, 100, 3, 3))
    ref = ternary_conv2d_reference(x, w, 2, 1)
    xp = pack_activations_nhwc(x)
    assert xp.shape == (3, 6, 5, 100)
    assert xp.planes.shape == (2, 3, 6, 5, 2)
    wp = prepack_conv_weights(w, kernel=ternary_kernel)
    assert isinstance(wp, ConvWeights) and wp.kernel is ternary_kernel
    assert wp.shape == w.shape
    assert np.array_equal(ternary_conv2d(xp, wp, stride=2, padding=1), ref)
    assert np.array_equal(ternary_conv2d(x, wp, (2, 2), (1, 1)), ref)
    assert np.array_equal(ternary_conv2d(xp, w, 2, 1, kernel=ternary_kernel), ref)


@pytest.mark.parametrize("c", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("dtype", [np.int8, np.int32])
def test_pack_activations_nhwc_matches_reference(c, dtype):
    from sttn_sim.kernels import pack_ternary_reference, unpack_ternary

    rng = np.random.default_rng(c)
    x = random_codes(rng, (3, c, 5, 7)).astype(dtype)
    xp = pack_activations_nhwc(x)
    ref = pack_ternary_reference(x.transpose(0, 2, 3, 1))
    assert np.array_equal(xp.planes, ref.planes)
    assert np.array_equal(unpack_ternary(xp), x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("stride,padding", [((1, 1), (0, 0)), ((2, 1), (1, 0)), ((1, 2), (1, 1))])
def test_reference_matches_brute_force(stride, padding):
    rng = np.random.default_rng(13)
    x = random_codes(rng, (2, 3, 5, 6))
    w = random_codes(rng, (2, 3, 3, 2))
    ref = ternary_conv2d_reference(x, w, stride, padding)
    assert np.array_equal(ref, brute_force_conv(x, w, stride, padding))
    assert np.array_equal(ternary_conv2d(x, w, stride, padding), ref)


def test_conv_errors():
    x = np.ones((1, 4, 5, 5), np.int8)
    w = np.ones((2, 4, 3, 3), np.int8)
    with pytest.raises(ShapeError, match="x.*4 input channels"):
        ternary_conv2d(np.ones((1, 5, 5, 5), np.int8), w)
    with pytest.raises(ShapeError, match="x"):
        ternary_conv2d(np.ones((4, 5, 5), np.int8), w)
    with pytest.raises(ShapeError, match="w"):
        ternary_conv2d(x, np.ones((2, 4, 3), np.int8))
    with pytest.raises(ShapeError, match="x.*kernel"):
        ternary_conv2d(np.ones((1, 4, 2, 2), np.int8), w)
    with pytest.raises(ShapeError, match="stride"):
        ternary_conv2d(x, w, stride=0)
    with pytest.raises(ShapeError, match="padding"):
        ternary_conv2d(x, w, padding=-1)
    with pytest.raises(ShapeError, match="w"):
        ternary_conv2d(x, w.astype(np.float32))
    bad_w = w.copy()
    bad_w[1, 2, 0, 1] = 3
    with pytest.raises(ValueError, match=r"w: 1 value.*index \(1, 2, 0, 1\)"):
        ternary_conv2d(x, bad_w)


def test_conv_error_positions_are_in_nchw_coordinates():
    x = np.ones((1, 4, 5, 5), np.int8)
    bad_x = x.copy()
    bad_x[0, 3, 1, 2] = -2
    with pytest.raises(ValueError, match=r"x: 1 value.*index \(0, 3, 1, 2\)"):
        ternary_conv2d(bad_x, np.ones((2, 4, 3, 3), np.int8))
    with pytest.raises(ValueError, match=r"x: 2 value.*index \(0, 0, 0, 0\)"):
        pack_activations_nhwc(np.full((1, 2, 1, 1), 5, np.int64))
    with pytest.raises(ShapeError, match="x_codes"):
        ternary_conv2d_reference(np.ones((1, 4, 5)), np.ones((2, 4, 3, 3)))


# ------------------------------------------------------------------------------------
# output panels and the epilogue applied inside the convolution


@pytest.mark.parametrize("panel_values", [1, 200, 5000])
@pytest.mark.parametrize("shape,c_out", [((3, 70, 7, 7), 9), ((2, 64, 13, 11), 40), ((1, 5, 30, 30), 3)])
def test_conv_panels_of_any_width(panel_values, shape, c_out, ternary_kernel, monkeypatch):
    """Panels of one column block up to many, runs that cross images (7x7 at batch 3)
    and partial blocks: the accumulators are those of the reference."""
    monkeypatch.setattr(conv_module, "PANEL_VALUES", panel_values)
    rng = np.random.default_rng(panel_values + c_out)
    x = random_codes(rng, shape)
    w = random_codes(rng, (c_out, shape[1], 3, 3))
    check(x, w, 1, 1, ternary_kernel)


def _epilogue(rng, n, c_out, spatial, residual_channels, slope) -> AffineEpilogue:
    a = rng.normal(0, 0.1, c_out).astype(np.float32)
    a[0] = -abs(a[0])  # a negative folded BN scale
    if c_out > 2:
        a[1] = 0.0  # a zero BN scale
    b = rng.normal(0, 1, c_out).astype(np.float32)
    residual = None if residual_channels is None else \
        rng.normal(0, 1, (n, residual_channels) + spatial).astype(np.float32)
    sl = {"channel": rng.uniform(0, 0.5, c_out).astype(np.float32), "shared": np.array([0.25], np.float32),
          None: None}[slope]
    return AffineEpilogue(a, b, residual, sl)


@pytest.mark.parametrize("c_in,c_out,residual,slope", [
    (1, 3, None, "channel"), (63, 17, "all", "shared"), (65, 6, "fewer", None), (130, 40, "all", "channel"),
    (64, 130, "fewer", "channel")])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
@pytest.mark.parametrize("hw,batch", [((7, 7), 1), ((7, 7), 3), ((12, 20), 2)])
@pytest.mark.parametrize("panel_values", [1, conv_module.PANEL_VALUES])
def test_conv_with_epilogue_is_the_reference_epilogue_bit_for_bit(c_in, c_out, residual, slope, stride, padding, hw,
                                                                  batch, panel_values, ternary_kernel, monkeypatch):
    """``ternary_conv2d(..., epilogue=e)`` against the numpy epilogue of the numpy
    convolution (float32 arithmetic in numpy, rounded step by step as the kernel is),
    compared as bits: -0.0 and +0.0 differ."""
    monkeypatch.setattr(conv_module, "PANEL_VALUES", panel_values)
    rng = np.random.default_rng(c_in * 31 + c_out + 7 * batch + stride)
    x = random_codes(rng, (batch, c_in) + hw)
    w = random_codes(rng, (c_out, c_in, 3, 3))
    acc = ternary_conv2d_reference(x, w, stride, padding)
    res_c = {None: None, "all": c_out, "fewer": max(1, c_out // 2)}[residual]
    e = _epilogue(rng, batch, c_out, acc.shape[2:], res_c, slope)
    ref = affine_epilogue_reference(acc, e.scale, e.bias, e.residual, e.slope)
    got = ternary_conv2d(x, w, stride, padding, kernel=ternary_kernel, epilogue=e)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("nb_count,mb_count,threads,family,expected", [
    (8, 100, 2, "popcount", 1), (8, 100, 2, "lut", 1),  # 4 column blocks per thread: no split
    (1, 103, 2, "popcount", 8), (3, 103, 2, "popcount", 3),  # up to 4 tasks per thread
    (1, 103, 2, "lut", 2), (1, 103, 2, "int8", 2),  # one gather per thread
    (7, 43, 2, "lut", 2), (4, 43, 2, "lut", 1), (3, 43, 2, "lut", 2),  # a whole number of tasks per thread
    (1, 43, 3, "lut", 3), (2, 43, 3, "lut", 3), (1, 1, 2, "lut", 1), (1, 2, 4, "popcount", 2)])
def test_row_chunks(nb_count, mb_count, threads, family, expected):
    assert conv_module.row_chunks(nb_count, mb_count, threads, family) == expected


def test_conv_epilogue_errors():
    rng = np.random.default_rng(3)
    x = random_codes(rng, (2, 8, 5, 5))
    w = random_codes(rng, (4, 8, 3, 3))
    ones = np.ones(4, np.float32)
    with pytest.raises(ShapeError, match=r"epilogue: scale \(3,\) and bias \(4,\); expected \(4,\) each"):
        ternary_conv2d(x, w, 1, 1, epilogue=AffineEpilogue(ones[:3], ones))
    for bad in [(2, 5, 5, 5), (1, 4, 5, 5), (2, 4, 4, 5)]:
        with pytest.raises(ShapeError, match=r"epilogue: residual of shape .* expected 2 images, at most 4 channels"):
            ternary_conv2d(x, w, 1, 1, epilogue=AffineEpilogue(ones, ones, np.zeros(bad, np.float32)))


def test_conv_epilogue_takes_scale_and_bias_as_float32():
    rng = np.random.default_rng(4)
    x = random_codes(rng, (2, 8, 5, 5))
    w = random_codes(rng, (4, 8, 3, 3))
    a64, b64 = rng.normal(0, 0.1, 4), rng.normal(0, 1, 4)
    as32 = ternary_conv2d(x, w, 1, 1, epilogue=AffineEpilogue(a64.astype(np.float32), b64.astype(np.float32)))
    got = ternary_conv2d(x, w, 1, 1, epilogue=AffineEpilogue(a64, b64))
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), as32.view(np.uint32))

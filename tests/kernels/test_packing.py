"""Bit packing of ternary codes: fast (numba) vs pure-numpy reference, round trips,
the docs/design.md §2.5 bit identity, and input validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sttn_sim.errors import QuantizationError, ShapeError
from sttn_sim.kernels import (
    PackedTernary,
    pack_ternary,
    pack_ternary_reference,
    ternary_dot,
    ternary_dot_reference,
    unpack_ternary,
    unpack_ternary_reference,
)

KS = [1, 2, 63, 64, 65, 127, 128, 130, 200]


def random_codes(rng, shape, density=2 / 3):
    nz = rng.random(shape) < density
    neg = rng.random(shape) < 0.5
    return np.where(nz, np.where(neg, -1, 1), 0).astype(np.int8)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("lead", [(), (1,), (3,), (2, 5)])
def test_pack_matches_reference_and_round_trips(k, lead):
    rng = np.random.default_rng(k * 31 + len(lead))
    codes = random_codes(rng, lead + (k,))
    fast = pack_ternary(codes)
    ref = pack_ternary_reference(codes)
    assert fast.length == ref.length == k
    assert fast.shape == codes.shape
    assert fast.planes.shape == (2,) + lead + (-(-k // 64),)
    assert fast.planes.dtype == np.uint64
    assert np.array_equal(fast.planes, ref.planes)
    assert np.array_equal(fast.nonzero, ref.planes[0])
    assert np.array_equal(fast.sign, ref.planes[1])
    back = unpack_ternary(fast)
    assert back.dtype == np.int8
    assert np.array_equal(back, codes)
    assert np.array_equal(unpack_ternary_reference(fast), codes)


@pytest.mark.parametrize("k", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_pack_sparsity_sweep(k, density):
    rng = np.random.default_rng(int(density * 100) + k)
    codes = random_codes(rng, (7, k), density)
    fast = pack_ternary(codes)
    assert np.array_equal(fast.planes, pack_ternary_reference(codes).planes)
    assert np.array_equal(unpack_ternary(fast), codes)
    # popcounts of the planes count the non-zeros and the -1s
    assert int(np.bitwise_count(fast.nonzero).sum()) == int(np.count_nonzero(codes))
    assert int(np.bitwise_count(fast.sign).sum()) == int(np.count_nonzero(codes < 0))


@pytest.mark.parametrize("k", [1, 63, 65, 130, 191])
def test_padding_bits_are_zero_and_sign_within_nonzero(k):
    codes = -np.ones((4, k), dtype=np.int8)  # every valid bit set in both planes
    p = pack_ternary(codes)
    nw = p.words
    valid = np.zeros(nw * 64, dtype=bool)
    valid[:k] = True
    for plane in (p.nonzero, p.sign):
        bits = (plane[..., None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        bits = bits.reshape(4, nw * 64).astype(bool)
        assert bits[:, valid].all()
        assert not bits[:, ~valid].any()
    codes = np.ones((4, k), dtype=np.int8)
    assert not pack_ternary(codes).sign.any()


def test_bit_order_value_j_in_word_j_div_64_bit_j_mod_64():
    k = 130
    for j in (0, 1, 63, 64, 100, 129):
        codes = np.zeros(k, dtype=np.int8)
        codes[j] = -1
        p = pack_ternary(codes)
        expect = np.zeros(3, dtype=np.uint64)
        expect[j // 64] = np.uint64(1) << np.uint64(j % 64)
        assert np.array_equal(p.nonzero, expect)
        assert np.array_equal(p.sign, expect)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint8, np.intp])
def test_pack_accepts_any_integer_dtype(dtype):
    rng = np.random.default_rng(3)
    codes = random_codes(rng, (3, 70))
    if np.dtype(dtype).kind == "u":
        codes = np.abs(codes)
    cast = codes.astype(dtype)
    assert np.array_equal(pack_ternary(cast).planes, pack_ternary(codes).planes)
    assert np.array_equal(pack_ternary_reference(cast).planes, pack_ternary(codes).planes)


def test_pack_non_contiguous_input():
    rng = np.random.default_rng(4)
    codes = random_codes(rng, (6, 150))[::2, ::-1]
    assert np.array_equal(pack_ternary(codes).planes, pack_ternary_reference(codes).planes)
    assert np.array_equal(unpack_ternary(pack_ternary(codes)), codes)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=140),
                  elements=st.sampled_from([-1, 0, 1])))
def test_round_trip_property(codes):
    p = pack_ternary(codes)
    assert np.array_equal(p.planes, pack_ternary_reference(codes).planes)
    assert np.array_equal(unpack_ternary(p), codes)


# ------------------------------------------------------------------ bit identity


@pytest.mark.parametrize("k", [1, 63, 64, 65, 130, 1000])
@pytest.mark.parametrize("density", [0.2, 2 / 3, 1.0])
def test_bit_identity_on_random_vectors(k, density):
    """x . w = popcount(m_x & m_w) - 2 popcount((s_x ^ s_w) & m_x & m_w)."""
    rng = np.random.default_rng(k + int(10 * density))
    x = random_codes(rng, (50, k), density)
    w = random_codes(rng, (50, k), density)
    px = pack_ternary_reference(x)
    pw = pack_ternary_reference(w)
    t = px.nonzero & pw.nonzero
    u = (px.sign ^ pw.sign) & t
    identity = np.bitwise_count(t).astype(np.int64).sum(-1) - 2 * np.bitwise_count(u).astype(np.int64).sum(-1)
    expect = ternary_dot_reference(x, w)
    assert np.array_equal(identity, expect)
    assert np.array_equal(ternary_dot(pack_ternary(x), pack_ternary(w)), expect)


def test_bit_identity_extremes():
    k = 130
    ones = np.ones((1, k), np.int8)
    assert ternary_dot(pack_ternary(ones), pack_ternary(ones))[0] == k
    assert ternary_dot(pack_ternary(ones), pack_ternary(-ones))[0] == -k
    assert ternary_dot(pack_ternary(-ones), pack_ternary(-ones))[0] == k
    zeros = np.zeros((1, k), np.int8)
    assert ternary_dot(pack_ternary(zeros), pack_ternary(-ones))[0] == 0


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.float32), np.zeros((2, 3), bool),
                                 np.array([["a", "b"]])])
def test_wrong_dtype_raises_shape_error(bad):
    for fn in (pack_ternary, pack_ternary_reference):
        with pytest.raises(ShapeError, match="codes") as info:
            fn(bad)
        assert str(bad.dtype) in str(info.value)


def test_wrong_rank_or_empty_axis_raises():
    with pytest.raises(ShapeError, match="codes"):
        pack_ternary(np.int8(1))
    with pytest.raises(ShapeError, match="codes"):
        pack_ternary(np.zeros((3, 0), np.int8))


@pytest.mark.parametrize("dtype", [np.int8, np.int64])
def test_values_outside_ternary_raise_with_count_and_position(dtype):
    codes = np.zeros((3, 70), dtype=dtype)
    codes[1, 65] = 2
    codes[2, 3] = -5
    codes[2, 69] = 7
    for fn in (pack_ternary, pack_ternary_reference):
        with pytest.raises(ValueError) as info:
            fn(codes, name="activations")
        msg = str(info.value)
        assert isinstance(info.value, QuantizationError)
        assert "activations" in msg
        assert "3 value(s)" in msg
        assert "(1, 65)" in msg


def test_int8_extreme_values_rejected():
    codes = np.array([0, 1, -1, 127, -128], dtype=np.int8)
    with pytest.raises(ValueError, match="2 value"):
        pack_ternary(codes)
    big = np.zeros(64, np.int16)
    big[10] = 256  # would wrap to 0 in int8
    with pytest.raises(ValueError, match="index \\(10,\\)"):
        pack_ternary(big)


def test_packed_ternary_validation():
    with pytest.raises(ShapeError):
        PackedTernary(np.zeros((2, 3, 2), np.int64), 100)
    with pytest.raises(ShapeError):
        PackedTernary(np.zeros((2, 3, 2), np.uint64), 10)  # 10 values need 1 word
    with pytest.raises(ShapeError):
        PackedTernary(np.zeros((3, 3, 1), np.uint64), 10)
    p = PackedTernary.from_planes(np.zeros((3, 2), np.uint64), np.zeros((3, 2), np.uint64), 100)
    assert p.shape == (3, 100)
    with pytest.raises(ShapeError, match="packed"):
        unpack_ternary(np.zeros((2, 1), np.uint64))


def test_ternary_dot_shape_mismatch():
    a = pack_ternary(np.ones((2, 10), np.int8))
    b = pack_ternary(np.ones((2, 11), np.int8))
    with pytest.raises(ShapeError, match="b"):
        ternary_dot(a, b)

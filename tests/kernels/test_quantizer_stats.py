"""sttn_sim.kernels.quantizer_stats: the Numba and fused kernels against the numpy definition.

Integer statistics (histogram, code counts, ties, MAC sums, extremes) must be identical.
Float sums are compared with rtol 1e-5: the fused kernel sums float32 over a segment of
at most a few hundred values (relative error <= ~300·2^-24 ≈ 2e-5 in the worst case, far
less for random signs) before adding in float64.
"""

import numpy as np
import pytest

from sttn_sim.kernels.fused import float32_thresholds, threshold_pack
from sttn_sim.kernels.quantizer_stats import (
    FusedThresholdStatistics,
    QuantizerAccumulator,
    accumulate,
    accumulate_reference,
    threshold_pack_accumulate,
)

DEFAULT_EDGES = np.arange(-80, 81) / 20.0
INTEGER_FIELDS = ("hist", "counts", "ch_min", "ch_max", "tie_counts", "macs")


def _assert_same(a: QuantizerAccumulator, b: QuantizerAccumulator):
    for name in INTEGER_FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.n_images == b.n_images
    np.testing.assert_allclose(a.ch_sum, b.ch_sum, rtol=1e-5, atol=1e-6 * a.positions * a.n_images)
    np.testing.assert_allclose(a.ch_sumsq, b.ch_sumsq, rtol=1e-5)


def _quantizer(rng, c, integer=False):
    """Random per-channel thresholds with every direction, constant channels of each code,
    and the affine y = g·x + o (negative and zero g included)."""
    direction = rng.choice(np.array([-1, 0, 1, 1], np.int8), c)
    constant = rng.choice(np.array([-1, 0, 1], np.int8), c)
    lo64 = rng.normal(-0.5, 0.7, c)
    hi64 = lo64 + rng.uniform(0.0, 1.5, c)
    gain = rng.uniform(0.3, 1.5, c) * np.where(rng.random(c) < 0.25, -1.0, 1.0)
    gain[rng.random(c) < 0.1] = 0.0
    offset = rng.uniform(-0.5, 0.5, c)
    gain[0], offset[0] = 1.0, 0.0  # channel 0: y = x, for values on and next to the edges
    if integer:
        gain = gain * 0.02
        lo = np.floor(lo64 * 20).astype(np.int32)
        return direction, lo, lo + np.int32(10), constant, gain, offset
    return direction, float32_thresholds(lo64), float32_thresholds(hi64), constant, gain, offset


def _input(rng, shape, integer):
    """Random values, and in channel 0 the float32 values on and next to every edge k/20
    (where float32 binning is unsure and the exact re-binning must decide)."""
    if integer:
        x = rng.integers(-200, 200, shape).astype(np.int32)
        hard = np.arange(-90, 91, dtype=np.int32) * 5  # with g = 0.02: y = k/20 (+ 0), on the edges
    else:
        x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
        on = (np.arange(-90, 91) / 20.0).astype(np.float32)
        hard = np.concatenate([on, np.nextafter(on, np.float32(np.inf)), np.nextafter(on, np.float32(-np.inf))])
    plane = x[:, 0].reshape(-1)
    k = min(plane.size, hard.size)
    plane[:k] = rng.permutation(hard)[:k]
    x[:, 0] = plane.reshape(x[:, 0].shape)
    return x


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 63, 7, 7), (3, 65, 6, 9), (1, 130, 5, 3), (2, 64, 56, 11),
                                   (4, 17, 1, 1), (1, 8, 33, 40)])
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("consumers", [0, 1, 2])
def test_fused_and_numba_equal_the_reference(shape, integer, consumers):
    rng = np.random.default_rng(hash((shape, integer, consumers)) % 2**32)
    n, c, h, w = shape
    direction, lo, hi, constant, gain, offset = _quantizer(rng, c, integer)
    x = _input(rng, shape, integer)
    # two consumers: weights beyond int16, so that the maps are int32
    kw = rng.integers(0, 50 if consumers < 2 else 40000, (consumers, c, h * w)).astype(np.int32)
    kp = rng.integers(0, 10, (consumers, h * w)).astype(np.int32)
    acc = QuantizerAccumulator(gain, offset, DEFAULT_EDGES, h * w, mac_weights=kw if consumers else None,
                               mac_positions=kp if consumers else None)
    assert acc.fusable() and acc.mac_weights.dtype == (np.int32 if consumers == 2 else np.int16)
    packed, codes = threshold_pack(x, direction, lo, hi, constant, with_codes=True)
    reference, numba_acc = acc.empty_like(), acc.empty_like()
    accumulate_reference(reference, x, codes)
    accumulate(numba_acc, x, codes)
    fused_packed = threshold_pack_accumulate(x, direction, lo, hi, constant, acc)
    assert np.array_equal(fused_packed.planes, packed.planes) and fused_packed.length == packed.length
    _assert_same(numba_acc, reference)
    _assert_same(acc, reference)
    assert reference.counts.sum() == x.size and reference.hist.sum() == x.size


def test_the_reference_by_hand():
    """Two channels, six values each, on edges [-1, -0.5, 0, 0.5, 1]."""
    edges = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    x = np.array([[[-2.0, -0.75, -0.5, 0.0, 0.5, 3.0], [0.25, 0.25, 0.25, 0.25, 0.25, 0.25]]], np.float32)
    codes = np.array([[[-1, -1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]], np.int8)
    acc = QuantizerAccumulator([1.0, 2.0], [0.0, 0.0], edges, 6, tie_eps=0.0,
                               mac_weights=np.arange(12, dtype=np.int32).reshape(1, 2, 6),
                               mac_positions=np.ones((1, 6), np.int32))
    accumulate_reference(acc, x, codes)
    # ch1: y = 0.5 six times -> bin [0.5, 1)
    assert acc.hist.tolist() == [1, 1, 1, 1, 7, 1]  # under, 4 bins, over
    assert acc.counts.tolist() == [[2, 2, 2], [0, 6, 0]]
    assert acc.tie_counts.tolist() == [8, 8]  # y == ±0.5: x = -0.5 and 0.5 in ch0, all six in ch1
    assert acc.macs.tolist() == [[0 + 1 + 4 + 5, 4]]
    assert acc.ch_min.tolist() == [-2.0, 0.5] and acc.ch_max.tolist() == [3.0, 0.5]
    a2 = acc + acc
    assert a2.hist.tolist() == [2, 2, 2, 2, 14, 2] and a2.n_images == 2


def test_adding_batches_equals_one_batch():
    rng = np.random.default_rng(3)
    direction, lo, hi, constant, gain, offset = _quantizer(rng, 70)
    x = _input(rng, (4, 70, 9, 9), False)
    whole = QuantizerAccumulator(gain, offset, DEFAULT_EDGES, 81)
    parts = [whole.empty_like(), whole.empty_like()]
    threshold_pack_accumulate(x, direction, lo, hi, constant, whole)
    threshold_pack_accumulate(x[:1], direction, lo, hi, constant, parts[0])
    threshold_pack_accumulate(x[1:], direction, lo, hi, constant, parts[1])
    _assert_same(parts[0] + parts[1], whole)


def test_one_preparation_serves_every_empty_copy_and_adds_in_place():
    """FusedThresholdStatistics prepared for one accumulator adds to any empty_like copy
    (a recorder's merged copies) and only to it; another quantizer's is refused.
    ``add`` in place equals ``+``."""
    rng = np.random.default_rng(4)
    direction, lo, hi, constant, gain, offset = _quantizer(rng, 66)
    x = _input(rng, (3, 66, 5, 7), False)
    whole = QuantizerAccumulator(gain, offset, DEFAULT_EDGES, 35)
    fused = FusedThresholdStatistics(whole, False, direction, lo, hi, constant)
    parts = [whole.empty_like() for _ in range(3)]
    assert all(whole.same_quantizer(p) for p in parts)
    for i, part in enumerate(parts):
        fused(x[i:i + 1], acc=part)
    assert whole.n_images == 0 and whole.hist.sum() == 0
    fused(x)
    total = whole.empty_like()
    for part in parts:
        total.add(part)
    _assert_same(total, whole)
    _assert_same(parts[0] + parts[1] + parts[2], whole)
    other = QuantizerAccumulator(gain.copy(), offset, DEFAULT_EDGES, 35)
    assert not whole.same_quantizer(other)
    with pytest.raises(ValueError, match="another quantizer"):
        fused(x, acc=other)


def test_not_fusable_and_bad_shapes():
    uneven = QuantizerAccumulator([1.0], [0.0], np.array([-1.0, 0.0, 0.3, 1.0]), 4)
    assert not uneven.fusable()
    off_edges = QuantizerAccumulator([1.0], [0.0], np.linspace(-4, 4, 7), 4)  # ±0.5 are not edges
    assert not off_edges.fusable()
    assert QuantizerAccumulator([1.0], [0.0], np.linspace(-4, 4, 7), 4, ties=False).fusable()
    x = np.zeros((1, 1, 2, 2), np.float32)
    args = (np.ones(1, np.int8), np.float32([-0.5]), np.float32([0.5]), np.zeros(1, np.int8))
    with pytest.raises(ValueError, match="non-uniform edges"):
        threshold_pack_accumulate(x, *args, uneven)
    with pytest.raises(ValueError, match="does not match"):
        accumulate(QuantizerAccumulator([1.0, 1.0], [0.0, 0.0], DEFAULT_EDGES, 4), x, np.zeros_like(x, np.int8))

"""Packed ternary GEMM vs the int64 numpy reference (exact ==), for every kernel
(``ternary_kernel``: tests/kernels/conftest.py)."""

import itertools

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.bench.gemm import random_codes
from sttn_sim.errors import ShapeError
from sttn_sim.kernels import (
    TERNARY_KERNELS,
    GemmColumns,
    GemmWeights,
    pack_ternary,
    prepack_gemm_columns,
    prepack_gemm_weights,
    ternary_gemm,
    ternary_gemm_reference,
)
from sttn_sim.kernels._llvm import lut_nibble, lut_tables, lut_weight_index


def check(a, b, kernel):
    ref = ternary_gemm_reference(a, b)
    got = ternary_gemm(prepack_gemm_weights(pack_ternary(a), kernel=kernel), pack_ternary(b))
    assert got.dtype == np.int32
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    got2 = ternary_gemm(prepack_gemm_weights(a, kernel=kernel), prepack_gemm_columns(b, kernel=kernel))
    assert np.array_equal(got2, ref)
    return ref


# sizes around every kernel's tiles: rows 1, 5, 6, 17, columns 1, 8, 16, 17, 40, 65 (> 64,
# the widest int8 tile), K around the 64-value words and the 4-value quads
@pytest.mark.parametrize("k", [1, 3, 64, 65, 300])
@pytest.mark.parametrize("m", [1, 5, 6, 17])
@pytest.mark.parametrize("n", [1, 8, 16, 17, 40, 65])
def test_gemm_sweep(m, n, k, ternary_kernel):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    check(random_codes(rng, (m, k)), random_codes(rng, (n, k)), ternary_kernel)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 23), n=st.integers(1, 70), k=st.integers(1, 260),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_gemm_property(m, n, k, density, seed, ternary_kernel):
    rng = np.random.default_rng(seed)
    check(random_codes(rng, (m, k), density), random_codes(rng, (n, k), density), ternary_kernel)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_gemm_sparsity(density, ternary_kernel):
    rng = np.random.default_rng(int(100 * density))
    check(random_codes(rng, (23, 190), density), random_codes(rng, (37, 190), 1 - density), ternary_kernel)


@pytest.mark.parametrize("k", [63, 130])
def test_gemm_extremes(k, ternary_kernel):
    m, n = 7, 19
    zeros_a = np.zeros((m, k), np.int8)
    ones_b = np.ones((n, k), np.int8)
    assert not check(zeros_a, ones_b, ternary_kernel).any()
    ref = check(np.ones((m, k), np.int8), -ones_b, ternary_kernel)
    assert (ref == -k).all()
    ref = check(-np.ones((m, k), np.int8), -ones_b, ternary_kernel)
    assert (ref == k).all()
    rng = np.random.default_rng(k)
    signs_a = np.where(rng.random((m, k)) < 0.5, -1, 1).astype(np.int8)
    signs_b = np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int8)
    check(signs_a, signs_b, ternary_kernel)


def test_gemm_deep_k_beyond_one_int16_chunk(ternary_kernel):
    """K = 33000 > 4·8191: the vpmaddubsw kernels accumulate in int16 lanes and must
    split K into chunks, as the lut kernels' int16 stage (16500 pairs > LUT_DEPTH =
    16128); all-equal rows reach the extreme sums ±K."""
    k = 33000
    a = np.ones((ternary_kernel.tile_m + 1, k), np.int8)
    a[1] = -1
    b = np.ones((ternary_kernel.tile_n + 1, k), np.int8)
    b[2] = -1
    rng = np.random.default_rng(5)
    a[3] = random_codes(rng, (1, k))[0]
    ref = check(a, b, ternary_kernel)
    assert ref[0, 0] == k and ref[1, 0] == -k and ref[1, 2] == k


def test_gemm_resnet_like_shape_and_out_argument(ternary_kernel):
    rng = np.random.default_rng(7)
    a = random_codes(rng, (67, 576))
    b = random_codes(rng, (203, 576))
    ref = check(a, b, ternary_kernel)
    out = np.full((67, 203), 12345, np.int32)
    res = ternary_gemm(prepack_gemm_weights(a, kernel=ternary_kernel),
                       prepack_gemm_columns(b, kernel=ternary_kernel), out=out)
    assert res is out
    assert np.array_equal(out, ref)


def test_prepack_from_packed_equals_prepack_from_codes(ternary_kernel):
    rng = np.random.default_rng(8)
    a = random_codes(rng, (13, 150))
    w1 = prepack_gemm_weights(a, kernel=ternary_kernel)
    w2 = prepack_gemm_weights(pack_ternary(a), kernel=ternary_kernel)
    assert isinstance(w1, GemmWeights) and w1.kernel is ternary_kernel
    assert np.array_equal(w1.blocks, w2.blocks)
    c1 = prepack_gemm_columns(a, kernel=ternary_kernel)
    c2 = prepack_gemm_columns(pack_ternary(a), kernel=ternary_kernel)
    assert isinstance(c1, GemmColumns)
    assert np.array_equal(c1.blocks, c2.blocks)
    tm, tn = ternary_kernel.tile_m, ternary_kernel.tile_n
    if ternary_kernel.family == "popcount":
        assert w1.blocks.shape == (-(-13 // tm), 3, 2, tm)
        assert c1.blocks.shape == (-(-13 // tn), 3, 2, tn)
    elif ternary_kernel.family == "lut":  # pairs of K: 150 values -> 75 pairs, rounded up to 76
        assert w1.blocks.shape == (-(-13 // tm), 76, tm)
        assert c1.blocks.shape == (-(-13 // tn), 76, tn)
        assert not w1.corr.any()
    else:  # quads of K: 150 values -> 38 quads
        assert w1.blocks.shape == (-(-13 // tm), 38, tm, 4)
        assert c1.blocks.shape == (-(-13 // tn), 38, tn, 4)
        assert np.array_equal(w1.corr[:13], a.sum(axis=1))


def test_int8_layout_by_hand():
    """The int8 layouts, written out for a 2 x 5 example: weights as codes, columns as
    x + 1, quads of K, padding zero weights / ones; corr = row sums."""
    kernel = TERNARY_KERNELS["int8-maddubs-ymm-5x16"]
    a = np.array([[1, -1, 0, 1, -1], [0, 0, 1, 1, 1]], np.int8)
    w = prepack_gemm_weights(a, kernel=kernel)
    assert w.blocks.shape == (1, 2, 5, 4)
    assert w.blocks[0, 0, 0].tolist() == [1, -1, 0, 1] and w.blocks[0, 1, 0].tolist() == [-1, 0, 0, 0]
    assert w.blocks[0, 1, 1].tolist() == [1, 0, 0, 0] and not w.blocks[0, :, 2:].any()
    assert w.corr.tolist() == [0, 3, 0, 0, 0]
    c = prepack_gemm_columns(a, kernel=kernel)
    assert c.blocks[0, 0, 0].tolist() == [2, 0, 1, 2] and c.blocks[0, 1, 1].tolist() == [2, 1, 1, 1]
    assert (c.blocks[0, :, 2:] == 1).all()


def test_lut_tables_hold_the_pair_products():
    """Every table entry, from the encodings' definition: entry (w0, w1) x (x0, x1) is
    w0·x0 + w1·x1; nibbles that encode no pair (a digit 3) are 0; pair (0, 0) of weights
    is the all-zero table 4, pair (0, 0) of activations nibble 5."""
    tables = lut_tables()
    assert len(tables) == 9 and all(len(t) == 16 for t in tables)
    pairs = {}
    for w0, w1, x0, x1 in itertools.product((-1, 0, 1), repeat=4):
        pairs[(lut_weight_index(w0, w1), lut_nibble(x0, x1))] = w0 * x0 + w1 * x1
    for t in range(9):
        for nib in range(16):
            assert tables[t][nib] == pairs.get((t, nib), 0)
    assert lut_weight_index(0, 0) == 4 and not any(tables[4])
    assert lut_nibble(0, 0) == 5 and all(tables[t][5] == 0 for t in range(9))


def test_lut_layout_by_hand():
    """The lut layouts, written out for a 2 x 5 example: table numbers (w0+1) + 3(w1+1)
    (stored times 4 for ymm, 8 for zmm: 8-byte units of 32- or 64-byte tables) and
    nibbles (x0+1) + 4(x1+1) per pair of K; K padded to 8 values (4 pairs) with zero
    codes, i.e. table 4 and nibble 5; padding rows likewise."""
    kernel = TERNARY_KERNELS["lut-pshufb-ymm-6x64"]
    a = np.array([[1, -1, 0, 1, -1], [0, 0, 1, 1, 1]], np.int8)
    w = prepack_gemm_weights(a, kernel=kernel)
    assert w.blocks.shape == (1, 4, 6) and w.blocks.dtype == np.uint8
    assert (w.blocks[0, :, 0] // 4).tolist() == [2 + 3 * 0, 1 + 3 * 2, 0 + 3 * 1, 4]
    assert (w.blocks[0, :, 1] // 4).tolist() == [4, 2 + 3 * 2, 2 + 3 * 1, 4]
    assert (w.blocks[0, :, 2:] == 4 * 4).all() and not (w.blocks % 4).any()
    wide = prepack_gemm_weights(a, kernel="lut-pshufb-zmm-12x64")
    assert np.array_equal(wide.blocks[0, :, :2], 2 * w.blocks[0, :, :2])
    c = prepack_gemm_columns(a, kernel=kernel)
    assert c.blocks.shape == (1, 4, 64)
    assert c.blocks[0, :, 0].tolist() == [2 + 4 * 0, 1 + 4 * 2, 0 + 4 * 1, 5]
    assert c.blocks[0, :, 1].tolist() == [5, 2 + 4 * 2, 2 + 4 * 1, 5]
    assert (c.blocks[0, :, 2:] == 5).all()


def test_prepacked_for_another_kernel_is_refused():
    a = np.ones((3, 70), np.int8)
    w = prepack_gemm_weights(a, kernel="popcount-generic-4x4")
    with pytest.raises(ShapeError, match="a: prepacked for kernel popcount-generic-4x4"):
        prepack_gemm_weights(w, "a", kernel="int8-maddubs-ymm-5x16")
    with pytest.raises(ShapeError, match="kernel: expected one of"):
        prepack_gemm_weights(a, kernel="no-such-kernel")


def test_reference_is_plain_matmul():
    a = np.array([[1, -1, 0], [0, 1, 1]], np.int8)
    b = np.array([[1, 1, 1], [-1, 0, 1], [0, 0, -1]], np.int8)
    assert ternary_gemm_reference(a, b).tolist() == [[0, -1, 0], [2, 1, -1]]


def test_gemm_errors():
    a = pack_ternary(np.ones((3, 70), np.int8))
    b = pack_ternary(np.ones((4, 71), np.int8))
    with pytest.raises(ShapeError, match="b.*K = 70"):
        ternary_gemm(a, b)
    b2 = pack_ternary(np.ones((4, 130), np.int8))
    with pytest.raises(ShapeError, match="b"):
        ternary_gemm(a, prepack_gemm_columns(b2))
    with pytest.raises(ShapeError, match="a"):
        ternary_gemm(np.ones((3, 70), np.int8), b)
    with pytest.raises(ShapeError, match="a"):
        ternary_gemm(pack_ternary(np.ones((2, 3, 70), np.int8)), b)
    with pytest.raises(ShapeError, match="b"):
        prepack_gemm_columns(np.ones(70, np.int8))
    with pytest.raises(ShapeError, match="b"):
        prepack_gemm_columns(np.ones((2, 70), np.float64))
    with pytest.raises(ValueError, match="b.*1 value"):
        prepack_gemm_columns(np.array([[0, 1, 2]], np.int8))
    with pytest.raises(ShapeError, match="out"):
        ternary_gemm(a, pack_ternary(np.ones((4, 70), np.int8)), out=np.empty((3, 4), np.int64))
    with pytest.raises(ShapeError, match="b_codes"):
        ternary_gemm_reference(np.ones((3, 5)), np.ones((3, 6)))
    with pytest.raises(ShapeError, match="a_codes"):
        ternary_gemm_reference(np.ones(5), np.ones((3, 5)))


#: each kernel's micro-kernel (in sttn_sim.kernels.gemm) and the instruction and register
#: width its compiled loop must contain
KERNEL_INSTRUCTIONS = {
    "popcount-zmm-5x16": ("_POP_ZMM", "vpopcntq", "zmm"),
    "popcount-generic-4x4": ("_POP_GENERIC", None, None),
    "int8-maddubs-ymm-5x16": ("_I8_MADDUBS_YMM", "vpmaddubsw", "ymm"),
    "int8-vnni-ymm-5x16": ("_I8_VNNI_YMM", "vpdpbusd", "ymm"),
    "int8-maddubs-zmm-6x64": ("_I8_MADDUBS_ZMM", "vpmaddubsw", "zmm"),
    "int8-vnni-zmm-6x64": ("_I8_VNNI_ZMM", "vpdpbusd", "zmm"),
    "lut-pshufb-ymm-6x64": ("_LUT_YMM", "vpshufb", "ymm"),
    "lut-pshufb-zmm-12x64": ("_LUT_ZMM", "vpshufb", "zmm"),
}


def test_kernel_compiles_to_its_instructions(ternary_kernel):
    """The micro-kernel really uses the instruction and register width it is chosen for
    (compiled alone in a small uncached function, so that its assembly is available)."""
    from sttn_sim.kernels import gemm

    k = ternary_kernel
    assert set(KERNEL_INSTRUCTIONS) == set(TERNARY_KERNELS)
    attr, instruction, register = KERNEL_INSTRUCTIONS[k.name]
    mk = getattr(gemm, attr)
    a = prepack_gemm_weights(np.ones((k.tile_m, 64), np.int8), kernel=k)
    b = prepack_gemm_columns(np.ones((k.tile_n, 64), np.int8), kernel=k)
    out = np.empty(k.tile_m * k.tile_n, np.int32)
    ldo = k.tile_n
    if k.family == "popcount":
        @numba.njit
        def one_tile(a, b, out):
            mk(a, 0, b, 0, 1, out, 0, ldo)

        one_tile(a.blocks.reshape(-1), b.blocks.reshape(-1), out)
    else:
        steps = a.blocks.shape[1]  # 16 quads (int8) or 32 pairs (lut) of K

        @numba.njit
        def one_tile(a, b, out, corr):
            mk(a, 0, b, 0, steps, out, 0, ldo, corr, 0, False)

        one_tile(a.blocks.reshape(-1).view(np.int32), b.blocks.reshape(-1).view(np.int32), out, a.corr)
    assert (out == 64).all()
    asm = one_tile.inspect_asm(one_tile.signatures[0])
    if instruction is not None:
        assert instruction in asm and f"%{register}" in asm, f"{k.name}: no {instruction} on {register} registers"

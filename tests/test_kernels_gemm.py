"""Packed ternary GEMM vs the int64 numpy reference (exact ==)."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.errors import ShapeError
from sttn_sim.kernels import (
    TILE_M,
    TILE_N,
    GemmColumns,
    GemmWeights,
    pack_ternary,
    prepack_gemm_columns,
    prepack_gemm_weights,
    ternary_gemm,
    ternary_gemm_reference,
)


def random_codes(rng, shape, density=2 / 3):
    nz = rng.random(shape) < density
    neg = rng.random(shape) < 0.5
    return np.where(nz, np.where(neg, -1, 1), 0).astype(np.int8)


def check(a, b):
    ref = ternary_gemm_reference(a, b)
    got = ternary_gemm(pack_ternary(a), pack_ternary(b))
    assert got.dtype == np.int32
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    got2 = ternary_gemm(prepack_gemm_weights(a), prepack_gemm_columns(b))
    assert np.array_equal(got2, ref)
    return ref


@pytest.mark.parametrize("k", [1, 63, 64, 65, 130, 300])
@pytest.mark.parametrize("m", [1, 3, TILE_M, 17])
@pytest.mark.parametrize("n", [1, 3, TILE_N, 17, 27, 40])
def test_gemm_sweep(m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    check(random_codes(rng, (m, k)), random_codes(rng, (n, k)))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 23), n=st.integers(1, 50), k=st.integers(1, 260),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_gemm_property(m, n, k, density, seed):
    rng = np.random.default_rng(seed)
    check(random_codes(rng, (m, k), density), random_codes(rng, (n, k), density))


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_gemm_sparsity(density):
    rng = np.random.default_rng(int(100 * density))
    check(random_codes(rng, (23, 190), density), random_codes(rng, (37, 190), 1 - density))


@pytest.mark.parametrize("k", [63, 130])
def test_gemm_extremes(k):
    m, n = 7, 19
    zeros_a = np.zeros((m, k), np.int8)
    ones_b = np.ones((n, k), np.int8)
    assert not check(zeros_a, ones_b).any()
    ref = check(np.ones((m, k), np.int8), -ones_b)
    assert (ref == -k).all()
    ref = check(-np.ones((m, k), np.int8), -ones_b)
    assert (ref == k).all()
    rng = np.random.default_rng(k)
    signs_a = np.where(rng.random((m, k)) < 0.5, -1, 1).astype(np.int8)
    signs_b = np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int8)
    check(signs_a, signs_b)


def test_gemm_resnet_like_shape_and_out_argument():
    rng = np.random.default_rng(7)
    a = random_codes(rng, (67, 576))
    b = random_codes(rng, (203, 576))
    ref = check(a, b)
    out = np.full((67, 203), 12345, np.int32)
    res = ternary_gemm(prepack_gemm_weights(a), prepack_gemm_columns(b), out=out)
    assert res is out
    assert np.array_equal(out, ref)


def test_prepack_from_packed_equals_prepack_from_codes():
    rng = np.random.default_rng(8)
    a = random_codes(rng, (13, 150))
    w1 = prepack_gemm_weights(a)
    w2 = prepack_gemm_weights(pack_ternary(a))
    assert isinstance(w1, GemmWeights)
    assert np.array_equal(w1.blocks, w2.blocks)
    assert w1.blocks.shape == (-(-13 // TILE_M), 3, 2, TILE_M)
    c1 = prepack_gemm_columns(a)
    c2 = prepack_gemm_columns(pack_ternary(a))
    assert isinstance(c1, GemmColumns)
    assert np.array_equal(c1.blocks, c2.blocks)
    assert c1.blocks.shape == (1, 3, 2, TILE_N)


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


def _host_has(feature):
    import llvmlite.binding as ll

    return f"+{feature}" in ll.get_host_cpu_features().flatten().split(",")


@pytest.mark.skipif(not _host_has("avx512vpopcntdq"), reason="host lacks AVX512-VPOPCNTDQ")
def test_microkernel_compiles_to_vpopcntq_on_zmm():
    from sttn_sim.kernels import gemm

    fresh = numba.njit(parallel=True)(gemm._gemm_kernel.py_func)  # uncached: asm available
    a = prepack_gemm_weights(np.ones((TILE_M, 64), np.int8))
    b = prepack_gemm_columns(np.ones((TILE_N, 64), np.int8))
    out = np.empty((TILE_M, TILE_N), np.int32)
    fresh(a.blocks.reshape(-1), b.blocks.reshape(-1), TILE_M, TILE_N, 1, out.reshape(-1))
    assert (out == 64).all()
    asm = "\n".join(fresh.inspect_asm(sig) for sig in fresh.signatures)
    assert "vpopcntq" in asm
    assert "zmm" in asm


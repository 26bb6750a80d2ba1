"""Packed ternary GEMM: ``C[m, n] = sum_k A[m, k] * B[n, k]`` exactly, in int32.

Both operands are packed along K (DESIGN.md section 2.5).  ``A`` holds the weights
``[M, K]`` and ``B`` the activations / im2col columns ``[N, K]``.

Kernel layouts (both re-blocked from the row-major :class:`~.packing.PackedTernary`):

* :class:`GemmWeights` (``prepack_gemm_weights``, done once at model load):
  ``uint64[ceil(M/TILE_M), W, 2, TILE_M]`` -- for each block of ``TILE_M`` rows and
  each word ``w`` of K, the ``TILE_M`` non-zero words then the ``TILE_M`` sign words.
  The micro-kernel broadcasts these scalars.
* :class:`GemmColumns` (``prepack_gemm_columns``, per inference):
  ``uint64[ceil(N/TILE_N), W, 2, TILE_N]`` -- the same interleaving for blocks of
  ``TILE_N`` columns, so one word of K for ``TILE_N`` columns is ``TILE_N/8``
  contiguous ``<8 x u64>`` vectors per plane.  The vector lanes run over output
  columns.
* Rows/columns beyond ``M``/``N`` in the last block are zero.

The micro-kernel (:func:`._llvm.make_microkernel`) keeps a ``TILE_M x TILE_N`` tile
of ``popcount`` accumulators in ``2*TILE_M*TILE_N/8`` zmm registers for the whole K
loop (explicit vector IR, so it does not depend on the LLVM auto-vectorisers); per
word of K its loop body is 10 ``vpandq``, 10 ``vpternlogq``, 20 ``vpopcntq``, 20
``vpaddq``, 10 broadcasts and 4 vector loads.  A last column block with at most 8
valid columns uses an 8-column variant of the micro-kernel (half the work).  The parallel
loop (``numba.prange``) runs over (column block, row block) tiles, column block
outermost so a B block stays in L1 while the rows of A stream through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from sttn_sim.errors import ShapeError

from ._llvm import make_microkernel
from .packing import (
    PackedTernary,
    _pack_into,
    check_ternary_codes,
    words_for,
)

__all__ = [
    "TILE_M",
    "TILE_N",
    "GemmWeights",
    "GemmColumns",
    "prepack_gemm_weights",
    "prepack_gemm_columns",
    "ternary_gemm",
    "ternary_gemm_reference",
]

#: rows of A per register tile (broadcast operand)
TILE_M = 5
#: columns of B per register tile (multiple of 8: one zmm = 8 uint64 lanes)
TILE_N = 16

_MK = make_microkernel(TILE_M, TILE_N // 8)
#: narrower kernel (8 columns) for a last column block with at most 8 valid columns
_MK_TAIL = make_microkernel(TILE_M, 1, TILE_N)


@dataclass(frozen=True)
class GemmWeights:
    """A (weights) re-blocked for :func:`ternary_gemm`: ``blocks`` is
    ``uint64[ceil(rows/TILE_M), words, 2, TILE_M]``; ``length`` is K (``None`` when the
    rows are not one contiguous packed axis, e.g. convolution weights with per-tap
    channel padding)."""

    blocks: np.ndarray
    rows: int
    words: int
    length: int | None = None


@dataclass(frozen=True)
class GemmColumns:
    """B (activations) re-blocked for :func:`ternary_gemm`: ``blocks`` is
    ``uint64[ceil(cols/TILE_N), words, 2, TILE_N]``."""

    blocks: np.ndarray
    cols: int
    words: int
    length: int | None = None


def _block_planes(planes: np.ndarray, tile: int) -> np.ndarray:
    """``uint64[2, n, W]`` row-major planes -> ``uint64[ceil(n/tile), W, 2, tile]``."""
    _, n, nw = planes.shape
    nblk = -(-n // tile)
    padded = np.zeros((2, nblk * tile, nw), dtype=np.uint64)
    padded[:, :n] = planes
    return np.ascontiguousarray(padded.reshape(2, nblk, tile, nw).transpose(1, 3, 0, 2))


def _pack_blocked(codes, name: str, tile: int):
    codes8 = check_ternary_codes(codes, name, min_ndim=2)
    if codes8.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D array [rows, K], got shape {codes8.shape}")
    n, k = codes8.shape
    nw = words_for(k)
    nblk = -(-n // tile)
    blocks = np.zeros((nblk, nw, 2, tile), dtype=np.uint64)
    _pack_into(codes8, name, blocks, tile, 2 * nw * tile, 1, 2 * tile, tile)
    return blocks, n, nw, k


def _as_packed_2d(x, name: str) -> PackedTernary:
    if not isinstance(x, PackedTernary):
        raise ShapeError(f"{name}: expected a PackedTernary or int codes, got {type(x).__name__}")
    if x.planes.ndim != 3:
        raise ShapeError(f"{name}: expected packed shape [rows, K], got {x.shape}")
    return x


def prepack_gemm_weights(a, name: str = "a") -> GemmWeights:
    """Re-block A ``[M, K]`` (a :class:`PackedTernary` or int codes) for the kernel."""
    if isinstance(a, GemmWeights):
        return a
    if isinstance(a, PackedTernary):
        a = _as_packed_2d(a, name)
        return GemmWeights(_block_planes(a.planes, TILE_M), a.planes.shape[1], a.words, a.length)
    blocks, n, nw, k = _pack_blocked(a, name, TILE_M)
    return GemmWeights(blocks, n, nw, k)


def prepack_gemm_columns(b, name: str = "b") -> GemmColumns:
    """Re-block B ``[N, K]`` (a :class:`PackedTernary` or int codes) for the kernel.

    From int codes this packs straight into the blocked layout in one pass.
    """
    if isinstance(b, GemmColumns):
        return b
    if isinstance(b, PackedTernary):
        b = _as_packed_2d(b, name)
        return GemmColumns(_block_planes(b.planes, TILE_N), b.planes.shape[1], b.words, b.length)
    blocks, n, nw, k = _pack_blocked(b, name, TILE_N)
    return GemmColumns(blocks, n, nw, k)


@numba.njit(cache=True, parallel=True)
def _gemm_kernel(ablk, bblk, m, n, nw, out):
    mb_count = (m + TILE_M - 1) // TILE_M
    nb_count = (n + TILE_N - 1) // TILE_N
    for t in numba.prange(mb_count * nb_count):
        nb = t // mb_count
        mb = t - nb * mb_count
        m0 = mb * TILE_M
        n0 = nb * TILE_N
        a_off = mb * 2 * TILE_M * nw
        b_off = nb * 2 * TILE_N * nw
        if m0 + TILE_M <= m and n0 + TILE_N <= n:
            _MK(ablk, a_off, bblk, b_off, nw, out, m0 * n + n0, n)
        else:
            tmp = np.empty(TILE_M * TILE_N, dtype=np.int32)
            if n - n0 <= 8:
                _MK_TAIL(ablk, a_off, bblk, b_off, nw, tmp, 0, TILE_N)
            else:
                _MK(ablk, a_off, bblk, b_off, nw, tmp, 0, TILE_N)
            for r in range(min(TILE_M, m - m0)):
                for j in range(min(TILE_N, n - n0)):
                    out[(m0 + r) * n + n0 + j] = tmp[r * TILE_N + j]


def ternary_gemm(a, b, out: np.ndarray | None = None) -> np.ndarray:
    """Exact packed ternary GEMM ``C = A @ B.T`` as ``int32[M, N]``.

    ``a``: weights ``[M, K]`` as :class:`GemmWeights` (fastest; see
    :func:`prepack_gemm_weights`) or :class:`PackedTernary`.
    ``b``: activations ``[N, K]`` as :class:`GemmColumns` (see
    :func:`prepack_gemm_columns`) or :class:`PackedTernary`.
    ``out``: optional C-contiguous ``int32[M, N]`` to write into.
    """
    if not isinstance(a, (GemmWeights, PackedTernary)):
        raise ShapeError(f"a: expected GemmWeights or PackedTernary [M, K], got {type(a).__name__}")
    if not isinstance(b, (GemmColumns, PackedTernary)):
        raise ShapeError(f"b: expected GemmColumns or PackedTernary [N, K], got {type(b).__name__}")
    a = prepack_gemm_weights(a, "a")
    b = prepack_gemm_columns(b, "b")
    if a.length is not None and b.length is not None and a.length != b.length:
        raise ShapeError(f"b: expected K = {a.length} (the K of a), got K = {b.length}")
    if a.words != b.words:
        raise ShapeError(f"b: expected {a.words} packed words along K (as a), got {b.words}")
    m, n = a.rows, b.cols
    if out is None:
        out = np.empty((m, n), dtype=np.int32)
    elif (not isinstance(out, np.ndarray) or out.shape != (m, n) or out.dtype != np.int32
          or not out.flags.c_contiguous):
        raise ShapeError(f"out: expected a C-contiguous int32 array of shape {(m, n)}")
    if m and n:
        _gemm_kernel(a.blocks.reshape(-1), b.blocks.reshape(-1), m, n, a.words, out.reshape(-1))
    return out


def ternary_gemm_reference(a_codes, b_codes) -> np.ndarray:
    """Pure-numpy reference: ``int64`` matmul of the unpacked codes, ``A @ B.T``."""
    a = np.asarray(a_codes)
    b = np.asarray(b_codes)
    if a.ndim != 2:
        raise ShapeError(f"a_codes: expected a 2-D array [M, K], got shape {a.shape}")
    if b.ndim != 2:
        raise ShapeError(f"b_codes: expected a 2-D array [N, K], got shape {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"b_codes: expected K = {a.shape[1]}, got shape {b.shape}")
    return a.astype(np.int64) @ b.astype(np.int64).T


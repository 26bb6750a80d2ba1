"""Packed ternary GEMM: ``C[m, n] = sum_k A[m, k] * B[n, k]`` exactly, in int32.

``A`` holds the weights ``[M, K]`` and ``B`` the activations / im2col columns ``[N, K]``.
There are three arithmetics, each a family of register-tiled micro-kernels
(:data:`TERNARY_KERNELS`; :mod:`.selection` picks one per CPU class):

* ``popcount`` -- bit planes (docs/design.md §2.5):
  ``a·b = popcount(m_a & m_b) - 2·popcount((s_a ^ s_b) & m_a & m_b)``, one word of 64
  values per step, ``<lanes x i64>`` vectors over output columns
  (:func:`._llvm.make_microkernel`): ``popcount-zmm-5x16`` on CPUs with ``vpopcntq``,
  ``popcount-generic-4x4`` (``<2 x i64>``, portable) as the fallback.
* ``int8`` -- multiply-add on the codes themselves, for x86 CPUs without a vector
  popcount (:func:`._llvm.make_int8_microkernel`): ``Σ (x+1)·w - Σ w`` with
  ``vpmaddubsw`` (AVX2, AVX-512BW) or ``vpdpbusd`` (VNNI), four K values per int32 lane.
* ``lut`` -- table lookup on pairs of codes, for x86 CPUs without VNNI
  (:func:`._llvm.make_lut_microkernel`): a weight pair has 9 values, so the products
  with all 9 activation pairs fit one 16-byte table; ``vpshufb`` looks up one byte
  (two multiply-adds) per column, ``vpaddb`` accumulates in bytes for up to 63 pairs,
  then in int16 lanes for up to 256 such stages.

Layouts (re-blocked from the row-major :class:`~.packing.PackedTernary` or from codes):

* popcount :class:`GemmWeights` ``uint64[ceil(M/tile_m), W, 2, tile_m]`` -- for each
  block of rows and each word ``w`` of K, the non-zero words then the sign words
  (broadcast by the micro-kernel); :class:`GemmColumns`
  ``uint64[ceil(N/tile_n), W, 2, tile_n]`` -- the same for blocks of columns, so one
  word of K for ``tile_n`` columns is ``tile_n/lanes`` contiguous vectors per plane.
* int8 :class:`GemmWeights` ``int8[ceil(M/tile_m), Q, tile_m, 4]`` (codes, ``Q`` quads
  of K) plus ``corr`` = the weight sum of each row; :class:`GemmColumns`
  ``int8[ceil(N/tile_n), Q, tile_n, 4]`` holding ``x + 1 ∈ {0, 1, 2}``.
* lut :class:`GemmWeights` ``uint8[ceil(M/tile_m), P, tile_m]`` (the table offset of
  each row's weight pair, :func:`._llvm.lut_weight_byte`, ``P`` pairs of K; ``corr``
  zeros); :class:`GemmColumns`
  ``uint8[ceil(N/tile_n), P, tile_n]`` (each column's pair nibble).
* Rows/columns beyond ``M``/``N`` in the last block, and K beyond its end, hold zero
  weights (so whatever the activations there, they add nothing).

The parallel loop (``numba.prange``) runs over (column block, row block) tiles, column
block outermost so a B block stays in cache while the rows of A stream through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from sttn_sim.errors import ShapeError

from ._llvm import (
    INT8_OPS,
    LUT_DEPTH,
    LUT_OPS,
    lut_nibble,
    lut_weight_byte,
    make_int8_microkernel,
    make_lut_microkernel,
    make_microkernel,
)
from .cpu import CompileTarget, check_available, compile_target, requested_class
from .packing import (
    PackedTernary,
    _pack_into,
    _raise_if_not_ternary,
    check_ternary_codes,
    unpack_ternary,
    words_for,
)

__all__ = [
    "TernaryKernel",
    "TERNARY_KERNELS",
    "DEFAULT_TERNARY_KERNEL",
    "class_ternary_kernel",
    "GemmWeights",
    "GemmColumns",
    "prepack_gemm_weights",
    "prepack_gemm_columns",
    "ternary_gemm",
    "ternary_gemm_reference",
]


@dataclass(frozen=True)
class TernaryKernel:
    """One packed ternary GEMM/convolution micro-kernel: its arithmetic (``family``),
    register tile (``tile_m`` rows × ``tile_n`` columns), what it needs of the target,
    and the number (``kid``) the Numba loops dispatch on."""

    name: str
    family: str  # "popcount" | "int8" | "lut"
    kid: int
    tile_m: int
    tile_n: int
    description: str
    needs: tuple = ()  # alternatives: the target needs all features of one of them
    max_depth: int = 1 << 40  # K steps (words, quads or pairs) per micro-kernel call

    def available(self, target=None) -> bool:
        """Whether ``target`` (default: this process's) can compile the kernel."""
        target = target or compile_target()
        if self.family in ("int8", "lut") and not target.is_x86:
            return False
        return not self.needs or any(target.has(*alt) for alt in self.needs)

    def as_dict(self) -> dict:
        return {"name": self.name, "arithmetic": self.description, "tile": f"{self.tile_m}x{self.tile_n}"}


def _int8(name, kid, rows, vecs, vector_bytes, op, needs, description):
    depth = 8191 if op == "maddubs" else 1 << 40  # int16 lanes: see make_int8_microkernel
    return TernaryKernel(name, "int8", kid, rows, vecs * vector_bytes // 4, description, needs, depth)


#: the vector width (bytes) of each lut kernel: its weight bytes depend on it
LUT_VECTOR_BYTES = {"lut-pshufb-ymm-6x64": 32, "lut-pshufb-zmm-12x64": 64}


def _lut(name, kid, rows, vecs, description):
    vector_bytes = LUT_VECTOR_BYTES[name]
    return TernaryKernel(name, "lut", kid, rows, vecs * vector_bytes, description, (LUT_OPS[vector_bytes][1],),
                         LUT_DEPTH)


#: every ternary kernel, by name
TERNARY_KERNELS = {k.name: k for k in (
    TernaryKernel("popcount-zmm-5x16", "popcount", 0, 5, 16,
                  "popcount on bit planes, <8 x i64> (vpopcntq zmm)", (("avx512f",),)),
    TernaryKernel("popcount-generic-4x4", "popcount", 1, 4, 4,
                  "popcount on bit planes, <2 x i64> (portable)"),
    _int8("int8-maddubs-ymm-5x16", 0, 5, 2, 32, "maddubs", (("avx2",),),
          "int8 multiply-add on codes, vpmaddubsw ymm"),
    _int8("int8-vnni-ymm-5x16", 1, 5, 2, 32, "vnni", (("avxvnni",), ("avx512vnni", "avx512vl")),
          "int8 multiply-add on codes, vpdpbusd ymm (AVX-VNNI)"),
    _int8("int8-maddubs-zmm-6x64", 2, 6, 4, 64, "maddubs", (("avx512bw",),),
          "int8 multiply-add on codes, vpmaddubsw zmm"),
    _int8("int8-vnni-zmm-6x64", 3, 6, 4, 64, "vnni", (("avx512vnni",),),
          "int8 multiply-add on codes, vpdpbusd zmm (AVX512-VNNI)"),
    _lut("lut-pshufb-ymm-6x64", 4, 6, 2, "table lookup on code pairs, vpshufb ymm"),
    _lut("lut-pshufb-zmm-12x64", 5, 12, 1, "table lookup on code pairs, vpshufb zmm"),
)}

def class_ternary_kernel(cpu_class: str, target: CompileTarget) -> str:
    """The ternary kernel of ``cpu_class`` on ``target`` (measured choices: see
    :mod:`.selection`)."""
    if cpu_class == "avx512_vpopcntdq":
        return "popcount-zmm-5x16"
    if cpu_class == "avx512":
        return "int8-vnni-zmm-6x64" if TERNARY_KERNELS["int8-vnni-zmm-6x64"].available(target) \
            else "lut-pshufb-zmm-12x64"
    if cpu_class == "avx2":
        return "int8-vnni-ymm-5x16" if TERNARY_KERNELS["int8-vnni-ymm-5x16"].available(target) \
            else "lut-pshufb-ymm-6x64"
    return "popcount-generic-4x4"


#: the kernel of functions called without one (this process's class)
DEFAULT_TERNARY_KERNEL: list = [None]


def _default_kernel() -> TernaryKernel:
    if DEFAULT_TERNARY_KERNEL[0] is None:
        target = compile_target()
        cpu_class, where = requested_class(None, target)
        kernel = TERNARY_KERNELS[class_ternary_kernel(cpu_class, target)]
        check_available(kernel, cpu_class, where, target)
        DEFAULT_TERNARY_KERNEL[0] = kernel
    return DEFAULT_TERNARY_KERNEL[0]


def resolve_kernel(kernel) -> TernaryKernel:
    """A :class:`TernaryKernel` from itself, its name, or ``None`` (the default)."""
    if kernel is None:
        return _default_kernel()
    if isinstance(kernel, TernaryKernel):
        return kernel
    if kernel not in TERNARY_KERNELS:
        raise ShapeError(f"kernel: expected one of {sorted(TERNARY_KERNELS)}, got {kernel!r}")
    return TERNARY_KERNELS[kernel]


# --------------------------------------------------------------------------------------
# micro-kernels, and the dispatch the Numba loops use

_TARGET = compile_target()
_POP_ZMM_OK = TERNARY_KERNELS["popcount-zmm-5x16"].available(_TARGET)
_POP_ZMM = make_microkernel(5, 2, available=_POP_ZMM_OK)
_POP_ZMM_HALF = make_microkernel(5, 1, 16, available=_POP_ZMM_OK)  # a last block with <= 8 valid columns
_POP_GENERIC = make_microkernel(4, 2, lanes=2)


def _int8_mk(name, rows, vecs, vector_bytes, op):
    return make_int8_microkernel(rows, vecs, vector_bytes, op, TERNARY_KERNELS[name].available(_TARGET))


_I8_MADDUBS_YMM = _int8_mk("int8-maddubs-ymm-5x16", 5, 2, 32, "maddubs")
_I8_VNNI_YMM = _int8_mk("int8-vnni-ymm-5x16", 5, 2, 32, "vnni")
_I8_MADDUBS_ZMM = _int8_mk("int8-maddubs-zmm-6x64", 6, 4, 64, "maddubs")
_I8_VNNI_ZMM = _int8_mk("int8-vnni-zmm-6x64", 6, 4, 64, "vnni")
def _lut_mk(name):
    k, vector_bytes = TERNARY_KERNELS[name], LUT_VECTOR_BYTES[name]
    return make_lut_microkernel(k.tile_m, k.tile_n // vector_bytes, vector_bytes, k.available(_TARGET))


_LUT_YMM = _lut_mk("lut-pshufb-ymm-6x64")
_LUT_ZMM = _lut_mk("lut-pshufb-zmm-12x64")
assert set(INT8_OPS) == {("maddubs", 32), ("maddubs", 64), ("vnni", 32), ("vnni", 64)}


@numba.njit(inline="always")
def popcount_tile(kid, nvalid, a, a_off, b, b_off, nw, out, out_off, ldo):
    """One popcount micro-kernel call of kernel ``kid`` (``nvalid``: valid columns)."""
    if kid == 0:
        if nvalid <= 8:
            _POP_ZMM_HALF(a, a_off, b, b_off, nw, out, out_off, ldo)
        else:
            _POP_ZMM(a, a_off, b, b_off, nw, out, out_off, ldo)
    else:
        _POP_GENERIC(a, a_off, b, b_off, nw, out, out_off, ldo)


@numba.njit(inline="always")
def int8_tile(kid, tile_m, tile_n, max_depth, a, a_off, b, b_off, nq, out, out_off, ldo, corr, corr_off):
    """The int8 or lut micro-kernel ``kid`` over ``nq`` quads (int8) or pairs (lut), in
    chunks of ``max_depth``."""
    for q0 in range(0, nq, max_depth):
        n = min(max_depth, nq - q0)
        ao = a_off + q0 * tile_m
        bo = b_off + q0 * tile_n
        acc = q0 > 0
        if kid == 0:
            _I8_MADDUBS_YMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)
        elif kid == 1:
            _I8_VNNI_YMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)
        elif kid == 2:
            _I8_MADDUBS_ZMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)
        elif kid == 3:
            _I8_VNNI_ZMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)
        elif kid == 4:
            _LUT_YMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)
        else:
            _LUT_ZMM(a, ao, b, bo, n, out, out_off, ldo, corr, corr_off, acc)


# --------------------------------------------------------------------------------------
# layouts


@dataclass(frozen=True)
class GemmWeights:
    """A (weights) re-blocked for ``kernel`` (see the module docstring): ``blocks``,
    ``rows`` = M, ``words`` = ceil(K/64), ``length`` = K (``None`` when the rows are not
    one contiguous packed axis, e.g. convolution weights with per-tap channel padding);
    ``corr`` (int8 family): int32 weight sum of each row."""

    blocks: np.ndarray
    rows: int
    words: int
    length: int | None = None
    kernel: TernaryKernel | None = None
    corr: np.ndarray | None = None


@dataclass(frozen=True)
class GemmColumns:
    """B (activations) re-blocked for ``kernel`` (see the module docstring)."""

    blocks: np.ndarray
    cols: int
    words: int
    length: int | None = None
    kernel: TernaryKernel | None = None


def block_planes(planes: np.ndarray, tile: int) -> np.ndarray:
    """``uint64[2, n, W]`` row-major planes -> ``uint64[ceil(n/tile), W, 2, tile]``."""
    _, n, nw = planes.shape
    nblk = -(-n // tile)
    padded = np.zeros((2, nblk * tile, nw), dtype=np.uint64)
    padded[:, :n] = planes
    return np.ascontiguousarray(padded.reshape(2, nblk, tile, nw).transpose(1, 3, 0, 2))


def block_quads(codes8: np.ndarray, tile: int, fill: int = 0) -> np.ndarray:
    """int8 ``[n, K]`` -> ``int8[ceil(n/tile), ceil(K/4), tile, 4]`` (padding = ``fill``)."""
    n, k = codes8.shape
    nblk, nq = -(-n // tile), -(-k // 4)
    padded = np.full((nblk * tile, nq * 4), fill, np.int8)
    padded[:n, :k] = codes8
    return np.ascontiguousarray(padded.reshape(nblk, tile, nq, 4).transpose(0, 2, 1, 3))


def block_pairs(codes8: np.ndarray, tile: int, index) -> np.ndarray:
    """int8 ``[n, K]`` -> ``uint8[ceil(n/tile), P, tile]``: ``index(c[2i], c[2i+1])`` of
    each pair, ``P = ceil(K/2)`` rounded up to a multiple of 4 (whole int32 views);
    padding rows and K past the end are zero codes."""
    n, k = codes8.shape
    nblk, npairs = -(-n // tile), -(-k // 8) * 4
    padded = np.zeros((nblk * tile, npairs * 2), np.int16)
    padded[:n, :k] = codes8
    pairs = index(padded[:, 0::2], padded[:, 1::2]).astype(np.uint8)
    return np.ascontiguousarray(pairs.reshape(nblk, tile, npairs).transpose(0, 2, 1))


def int8_weights(codes8: np.ndarray, kernel: TernaryKernel, length: int | None) -> GemmWeights:
    """int8 weight codes ``[M, K]`` (K already in the kernel's order) as :class:`GemmWeights`
    of the int8 or lut family."""
    m = codes8.shape[0]
    corr = np.zeros(-(-m // kernel.tile_m) * kernel.tile_m, np.int32)
    if kernel.family == "lut":
        width = LUT_VECTOR_BYTES[kernel.name]
        blocks = block_pairs(codes8, kernel.tile_m, lambda w0, w1: lut_weight_byte(w0, w1, width))
    else:
        corr[:m] = codes8.sum(axis=1, dtype=np.int64)
        blocks = block_quads(codes8, kernel.tile_m)
    return GemmWeights(blocks, m, words_for(codes8.shape[1]), length, kernel, corr)


def _pack_blocked(codes8, tile: int, name: str):
    """Pack (and check) int8 codes straight into the popcount layout."""
    n, k = codes8.shape
    nw = words_for(k)
    blocks = np.zeros((-(-n // tile), nw, 2, tile), dtype=np.uint64)
    _pack_into(codes8, name, blocks, tile, 2 * nw * tile, 1, 2 * tile, tile)
    return blocks


def _codes_2d(x, name: str, check_values: bool) -> np.ndarray:
    """int8 codes ``[rows, K]`` from codes or a 2-D :class:`PackedTernary` (values
    outside {-1, 0, 1} refused when ``check_values``; the popcount packer checks them
    itself)."""
    if isinstance(x, PackedTernary):
        if x.planes.ndim != 3:
            raise ShapeError(f"{name}: expected packed shape [rows, K], got {x.shape}")
        return unpack_ternary(x)
    codes8 = check_ternary_codes(x, name, min_ndim=2)
    if codes8.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D array [rows, K], got shape {codes8.shape}")
    if check_values:
        _raise_if_not_ternary(codes8, name)
    return codes8


def _check_packed_2d(x, name: str) -> PackedTernary:
    if x.planes.ndim != 3:
        raise ShapeError(f"{name}: expected packed shape [rows, K], got {x.shape}")
    return x


def prepack_gemm_weights(a, name: str = "a", kernel=None) -> GemmWeights:
    """Re-block A ``[M, K]`` (a :class:`PackedTernary` or int codes) for ``kernel``
    (a :class:`TernaryKernel` or its name; default: this process's)."""
    kernel = resolve_kernel(kernel)
    if isinstance(a, GemmWeights):
        if a.kernel is not kernel:
            raise ShapeError(f"{name}: prepacked for kernel {a.kernel.name}, expected {kernel.name}")
        return a
    if kernel.family in ("int8", "lut"):
        codes8 = _codes_2d(a, name, True)
        return int8_weights(codes8, kernel, codes8.shape[1])
    if isinstance(a, PackedTernary):
        a = _check_packed_2d(a, name)
        return GemmWeights(block_planes(a.planes, kernel.tile_m), a.planes.shape[1], a.words, a.length, kernel)
    codes8 = _codes_2d(a, name, False)
    return GemmWeights(_pack_blocked(codes8, kernel.tile_m, name), codes8.shape[0], words_for(codes8.shape[1]),
                       codes8.shape[1], kernel)


def prepack_gemm_columns(b, name: str = "b", kernel=None) -> GemmColumns:
    """Re-block B ``[N, K]`` (a :class:`PackedTernary` or int codes) for ``kernel``.

    For the popcount family, int codes are packed straight into the blocked layout in
    one pass."""
    kernel = resolve_kernel(kernel)
    if isinstance(b, GemmColumns):
        if b.kernel is not kernel:
            raise ShapeError(f"{name}: prepacked for kernel {b.kernel.name}, expected {kernel.name}")
        return b
    if kernel.family == "lut":
        codes8 = _codes_2d(b, name, True)
        return GemmColumns(block_pairs(codes8, kernel.tile_n, lut_nibble), codes8.shape[0],
                           words_for(codes8.shape[1]), codes8.shape[1], kernel)
    if kernel.family == "int8":
        codes8 = _codes_2d(b, name, True)
        plus1 = (codes8 + np.int8(1)).astype(np.int8)
        return GemmColumns(block_quads(plus1, kernel.tile_n, fill=1), codes8.shape[0], words_for(codes8.shape[1]),
                           codes8.shape[1], kernel)
    if isinstance(b, PackedTernary):
        b = _check_packed_2d(b, name)
        return GemmColumns(block_planes(b.planes, kernel.tile_n), b.planes.shape[1], b.words, b.length, kernel)
    codes8 = _codes_2d(b, name, False)
    return GemmColumns(_pack_blocked(codes8, kernel.tile_n, name), codes8.shape[0], words_for(codes8.shape[1]),
                       codes8.shape[1], kernel)


# --------------------------------------------------------------------------------------
# kernels


@numba.njit(cache=True, parallel=True, nogil=True)
def _popcount_gemm_kernel(kid, tile_m, tile_n, ablk, bblk, m, n, nw, out):
    mb_count = (m + tile_m - 1) // tile_m
    nb_count = (n + tile_n - 1) // tile_n
    for t in numba.prange(mb_count * nb_count):
        nb = t // mb_count
        mb = t - nb * mb_count
        m0 = mb * tile_m
        n0 = nb * tile_n
        a_off = mb * 2 * tile_m * nw
        b_off = nb * 2 * tile_n * nw
        if m0 + tile_m <= m and n0 + tile_n <= n:
            popcount_tile(kid, tile_n, ablk, a_off, bblk, b_off, nw, out, m0 * n + n0, n)
        else:
            tmp = np.empty(tile_m * tile_n, dtype=np.int32)
            popcount_tile(kid, n - n0, ablk, a_off, bblk, b_off, nw, tmp, 0, tile_n)
            for r in range(min(tile_m, m - m0)):
                for j in range(min(tile_n, n - n0)):
                    out[(m0 + r) * n + n0 + j] = tmp[r * tile_n + j]


@numba.njit(cache=True, parallel=True, nogil=True)
def _int8_gemm_kernel(kid, tile_m, tile_n, max_depth, ablk, corr, bblk, m, n, nq, out):
    mb_count = (m + tile_m - 1) // tile_m
    nb_count = (n + tile_n - 1) // tile_n
    for t in numba.prange(mb_count * nb_count):
        nb = t // mb_count
        mb = t - nb * mb_count
        m0 = mb * tile_m
        n0 = nb * tile_n
        a_off = mb * tile_m * nq
        b_off = nb * tile_n * nq
        if m0 + tile_m <= m and n0 + tile_n <= n:
            int8_tile(kid, tile_m, tile_n, max_depth, ablk, a_off, bblk, b_off, nq, out, m0 * n + n0, n, corr, m0)
        else:
            tmp = np.empty(tile_m * tile_n, dtype=np.int32)
            int8_tile(kid, tile_m, tile_n, max_depth, ablk, a_off, bblk, b_off, nq, tmp, 0, tile_n, corr, m0)
            for r in range(min(tile_m, m - m0)):
                for j in range(min(tile_n, n - n0)):
                    out[(m0 + r) * n + n0 + j] = tmp[r * tile_n + j]


def ternary_gemm(a, b, out: np.ndarray | None = None) -> np.ndarray:
    """Exact packed ternary GEMM ``C = A @ B.T`` as ``int32[M, N]``.

    ``a``: weights ``[M, K]`` as :class:`GemmWeights` (fastest; see
    :func:`prepack_gemm_weights`) or :class:`PackedTernary`.
    ``b``: activations ``[N, K]`` as :class:`GemmColumns` (see
    :func:`prepack_gemm_columns`) or :class:`PackedTernary`.
    The kernel is ``a``'s when prepacked, else ``b``'s, else the default.
    ``out``: optional C-contiguous ``int32[M, N]`` to write into.
    """
    if not isinstance(a, (GemmWeights, PackedTernary)):
        raise ShapeError(f"a: expected GemmWeights or PackedTernary [M, K], got {type(a).__name__}")
    if not isinstance(b, (GemmColumns, PackedTernary)):
        raise ShapeError(f"b: expected GemmColumns or PackedTernary [N, K], got {type(b).__name__}")
    kernel = a.kernel if isinstance(a, GemmWeights) else (b.kernel if isinstance(b, GemmColumns) else None)
    a = prepack_gemm_weights(a, "a", kernel)
    b = prepack_gemm_columns(b, "b", a.kernel)
    if a.length is not None and b.length is not None and a.length != b.length:
        raise ShapeError(f"b: expected K = {a.length} (the K of a), got K = {b.length}")
    if a.words != b.words or a.blocks.shape[1] != b.blocks.shape[1]:
        raise ShapeError(f"b: expected {a.words} packed words along K (as a), got {b.words}")
    m, n = a.rows, b.cols
    if out is None:
        out = np.empty((m, n), dtype=np.int32)
    elif (not isinstance(out, np.ndarray) or out.shape != (m, n) or out.dtype != np.int32
          or not out.flags.c_contiguous):
        raise ShapeError(f"out: expected a C-contiguous int32 array of shape {(m, n)}")
    k = a.kernel
    if m and n:
        if k.family in ("int8", "lut"):  # one driver: the lut operands are bytes in int32 views
            _int8_gemm_kernel(k.kid, k.tile_m, k.tile_n, k.max_depth, a.blocks.reshape(-1).view(np.int32), a.corr,
                              b.blocks.reshape(-1).view(np.int32), m, n, a.blocks.shape[1], out.reshape(-1))
        else:
            _popcount_gemm_kernel(k.kid, k.tile_m, k.tile_n, a.blocks.reshape(-1), b.blocks.reshape(-1), m, n,
                                  a.words, out.reshape(-1))
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

"""Bit-packing of ternary codes (docs/design.md §2.5).

Encoding: a code ``v in {-1, 0, +1}`` is stored as two bits, ``m = (v != 0)`` (the
*non-zero* plane) and ``s = (v < 0)`` (the *sign* plane; ``s = 0`` wherever ``m = 0``),
so ``v = (1 - 2 s) m``.  64 consecutive values of the last axis share one ``uint64``
word per plane: value ``j`` lives in word ``j // 64``, bit ``j % 64``.  Padding bits
beyond the length ``K`` are 0 in both planes, so they contribute nothing to a dot
product::

    x . w = popcount(m_x & m_w) - 2 * popcount((s_x ^ s_w) & m_x & m_w)

Layout of :class:`PackedTernary`: both planes live in ONE C-contiguous ``uint64``
array ``planes`` of shape ``[2, ..., W]`` (``W = ceil(K / 64)``); ``nonzero`` and
``sign`` are the views ``planes[0]`` and ``planes[1]``.  The GEMM/convolution kernels
re-block these rows into their own interleaved layouts (see :mod:`.gemm`).

Fast functions (:func:`pack_ternary`, :func:`unpack_ternary`, :func:`ternary_dot`)
are Numba kernels; the ``*_reference`` functions are plain numpy written independently
of them and are what the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from sttn_sim.errors import QuantizationError, ShapeError

from ._llvm import bits64, popcount64, unbits64

__all__ = [
    "PackedTernary",
    "pack_ternary",
    "unpack_ternary",
    "pack_ternary_reference",
    "unpack_ternary_reference",
    "ternary_dot",
    "ternary_dot_reference",
    "check_ternary_codes",
    "words_for",
]

WORD_BITS = 64


def words_for(length: int) -> int:
    """Number of 64-bit words needed for ``length`` values."""
    return (int(length) + WORD_BITS - 1) // WORD_BITS


@dataclass(frozen=True)
class PackedTernary:
    """Ternary codes packed 64 per word along the last axis.

    ``planes``: ``uint64[2, ..., W]``, C-contiguous; plane 0 = non-zero bits,
    plane 1 = sign bits.  ``length``: the number ``K >= 1`` of values per row
    (``W = ceil(K / 64)``; bits ``>= K`` of the last word are zero).
    """

    planes: np.ndarray
    length: int

    def __post_init__(self):
        p = self.planes
        if not isinstance(p, np.ndarray) or p.dtype != np.uint64:
            raise ShapeError(
                f"PackedTernary.planes: expected a uint64 ndarray, got "
                f"{type(p).__name__} of dtype {getattr(p, 'dtype', None)}"
            )
        if p.ndim < 2 or p.shape[0] != 2:
            raise ShapeError(
                f"PackedTernary.planes: expected shape [2, ..., W], got {p.shape}"
            )
        if not p.flags.c_contiguous:
            raise ShapeError("PackedTernary.planes: expected a C-contiguous array")
        k = int(self.length)
        if k < 1 or p.shape[-1] != words_for(k):
            raise ShapeError(
                f"PackedTernary: length {k} needs {words_for(k)} words per row, "
                f"planes has {p.shape[-1]} (shape {p.shape})"
            )
        object.__setattr__(self, "length", k)

    @property
    def nonzero(self) -> np.ndarray:
        """``uint64[..., W]`` non-zero plane (a view)."""
        return self.planes[0]

    @property
    def sign(self) -> np.ndarray:
        """``uint64[..., W]`` sign plane (a view)."""
        return self.planes[1]

    @property
    def shape(self) -> tuple:
        """Shape of the unpacked codes, ``(..., K)``."""
        return self.planes.shape[1:-1] + (self.length,)

    @property
    def words(self) -> int:
        return self.planes.shape[-1]

    @classmethod
    def from_planes(cls, nonzero, sign, length: int) -> "PackedTernary":
        """Build from separate ``uint64[..., W]`` planes (copied into one array)."""
        nonzero = np.asarray(nonzero)
        sign = np.asarray(sign)
        if nonzero.shape != sign.shape:
            raise ShapeError(
                f"PackedTernary.from_planes: nonzero {nonzero.shape} and sign "
                f"{sign.shape} must have the same shape"
            )
        if nonzero.dtype != np.uint64 or sign.dtype != np.uint64:
            raise ShapeError("PackedTernary.from_planes: planes must be uint64")
        return cls(np.ascontiguousarray(np.stack([nonzero, sign])), length)


# --------------------------------------------------------------------------- checks


def check_ternary_codes(codes, name: str = "codes", min_ndim: int = 1) -> np.ndarray:
    """Validate ternary codes and return them as a C-contiguous int8 array.

    Raises :class:`ShapeError` for a non-integer dtype, a rank below ``min_ndim`` or an
    empty last axis, and :class:`QuantizationError` (a ``ValueError``) naming the count
    of values outside ``{-1, 0, +1}`` and the first bad position.
    """
    arr = np.asarray(codes)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ShapeError(
            f"{name}: expected an integer array of ternary codes (int8), got dtype {arr.dtype}"
        )
    if arr.ndim < min_ndim:
        raise ShapeError(
            f"{name}: expected at least {min_ndim} dimension(s), got shape {arr.shape}"
        )
    if arr.ndim >= 1 and arr.shape[-1] < 1:
        raise ShapeError(f"{name}: the last (packed) axis must have length >= 1, got shape {arr.shape}")
    if arr.dtype != np.int8:
        _raise_if_not_ternary(arr, name)
        return np.ascontiguousarray(arr, dtype=np.int8)
    return np.ascontiguousarray(arr)


def _raise_if_not_ternary(arr: np.ndarray, name: str) -> None:
    bad = (arr < -1) | (arr > 1)
    count = int(np.count_nonzero(bad))
    if count:
        first = np.unravel_index(int(np.argmax(bad.ravel())), arr.shape)
        first = tuple(int(i) for i in first)
        raise QuantizationError(
            f"{name}: {count} value(s) outside {{-1, 0, +1}}; first bad value "
            f"{arr[first]!r} at index {first} (shape {arr.shape})"
        )


# --------------------------------------------------------------------- numba kernels


@numba.njit(cache=True, parallel=True, nogil=True)
def _pack_rows_kernel(codes, n, k, nw, out, rows_per_block, bstride, rstride, wstride, poff, badrows):
    """Pack ``codes`` (flat int8, ``n`` rows of ``k``) into ``out`` (flat uint64).

    Row ``i`` word ``w`` plane ``p`` goes to
    ``(i // rows_per_block) * bstride + (i % rows_per_block) * rstride + w * wstride + p * poff``.
    ``badrows[i]`` receives the number of values of row ``i`` outside {-1, 0, 1}.
    """
    full = k // 64
    for i in numba.prange(n):
        base = (i // rows_per_block) * bstride + (i % rows_per_block) * rstride
        src = i * k
        nbad = 0
        for w in range(full):
            m, s, bad = bits64(codes, src + w * 64)
            out[base + w * wstride] = m
            out[base + w * wstride + poff] = s
            nbad += popcount64(bad)
        if full < nw:
            m = numba.uint64(0)
            s = numba.uint64(0)
            for j in range(k - full * 64):
                c = codes[src + full * 64 + j]
                bit = numba.uint64(1) << numba.uint64(j)
                if c != 0:
                    m |= bit
                if c < 0:
                    s |= bit
                if c < -1 or c > 1:
                    nbad += 1
            out[base + full * wstride] = m
            out[base + full * wstride + poff] = s
        badrows[i] = nbad


@numba.njit(cache=True, parallel=True, nogil=True)
def _unpack_rows_kernel(planes, n, k, nw, out):
    full = k // 64
    poff = n * nw
    for i in numba.prange(n):
        for w in range(full):
            unbits64(out, i * k + w * 64, planes[i * nw + w], planes[poff + i * nw + w])
        if full < nw:
            m = planes[i * nw + full]
            s = planes[poff + i * nw + full]
            for j in range(k - full * 64):
                sh = numba.uint64(j)
                mv = numba.int8((m >> sh) & numba.uint64(1))
                sv = numba.int8((s >> sh) & numba.uint64(1))
                out[i * k + full * 64 + j] = mv - 2 * sv * mv


@numba.njit(cache=True, parallel=True, nogil=True)
def _dot_rows_kernel(a, b, n, nw, out):
    aoff = n * nw
    for i in numba.prange(n):
        acc = numba.int64(0)
        for w in range(nw):
            am = a[i * nw + w]
            bm = b[i * nw + w]
            t = am & bm
            u = (a[aoff + i * nw + w] ^ b[aoff + i * nw + w]) & t
            acc += numba.int64(popcount64(t)) - 2 * numba.int64(popcount64(u))
        out[i] = acc


def _pack_into(codes8: np.ndarray, name: str, out: np.ndarray, rows_per_block: int,
               bstride: int, rstride: int, wstride: int, poff: int) -> None:
    """Run the pack kernel on C-contiguous int8 codes; raise on non-ternary values."""
    k = codes8.shape[-1]
    n = codes8.size // k if k else 0
    badrows = np.zeros(n, dtype=np.int64)
    if n:
        _pack_rows_kernel(codes8.reshape(-1), n, k, words_for(k), out.reshape(-1),
                          max(rows_per_block, 1), bstride, rstride, wstride, poff, badrows)
    count = int(badrows.sum())
    if count:
        _raise_if_not_ternary(codes8, name)
        raise QuantizationError(f"{name}: {count} value(s) outside {{-1, 0, +1}}")  # pragma: no cover


# ------------------------------------------------------------------------ public API


def pack_ternary(codes, name: str = "codes") -> PackedTernary:
    """Pack ternary codes ``[..., K]`` (any integer dtype, values in {-1,0,1}) 64 per word.

    Returns a :class:`PackedTernary` with planes ``uint64[2, ..., ceil(K/64)]``.
    ``name`` is used in error messages.
    """
    codes8 = check_ternary_codes(codes, name)
    k = codes8.shape[-1]
    nw = words_for(k)
    lead = codes8.shape[:-1]
    n = int(np.prod(lead, dtype=np.int64))
    planes = np.empty((2,) + lead + (nw,), dtype=np.uint64)
    _pack_into(codes8, name, planes, n, 0, nw, 1, n * nw)
    return PackedTernary(planes, k)


def unpack_ternary(packed: PackedTernary) -> np.ndarray:
    """Inverse of :func:`pack_ternary`: int8 codes ``[..., K]``."""
    if not isinstance(packed, PackedTernary):
        raise ShapeError(f"packed: expected a PackedTernary, got {type(packed).__name__}")
    k = packed.length
    lead = packed.planes.shape[1:-1]
    n = int(np.prod(lead, dtype=np.int64))
    out = np.empty(lead + (k,), dtype=np.int8)
    if n:
        _unpack_rows_kernel(packed.planes.reshape(-1), n, k, packed.words, out.reshape(-1))
    return out


def ternary_dot(a: PackedTernary, b: PackedTernary) -> np.ndarray:
    """Row-wise dot products of two packed arrays of the same shape ``[..., K]`` (int64).

    Uses the bit identity of docs/design.md §2.5 with scalar ``popcount64``.
    """
    for nm, x in (("a", a), ("b", b)):
        if not isinstance(x, PackedTernary):
            raise ShapeError(f"{nm}: expected a PackedTernary, got {type(x).__name__}")
    if a.shape != b.shape:
        raise ShapeError(f"b: expected unpacked shape {a.shape} (same as a), got {b.shape}")
    lead = a.planes.shape[1:-1]
    n = int(np.prod(lead, dtype=np.int64))
    out = np.empty(n, dtype=np.int64)
    if n:
        _dot_rows_kernel(a.planes.reshape(-1), b.planes.reshape(-1), n, a.words, out)
    return out.reshape(lead)


# ------------------------------------------------------------------ numpy references


def pack_ternary_reference(codes, name: str = "codes") -> PackedTernary:
    """Pure-numpy :func:`pack_ternary` (bit by bit with shifts and an OR-reduction)."""
    arr = np.asarray(codes)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ShapeError(f"{name}: expected an integer array of ternary codes, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ShapeError(f"{name}: expected shape [..., K] with K >= 1, got {arr.shape}")
    _raise_if_not_ternary(arr, name)
    k = arr.shape[-1]
    nw = words_for(k)
    padded = np.zeros(arr.shape[:-1] + (nw * WORD_BITS,), dtype=np.int64)
    padded[..., :k] = arr
    padded = padded.reshape(arr.shape[:-1] + (nw, WORD_BITS))
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    m = np.bitwise_or.reduce((padded != 0).astype(np.uint64) << shifts, axis=-1)
    s = np.bitwise_or.reduce((padded < 0).astype(np.uint64) << shifts, axis=-1)
    return PackedTernary(np.ascontiguousarray(np.stack([m, s]).astype(np.uint64)), k)


def unpack_ternary_reference(packed: PackedTernary) -> np.ndarray:
    """Pure-numpy :func:`unpack_ternary`: ``v = (1 - 2 s) m`` bit by bit."""
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    m = ((packed.nonzero[..., None] >> shifts) & np.uint64(1)).astype(np.int64)
    s = ((packed.sign[..., None] >> shifts) & np.uint64(1)).astype(np.int64)
    v = (1 - 2 * s) * m
    v = v.reshape(v.shape[:-2] + (-1,))[..., : packed.length]
    return v.astype(np.int8)


def ternary_dot_reference(a_codes, b_codes) -> np.ndarray:
    """Row-wise dot products of unpacked codes in int64 (pure numpy)."""
    a = np.asarray(a_codes, dtype=np.int64)
    b = np.asarray(b_codes, dtype=np.int64)
    return (a * b).sum(axis=-1)

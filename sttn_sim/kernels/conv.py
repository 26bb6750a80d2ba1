"""Packed ternary 2-D convolution (cross-correlation, as in PyTorch ``conv2d``).

``out[n, o, y, x] = sum_{c, dy, dx} W[o, c, dy, dx] * X[n, c, y*sh - ph + dy, x*sw - pw + dx]``
with zero padding (exact: 0 is a ternary value), int32 accumulators
``[N, C_out, OH, OW]``, ``OH = (H + 2 ph - kh) // sh + 1`` (likewise ``OW``).

Layouts:

* Activations: int8 NCHW codes, or -- what a packed engine keeps between layers --
  channel-packed NHWC words: a :class:`~.packing.PackedTernary` of unpacked shape
  ``[N, H, W, C]`` (planes ``uint64[2, N, H, W, ceil(C/64)]``), see
  :func:`pack_activations_nhwc`.
* Weights: int8 codes ``[C_out, C_in, kh, kw]``, or :class:`ConvWeights` from
  :func:`prepack_conv_weights` (done once at model load).  The packed K axis is
  ``(dy, dx, channel word)``: each of the ``kh*kw`` taps contributes ``ceil(C_in/64)``
  words, channel padding bits are zero.

The kernel is an implicit GEMM: the packed input is zero-padded once (padding taps
become zero words), then for each block of ``tile_n`` output pixels the packed words of
the ``kh*kw`` taps are gathered into a cache-resident column block in the layout of the
GEMM kernel (:mod:`.gemm`: bit-plane words for the popcount family, the bytes
``x + 1`` of the codes for the int8 family, the pair nibbles for the lut family,
expanded from the words on the way) and
the micro-kernel runs against every row block of the weights; no im2col matrix is
materialised.  The K order is the same for all families: ``(dy, dx, channel)`` with
each tap's channels padded to a multiple of 64 (zero weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from sttn_sim.errors import QuantizationError, ShapeError

from ..rules import conv_output_size
from ._llvm import affine16, copy16, copy64_bytes, expand_pairs8, expand_plus1
from .fused import AffineEpilogue, channel_slope, affine_value
from .gemm import GemmWeights, block_planes, int8_tile, int8_weights, popcount_tile, resolve_kernel
from .packing import (
    PackedTernary,
    _raise_if_not_ternary,
    check_ternary_codes,
    pack_ternary,
    words_for,
)

#: accumulators per thread's output panel (128 KiB of int32: stays in L2)
PANEL_VALUES = 32768
#: a lut-family convolution with horizontal stride 1 and at least this many output
#: columns builds its B blocks from nibble rows expanded once (see :func:`_conv_kernel`)
RUN_MIN_WIDTH = 28

_NO_POP = np.zeros(1, np.uint64)  # the operands a kernel family does not use
_NO_INT8 = np.zeros(1, np.int32)
_NO_ROWS = np.zeros(16, np.int32)

__all__ = [
    "ConvWeights",
    "prepack_conv_weights",
    "pack_activations_nhwc",
    "ternary_conv2d",
    "ternary_conv2d_reference",
    "conv_output_size",
    "uses_row_runs",
]


@dataclass(frozen=True)
class ConvWeights:
    """Convolution weights re-blocked for the packed kernel.

    ``gemm``: :class:`~.gemm.GemmWeights` with ``rows = c_out`` and
    ``words = kh * kw * ceil(c_in / 64)``, for the kernel ``gemm.kernel``.
    """

    gemm: GemmWeights
    c_out: int
    c_in: int
    kh: int
    kw: int

    @property
    def shape(self) -> tuple:
        return (self.c_out, self.c_in, self.kh, self.kw)

    @property
    def kernel(self):
        return self.gemm.kernel


def _pair(v, name: str, minimum: int) -> tuple[int, int]:
    if type(v) is int and v >= minimum:  # the common case, first (this runs per layer call)
        return v, v
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise ShapeError(f"{name}: expected an int or a pair of ints, got {v!r}") from None
    if a < minimum or b < minimum:
        raise ShapeError(f"{name}: expected values >= {minimum}, got {(a, b)}")
    return a, b


def prepack_conv_weights(w_codes, name: str = "w", kernel=None) -> ConvWeights:
    """Pack int codes ``[C_out, C_in, kh, kw]`` into the layout of ``kernel`` (a
    :class:`~.gemm.TernaryKernel` or its name; default: this process's), once per model."""
    kernel = resolve_kernel(kernel)
    if isinstance(w_codes, ConvWeights):
        if w_codes.kernel is not kernel:
            raise ShapeError(f"{name}: prepacked for kernel {w_codes.kernel.name}, expected {kernel.name}")
        return w_codes
    w8 = check_ternary_codes(w_codes, name, min_ndim=4)
    if w8.ndim != 4:
        raise ShapeError(f"{name}: expected a 4-D array [C_out, C_in, kh, kw], got shape {w8.shape}")
    c_out, c_in, kh, kw = w8.shape
    if c_out < 1 or kh < 1 or kw < 1:
        raise ShapeError(f"{name}: expected non-empty [C_out, C_in, kh, kw], got shape {w8.shape}")
    wc = words_for(c_in)
    if kernel.family in ("int8", "lut"):
        _raise_if_not_ternary(w8, name)
        k_order = np.zeros((c_out, kh, kw, wc * 64), np.int8)  # (dy, dx, channel), channels padded
        k_order[..., :c_in] = w8.transpose(0, 2, 3, 1)
        gw = int8_weights(k_order.reshape(c_out, -1), kernel, None)
        return ConvWeights(gw, c_out, c_in, kh, kw)
    packed = _pack_transposed(w8, name)
    planes = packed.planes.reshape(2, c_out, kh * kw * wc)
    gw = GemmWeights(block_planes(planes, kernel.tile_m), c_out, kh * kw * wc, None, kernel)
    return ConvWeights(gw, c_out, c_in, kh, kw)


def pack_activations_nhwc(x_codes, name: str = "x") -> PackedTernary:
    """int codes NCHW ``[N, C, H, W]`` -> channel-packed NHWC :class:`PackedTernary`
    (unpacked shape ``[N, H, W, C]``, ``ceil(C/64)`` words per pixel and plane):
    channel ``c`` of a pixel is bit ``c % 64`` of word ``c // 64``.

    (An NHWC int8 copy followed by the 64-byte-compare packer measured faster than a
    direct strided NCHW packer; an engine that keeps activations packed NHWC between
    layers never needs this conversion.)
    """
    x8 = check_ternary_codes(x_codes, name, min_ndim=4)
    if x8.ndim != 4:
        raise ShapeError(f"{name}: expected a 4-D array [N, C, H, W], got shape {x8.shape}")
    if x8.shape[1] < 1:
        raise ShapeError(f"{name}: expected at least one channel, got shape {x8.shape}")
    return _pack_transposed(x8, name)


def _pack_transposed(codes8: np.ndarray, name: str) -> PackedTernary:
    """Pack ``codes8.transpose(0, 2, 3, 1)`` (channels last); a non-ternary value is
    reported at its position in the caller's (channels-second) array."""
    try:
        return pack_ternary(np.ascontiguousarray(codes8.transpose(0, 2, 3, 1)), name)
    except QuantizationError:
        _raise_if_not_ternary(codes8, name)
        raise


@numba.njit(inline="always")
def _column_block(nb, tile_n, ncols, p, ow, oh, m, hp, wp, wc, sh, sw, coloff, src0, colimg):
    """Output offset, first input word and image of each of the ``tile_n`` columns
    (output pixels) of column block ``nb``, and the number of valid ones (the columns
    past the last pixel repeat it; their results are never written)."""
    n0 = nb * tile_n
    nvalid = min(tile_n, ncols - n0)
    # walk (image, oy, ox) of the block's columns without divisions
    img = n0 // p
    pix = n0 - img * p
    oy = pix // ow
    ox = pix - oy * ow
    for j in range(tile_n):
        if j < nvalid:
            coloff[j] = img * m * p + oy * ow + ox
            src0[j] = ((img * hp + oy * sh) * wp + ox * sw) * wc
            colimg[j] = img
            ox += 1
            if ox == ow:
                ox = 0
                oy += 1
                if oy == oh:
                    oy = 0
                    img += 1
        else:
            coloff[j] = coloff[j - 1]
            src0[j] = src0[j - 1]
            colimg[j] = colimg[j - 1]
    return nvalid


@numba.njit(inline="always")
def _column_runs(nvalid, coloff, colimg, m, p, ow, hp, wc, wq, sh, run_j0, run_src):
    """The runs of consecutive output pixels of one output row among the ``nvalid``
    valid columns of a block (``coloff``, ``colimg`` from :func:`_column_block`): run
    ``r`` starts at column ``run_j0[r]``, and its first pixel ``(img, oy, ox)`` reads, at
    tap (0, 0), the nibble row byte ``run_src[r]`` = the offset of
    ``(img, oy·sh, word 0, pair 0, ox)`` in the layout of :func:`_expand_nibble_rows`.
    A block's columns are consecutive pixels, so a run starts where ``ox == 0``.
    Returns the number of runs."""
    nruns = 0
    for j in range(nvalid):
        img = colimg[j]
        pix = coloff[j] - img * m * p
        oy = pix // ow
        ox = pix - oy * ow
        if j == 0 or ox == 0:
            run_j0[nruns] = j
            run_src[nruns] = (img * hp + oy * sh) * wc * 32 * wq + ox
            nruns += 1
    return nruns


@numba.njit(inline="always")
def _expand_nibble_rows(xpad, nimg, hp, wp, wc, wq, plane_off, rows):
    """Expand every padded input pixel's words to pair nibbles once, as rows: byte
    ``(((img·hp + y)·wc + c)·32 + i)·wq + x`` of ``rows`` (int32 view) is the nibble
    (:func:`~._llvm.lut_nibble`) of codes ``2i, 2i+1`` of word ``c`` of pixel (y, x);
    columns ``wp .. wq`` repeat the last pixel.  In this layout the B operand of
    ``tile_n`` output pixels of one row at tap (dy, dx) is, for each pair, a contiguous
    run of bytes, so the lut gather copies runs instead of expanding each word again for
    each of the ``kh·kw`` taps that read it."""
    src = np.minimum(np.arange(wq), wp - 1) * wc
    for task in numba.prange(nimg * hp):
        for c in range(wc):
            base = task * wc * 32 * wq + c * 32 * wq
            for x0 in range(0, wq, 8):
                expand_pairs8(rows, base + x0, wq, xpad, src, x0, task * wp * wc + c, plane_off)


@numba.njit(inline="always")
def _flush_panel(panel, ld, cols, pcol, pimg, row_lo, row_hi, m, p, epilogue, out, outf, scale, bias, residual,
                 res_channels, slope):
    """Write the ``cols`` finished columns of a panel (rows ``row_lo .. row_hi`` of the
    output, leading dimension ``ld``; column j is output pixel ``pcol[j]`` of image
    ``pimg[j]``, ``pcol`` a flat offset into ``out`` for channel 0) as one contiguous run
    per channel and run of consecutive pixels: the int32 accumulators to ``out``, or
    their float32 epilogue (:func:`~.fused.affine_value`) to ``outf``."""
    j0 = 0
    while j0 < cols:
        j1 = j0 + 1
        while j1 < cols and pcol[j1] == pcol[j1 - 1] + 1:
            j1 += 1
        run = j1 - j0
        first = pcol[j0]
        img = pimg[j0]
        whole = run - run % 16  # in vectors of 16 (explicit: the loop vectoriser leaves short runs scalar)
        for c in range(row_lo, row_hi):
            s0 = (c - row_lo) * ld + j0
            o0 = first + c * p
            if not epilogue:
                for j in range(0, whole, 16):
                    copy16(out, o0 + j, panel, s0 + j)
                for j in range(whole, run):
                    out[o0 + j] = panel[s0 + j]
                continue
            ac = scale[c]
            bc = bias[c]
            sc = channel_slope(slope, c)
            has_res = c < res_channels
            r0 = first - img * (m - res_channels) * p + c * p if has_res else 0
            for j in range(0, whole, 16):
                affine16(outf, o0 + j, panel, s0 + j, ac, bc, residual, r0 + j, has_res, sc)
            for j in range(whole, run):
                rv = residual[r0 + j] if has_res else np.float32(0)
                outf[o0 + j] = affine_value(panel[s0 + j], ac, bc, has_res, rv, sc)
        j0 = j1


@numba.njit(cache=True, parallel=True, nogil=True)
def _conv_kernel(family, kid, tile_m, tile_n, max_depth, apop, a8, corr, m, xpad, nimg, hp, wp, wc, kh, kw, sh, sw,
                 oh, ow, mchunks, nchunks, panel_cols, out, epilogue, scale, bias, residual, res_channels, slope,
                 outf, wq, rows):
    """Implicit-GEMM convolution on zero-padded packed NHWC input.

    ``family`` 0: popcount kernel ``kid`` on the uint64 blocks ``apop``; 1: int8 kernel
    ``kid`` on ``a8`` (the int32 view of the int8 blocks) with the row sums ``corr``;
    2: lut kernel ``kid`` on ``a8`` (the int32 view of the weight pairs' table offsets).
    ``xpad``: flat ``uint64[2, nimg, hp, wp, wc]`` (padding already applied, so every
    tap of every output pixel is in bounds).  ``out``: flat ``int32[nimg, m, oh*ow]``.
    Tasks = (chunk of row blocks) x (column block of ``tile_n`` output pixels), column
    blocks inner; each of the ``nchunks`` parallel chunks owns a contiguous range of
    tasks and its own buffers.  The tiles of a task's consecutive column blocks gather
    in a panel of up to ``panel_cols`` columns (in L2), written out as one run per
    channel and image: so the epilogue works on long runs of a channel, reads the
    residual in runs, and the output is written in runs, not as the tiles' 16-value
    rows ``oh*ow`` apart.  With ``epilogue`` the float32 epilogue (``scale``, ``bias``,
    flat ``residual [nimg, res_channels, oh*ow]``, ``slope``) goes to ``outf`` (flat
    ``float32[nimg, m, oh*ow]``) instead of the accumulators to ``out``.

    ``wq > 0`` (lut family, horizontal stride 1): the input is first expanded to nibble
    rows in ``rows`` (:func:`_expand_nibble_rows`, row length ``wq``), and a column
    block's B operand is built by copying, for each tap, word and pair, one 64-byte
    run per run of the block's pixels within an output row (:func:`_column_runs`),
    in increasing destination order: a run's copy past its end lands where a later run
    or pair is copied, or past the valid columns, whose results are never written.
    """
    p = oh * ow
    ncols = nimg * p
    nw = kh * kw * wc
    nq = (32 if family == 2 else 16) * nw  # int8 family: quads of K; lut: pairs
    nb_count = (ncols + tile_n - 1) // tile_n
    mb_count = (m + tile_m - 1) // tile_m
    per_chunk = (mb_count + mchunks - 1) // mchunks
    plane_off = nimg * hp * wp * wc
    blk = 2 * tile_n
    ntasks = nb_count * mchunks
    ld = panel_cols + tile_n  # a block's tile writes all tile_n columns, valid or not
    if wq > 0:
        _expand_nibble_rows(xpad, nimg, hp, wp, wc, wq, plane_off, rows)
    for ch in numba.prange(nchunks):
        buf = np.empty(nw * blk, dtype=np.uint64)
        # lut: 16 words of slack for the last run's 64-byte copy
        qbuf = np.empty(nq * tile_n if family == 1 else (nq * tile_n // 4 + 16 if family == 2 else 1), dtype=np.int32)
        run_j0 = np.empty(tile_n, dtype=np.int64)
        run_src = np.empty(tile_n, dtype=np.int64)
        coloff = np.empty(tile_n, dtype=np.int64)
        src0 = np.empty(tile_n, dtype=np.int64)
        colimg = np.empty(tile_n, dtype=np.int64)
        panel = np.empty(per_chunk * tile_m * ld, dtype=np.int32)  # a tile writes all its rows too
        pcol = np.empty(ld, dtype=np.int64)
        pimg = np.empty(ld, dtype=np.int64)
        cols = 0  # finished columns in the panel, of row chunk pan_mc
        pan_mc = -1
        built = -1
        nvalid = 0
        for t in range(ch * ntasks // nchunks, (ch + 1) * ntasks // nchunks):
            mc = t // nb_count
            nb = t - mc * nb_count
            mb_lo = mc * per_chunk
            mb_hi = min(mb_count, mb_lo + per_chunk)
            if cols > 0 and (mc != pan_mc or cols + tile_n > panel_cols):
                _flush_panel(panel, ld, cols, pcol, pimg, pan_mc * per_chunk * tile_m,
                             min(m, (pan_mc * per_chunk + per_chunk) * tile_m), m, p, epilogue, out, outf,
                             scale, bias, residual, res_channels, slope)
                cols = 0
            pan_mc = mc
            if nb != built:
                built = nb
                nvalid = _column_block(nb, tile_n, ncols, p, ow, oh, m, hp, wp, wc, sh, sw, coloff, src0, colimg)
                nruns = _column_runs(nvalid, coloff, colimg, m, p, ow, hp, wc, wq, sh, run_j0, run_src) if wq > 0 else 0
                # im2col: tap (dy, dx), channel word c -> K word (dy*kw + dx)*wc + c
                for dy in range(kh):
                    for dx in range(kw):
                        toff = (dy * wp + dx) * wc
                        kword = (dy * kw + dx) * wc
                        for c in range(wc):
                            if family == 0:
                                d = (kword + c) * blk
                                for j in range(tile_n):
                                    src = src0[j] + toff + c
                                    buf[d + j] = xpad[src]
                                    buf[d + tile_n + j] = xpad[plane_off + src]
                            elif family == 1:  # 16 quads of bytes x + 1 per word, column j in lane j
                                d = (kword + c) * 16 * tile_n
                                for j in range(tile_n):
                                    src = src0[j] + toff + c
                                    expand_plus1(qbuf, d + j, tile_n, xpad[src], xpad[plane_off + src])
                            elif wq > 0:  # pair i of the runs: contiguous in nibble row (dy, c, i)
                                d = (kword + c) * 32 * tile_n
                                soff = (dy * wc + c) * 32 * wq + dx
                                for i in range(32):
                                    for r in range(nruns):
                                        copy64_bytes(qbuf, d + i * tile_n + run_j0[r], rows,
                                                     run_src[r] + soff + i * wq)
                            else:  # 32 pair nibbles per word, column j in byte j, 8 columns at a time
                                d = (kword + c) * 32 * tile_n
                                for j in range(0, tile_n, 8):
                                    expand_pairs8(qbuf, d + j, tile_n, xpad, src0, j, toff + c, plane_off)
            for mb in range(mb_lo, mb_hi):
                d_off = (mb - mb_lo) * tile_m * ld + cols
                if family == 0:
                    popcount_tile(kid, nvalid, apop, mb * 2 * tile_m * nw, buf, 0, nw, panel, d_off, ld)
                else:
                    int8_tile(kid, tile_m, tile_n, max_depth, a8, mb * tile_m * nq, qbuf, 0, nq, panel, d_off, ld,
                              corr, mb * tile_m)
            for j in range(nvalid):
                pcol[cols + j] = coloff[j]
                pimg[cols + j] = colimg[j]
            cols += nvalid
        if cols > 0:
            _flush_panel(panel, ld, cols, pcol, pimg, pan_mc * per_chunk * tile_m,
                         min(m, (pan_mc * per_chunk + per_chunk) * tile_m), m, p, epilogue, out, outf,
                         scale, bias, residual, res_channels, slope)


def uses_row_runs(kernel, stride_w: int, out_w: int) -> bool:
    """Whether a convolution builds ``kernel``'s B blocks by copying runs of nibble rows
    (:func:`_conv_kernel`): lut family, horizontal stride 1, at least
    :data:`RUN_MIN_WIDTH` output columns.  Measured against expanding each tap's words
    (AMD Zen 3, 2 threads, 3x3 convolutions with the epilogue): 0.90-0.93x the time at
    56x56 with 64 channels, 0.92-0.96x at 28x28 with 128, 0.98-1.06x at 14x14 with 256
    (a 64-column block there spans 5 rows, so a pair is 5 short copies)."""
    return kernel.family == "lut" and stride_w == 1 and out_w >= RUN_MIN_WIDTH


def row_chunks(nb_count: int, mb_count: int, threads: int, family: str) -> int:
    """Into how many chunks the ``mb_count`` row blocks are split, given ``nb_count``
    column blocks: none when there are at least 4 column blocks per thread.  Every row
    chunk gathers the column blocks again, so the popcount family (whose gather copies
    words) splits up to 4 tasks per thread, and the int8 and lut families (whose
    gather expands every word to bytes or nibbles) only as far as a whole number of
    tasks per thread: at batch 1, 7x7 with 512 channels is one column block, which 8
    chunks gathered 8 times (18-20 % slower on the AVX2 and AVX-512 stand-ins)."""
    if nb_count >= 4 * threads:
        return 1
    if family == "popcount":
        return min(mb_count, -(-4 * threads // nb_count))
    return min(mb_count, threads // math.gcd(nb_count, threads))  # nb_count·chunks = lcm(nb_count, threads)


def ternary_conv2d(x, w, stride=1, padding=0, kernel=None, epilogue: AffineEpilogue | None = None) -> np.ndarray:
    """Exact packed ternary 2-D convolution, int32 ``[N, C_out, OH, OW]``.

    ``x``: int codes NCHW ``[N, C_in, H, W]`` or a channel-packed NHWC
    :class:`PackedTernary` (see :func:`pack_activations_nhwc`).
    ``w``: int codes ``[C_out, C_in, kh, kw]`` or :class:`ConvWeights` (whose kernel
    is used; int codes are packed for ``kernel``, default: this process's).
    ``stride``, ``padding``: int or ``(h, w)`` pair; zero padding.
    ``epilogue``: an :class:`~.fused.AffineEpilogue`; the result is then its float32
    ``[N, C_out, OH, OW]``, bit for bit ``affine_epilogue(ternary_conv2d(x, w, ...), ...)``,
    applied to each tile of accumulators as it is finished (the int32 tensor is never
    written out and read back).
    """
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    cw = w if isinstance(w, ConvWeights) else prepack_conv_weights(w, "w", kernel)
    if isinstance(x, PackedTernary):
        if x.planes.ndim != 5:
            raise ShapeError(f"x: expected a packed NHWC array [N, H, W, C], got shape {x.shape}")
        xp = x
        nimg, h, wd, c_in = x.shape
    else:
        xp = pack_activations_nhwc(x, "x")
        nimg, c_in, h, wd = np.shape(x)
    if c_in != cw.c_in:
        raise ShapeError(f"x: expected {cw.c_in} input channels (w is {cw.shape}), got {c_in}")
    oh = conv_output_size(h, cw.kh, sh, ph)
    ow = conv_output_size(wd, cw.kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ShapeError(
            f"x: spatial size {(h, wd)} with padding {(ph, pw)} is smaller than the "
            f"kernel {(cw.kh, cw.kw)}"
        )
    m = cw.c_out
    if epilogue is None:
        out = np.empty((nimg, m, oh, ow), dtype=np.int32)
        outf = scale = bias = slope = residual = np.zeros(1, np.float32)
        res_channels = 0
    else:
        outf = np.empty((nimg, m, oh, ow), dtype=np.float32)
        out = np.zeros(1, np.int32)
        scale, bias, residual, res_channels, slope = epilogue.kernel_args(nimg, m, oh * ow)
        residual = residual.reshape(-1)
    result = out if epilogue is None else outf
    if nimg == 0:
        return result
    k = cw.kernel
    ncols = nimg * oh * ow
    nb_count = -(-ncols // k.tile_n)
    mb_count = -(-m // k.tile_m)
    threads = max(numba.get_num_threads(), 1)
    mchunks = row_chunks(nb_count, mb_count, threads, k.family)
    # contiguous chunks of (column block, row chunk) tasks, a few per thread
    nchunks = min(nb_count * mchunks, 4 * threads)
    planes = xp.planes
    if ph or pw:  # zero padding = zero words (0 is a ternary value, so this is exact)
        padded = np.zeros(planes.shape[:2] + (h + 2 * ph, wd + 2 * pw, xp.words), np.uint64)
        padded[:, :, ph:ph + h, pw:pw + wd] = planes
        planes = padded
    if k.family in ("int8", "lut"):
        family = 1 if k.family == "int8" else 2
        apop, a8, corr = _NO_POP, cw.gemm.blocks.reshape(-1).view(np.int32), cw.gemm.corr
    else:
        family, apop, a8, corr = 0, cw.gemm.blocks.reshape(-1), _NO_INT8, _NO_INT8
    # panels of about PANEL_VALUES accumulators (whole column blocks) per row chunk
    rows = -(-mb_count // mchunks) * k.tile_m
    panel_cols = max(1, PANEL_VALUES // (rows * k.tile_n)) * k.tile_n
    hp, wp = h + 2 * ph, wd + 2 * pw
    wq, nibble_rows = 0, _NO_ROWS
    if uses_row_runs(k, sw, ow):
        wq = -(-wp // 8) * 8  # nibble rows, 8 pixels per expansion
        nibble_rows = np.empty(nimg * hp * xp.words * 8 * wq + 16, np.int32)  # + 64 bytes read past the last row
    _conv_kernel(family, k.kid, k.tile_m, k.tile_n, k.max_depth, apop, a8, corr, m, planes.reshape(-1), nimg,
                 hp, wp, xp.words, cw.kh, cw.kw, sh, sw, oh, ow, mchunks, nchunks, panel_cols,
                 out.reshape(-1), epilogue is not None, scale, bias, residual, res_channels, slope, outf.reshape(-1),
                 wq, nibble_rows)
    return result


def ternary_conv2d_reference(x_codes, w_codes, stride=1, padding=0) -> np.ndarray:
    """Pure-numpy int64 convolution: zero-pad, then one matmul per kernel tap."""
    x = np.asarray(x_codes)
    wt = np.asarray(w_codes)
    if x.ndim != 4:
        raise ShapeError(f"x_codes: expected a 4-D array [N, C, H, W], got shape {x.shape}")
    if wt.ndim != 4:
        raise ShapeError(f"w_codes: expected a 4-D array [C_out, C_in, kh, kw], got shape {wt.shape}")
    if x.shape[1] != wt.shape[1]:
        raise ShapeError(f"x_codes: expected {wt.shape[1]} channels, got shape {x.shape}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    n, c, h, wd = x.shape
    c_out, _, kh, kw = wt.shape
    oh = conv_output_size(h, kh, sh, ph)
    ow = conv_output_size(wd, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ShapeError(f"x_codes: spatial size {(h, wd)} is smaller than the kernel {(kh, kw)}")
    xpad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.int64)
    xpad[:, :, ph:ph + h, pw:pw + wd] = x
    w64 = wt.astype(np.int64)
    out = np.zeros((n, c_out, oh, ow), dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xpad[:, :, dy:dy + sh * (oh - 1) + 1:sh, dx:dx + sw * (ow - 1) + 1:sw]
            out += np.einsum("nchw,oc->nohw", patch, w64[:, :, dy, dx])
    return out

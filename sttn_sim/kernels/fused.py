"""Fused float32 kernels of the packed engine, each with a pure-numpy reference beside it.

* :func:`threshold_pack` — per-channel ternary thresholds on an NCHW tensor (float32
  residual stream, or int32 accumulators) written straight into channel-packed NHWC
  bit planes (the layout :func:`~.conv.ternary_conv2d` reads), one pass over memory.
* :func:`threshold_codes` — the same rule producing int8 NCHW codes (for recorders and
  fully connected layers).
* :func:`affine_epilogue` — ``y = acc·a_c + b_c`` (+ residual, zero-extended over
  channels) then optional PReLU, from int32 accumulators in one pass.  The engine folds
  the ternary layer's scale and bias and the following BN into (a, b).
* :func:`asymmetric_epilogue` — the same for a layer with two scales (TTQ):
  ``y = acc₊·p_c − acc₋·n_c + b_c`` from the two exact partial sums.
* :func:`maxpool2d` — max pooling with -inf padding.
* :func:`direct_conv2d` — float convolution for few input channels (the stem) through
  the register-tiled FMA micro-kernel of :mod:`._llvm`; :func:`linear_f32` — the head.

Threshold rule (as :func:`sttn_sim.reference.apply_threshold`): ``z = d_c·x``,
``+1 if z >= hi_c``, ``-1 if z < lo_c``, else 0; ``constant_c`` where ``d_c == 0``.
For float32 x the float64 thresholds are first rounded UP to float32
(:func:`float32_thresholds`): for a float32 z and a real t, ``z >= t ⟺ z >= ⌈t⌉₃₂``
and ``z < t ⟺ z < ⌈t⌉₃₂`` (⌈t⌉₃₂ = the smallest float32 >= t), so the float32
comparison is exactly the float64 rule applied to the float32 value.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..rules import (
    apply_threshold as apply_threshold_reference,  # the rule, in plain numpy
)
from ..rules import conv_output_size, float32_thresholds, int32_thresholds  # noqa: F401  (re-exported for the engine)
from ._llvm import key32_value, make_float_microkernel, order_key32
from .cpu import CompileTarget, check_available, compile_target, requested_class
from .packing import PackedTernary, pack_ternary_reference, words_for

# --------------------------------------------------------------------------------------
# aligned allocation


def aligned_zeros(shape, dtype, align: int = 64) -> np.ndarray:
    """Zeros whose data starts on an ``align``-byte boundary (a cache line): vector loads
    of rows then never straddle two lines.  numpy only guarantees 16 bytes, which made
    kernel times vary by 1.5x from one process to the next."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + align, np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


# --------------------------------------------------------------------------------------
# thresholds


_NO_CODES = np.zeros((1, 1, 1, 1), np.int8)  # threshold_pack without codes: the kernel never writes it

#: pixels per task of :func:`_threshold_pack_kernel` (its two word buffers, 2·8·256 bytes, stay in L1)
PACK_CHUNK = 256


@numba.njit(cache=True, parallel=True, nogil=True)
def _threshold_pack_kernel(x, direction, lo, hi, constant, planes, codes, write_codes):
    # One task per 64-channel word of a chunk of PACK_CHUNK pixels of one image's H·W
    # plane (the pixels of a channel are contiguous in NCHW, so the small 14×14 and 7×7
    # planes still give long vector loops, and their several words give every thread a
    # task at batch 1).  The bits of all the chunk's pixels are built together: channel
    # by channel, a contiguous vector loop over the pixels ORs one bit into each pixel's
    # word; the finished words are then stored.  The words are built as 32-bit halves
    # (m[h, i], sg[h, i] hold bits 32h..32h+31), so the loop runs as many lanes as the
    # float32 (or int32) input: a 64-bit word array would halve the vector width.  The
    # per-channel thresholds are loop-invariant scalars.
    n_img, c_count, height, width = x.shape
    hw = height * width
    n_words = planes.shape[4]
    xf = x.reshape(n_img, c_count, hw)
    pf = planes.reshape(2, n_img, hw, n_words)
    cf = codes.reshape(codes.shape[0], codes.shape[1], -1)
    n_chunks = (hw + PACK_CHUNK - 1) // PACK_CHUNK
    for task in numba.prange(n_img * n_chunks * n_words):
        n = task // (n_chunks * n_words)
        rest = task - n * n_chunks * n_words
        chunk = rest // n_words
        k = rest - chunk * n_words
        p0 = chunk * PACK_CHUNK
        size = min(PACK_CHUNK, hw - p0)
        m = np.zeros((2, size), np.uint32)
        sg = np.zeros((2, size), np.uint32)
        none = np.uint32(0)
        for c in range(k * 64, min(c_count, (k + 1) * 64)):
            d = direction[c]
            half = (c - k * 64) >> 5
            bit = np.uint32(1 << ((c - k * 64) & 31))
            if d == 0:
                pos = constant[c] > 0
                neg = constant[c] < 0
                for i in range(size):
                    m[half, i] = m[half, i] | (bit if pos | neg else none)
                    sg[half, i] = sg[half, i] | (bit if neg else none)
                    if write_codes:
                        cf[n, c, p0 + i] = constant[c]
                continue
            hc = hi[c]
            lc = lo[c]
            src = xf[n, c, p0:p0 + size]
            for i in range(size):  # branch-free: the vectoriser's loop
                z = src[i] * d
                p = z >= hc
                q = z < lc
                m[half, i] = m[half, i] | (bit if p | q else none)
                sg[half, i] = sg[half, i] | (bit if q else none)
            if write_codes:
                for i in range(size):
                    z = src[i] * d
                    cf[n, c, p0 + i] = np.int8(z >= hc) - np.int8(z < lc)
        for i in range(size):
            pf[0, n, p0 + i, k] = np.uint64(m[0, i]) | (np.uint64(m[1, i]) << np.uint64(32))
            pf[1, n, p0 + i, k] = np.uint64(sg[0, i]) | (np.uint64(sg[1, i]) << np.uint64(32))


def threshold_pack(x: np.ndarray, direction, lo, hi, constant, *, with_codes: bool = False):
    """Threshold an NCHW tensor and pack the codes channel-wise in NHWC order.

    ``lo``/``hi`` must already have x's comparison type (float32 thresholds from
    :func:`float32_thresholds` for float32 x, int32 for int32 x).  With
    ``with_codes=True`` the int8 NCHW codes are written in the same pass and
    ``(packed, codes)`` is returned (for recorders)."""
    n, c, h, w = x.shape
    planes = np.empty((2, n, h, w, words_for(c)), np.uint64)
    codes = np.empty((n, c, h, w), np.int8) if with_codes else _NO_CODES
    _threshold_pack_kernel(x, direction, lo, hi, constant, planes, codes, with_codes)
    packed = PackedTernary(planes, c)
    return (packed, codes) if with_codes else packed


def threshold_pack_reference(x, direction, lo, hi, constant) -> PackedTernary:
    """Pure numpy: codes by :func:`apply_threshold_reference`, packed by the reference packer."""
    codes = apply_threshold_reference(x, direction, lo, hi, constant)
    return pack_ternary_reference(np.ascontiguousarray(codes.transpose(0, 2, 3, 1)))


@numba.njit(cache=True, parallel=True, nogil=True)
def _threshold_codes_kernel(x2, direction, lo, hi, constant, rows_per_channel, out):
    rows = x2.shape[0]
    c_count = direction.shape[0]
    for r in numba.prange(rows):
        c = (r // rows_per_channel) % c_count if rows_per_channel > 0 else 0
        d = direction[c]
        for j in range(x2.shape[1]):
            if rows_per_channel == 0:
                c = j
                d = direction[c]
            if d == 0:
                out[r, j] = constant[c]
            else:
                z = x2[r, j] if d > 0 else -x2[r, j]
                out[r, j] = 1 if z >= hi[c] else (-1 if z < lo[c] else 0)


def threshold_codes(x: np.ndarray, direction, lo, hi, constant) -> np.ndarray:
    """int8 codes of the threshold rule for NCHW or N×C input (channel axis 1)."""
    out = np.empty(x.shape, np.int8)
    x = np.ascontiguousarray(x)
    if x.ndim == 2:  # one row per sample, channel = column
        _threshold_codes_kernel(x, direction, lo, hi, constant, 0, out)
    else:  # one row per (n, c, h): channel = (row // H) % C
        width = int(np.prod(x.shape[3:]))
        _threshold_codes_kernel(x.reshape(-1, width), direction, lo, hi, constant, x.shape[2], out.reshape(-1, width))
    return out


# --------------------------------------------------------------------------------------
# PReLU, shared by the fused kernels: ``slope`` has C entries, 1 (shared) or none


#: the kernels' residual and slope arguments when there is none (never written)
_NO_RESIDUAL = np.zeros((1, 1, 1), np.float32)
_NO_SLOPE = np.zeros(0, np.float32)


def _slope_array(slope) -> np.ndarray:
    """float32 slopes for the kernels; ``None`` (no PReLU) becomes an empty array."""
    return _NO_SLOPE if slope is None else np.ascontiguousarray(slope, np.float32).reshape(-1)


@numba.njit(inline="always")
def channel_slope(slope, c):
    """The PReLU slope of channel ``c``; 1 when ``slope`` is empty (no PReLU: y·1 = y
    exactly, so the kernels apply ``y·s if y < 0`` without a second branch)."""
    n = slope.shape[0]
    return slope[c] if n > 1 else (slope[0] if n == 1 else np.float32(1))


def _prelu_reference(y: np.ndarray, slope) -> np.ndarray:
    """Pure numpy PReLU with channel axis 1 (``slope`` None: identity)."""
    if slope is None:
        return y
    s = np.asarray(slope, np.float32)
    s = s.reshape((1, -1) + (1,) * (y.ndim - 2)) if s.size > 1 else s.reshape(())
    return np.where(y < 0, y * s, y)


# --------------------------------------------------------------------------------------
# epilogue


@numba.njit(inline="always")
def affine_value(acc, a, b, has_residual, r, slope):
    """The affine epilogue of one element, float32 ``y = acc·a + b [+ r]``, then
    ``y·slope if y < 0`` (slope 1: no PReLU).  Every kernel that applies the epilogue
    calls this, so all of them round alike (no fused multiply-add: numba does not
    contract)."""
    y = np.float32(acc) * a + b
    if has_residual:
        y = y + r
    return y * slope if y < 0 else y


def _residual_args(residual, n: int, c: int, positions: int) -> tuple[np.ndarray, int]:
    """``(residual [N, C_r, positions] float32, C_r)`` for an epilogue kernel of ``n``
    images, ``c`` channels and ``positions`` values per channel (a dummy and 0 for None)."""
    if residual is None:
        return _NO_RESIDUAL, 0
    r = np.ascontiguousarray(residual, np.float32)
    if r.ndim < 2 or r.shape[0] != n or r.shape[1] > c or math.prod(r.shape[2:]) != positions:
        raise ShapeError(f"epilogue: residual of shape {r.shape}; expected {n} images, at most {c} channels "
                         f"and {positions} values per channel")
    return r.reshape(n, r.shape[1], positions), r.shape[1]


@dataclass(frozen=True)
class AffineEpilogue:
    """The float tail ``y = acc·scale_c + bias_c [+ residual] [→ PReLU(slope)]`` of a
    ternary layer, as arguments for :func:`affine_epilogue` or for the convolution
    kernel that applies it while each output tile is in cache
    (``ternary_conv2d(..., epilogue=...)``).

    ``scale``, ``bias``: ``[C]``, used as float32.  ``residual``: float32 ``[N, C_r, ...]`` with
    ``C_r <= C`` (the missing channels count as zero: the zero-channel-pad shortcut), or
    None.  ``slope``: C entries, 1 (shared), or None."""

    scale: np.ndarray
    bias: np.ndarray
    residual: np.ndarray | None = None
    slope: np.ndarray | None = None

    def kernel_args(self, n: int, c: int, positions: int) -> tuple:
        """``(scale, bias, residual [N, C_r, positions], C_r, slopes)`` for an output of
        ``n`` images, ``c`` channels and ``positions`` values per channel."""
        scale = np.ascontiguousarray(self.scale, np.float32)
        bias = np.ascontiguousarray(self.bias, np.float32)
        if scale.shape != (c,) or bias.shape != (c,):
            raise ShapeError(f"epilogue: scale {scale.shape} and bias {bias.shape}; expected ({c},) each")
        return (scale, bias, *_residual_args(self.residual, n, c, positions), _slope_array(self.slope))


@numba.njit(cache=True, parallel=True, nogil=True)
def _affine_epilogue_kernel(acc, a, b, residual, res_channels, slope, out):
    n_img, c_count, hw = acc.shape
    for t in numba.prange(n_img * c_count):
        n = t // c_count
        c = t - n * c_count
        ac = a[c]
        bc = b[c]
        sc = channel_slope(slope, c)
        has_res = c < res_channels
        for i in range(hw):
            r = residual[n, c, i] if has_res else np.float32(0)
            out[n, c, i] = affine_value(acc[n, c, i], ac, bc, has_res, r, sc)


def affine_epilogue(acc: np.ndarray, a: np.ndarray, b: np.ndarray, residual: np.ndarray | None = None,
                    slope: np.ndarray | None = None) -> np.ndarray:
    """float32 ``y = acc·a_c + b_c [+ residual] [→ PReLU(slope)]`` for NCHW or N×C acc
    (see :class:`AffineEpilogue`)."""
    n, c = acc.shape[:2]
    acc3 = acc.reshape(n, c, -1)
    args = AffineEpilogue(a, b, residual, slope).kernel_args(n, c, acc3.shape[2])
    out = np.empty(acc3.shape, np.float32)
    _affine_epilogue_kernel(acc3, *args, out)
    return out.reshape(acc.shape)


def affine_epilogue_reference(acc, a, b, residual=None, slope=None) -> np.ndarray:
    """Pure numpy float32, same operation order as the kernel."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    y = acc.astype(np.float32) * a.reshape(shape) + b.reshape(shape)
    if residual is not None:
        pad = [(0, 0), (0, acc.shape[1] - residual.shape[1])] + [(0, 0)] * (acc.ndim - 2)
        y = y + np.pad(residual.astype(np.float32), pad)
    return _prelu_reference(y, slope).astype(np.float32)


@numba.njit(cache=True, parallel=True)
def _asymmetric_epilogue_kernel(acc_pos, acc_neg, a_pos, a_neg, b, residual, res_channels, slope, out):
    n_img, c_count, hw = acc_pos.shape
    for t in numba.prange(n_img * c_count):
        n = t // c_count
        c = t - n * c_count
        pc = a_pos[c]
        nc = a_neg[c]
        bc = b[c]
        sc = channel_slope(slope, c)
        has_res = c < res_channels
        for i in range(hw):
            y = (np.float32(acc_pos[n, c, i]) * pc - np.float32(acc_neg[n, c, i]) * nc) + bc
            if has_res:
                y = y + residual[n, c, i]
            out[n, c, i] = y * sc if y < 0 else y


def asymmetric_epilogue(acc_pos: np.ndarray, acc_neg: np.ndarray, a_pos: np.ndarray, a_neg: np.ndarray,
                        b: np.ndarray, residual: np.ndarray | None = None,
                        slope: np.ndarray | None = None) -> np.ndarray:
    """float32 ``y = (acc₊·p_c − acc₋·n_c) + b_c [+ residual] [→ PReLU(slope)]`` for NCHW
    or N×C partial sums of the same shape (``residual`` and ``slope`` as in
    :func:`affine_epilogue`)."""
    if acc_pos.shape != acc_neg.shape:
        raise ShapeError(f"acc_neg: shape {acc_neg.shape} differs from acc_pos {acc_pos.shape}")
    n, c = acc_pos.shape[:2]
    pos3, neg3 = acc_pos.reshape(n, c, -1), acc_neg.reshape(n, c, -1)
    res3, res_channels = _residual_args(residual, n, c, pos3.shape[2])
    out = np.empty(pos3.shape, np.float32)
    _asymmetric_epilogue_kernel(pos3, neg3, a_pos, a_neg, b, res3, res_channels, _slope_array(slope), out)
    return out.reshape(acc_pos.shape)


def asymmetric_epilogue_reference(acc_pos, acc_neg, a_pos, a_neg, b, residual=None, slope=None) -> np.ndarray:
    """Pure numpy float32, same operation order as the kernel."""
    shape = (1, -1) + (1,) * (acc_pos.ndim - 2)
    y = (acc_pos.astype(np.float32) * a_pos.reshape(shape) - acc_neg.astype(np.float32) * a_neg.reshape(shape)) \
        + b.reshape(shape)
    if residual is not None:
        pad = [(0, 0), (0, acc_pos.shape[1] - residual.shape[1])] + [(0, 0)] * (acc_pos.ndim - 2)
        y = y + np.pad(residual.astype(np.float32), pad)
    return _prelu_reference(y, slope).astype(np.float32)


# --------------------------------------------------------------------------------------
# pooling


@numba.njit(inline="always")
def _pool_row(rowmax, k, s, ow, best, dst):
    """One output row of max pooling from ``rowmax`` (int32 order keys: the max over the
    window's input rows, with ``p`` cells of -inf before the row and room after it):
    ``dst[j] = max(rowmax[j·s .. j·s + k - 1])`` as float32.  For stride 2 the row is
    read as int64 pairs (cells 2j, 2j+1), so the window {2j, 2j+1, 2j+2} (k = 3) or
    {2j, 2j+1} (k = 2) is a contiguous vector loop of shifts and maxes; any other stride
    reads cells j·s + t (a strided loop into ``best``)."""
    if s == 2 and (k == 2 or k == 3):
        pairs = rowmax.view(np.int64)  # pairs[j] = rowmax[2j] | rowmax[2j+1] << 32 (little-endian)
        low32 = np.int64(0xFFFFFFFF)
        for j in range(ow):
            here = pairs[j]
            m = max(np.int32(here & low32), np.int32(here >> 32))
            if k == 3:
                m = max(m, np.int32(pairs[j + 1] & low32))
            dst[j] = key32_value(m, np.float32(0))
        return
    for j in range(ow):
        best[j] = rowmax[j * s]
    for t in range(1, k):
        for j in range(ow):
            best[j] = max(best[j], rowmax[j * s + t])
    for j in range(ow):
        dst[j] = key32_value(best[j], np.float32(0))


@numba.njit(inline="always")
def _pool_row_length(width, k, p):
    """Cells of a :func:`_pool_row` buffer: room for every j·s + t, and an even length."""
    padded = width + 2 * p + k + 1
    return padded + padded % 2


@numba.njit(inline="always")
def _max2x2_row(upper, lower, ow, dst):
    """One output row of 2×2, stride-2 max pooling without padding, from input rows
    ``upper`` and ``lower``: ``dst[j] = max(upper[2j], upper[2j+1], lower[2j], lower[2j+1])``
    as one strided vector loop on int32 order keys."""
    for j in range(ow):
        m = max(max(order_key32(upper[2 * j]), order_key32(upper[2 * j + 1])),
                max(order_key32(lower[2 * j]), order_key32(lower[2 * j + 1])))
        dst[j] = key32_value(m, np.float32(0))


@numba.njit(cache=True, parallel=True, nogil=True)
def _maxpool_kernel(x, k, s, p, out):
    # Every inner loop a vector loop on int32 order keys (order_key32: integer max
    # vectorises, float max with its NaN rule does not).  The 2×2 stride-2 window without
    # padding (a ResNet shortcut's pool) is one strided loop per output row
    # (_max2x2_row).  Any other window is separable: for each output row, first the max
    # over its k input rows into a row buffer with p cells of -inf on each side
    # (contiguous along W), then the max over each window of k cells of that row
    # (_pool_row); for 2×2 windows that measured 3-5x slower (four short loops per row).
    n_img, c_count, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    lowest = order_key32(np.float32(-np.inf))
    padded = _pool_row_length(width, k, p)
    for task in numba.prange(n_img * c_count):
        n = task // c_count
        c = task - n * c_count
        plane = x[n, c]
        if k == 2 and s == 2 and p == 0:
            for i in range(oh):
                _max2x2_row(plane[2 * i], plane[2 * i + 1], ow, out[n, c, i])
            continue
        rowmax = np.full(padded, lowest, np.int32)
        best = np.empty(ow, np.int32)
        for i in range(oh):
            y0 = max(i * s - p, 0)
            y1 = min(i * s - p + k, height)
            row = rowmax[p:p + width]
            row[:] = lowest
            for y in range(y0, y1):
                src = plane[y]
                for xx in range(width):
                    row[xx] = max(row[xx], order_key32(src[xx]))
            _pool_row(rowmax, k, s, ow, best, out[n, c, i])


def maxpool2d(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """float32 max pooling of NCHW x with -inf padding."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kernel, stride, padding), conv_output_size(w, kernel, stride, padding)
    out = np.empty((n, c, oh, ow), np.float32)
    _maxpool_kernel(np.ascontiguousarray(x, np.float32), kernel, stride, padding, out)
    return out


def maxpool2d_reference(x, kernel, stride, padding) -> np.ndarray:
    """Pure numpy max pooling (float32)."""
    xp = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=-np.inf)
    return sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


@numba.njit(cache=True, parallel=True, nogil=True, fastmath={"reassoc"})
def _global_avgpool_kernel(x, out):
    n_img, c_count, hw = x.shape
    for t in numba.prange(n_img * c_count):
        n = t // c_count
        c = t - n * c_count
        total = np.float32(0)
        for i in range(hw):  # reassociated: a vector of partial sums
            total += x[n, c, i]
        out[n, c] = total / np.float32(hw)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """float32 mean of each channel plane of NCHW x, ``[N, C, 1, 1]``: ``(Σ_hw x) / (H·W)``,
    the sum in float32 in any order (numpy's ``mean`` took 17 µs at batch 1 on ResNet-18's
    7×7×512, 111 µs at batch 8: its multi-axis reduction)."""
    n, c, h, w = x.shape
    out = np.empty((n, c, 1, 1), np.float32)
    _global_avgpool_kernel(np.ascontiguousarray(x, np.float32).reshape(n, c, h * w), out.reshape(n, c))
    return out


def global_avgpool_reference(x) -> np.ndarray:
    """Pure numpy: the float64 mean of each channel plane, rounded to float32."""
    return np.asarray(x, np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)


# --------------------------------------------------------------------------------------
# float convolution output: bias + PReLU + NHWC→NCHW transpose in one pass


@numba.njit(cache=True, parallel=True, nogil=True)
def _bias_prelu_to_nchw_kernel(rows, bias, slope, n_img, hw, out):
    c_count = rows.shape[1]
    for t in numba.prange(n_img * c_count):
        n = t // c_count
        c = t - n * c_count
        b = bias[c]
        s = channel_slope(slope, c)
        for i in range(hw):
            y = rows[n * hw + i, c] + b
            out[n, c, i] = y * s if y < 0 else y


def bias_prelu_to_nchw(rows: np.ndarray, bias: np.ndarray, slope: np.ndarray | None, n_img: int,
                       height: int, width: int) -> np.ndarray:
    """GEMM output ``rows[N·H·W, C]`` (float32) → NCHW ``rows + bias`` then optional PReLU."""
    c = rows.shape[1]
    out = np.empty((n_img, c, height * width), np.float32)
    _bias_prelu_to_nchw_kernel(np.ascontiguousarray(rows, np.float32), np.ascontiguousarray(bias, np.float32),
                               _slope_array(slope), n_img, height * width, out)
    return out.reshape(n_img, c, height, width)


def bias_prelu_to_nchw_reference(rows, bias, slope, n_img, height, width) -> np.ndarray:
    """Pure numpy float32, same operation order."""
    y = rows.astype(np.float32).reshape(n_img, height, width, -1).transpose(0, 3, 1, 2) + \
        bias.astype(np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(_prelu_reference(y, slope), np.float32)


def im2col_f32(x: np.ndarray, kh: int, kw: int, stride: int, padding: int):
    """float32 im2col: rows = output pixels (n, oy, ox), columns = (c, dy, dx)."""
    x = np.ascontiguousarray(x, np.float32)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow = win.shape[:4]
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, c * kh * kw)
    return cols, n, oh, ow


# --------------------------------------------------------------------------------------
# direct float convolution for layers with few input channels (the stem)


@dataclass(frozen=True)
class StemKernel:
    """A register tile of :func:`direct_conv2d`: up to ``vecs`` vectors of ``lanes``
    consecutive output pixels of one row × ``chans`` output channels per micro-kernel
    call (``vecs·chans`` accumulators)."""

    name: str
    sid: int
    vecs: int
    lanes: int
    chans: int
    description: str
    needs: tuple = ()  # features of the targets it is compiled for (portable IR otherwise)

    def available(self, target=None) -> bool:
        """Whether ``target`` (default: this process's) compiles it to real code (the
        IR is portable; a wide tile is not compiled for a narrow target)."""
        target = target or compile_target()
        return target.has(*self.needs)

    def as_dict(self) -> dict:
        return {"name": self.name, "arithmetic": self.description}


#: the stem kernels, by name (:mod:`.selection` picks one per CPU class)
STEM_KERNELS = {k.name: k for k in (
    StemKernel("fma-zmm-48px-8ch", 0, 3, 16, 8,
               "float32 FMA, 48 pixels x 8 channels in 24 <16 x float> accumulators (32 registers)", ("avx512f",)),
    StemKernel("fma-ymm-24px-4ch", 1, 3, 8, 4,
               "float32 FMA, 24 pixels x 4 channels in 12 <8 x float> accumulators (16 registers)", ("avx2",)),
    StemKernel("fma-xmm-12px-3ch", 2, 3, 4, 3, "float32 multiply-add, 12 pixels x 3 channels in <4 x float>"),
)}

_ZMM_OK = STEM_KERNELS["fma-zmm-48px-8ch"].available()
_YMM_OK = STEM_KERNELS["fma-ymm-24px-4ch"].available()
_FMK_ZMM1, _FMK_ZMM2, _FMK_ZMM3 = (make_float_microkernel(v, 8, 16, _ZMM_OK) for v in (1, 2, 3))
_FMK_YMM1, _FMK_YMM2, _FMK_YMM3 = (make_float_microkernel(v, 4, 8, _YMM_OK) for v in (1, 2, 3))
_FMK_XMM1, _FMK_XMM2, _FMK_XMM3 = (make_float_microkernel(v, 3, 4) for v in (1, 2, 3))


@numba.njit(inline="always")
def _stem_tile(sid, v, x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld):
    """One call of stem kernel ``sid``'s micro-kernel with ``v`` vectors of pixels."""
    if sid == 0:
        if v == 3:
            _FMK_ZMM3(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        elif v == 2:
            _FMK_ZMM2(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        else:
            _FMK_ZMM1(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
    elif sid == 1:
        if v == 3:
            _FMK_YMM3(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        elif v == 2:
            _FMK_YMM2(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        else:
            _FMK_YMM1(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
    else:
        if v == 3:
            _FMK_XMM3(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        elif v == 2:
            _FMK_XMM2(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)
        else:
            _FMK_XMM1(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)


@numba.njit(inline="always")
def _stem_row(sid, vecs, lanes, chans, xflat, row_base, taps, wflat, c_lo, c_hi, n_vec, acc, ld):
    """The accumulators of one output row for channels ``c_lo .. c_hi`` (multiples of
    ``chans``), every block of ``vecs·lanes`` pixels × ``chans`` channels one micro-kernel
    call, into ``acc[o·ld + ox]`` (see :func:`_direct_conv_kernel`); the group of
    channels ``g0 ..`` has its weights at ``wflat[g0·ntap + t·chans + j]``."""
    ntap = taps.shape[0]
    for g0 in range(c_lo, c_hi, chans):
        for v0 in range(0, n_vec, vecs):
            v = min(vecs, n_vec - v0)
            _stem_tile(sid, v, xflat, row_base + v0 * lanes, taps, wflat, g0 * ntap, chans, ntap,
                       acc, g0 * ld + v0 * lanes, ld)


@numba.njit(inline="always")
def _stem_layout(xd, w_t, ow, lanes):
    """``(N, C, phases, Hp, Wj, padded channels, pixel vectors per row, row tile stride,
    flat input, flat weights)`` of a direct convolution with ``ow`` output columns."""
    n_img, c_in, n_phase, hp, wj = xd.shape
    n_vec = (ow + lanes - 1) // lanes
    return n_img, c_in, n_phase, hp, wj, w_t.shape[0] * w_t.shape[2], n_vec, n_vec * lanes, xd.reshape(-1), \
        w_t.reshape(-1)


@numba.njit(inline="always")
def _bias_prelu(a, b, s):
    """The stem's output value: ``y = a + b``, then PReLU (a select, not a branch)."""
    y = a + b
    return y * (s if y < 0 else np.float32(1))


@numba.njit(cache=True, parallel=True, nogil=True)
def _direct_conv_kernel(sid, vecs, lanes, chans, xd, taps, w_t, bias, slope, stride, out):
    # One task per output row (n, oy).  ``xd`` is the padded input split by column
    # phase (``xd[n, c, p, y, j] = xp[n, c, y, j·stride + p]``), so the inputs of tap
    # (c, dy, dx) along the row are contiguous: ``x[row_base + taps[t] + ox]`` with
    # ``row_base`` the offset of ``xd[n, 0, 0, oy·stride, 0]`` and ``taps[t]`` that of
    # ``xd[0, c, dx % stride, dy, dx // stride]``.  Each block of ``vecs·lanes`` output
    # pixels × ``chans`` output channels is one call of the register-tiled micro-kernel
    # (vectors along the pixels, accumulators in registers over all taps, summed in
    # (c, dy, dx) order) into the row's tile ``acc[o·ld + ox]`` — the input rows of one
    # output row (c·kh·stride rows) and one channel group's weights stay in L1.  Then
    # bias and PReLU go to the NCHW output as contiguous rows.
    oh, ow = out.shape[2], out.shape[3]
    n_img, c_in, n_phase, hp, wj, c_pad, n_vec, ld, xflat, wflat = _stem_layout(xd, w_t, ow, lanes)
    c_real = out.shape[1]
    for task in numba.prange(n_img * oh):
        n = task // oh
        oy = task - n * oh
        acc = np.empty(c_pad * ld, np.float32)
        _stem_row(sid, vecs, lanes, chans, xflat, (n * c_in * n_phase * hp + oy * stride) * wj, taps, wflat,
                  0, c_pad, n_vec, acc, ld)
        for o in range(c_real):
            b = bias[o]
            s = channel_slope(slope, o)
            dst = out[n, o, oy]
            src = acc[o * ld:o * ld + ow]
            for i in range(ow):
                dst[i] = _bias_prelu(src[i], b, s)


@numba.njit(cache=True, parallel=True, nogil=True)
def _direct_conv_pool_kernel(sid, vecs, lanes, chans, xd, taps, w_t, bias, slope, stride, oh, ow, k, s, p, blocks,
                             out):
    # The direct convolution (oh x ow output rows, as _direct_conv_kernel) followed by
    # k x k / stride s / padding p max pooling into ``out`` (the pooled NCHW output),
    # without writing the convolution's output: one task per block of channel groups of
    # one image (``blocks`` per image).  A task computes, for its channels, each
    # convolution row the pooled rows need once, in order, into a ring of the last k
    # rows (as int32 order keys, after bias and PReLU), and pools each output row from
    # the ring (_pool_row).  (Tasks split by rows would recompute the rows that two
    # bands' windows share.)
    n_img, c_in, n_phase, hp, wj, c_pad, n_vec, ld, xflat, wflat = _stem_layout(xd, w_t, ow, lanes)
    c_real = out.shape[1]
    ph, pw = out.shape[2], out.shape[3]
    lowest = order_key32(np.float32(-np.inf))
    padded = _pool_row_length(ow, k, p)
    groups = c_pad // chans
    for task in numba.prange(n_img * blocks):
        n = task // blocks
        block = task - n * blocks
        c_lo = block * groups // blocks * chans
        c_hi = (block + 1) * groups // blocks * chans
        acc = np.empty(c_pad * ld, np.float32)
        ring = np.empty((k, c_real, ow), np.int32)
        held = np.full(k, -1, np.int64)  # the convolution row in each ring slot
        rowmax = np.empty(padded, np.int32)
        best = np.empty(pw, np.int32)
        for r in range(ph):
            y0 = max(r * s - p, 0)
            y1 = min(r * s - p + k, oh)
            for y in range(y0, y1):
                slot = y % k
                if held[slot] == y:
                    continue
                held[slot] = y
                _stem_row(sid, vecs, lanes, chans, xflat, (n * c_in * n_phase * hp + y * stride) * wj, taps, wflat,
                          c_lo, c_hi, n_vec, acc, ld)
                for o in range(c_lo, min(c_hi, c_real)):
                    b = bias[o]
                    sl = channel_slope(slope, o)
                    keys = ring[slot, o]
                    src = acc[o * ld:o * ld + ow]
                    for i in range(ow):
                        keys[i] = order_key32(_bias_prelu(src[i], b, sl))
            for o in range(c_lo, min(c_hi, c_real)):
                rowmax[:] = lowest
                row = rowmax[p:p + ow]
                for y in range(y0, y1):
                    keys = ring[y % k, o]
                    for i in range(ow):
                        row[i] = max(row[i], keys[i])
                _pool_row(rowmax, k, s, pw, best, out[n, o, r])


@numba.njit(cache=True, parallel=True, nogil=True)
def _column_phase_kernel(x, padding, stride, out):
    n_img, c_in, h, w = x.shape
    hp, wj = out.shape[3], out.shape[4]
    for task in numba.prange(n_img * c_in * stride):  # (image, channel, phase): 6 tasks for one RGB image
        n = task // (c_in * stride)
        c = task // stride - n * c_in
        p = task - (n * c_in + c) * stride
        for y in range(hp):
            row = out[n, c, p, y]
            iy = y - padding
            if iy < 0 or iy >= h:
                row[:] = 0
                continue
            src = x[n, c, iy]
            for j in range(wj):
                ix = j * stride + p - padding
                row[j] = src[ix] if 0 <= ix < w else np.float32(0)


def column_phases(x: np.ndarray, padding: int, stride: int, width: int) -> np.ndarray:
    """``[N, C, H, W]`` -> ``[N, C, stride, H + 2·padding, width]`` with
    ``out[n, c, p, y, j] = xp[n, c, y, j·stride + p]``, ``xp`` the input zero-padded by
    ``padding`` on every side (zeros past its end; ``width`` at least
    ``ceil((W + 2·padding)/stride)``): the padding and the split in one pass."""
    n, c, h, _ = x.shape
    out = np.empty((n, c, stride, h + 2 * padding, width), np.float32)
    _column_phase_kernel(np.ascontiguousarray(x, np.float32), padding, stride, out)
    return out


def column_phases_reference(x: np.ndarray, padding: int, stride: int, width: int) -> np.ndarray:
    """numpy :func:`column_phases`: ``np.pad``, then one strided copy per phase."""
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, hp, _ = xp.shape
    out = np.zeros((n, c, stride, hp, width), np.float32)
    for p in range(stride):
        part = xp[:, :, :, p::stride][:, :, :, :width]
        out[:, :, p, :, :part.shape[3]] = part
    return out


@functools.lru_cache(maxsize=64)
def _tap_offsets(c_in: int, kh: int, kw: int, stride: int, hp: int, wj: int) -> np.ndarray:
    """Offset of tap (c, dy, dx)'s first input in the column-phase layout
    ``[C, stride, hp, wj]``, taps in (c, dy, dx) order (int64; one read-only array per
    geometry, kept)."""
    c, dy, dx = np.meshgrid(np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij")
    taps = (((c * stride + dx % stride) * hp + dy) * wj + dx // stride).reshape(-1).astype(np.int64)
    taps.setflags(write=False)
    return taps


#: :func:`direct_conv2d` with pooling splits a batch into at least this many tasks per
#: thread (images, then blocks of output channels)
POOL_TASKS_PER_THREAD = 2


@dataclass(frozen=True)
class DirectConvWeights:
    """Weights of :func:`direct_conv2d` in the micro-kernel's layout:
    ``w_t[g, tap, j]`` = weight of output channel ``g·chans + j`` at tap (c, dy, dx),
    output channels zero-padded to a multiple of the kernel's ``chans``; ``kernel`` the
    :class:`StemKernel`.  Group-major, so one micro-kernel call reads its
    ``taps × chans`` weights as one contiguous run (with taps-major ``[tap, o]`` rows
    each tap's few weights sat in another cache line: 6-12 % slower on the zmm stem)."""

    w_t: np.ndarray
    c_out: int
    kh: int
    kw: int
    kernel: StemKernel


def prepack_direct_conv_weights(w: np.ndarray, kernel: StemKernel | str | None = None) -> DirectConvWeights:
    """Re-lay float weights ``[O, C, kh, kw]`` for :func:`direct_conv2d` (once per model)
    and ``kernel`` (a :class:`StemKernel` or its name; default: this process's)."""
    kernel = _stem_kernel(kernel)
    o, c, kh, kw = w.shape
    groups, chans = -(-o // kernel.chans), kernel.chans
    w_t = aligned_zeros((groups, c * kh * kw, chans), np.float32)
    channel = np.arange(o)
    w_t[channel // chans, :, channel % chans] = np.asarray(w, np.float32).reshape(o, -1)
    return DirectConvWeights(w_t, o, kh, kw, kernel)


def class_stem_kernel(cpu_class: str, target: CompileTarget) -> str:
    """The stem kernel of ``cpu_class`` (``target`` kept for symmetry with
    :func:`~sttn_sim.kernels.gemm.class_ternary_kernel`)."""
    return {"avx512_vpopcntdq": "fma-zmm-48px-8ch", "avx512": "fma-zmm-48px-8ch", "avx2": "fma-ymm-24px-4ch"}.get(
        cpu_class, "fma-xmm-12px-3ch")


def _stem_kernel(kernel) -> StemKernel:
    if kernel is None:
        target = compile_target()
        cpu_class, where = requested_class(None, target)
        kernel = STEM_KERNELS[class_stem_kernel(cpu_class, target)]
        check_available(kernel, cpu_class, where, target)
        return kernel
    if isinstance(kernel, StemKernel):
        return kernel
    if kernel not in STEM_KERNELS:
        raise ShapeError(f"kernel: expected one of {sorted(STEM_KERNELS)}, got {kernel!r}")
    return STEM_KERNELS[kernel]


def direct_conv2d(x: np.ndarray, w, bias: np.ndarray, slope: np.ndarray | None, stride: int,
                  padding: int, pool: tuple[int, int, int] | None = None, threads: int | None = None) -> np.ndarray:
    """float32 ``conv2d(x, w) + bias`` then optional PReLU, NCHW, computed directly
    (no im2col): fast when the input has few channels, as the 3-channel stem.  ``w``
    is ``[O, C, kh, kw]`` or :class:`DirectConvWeights`.

    ``pool = (kernel, stride, padding)``: the result is :func:`maxpool2d` of that, bit
    for bit, computed from each convolution row while it is in cache (the
    convolution's output is never written out); ``threads`` (default: numba's) sets
    into how many blocks of output channels an image is split."""
    if not isinstance(w, DirectConvWeights):
        w = prepack_direct_conv_weights(w)
    k = w.kernel
    n, c, h, wd = x.shape
    hp, wp = h + 2 * padding, wd + 2 * padding
    oh, ow = conv_output_size(h, w.kh, stride, padding), conv_output_size(wd, w.kw, stride, padding)
    # room for the last pixel vector's reads past the row: (kw-1)//stride + ceil(ow/lanes)·lanes
    width = max(-(-wp // stride), (w.kw - 1) // stride + -(-ow // k.lanes) * k.lanes)
    xd = column_phases(x, padding, stride, width)
    taps = _tap_offsets(c, w.kh, w.kw, stride, hp, width)
    bias, slope = np.ascontiguousarray(bias, np.float32), _slope_array(slope)
    if pool is None:
        out = np.empty((n, w.c_out, oh, ow), np.float32)
        _direct_conv_kernel(k.sid, k.vecs, k.lanes, k.chans, xd, taps, w.w_t, bias, slope, stride, out)
        return out
    pk, ps, pp = pool
    out = np.empty((n, w.c_out, conv_output_size(oh, pk, ps, pp), conv_output_size(ow, pk, ps, pp)), np.float32)
    threads = threads or max(numba.get_num_threads(), 1)
    groups = w.w_t.shape[0]
    blocks = max(1, min(groups, -(-POOL_TASKS_PER_THREAD * threads // n)))  # enough tasks for every thread
    _direct_conv_pool_kernel(k.sid, k.vecs, k.lanes, k.chans, xd, taps, w.w_t, bias, slope, stride, oh, ow, pk, ps, pp,
                             blocks, out)
    return out


# --------------------------------------------------------------------------------------
# float fully connected layer (the head): small, so BLAS thread start-up would dominate


@numba.njit(cache=True, parallel=True, nogil=True, fastmath={"reassoc"})
def _linear_kernel(x, w, bias, out):
    n_img, k_len = x.shape
    for o in numba.prange(w.shape[0]):
        for n in range(n_img):
            acc = np.float32(0)
            for k in range(k_len):
                acc += x[n, k] * w[o, k]
            out[n, o] = acc + bias[o]


def linear_f32(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """float32 ``x @ wᵀ + bias`` for x [N, K], w [O, K] (dot products in any order)."""
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    _linear_kernel(np.ascontiguousarray(x, np.float32), w, bias, out)
    return out

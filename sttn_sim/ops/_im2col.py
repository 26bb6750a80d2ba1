"""Numba kernels for the convolution's im2col and its adjoint (col2im).

These two gathers/scatters are the bulk of a small convolution's cost in NumPy
(``sliding_window_view`` + a transposing copy, and a Python loop of strided adds);
compiled branch-free loops over a zero-padded copy do each in one pass.  Both work for
float32 and float64.  Cross-checked against the NumPy versions in the tests.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def im2col(x, kh, kw, stride, pad, ho, wo):
    """(N·Ho·Wo, C·kh·kw) patches; column index (c·kh + p)·kw + q."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    k = c * kh * kw
    cols = np.empty((n * ho * wo, k), x.dtype)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                row = (b * ho + i) * wo + j
                col = 0
                for ch in range(c):
                    for p in range(kh):
                        for q in range(kw):
                            cols[row, col] = xp[b, ch, i * stride + p, j * stride + q]
                            col += 1
    return cols


@numba.njit(cache=True, nogil=True)
def col2im(dcols, n, c, h, w, kh, kw, stride, pad, ho, wo):
    """Scatter-add of patch gradients onto the (unpadded) input: adjoint of im2col."""
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dcols.dtype)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                row = (b * ho + i) * wo + j
                col = 0
                for ch in range(c):
                    for p in range(kh):
                        for q in range(kw):
                            dxp[b, ch, i * stride + p, j * stride + q] += dcols[row, col]
                            col += 1
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + w])

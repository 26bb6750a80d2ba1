"""Float64 / int64 reference arithmetic: the ground truth every faster path is compared with.

Written for clarity, not speed: convolutions are window views contracted with
``np.tensordot``.

Integer accumulators of ternary codes are computed as float64 BLAS products of
{-1, 0, 1} values and converted to int64: every partial sum is an integer of magnitude
<= K < 2**53, so float64 represents it exactly and the conversion is exact.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..rules import batchnorm_inference


def is_ternary(a: np.ndarray) -> bool:
    """True when every element of ``a`` is -1, 0 or +1."""
    return bool(np.all((a == 0) | (a == 1) | (a == -1)))


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation in float64: ``out[n,o,i,j] = Σ_{c,p,q} w[o,c,p,q] · x_pad[n,c,i·s+p,j·s+q]``."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw = w.shape[2], w.shape[3]
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.tensordot(windows, np.asarray(w, dtype=np.float64), axes=([1, 4, 5], [1, 2, 3]))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def integer_conv2d(x_codes: np.ndarray, w_codes: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Exact int64 convolution of ternary codes (see the module note on exactness)."""
    return conv2d(x_codes, w_codes, stride, padding).astype(np.int64)


def integer_linear(x_codes: np.ndarray, w_codes: np.ndarray) -> np.ndarray:
    """Exact int64 ``x @ wᵀ`` of ternary codes."""
    return (np.asarray(x_codes, np.float64) @ np.asarray(w_codes, np.float64).T).astype(np.int64)


def batchnorm(x: np.ndarray, p: dict, eps: float) -> np.ndarray:
    """Inference BatchNorm of the parameters ``p``: :func:`sttn_sim.rules.batchnorm_inference`,
    ``(x - mean) / sqrt(var + eps) · γ + β`` in float64 (channel axis 1)."""
    return batchnorm_inference(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], eps)


def maxpool2d(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Max pooling with -inf padding (float64 result)."""
    x = np.asarray(x, np.float64)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


def avgpool2d(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Average pooling without padding (float64 result)."""
    x = np.asarray(x, np.float64)
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride].mean(axis=(4, 5))

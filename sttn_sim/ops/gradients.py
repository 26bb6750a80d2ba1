"""Forward and backward passes of the layer primitives training uses (numpy, any float dtype).

Every ``*_forward`` returns ``(y, cache)``; the matching ``*_backward(dy, cache)``
returns the gradient with respect to the input (and parameter gradients where there
are parameters).  Arrays keep the dtype they come in with (float32 for training,
float64 for gradient checks).  Convolutions are im2col + one BLAS GEMM.

Semantics match :mod:`sttn_sim.reference` (eval mode):

* conv / linear: cross-correlation, zero padding; ``y = x * W + b``;
* batchnorm: train mode normalises with the batch mean and the biased batch variance
  and updates ``running_mean``/``running_var`` (unbiased) with ``momentum`` like
  PyTorch; eval mode uses the running statistics;
* prelu: ``x if x >= 0 else a·x`` (one slope per channel, or one shared slope);
* ternary activation: ``x < lo → -1``, ``lo <= x < hi → 0``, ``x >= hi → +1``;
  backward: the clipped straight-through estimator ``dx = dy · 1{|x| <= clip}``;
* maxpool (first maximum of a window gets the gradient), avgpool, channel_pad
  (zeros appended), add, flatten.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..rules import batchnorm_std, conv_output_size, ternary_activation
from . import _im2col as _k

#: use the Numba im2col/col2im kernels (False: the pure NumPy versions, kept as a cross-check)
USE_NUMBA = True

# --------------------------------------------------------------------------------------
# convolution


def _im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int):
    """(N·Ho·Wo, C·kh·kw) patches of the zero-padded x, and (Ho, Wo)."""
    if USE_NUMBA:
        ho = conv_output_size(x.shape[2], kh, stride, padding)
        wo = conv_output_size(x.shape[3], kw, stride, padding)
        return _k.im2col(np.ascontiguousarray(x), kh, kw, stride, padding, ho, wo), ho, wo
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,kh,kw
    n, c, ho, wo = win.shape[:4]
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * kh * kw)
    return cols, ho, wo


def _col2im(dcols: np.ndarray, x_shape, kh: int, kw: int, stride: int, padding: int, ho: int, wo: int):
    """Adjoint of :func:`_im2col`: scatter-add patch gradients back onto the input."""
    n, c, h, w = x_shape
    if USE_NUMBA:
        return _k.col2im(np.ascontiguousarray(dcols), n, c, h, w, kh, kw, stride, padding, ho, wo)
    d = dcols.reshape(n, ho, wo, c, kh, kw)
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dxp[:, :, p:p + stride * (ho - 1) + 1:stride, q:q + stride * (wo - 1) + 1:stride] += \
                d[:, :, :, :, p, q].transpose(0, 3, 1, 2)
    if padding:
        dxp = dxp[:, :, padding:padding + h, padding:padding + w]
    return dxp


def conv2d_forward(x, w, b, stride: int, padding: int):
    """``y[n,o,i,j] = Σ w[o,c,p,q]·x_pad[n,c,i·s+p,j·s+q] + b[o]``."""
    o, _, kh, kw = w.shape
    cols, ho, wo = _im2col(x, kh, kw, stride, padding)
    y = cols @ w.reshape(o, -1).T
    if b is not None:
        y += b
    y = y.reshape(x.shape[0], ho, wo, o).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y), (cols, x.shape, w, stride, padding, ho, wo)


def conv2d_backward(dy, cache, need_dx: bool = True):
    """Returns ``(dx or None, dw, db)``."""
    cols, x_shape, w, stride, padding, ho, wo = cache
    o, _, kh, kw = w.shape
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(axis=0)
    dx = None
    if need_dx:
        dx = _col2im(dy2 @ w.reshape(o, -1), x_shape, kh, kw, stride, padding, ho, wo)
    return dx, dw, db


def linear_forward(x, w, b):
    y = x @ w.T
    if b is not None:
        y = y + b
    return y, (x, w)


def linear_backward(dy, cache, need_dx: bool = True):
    x, w = cache
    return (dy @ w if need_dx else None), dy.T @ x, dy.sum(axis=0)


# --------------------------------------------------------------------------------------
# batch norm


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _ch(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(x, params: dict, eps: float, train: bool, momentum: float = 0.1):
    """Train mode updates ``params['running_mean'/'running_var']`` in place."""
    gamma, beta = params["weight"], params["bias"]
    if train:
        axes = _axes(x)
        m = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        xc = x - _ch(mean, x.ndim)
        var = (xc * xc).mean(axis=axes)
        inv = 1.0 / batchnorm_std(var, eps)
        xhat = xc * _ch(inv, x.ndim)
        rm, rv = params["running_mean"], params["running_var"]
        unbiased = var * (m / max(m - 1, 1))
        rm[...] = ((1 - momentum) * rm + momentum * mean).astype(rm.dtype)
        rv[...] = ((1 - momentum) * rv + momentum * unbiased).astype(rv.dtype)
        y = xhat * _ch(gamma, x.ndim) + _ch(beta, x.ndim)
        return y.astype(x.dtype, copy=False), (True, xhat, inv, gamma)
    mean = params["running_mean"].astype(x.dtype)
    inv = (1.0 / batchnorm_std(params["running_var"].astype(np.float64), eps)).astype(x.dtype)
    y = (x - _ch(mean, x.ndim)) * _ch(inv * gamma, x.ndim) + _ch(beta, x.ndim)
    return y, (False, x, mean, inv, gamma)


def batchnorm_backward(dy, cache):
    """Returns ``(dx, dgamma, dbeta)``."""
    if cache[0]:
        _, xhat, inv, gamma = cache
        axes = _axes(dy)
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * xhat).sum(axis=axes)
        m = dy.size // dy.shape[1]
        dx = _ch(gamma * inv / m, dy.ndim) * (m * dy - _ch(dbeta, dy.ndim) - xhat * _ch(dgamma, dy.ndim))
        return dx, dgamma, dbeta
    _, x, mean, inv, gamma = cache
    axes = _axes(dy)
    xhat = (x - _ch(mean, x.ndim)) * _ch(inv, x.ndim)
    return dy * _ch(gamma * inv, dy.ndim), (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


# --------------------------------------------------------------------------------------
# activations


def prelu_forward(x, a):
    slope = _ch(a, x.ndim) if a.size > 1 else a.reshape(())
    neg = x < 0
    return np.where(neg, slope * x, x), (x, neg, a)


def prelu_backward(dy, cache):
    x, neg, a = cache
    slope = _ch(a, x.ndim) if a.size > 1 else a.reshape(())
    dx = np.where(neg, slope * dy, dy)
    g = np.where(neg, dy * x, 0)
    da = g.sum(axis=_axes(x)) if a.size > 1 else np.asarray(g.sum()).reshape(a.shape)
    return dx, da.astype(a.dtype)


def relu_forward(x):
    return np.maximum(x, 0), x > 0


def relu_backward(dy, cache):
    return dy * cache


def ternary_act_forward(x, lo: float, hi: float, clip: float = 1.0, tie: str = "sttn"):
    """Codes of :func:`sttn_sim.rules.ternary_activation` (in the dtype of x) and the
    straight-through mask ``|x| <= clip``."""
    return ternary_activation(x, lo, hi, tie=tie).astype(x.dtype), np.abs(x) <= clip


def ternary_act_backward(dy, mask):
    return dy * mask


# --------------------------------------------------------------------------------------
# pooling and shape ops


def maxpool_forward(x, kernel: int, stride: int, padding: int = 0):
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf) if padding else x
    win = sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = win.shape[:4]
    flat = win.reshape(n, c, ho, wo, kernel * kernel)
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(y), (x.shape, arg, kernel, stride, padding)


def maxpool_backward(dy, cache):
    shape, arg, k, s, pad = cache
    n, c, h, w = shape
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dy.dtype)
    ho, wo = arg.shape[2:]
    pi, qi = np.divmod(arg, k)
    rows = np.arange(ho)[None, None, :, None] * s + pi
    cols = np.arange(wo)[None, None, None, :] * s + qi
    nn = np.arange(n)[:, None, None, None]
    cc = np.arange(c)[None, :, None, None]
    np.add.at(dxp, (nn, cc, rows, cols), dy)
    if pad:
        dxp = dxp[:, :, pad:pad + h, pad:pad + w]
    return dxp


def avgpool_forward(x, kernel: int, stride: int):
    win = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.mean(axis=(4, 5)), (x.shape, kernel, stride)


def avgpool_backward(dy, cache):
    shape, k, s = cache
    dx = np.zeros(shape, dy.dtype)
    ho, wo = dy.shape[2:]
    g = dy / (k * k)
    for p in range(k):
        for q in range(k):
            dx[:, :, p:p + s * (ho - 1) + 1:s, q:q + s * (wo - 1) + 1:s] += g
    return dx


def channel_pad_forward(x, out_channels: int):
    extra = out_channels - x.shape[1]
    return np.concatenate([x, np.zeros((x.shape[0], extra) + x.shape[2:], x.dtype)], axis=1), x.shape[1]


def channel_pad_backward(dy, channels: int):
    return np.ascontiguousarray(dy[:, :channels])

"""Layer forward/backward of sttn_sim.train.layers against independent float64 computations.

Gradients are checked with central finite differences in float64 on a random linear
functional of the output, L = Σ r·y (so dL/dy = r):  |analytic - numeric| <=
1e-6 · max(1, |numeric|) with step h = 1e-6 (truncation error O(h²) ~ 1e-12 on these
smooth maps, rounding ~1e-10).  Forwards are compared with sttn_sim.reference (float64)
at 1e-12 relative.
"""

import numpy as np
import pytest

from sttn_sim import rules
from sttn_sim.ops import reference as R
from sttn_sim.ops import gradients as L
from sttn_sim.train import losses

RTOL = 1e-6
H = 1e-6


def numeric_grad(f, x, h=H):
    """Central differences of the scalar f() with respect to every entry of x (in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def assert_grad(analytic, numeric):
    assert analytic.shape == numeric.shape
    err = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    assert err.max() <= RTOL, f"max relative error {err.max():.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_conv_forward_matches_reference_and_gradients(rng, stride, padding):
    x = rng.normal(size=(2, 3, 6, 5))
    w = rng.normal(size=(4, 3, 3, 3))
    b = rng.normal(size=4)
    y, cache = L.conv2d_forward(x, w, b, stride, padding)
    ref = R.conv2d(x, w, stride, padding) + b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    r = rng.normal(size=y.shape)
    dx, dw, db = L.conv2d_backward(r, cache)
    f = lambda: float(np.sum(r * L.conv2d_forward(x, w, b, stride, padding)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))
    assert_grad(dw, numeric_grad(f, w))
    assert_grad(db, numeric_grad(f, b))


def test_numba_and_numpy_im2col_agree(rng):
    x = rng.normal(size=(3, 5, 7, 6)).astype(np.float32)
    old = L.USE_NUMBA
    try:
        out = {}
        for use in (True, False):
            L.USE_NUMBA = use
            cols, ho, wo = L._im2col(x, 3, 3, 2, 1)
            back = L._col2im(cols * 1.5, x.shape, 3, 3, 2, 1, ho, wo)
            out[use] = (cols, back)
        np.testing.assert_array_equal(out[True][0], out[False][0])
        np.testing.assert_allclose(out[True][1], out[False][1], rtol=1e-6)
    finally:
        L.USE_NUMBA = old


def test_linear(rng):
    x, w, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7)), rng.normal(size=3)
    y, cache = L.linear_forward(x, w, b)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-13)
    r = rng.normal(size=y.shape)
    dx, dw, db = L.linear_backward(r, cache)
    f = lambda: float(np.sum(r * L.linear_forward(x, w, b)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))
    assert_grad(dw, numeric_grad(f, w))
    assert_grad(db, numeric_grad(f, b))


def _bn_params(rng, c):
    return {"weight": rng.normal(size=c), "bias": rng.normal(size=c),
            "running_mean": rng.normal(size=c), "running_var": rng.uniform(0.5, 2.0, size=c)}


def test_batchnorm_train_mode_statistics_and_gradient(rng):
    x = rng.normal(2.0, 3.0, size=(4, 3, 5, 5))
    p = _bn_params(rng, 3)
    rm0, rv0 = p["running_mean"].copy(), p["running_var"].copy()
    y, cache = L.batchnorm_forward(x, p, 1e-5, train=True, momentum=0.1)
    # independent: per channel over (N, H, W), biased variance for normalising
    xs = x.transpose(1, 0, 2, 3).reshape(3, -1)
    mean, var = xs.mean(1), xs.var(1)
    expect = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + 1e-5) \
        * p["weight"].reshape(1, -1, 1, 1) + p["bias"].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    # PyTorch's running update: momentum 0.1, unbiased variance
    np.testing.assert_allclose(p["running_mean"], 0.9 * rm0 + 0.1 * mean, rtol=1e-13)
    np.testing.assert_allclose(p["running_var"], 0.9 * rv0 + 0.1 * xs.var(1, ddof=1), rtol=1e-13)
    r = rng.normal(size=y.shape)
    dx, dg, db = L.batchnorm_backward(r, cache)
    pp = {k: v.copy() for k, v in p.items()}
    f = lambda: float(np.sum(r * L.batchnorm_forward(x, pp, 1e-5, train=True)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))
    assert_grad(dg, numeric_grad(f, pp["weight"]))
    assert_grad(db, numeric_grad(f, pp["bias"]))


def test_batchnorm_eval_mode_matches_reference_and_gradient(rng):
    x = rng.normal(size=(3, 4, 2, 2))
    p = _bn_params(rng, 4)
    y, cache = L.batchnorm_forward(x, p, 1e-5, train=False)
    np.testing.assert_allclose(y, R.batchnorm(x, p, 1e-5), rtol=1e-12, atol=1e-12)
    r = rng.normal(size=y.shape)
    dx, dg, db = L.batchnorm_backward(r, cache)
    f = lambda: float(np.sum(r * L.batchnorm_forward(x, p, 1e-5, train=False)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))
    assert_grad(dg, numeric_grad(f, p["weight"]))
    assert_grad(db, numeric_grad(f, p["bias"]))


@pytest.mark.parametrize("channels", [3, 1])
def test_prelu(rng, channels):
    x = rng.normal(size=(2, 3, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    a = rng.uniform(0.1, 0.4, size=channels)
    y, cache = L.prelu_forward(x, a)
    slope = a.reshape(1, -1, 1, 1) if channels > 1 else a[0]
    np.testing.assert_array_equal(y, np.where(x >= 0, x, slope * x))
    r = rng.normal(size=y.shape)
    dx, da = L.prelu_backward(r, cache)
    f = lambda: float(np.sum(r * L.prelu_forward(x, a)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))
    assert_grad(da, numeric_grad(f, a))


def test_ternary_activation_forward_rule_and_clipped_ste():
    x = np.array([-1.5, -1.0, -0.5000001, -0.5, 0.0, 0.4999999, 0.5, 1.0, 1.0000001, 2.0])
    y, mask = L.ternary_act_forward(x, -0.5, 0.5, 1.0)
    np.testing.assert_array_equal(y, [-1, -1, -1, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(y, rules.ternary_activation(x, -0.5, 0.5))
    dy = np.arange(1.0, 11.0)
    np.testing.assert_array_equal(L.ternary_act_backward(dy, mask), [0, 2, 3, 4, 5, 6, 7, 8, 0, 0])


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool(rng, kernel, stride, padding):
    x = rng.normal(size=(2, 3, 6, 6))  # continuous: no ties
    y, cache = L.maxpool_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(y, R.maxpool2d(x, kernel, stride, padding))
    r = rng.normal(size=y.shape)
    dx = L.maxpool_backward(r, cache)
    f = lambda: float(np.sum(r * L.maxpool_forward(x, kernel, stride, padding)[0]))  # noqa: E731
    assert_grad(dx, numeric_grad(f, x))


@pytest.mark.parametrize("kernel,stride", [(4, 4), (2, 2), (3, 1)])
def test_avgpool(rng, kernel, stride):
    x = rng.normal(size=(2, 3, 4, 4))
    y, cache = L.avgpool_forward(x, kernel, stride)
    np.testing.assert_allclose(y, R.avgpool2d(x, kernel, stride), rtol=1e-13)
    r = rng.normal(size=y.shape)
    f = lambda: float(np.sum(r * L.avgpool_forward(x, kernel, stride)[0]))  # noqa: E731
    assert_grad(L.avgpool_backward(r, cache), numeric_grad(f, x))


def test_channel_pad(rng):
    x = rng.normal(size=(2, 3, 2, 2))
    y, c = L.channel_pad_forward(x, 5)
    assert y.shape == (2, 5, 2, 2) and np.all(y[:, 3:] == 0) and np.array_equal(y[:, :3], x)
    r = rng.normal(size=y.shape)
    f = lambda: float(np.sum(r * L.channel_pad_forward(x, 5)[0]))  # noqa: E731
    assert_grad(L.channel_pad_backward(r, c), numeric_grad(f, x))


def test_cross_entropy_and_distillation(rng):
    z = rng.normal(size=(4, 5)) * 3
    y = np.array([0, 3, 4, 1])
    loss, g = losses.cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(4), y])), rel=1e-13)
    assert_grad(g, numeric_grad(lambda: losses.cross_entropy(z, y)[0], z))
    t = rng.normal(size=(4, 5)) * 2
    kd, gk = losses.distillation(z, t, 3.0)
    pt = np.exp(t / 3) / np.exp(t / 3).sum(1, keepdims=True)
    ps = np.exp(z / 3) / np.exp(z / 3).sum(1, keepdims=True)
    assert kd == pytest.approx(9.0 * np.mean(np.sum(pt * np.log(pt / ps), 1)), rel=1e-12)
    assert_grad(gk, numeric_grad(lambda: losses.distillation(z, t, 3.0)[0], z))


def test_float32_forward_keeps_dtype(rng):
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    w = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    y, _ = L.conv2d_forward(x, w, None, 1, 1)
    assert y.dtype == np.float32
    y, _ = L.batchnorm_forward(y, {k: v.astype(np.float32) for k, v in _bn_params(rng, 2).items()}, 1e-5, True)
    assert y.dtype == np.float32

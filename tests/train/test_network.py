"""Weight quantizers and whole-graph forward/backward of sttn_sim.train.

* Effective kernels are compared with the independent implementations in
  sttn_sim.quantizers (float64, 1e-12 relative).
* The STTN gradients: the official formula against a per-channel loop written here;
  the "exact" shared-scale term against finite differences of the loss with the
  signs held fixed (the only way the loss depends on W once the codes are fixed).
* Whole-graph backward (residual adds, maxpool + zero-pad shortcut, BN in train mode,
  PReLU, avgpool, linear) against finite differences on the float version of a tiny
  official-style ResNet.  Tolerance 1e-6·max(1, |numeric|), step 1e-6, float64.
"""

import numpy as np
import pytest

from sttn_sim.builders import sttn_resnet18
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.quantizers import fixed_ternarize, sttn_ternarize, ttq_ternarize, twn_ternarize
from sttn_sim.reference import reference_forward
from sttn_sim.synthetic import synthetic_input, synthetic_model
from sttn_sim.train import HardQuant, Network, SttnQuant, prepare_model
from sttn_sim.ops import gradients as L
from sttn_sim.train import losses

H = 1e-6
RTOL = 1e-6


def assert_close_grad(analytic, numeric, rtol=RTOL):
    err = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    assert err.max() <= rtol, f"max relative error {err.max():.3g}"


def _loss(net, x, y):
    return losses.cross_entropy(net.forward(x, train=True), y)


def _fd(net, x, y, arr, idx, h=H):
    old = arr[idx]
    arr[idx] = old + h
    fp = _loss(net, x, y)[0]
    arr[idx] = old - h
    fm = _loss(net, x, y)[0]
    arr[idx] = old
    return (fp - fm) / (2 * h)


def _smooth_sttn_model(seed=0, grad="official"):
    """input → float conv → BN → PReLU → sttn_conv (float input) → BN → PReLU → avgpool → fc."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, size=(3, 2, 3, 3)).clip(-1, 1)
    w2 = rng.normal(0, 0.5, size=(3, 2, 3, 3)).clip(-1, 1)
    for w in (w1, w2):
        w[np.abs(w) < 0.01] = 0.3  # keep the signs stable under ±H

    def bn(c):
        return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
                "running_mean": np.zeros(c), "running_var": np.ones(c)}
    layers = [
        Layer("c0", "conv", ["input"], {"stride": 1, "padding": 1}, {"weight": rng.normal(0, 0.5, (2, 1, 3, 3))}),
        Layer("bn0", "batchnorm", ["c0"], {"eps": 1e-5}, bn(2)),
        Layer("p0", "prelu", ["bn0"], {}, {"weight": np.full(2, 0.25)}),
        Layer("s1", "sttn_conv", ["p0"], {"stride": 1, "padding": 1},
              {"weight1": w1, "weight2": w2, "bias1": rng.normal(0, .1, 3), "bias2": rng.normal(0, .1, 3)}),
        Layer("bn1", "batchnorm", ["s1"], {"eps": 1e-5}, bn(3)),
        Layer("p1", "prelu", ["bn1"], {}, {"weight": np.full(3, 0.2)}),
        Layer("pool", "avgpool", ["p1"], {"kernel": 4, "stride": 4}),
        Layer("flat", "flatten", ["pool"]),
        Layer("fc", "linear", ["flat"], {}, {"weight": rng.normal(0, 0.5, (4, 3)), "bias": np.zeros(4)}),
    ]
    model = Model("smooth", (1, 4, 4), layers)
    x = rng.normal(size=(5, 1, 4, 4))
    y = np.array([0, 1, 2, 3, 1])
    return model, x, y


# --------------------------------------------------------------------------------------
# effective kernels against sttn_sim.quantizers


def test_sttn_effective_kernel_matches_quantizers():
    rng = np.random.default_rng(0)
    w1, w2 = rng.uniform(-1, 1, (4, 3, 3, 3)), rng.uniform(-1, 1, (4, 3, 3, 3))
    w_eff, b = SttnQuant().forward({"weight1": w1, "weight2": w2}, {})
    tw = sttn_ternarize(w1, w2)
    np.testing.assert_allclose(w_eff, tw.dequantize(), rtol=1e-12, atol=1e-15)
    assert b is None


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_hard_effective_kernels_match_quantizers(granularity):
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, (5, 3, 3, 3))
    params = {"weight": w}
    for method, ref in (("twn", twn_ternarize(w, granularity=granularity)),
                        ("fixed", fixed_ternarize(w, 0.4, granularity=granularity)),
                        ("ttq", ttq_ternarize(w, 0.05, granularity=granularity))):
        q = HardQuant(method, granularity, fixed_delta=0.4)
        aux = q.init_aux(params)
        w_eff, _ = q.forward(params, aux)
        np.testing.assert_array_equal(q.codes(w), ref.codes)
        np.testing.assert_allclose(w_eff, ref.dequantize(), rtol=1e-12, atol=1e-15, err_msg=method)


# --------------------------------------------------------------------------------------
# STTN gradients


def _effective_G(model, x, y):
    """G = dL/dW_eff of layer s1: the same network with s1 as a float conv holding W_eff."""
    conv_model = model.copy()
    s1 = conv_model["s1"]
    w_eff, _ = SttnQuant().forward(s1.params, {})
    idx = conv_model.layers.index(s1)
    conv_model.layers[idx] = Layer("s1", "conv", s1.inputs, s1.attrs,
                                   {"weight": w_eff, "bias": s1.params["bias1"] + s1.params["bias2"]})
    net = Network(conv_model, dtype=np.float64)
    _, d = _loss(net, x, y)
    g = net.backward(d)
    # G itself is a plain conv weight gradient: check it by finite differences too
    w = conv_model["s1"].params["weight"]
    for idx in [(0, 0, 0, 0), (2, 1, 2, 1), (1, 0, 1, 2)]:
        assert g[("s1", "weight")][idx] == pytest.approx(_fd(net, x, y, w, idx), rel=RTOL, abs=RTOL)
    return g[("s1", "weight")]


def test_sttn_official_gradient_formula():
    model, x, y = _smooth_sttn_model()
    G = _effective_G(model, x, y)
    net = Network(model.copy(), dtype=np.float64, sttn_grad="official")
    _, d = _loss(net, x, y)
    g = net.backward(d)
    p = net.model["s1"].params
    n = 2 * 3 * 3
    for key in ("weight1", "weight2"):
        w = p[key]
        expect = np.empty_like(w)
        for o in range(w.shape[0]):  # official: G + sign(W)·mean_j(sign(W_j)·G_j) of the kernel's own signs
            expect[o] = G[o] + np.sign(w[o]) * np.sum(np.sign(w[o]) * G[o]) / n
        np.testing.assert_allclose(g[("s1", key)], expect, rtol=1e-10, atol=1e-12)
    # both branch biases get the full bias gradient dL/db (the two convolutions are added)
    np.testing.assert_allclose(g[("s1", "bias1")], g[("s1", "bias2")])
    assert g[("s1", "bias1")][1] == pytest.approx(_fd(net, x, y, p["bias1"], 1), rel=RTOL, abs=RTOL)


def test_sttn_exact_scale_gradient_against_finite_differences():
    model, x, y = _smooth_sttn_model(seed=3)
    G = _effective_G(model, x, y)
    net = Network(model.copy(), dtype=np.float64, sttn_grad="exact")
    _, d = _loss(net, x, y)
    g = net.backward(d)
    p = net.model["s1"].params
    for key in ("weight1", "weight2"):
        scale_term = g[("s1", key)] - G  # the straight-through part is G (|W| <= 1 everywhere)
        w = p[key]
        # with ±H the signs do not change, so the finite difference is the exact
        # derivative through the shared scale α = (Σ|W1| + Σ|W2|)/(2n)
        for idx in np.ndindex(w.shape):
            fd = _fd(net, x, y, w, idx)
            assert scale_term[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (key, idx)
    # ... which differs from the official own-kernel term
    official = Network(model.copy(), dtype=np.float64, sttn_grad="official")
    _, d = _loss(official, x, y)
    g_off = official.backward(d)
    assert not np.allclose(g_off[("s1", "weight1")], g[("s1", "weight1")])


# --------------------------------------------------------------------------------------
# TTQ


def test_ttq_scale_gradients_against_finite_differences():
    model, x, y = _smooth_sttn_model(seed=5)
    prepared = prepare_model(model, "ttq")
    net = Network(prepared, dtype=np.float64, granularity="channel")
    _, d = _loss(net, x, y)
    g = net.backward(d)
    for key in ("wp", "wn"):
        arr = net.aux["s1"][key]
        for o in range(arr.size):
            # the codes do not depend on W_p/W_n: the loss is smooth in them
            assert g[("s1", key)][o] == pytest.approx(_fd(net, x, y, arr, o), rel=RTOL, abs=1e-9)
    # the latent gradient: W_p·G on t=+1, G on t=0, W_n·G on t=-1 (G = dL/dW_eff)
    q, w = net.quantizers["s1"], net.model["s1"].params["weight"]
    t = q.codes(w)
    w_eff, _ = q.forward(net.model["s1"].params, net.aux["s1"])
    conv = model.copy()
    conv.layers[3] = Layer("s1", "conv", ["p0"], {"stride": 1, "padding": 1},
                           {"weight": w_eff, "bias": net.model["s1"].params["bias"]})
    cnet = Network(conv, dtype=np.float64)
    _, d = _loss(cnet, x, y)
    G = cnet.backward(d)[("s1", "weight")]
    wp = net.aux["s1"]["wp"].reshape(-1, 1, 1, 1)
    wn = net.aux["s1"]["wn"].reshape(-1, 1, 1, 1)
    expect = np.where(t > 0, wp * G, np.where(t < 0, wn * G, G))
    np.testing.assert_allclose(g[("s1", "weight")], expect, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------------------
# whole graph


def test_graph_backward_matches_finite_differences_on_float_resnet():
    base = sttn_resnet18(width=2 / 64, blocks=3, stem="small", input_size=4, in_channels=1, num_classes=3, seed=2)
    model = prepare_model(base, "float", seed=2)
    kinds = {l.kind for l in model.layers}
    assert {"add", "maxpool", "channel_pad", "batchnorm", "prelu", "avgpool", "linear"} <= kinds
    assert "ternary_act" not in kinds
    net = Network(model, dtype=np.float64)
    rng = np.random.default_rng(0)
    for layer in net.model.layers:  # non-trivial BN and PReLU parameters
        if layer.kind == "batchnorm":
            layer.params["weight"][:] = rng.uniform(0.5, 1.5, layer.params["weight"].shape)
            layer.params["bias"][:] = rng.normal(0, 0.2, layer.params["bias"].shape)
    x = rng.normal(size=(4, 1, 4, 4))
    y = np.array([0, 1, 2, 1])
    _, d = _loss(net, x, y)
    grads = net.backward(d)
    checked = 0
    for key, arr, _ in net.parameters():
        assert key in grads, key
        assert grads[key].shape == arr.shape
        for idx in list(np.ndindex(arr.shape))[:6]:
            assert grads[key][idx] == pytest.approx(_fd(net, x, y, arr, idx), rel=RTOL, abs=RTOL), (key, idx)
            checked += 1
    assert checked > 100


def test_eval_forward_matches_reference_float64():
    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10, seed=4)
    x = synthetic_input(model, batch=3)
    net = Network(prepare_model(model), dtype=np.float64)
    out = net.forward(x)
    ref = reference_forward(model, x)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(out, reference_forward(fold(model), x), rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    # the float32 training path agrees to float32 accuracy on the logits' argmax
    net32 = Network(prepare_model(model), dtype=np.float32)
    assert np.array_equal(net32.forward(x.astype(np.float32)).argmax(1), ref.argmax(1))


def test_prepare_model_conversions():
    base = sttn_resnet18(width=4 / 64, blocks=3, stem="small", input_size=8, in_channels=1, num_classes=10)
    n_tern = len(base.ternary_layers())
    twn = prepare_model(base, "twn")
    assert [l.kind for l in twn.layers].count("conv") == n_tern + 1
    assert all(l.attrs.get("train_quant") == "twn" for l in twn.layers if l.name.endswith(("conv1", "conv2")))
    np.testing.assert_array_equal(twn["features.4.conv1"].params["weight"], base["features.4.conv1"].params["weight1"])
    flt = prepare_model(base, "float")
    assert flt.form == "float" and not any(l.kind == "ternary_act" for l in flt.layers)
    assert len(flt.layers) == len(base.layers) - len(base.activation_quantizers())
    # the input model is untouched
    assert base["features.4.conv1"].kind == "sttn_conv"
    with pytest.raises(Exception, match="cannot train layers"):
        prepare_model(fold(synthetic_model("plain_ternary_cnn")), "sttn")
    with pytest.raises(Exception, match="method 'xnor'"):
        prepare_model(base, "xnor")


def test_pytorch_latent_init_is_seeded_bounded_and_leaves_the_input_alone():
    base = sttn_resnet18(width=4 / 64, blocks=3, stem="small", input_size=8, in_channels=1, num_classes=10)
    before = base["features.6.conv2"].params["weight1"].copy()
    a = prepare_model(base, "sttn", seed=5, latent_init="pytorch")
    b = prepare_model(base, "sttn", seed=5, latent_init="pytorch")
    c = prepare_model(base, "sttn", seed=6, latent_init="pytorch")
    np.testing.assert_array_equal(base["features.6.conv2"].params["weight1"], before)
    for layer in a.ternary_layers():
        w1, w2 = layer.params["weight1"], layer.params["weight2"]
        bound = 1 / np.sqrt(np.prod(w1.shape[1:]))  # PyTorch: kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))
        assert np.abs(w1).max() <= bound and np.abs(w1).max() > 0.9 * bound
        assert np.count_nonzero(w1 == 0) == 0 and not np.array_equal(w1, w2)
        np.testing.assert_array_equal(w1, b[layer.name].params["weight1"])
        assert not np.array_equal(w1, c[layer.name].params["weight1"])
    # a hard-threshold baseline starts from the same draw as STTN's first kernel
    twn = prepare_model(base, "twn", seed=5, latent_init="pytorch")
    np.testing.assert_array_equal(twn["features.4.conv1"].params["weight"], a["features.4.conv1"].params["weight1"])
    with pytest.raises(Exception, match="latent_init='zeros'"):
        prepare_model(base, "sttn", latent_init="zeros")

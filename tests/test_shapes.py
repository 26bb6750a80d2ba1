"""Tests of sttn_sim.shapes.infer_shapes: static shapes equal the executed shapes."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim.builders import plain_ternary_cnn, sttn_resnet18, ternary_mlp
from sttn_sim.errors import ShapeError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.reference import run_reference
from sttn_sim.shapes import infer_shapes
from sttn_sim.synthetic import synthetic_input

MODELS = [
    ("resnet_w1/16_in32", lambda: sttn_resnet18(width=0.0625, input_size=32, num_classes=5)),
    ("resnet_w1/32_in64_4blocks", lambda: sttn_resnet18(width=0.03125, input_size=64, num_classes=3, blocks=4)),
    ("resnet_small_in8_3blocks", lambda: sttn_resnet18(width=0.0625, input_size=8, num_classes=10, stem="small",
                                                       blocks=3, in_channels=1)),
    ("resnet_small_in16_rgb", lambda: sttn_resnet18(width=0.03125, input_size=16, num_classes=2, stem="small",
                                                    blocks=6)),
    ("cnn_default", lambda: plain_ternary_cnn()),
    ("cnn_odd9", lambda: plain_ternary_cnn(channels=(3, 5, 7), input_size=9, in_channels=2, num_classes=4)),
    ("cnn_in13_one", lambda: plain_ternary_cnn(channels=(6,), input_size=13, in_channels=3, num_classes=1)),
    ("mlp_default", lambda: ternary_mlp()),
    ("mlp_odd", lambda: ternary_mlp(hidden=(5, 3, 7), num_classes=2, input_shape=(3, 5, 1))),
    ("mlp_flat_input", lambda: ternary_mlp(hidden=(4,), num_classes=3, input_shape=(11,))),
]


@pytest.mark.parametrize("form", ["latent", "folded"])
@pytest.mark.parametrize("make", [m[1] for m in MODELS], ids=[m[0] for m in MODELS])
def test_infer_shapes_matches_execution(make, form):
    model = make()
    if form == "folded":
        model = fold(model)
    shapes = infer_shapes(model)
    run = run_reference(model, synthetic_input(model, 2, seed=0))
    assert set(shapes) == {"input", *model.layer_names}
    assert shapes["input"] == model.input_shape
    for name in model.layer_names:
        assert shapes[name] == run.outputs[name].shape[1:], name
    assert run.logits.shape == (2,) + shapes[model.output]


# --------------------------------------------------------------------------- mismatched parameters


def _toy():
    """conv(3->4) -> bn -> prelu -> ternary_act -> sttn_conv(4->4) -> add -> maxpool -> flatten -> linear."""
    r = np.random.default_rng(0)
    c4 = lambda: np.ones(4)  # noqa: E731
    layers = [
        Layer("conv", "conv", ["input"], {"stride": 1, "padding": 1}, {"weight": r.normal(size=(4, 3, 3, 3)),
                                                                        "bias": c4()}),
        Layer("bn", "batchnorm", ["conv"], {"eps": 1e-5},
              {"weight": c4(), "bias": c4(), "running_mean": c4(), "running_var": c4()}),
        Layer("prelu", "prelu", ["bn"], {}, {"weight": c4()}),
        Layer("act", "ternary_act", ["prelu"]),
        Layer("tconv", "sttn_conv", ["act"], {"stride": 1, "padding": 1},
              {"weight1": r.normal(size=(4, 4, 3, 3)), "weight2": r.normal(size=(4, 4, 3, 3)),
               "bias1": c4(), "bias2": c4()}),
        Layer("add", "add", ["tconv", "prelu"]),
        Layer("pool", "maxpool", ["add"], {"kernel": 2, "stride": 2, "padding": 0}),
        Layer("th", "threshold", ["pool"], {}, {"direction": np.ones(4, np.int8), "lo": -c4(), "hi": c4(),
                                                "constant": np.zeros(4, np.int8)}),
        Layer("fold", "ternary_conv", ["th"], {"stride": 1, "padding": 0, "epilogue": "affine"},
              {"codes": np.ones((4, 4, 1, 1), np.int8), "scale": c4(), "bias": c4()}),
        Layer("pad", "channel_pad", ["fold"], {"out_channels": 6}),
        Layer("flat", "flatten", ["pad"]),
        Layer("fc", "linear", ["flat"], {}, {"weight": r.normal(size=(2, 24)), "bias": np.zeros(2)}),
    ]
    return Model("toy", (3, 4, 4), layers, "latent")


def test_toy_shapes_by_hand():
    m = _toy()
    s = infer_shapes(m)
    assert s["conv"] == (4, 4, 4) and s["pool"] == (4, 2, 2) and s["pad"] == (6, 2, 2)
    assert s["flat"] == (24,) and s["fc"] == (2,)
    run = run_reference(m, np.zeros((1, 3, 4, 4)))
    assert all(run.outputs[k].shape[1:] == v for k, v in s.items() if k != "input")


BAD_PARAMS = [
    ("conv", "weight", (4, 2, 3, 3)),        # input channels
    ("conv", "weight", (4, 3, 3)),           # rank
    ("conv", "bias", (5,)),
    ("bn", "weight", (3,)),
    ("bn", "bias", (5,)),
    ("bn", "running_mean", (2,)),
    ("bn", "running_var", (1,)),
    ("prelu", "weight", (3,)),
    ("tconv", "weight1", (4, 3, 3, 3)),
    ("tconv", "weight2", (4, 4, 1, 1)),
    ("tconv", "weight2", (5, 4, 3, 3)),
    ("tconv", "bias1", (3,)),
    ("tconv", "bias2", (4, 1)),
    ("th", "direction", (3,)),
    ("th", "lo", (5,)),
    ("th", "hi", (1,)),
    ("th", "constant", (2,)),
    ("fold", "codes", (4, 3, 1, 1)),
    ("fold", "scale", (3,)),
    ("fold", "bias", (1,)),
    ("fc", "weight", (2, 23)),
    ("fc", "bias", (3,)),
]


@pytest.mark.parametrize("layer_name,param,shape", BAD_PARAMS,
                         ids=[f"{a}.{b}{list(c)}" for a, b, c in BAD_PARAMS])
def test_mismatched_parameter_raises_naming_layer(layer_name, param, shape):
    m = _toy()
    old = m[layer_name].params[param]
    m[layer_name].params[param] = np.ones(shape, old.dtype)
    with pytest.raises(ShapeError, match=rf"layer '{layer_name}'"):
        infer_shapes(m)


def test_mismatched_add_and_pad_and_empty_output():
    m = _toy()
    m["add"].inputs = ["tconv", "conv"]  # same shape: still fine
    infer_shapes(m)
    m = _toy()
    m["pad"].attrs["out_channels"] = 3
    with pytest.raises(ShapeError, match=r"layer 'pad'.*out_channels=3"):
        infer_shapes(m)
    m = _toy()
    m["pool"].attrs.update(kernel=5, stride=1)
    with pytest.raises(ShapeError, match=r"layer 'pool'.*empty"):
        infer_shapes(m)
    m = _toy()
    m["tconv"].attrs["stride"] = 2  # tconv output 2x2, prelu 4x4
    with pytest.raises(ShapeError, match=r"layer 'add'.*cannot add"):
        infer_shapes(m)


def test_pool_on_flat_input_is_a_shape_error():
    layers = [Layer("flat", "flatten", ["input"]), Layer("pool", "maxpool", ["flat"], {"kernel": 2, "stride": 2})]
    with pytest.raises(ShapeError, match=r"layer 'pool'"):
        infer_shapes(Model("flatpool", (1, 4, 4), layers, "float"))


def test_prelu_single_slope_is_fine():
    m = _toy()
    m["prelu"].params["weight"] = np.array([0.25])
    assert infer_shapes(m)["prelu"] == (4, 4, 4)


@pytest.mark.parametrize("kh,kw,stride,padding", [(3, 1, 1, 0), (1, 5, 2, 1), (2, 3, 2, 0)])
def test_non_square_kernels_and_maps(kh, kw, stride, padding):
    r = np.random.default_rng(kh * 10 + kw)
    layers = [Layer("conv", "conv", ["input"], {"stride": stride, "padding": padding},
                    {"weight": r.normal(size=(3, 2, kh, kw))})]
    m = Model("rect", (2, 7, 9), layers, "float")
    want = (3, (7 + 2 * padding - kh) // stride + 1, (9 + 2 * padding - kw) // stride + 1)  # by hand
    assert infer_shapes(m)["conv"] == want
    assert run_reference(m, np.zeros((1, 2, 7, 9))).outputs["conv"].shape[1:] == want


def test_pool_padding_beyond_half_the_kernel_is_refused():
    import pytest

    from sttn_sim import ShapeError, synthetic_model
    from sttn_sim.shapes import infer_shapes

    model = synthetic_model("sttn_resnet18", seed=0, width=0.0625, input_size=32, num_classes=4)
    model["features.3"].attrs["padding"] = 2  # kernel 3: a corner window would be all padding
    with pytest.raises(ShapeError, match=r"features\.3.*padding 2 exceeds"):
        infer_shapes(model)

"""Tests of sttn_sim.builders: the official ResNet-18 variant, the plain CNN and the MLP."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim.builders import MODEL_BUILDERS, build_model, plain_ternary_cnn, sttn_resnet18, ternary_mlp
from sttn_sim.errors import ModelError
from sttn_sim.reference import reference_forward
from sttn_sim.shapes import infer_shapes

# --------------------------------------------------------------------------- the official key list, by hand

BN = ("weight", "bias", "running_mean", "running_var")  # without num_batches_tracked

#: every key of one official BasicBlock (training form), in the order of docs/design.md §2.3
BLOCK_KEYS = (
    [f"bn1.{k}" for k in BN]
    + ["conv1_1.weight", "conv1_1.bias", "conv1_2.weight", "conv1_2.bias"]
    + [f"bn_add1.{k}" for k in BN]
    + ["prelu1.weight"]
    + [f"bn2.{k}" for k in BN]
    + ["conv2_1.weight", "conv2_1.bias", "conv2_2.weight", "conv2_2.bias"]
    + [f"bn_add2.{k}" for k in BN]
    + ["prelu2.weight"]
)

OFFICIAL_KEYS = (
    ["features.0.weight"]
    + [f"features.1.{k}" for k in BN]
    + ["features.2.weight"]
    + [f"features.{n}.{k}" for n in range(4, 12) for k in BLOCK_KEYS]
    + ["fc.weight", "fc.bias"]
)

#: (block, c_in, c_out, stride) of the official network, by hand
OFFICIAL_PLAN = [
    ("features.4", 64, 64, 1), ("features.5", 64, 64, 1),
    ("features.6", 64, 128, 2), ("features.7", 128, 128, 1),
    ("features.8", 128, 256, 2), ("features.9", 256, 256, 1),
    ("features.10", 256, 512, 2), ("features.11", 512, 512, 1),
]

#: number of weights of the 16 3x3 block convolutions of ResNet-18, by hand:
#: 9 * (64*64*4 + 64*128 + 128*128*3 + 128*256 + 256*256*3 + 256*512 + 512*512*3)
#: (equal to 11,689,512 torchvision params - 9,408 stem - 513,000 fc - 172,032 1x1 shortcuts - 9,600 BN)
RESNET18_3X3_WEIGHTS = 10_985_472


def official_key(layer, pname: str) -> str:
    """sttn_sim parameter -> official checkpoint key (docs/design.md §2.3, training form)."""
    if layer.kind == "sttn_conv":
        k = pname[-1]  # weight1 / bias1 / weight2 / bias2
        return f"{layer.name}_{k}.{pname[:-1]}"
    return f"{layer.name}.{pname}"


@pytest.fixture(scope="module")
def full():
    """The full-width ImageNet network, built once (never run)."""
    return sttn_resnet18(width=1.0, num_classes=1000, input_size=224)


# --------------------------------------------------------------------------- official ResNet-18


def test_resnet18_ternary_layer_names(full):
    ternary = full.ternary_layers()
    assert len(ternary) == 16
    assert [l.name for l in ternary] == [f"features.{n}.conv{k}" for n in range(4, 12) for k in (1, 2)]
    assert {l.kind for l in ternary} == {"sttn_conv"}


def test_resnet18_keys_equal_official_checkpoint_keys(full):
    keys = [official_key(layer, p) for layer in full for p in layer.params]
    assert len(keys) == len(set(keys))
    assert len(OFFICIAL_KEYS) == 1 + 4 + 1 + 8 * (4 * 4 + 8 + 2) + 2  # 4 BNs, 8 conv keys, 2 PReLUs per block
    assert set(keys) == set(OFFICIAL_KEYS)
    assert len(keys) == len(OFFICIAL_KEYS)


def test_resnet18_stem_and_head(full):
    assert full["features.0"].kind == "conv"
    assert full["features.0"].params["weight"].shape == (64, 3, 7, 7)
    assert "bias" not in full["features.0"].params
    assert full["features.0"].attrs == {"stride": 2, "padding": 3}
    assert full["features.1"].kind == "batchnorm"
    assert full["features.2"].kind == "prelu"
    assert full["features.2"].params["weight"].shape == (64,)
    assert full["features.3"].kind == "maxpool"
    assert full["features.3"].attrs == {"kernel": 3, "stride": 2, "padding": 1}
    assert full["avgpool"].attrs == {"kernel": 7, "stride": 7}
    assert full["fc"].params["weight"].shape == (1000, 512)
    assert full["fc"].params["bias"].shape == (1000,)
    assert full.input_shape == (3, 224, 224)
    assert full.output == "fc"


@pytest.mark.parametrize("block, c_in, c_out, stride", OFFICIAL_PLAN)
def test_resnet18_channel_plan_and_strides(full, block, c_in, c_out, stride):
    conv1, conv2 = full[f"{block}.conv1"], full[f"{block}.conv2"]
    for key in ("weight1", "weight2"):
        assert conv1.params[key].shape == (c_out, c_in, 3, 3)
        assert conv2.params[key].shape == (c_out, c_out, 3, 3)
    for key in ("bias1", "bias2"):
        assert conv1.params[key].shape == (c_out,)
        assert conv2.params[key].shape == (c_out,)
    assert conv1.attrs == {"stride": stride, "padding": 1}
    assert conv2.attrs == {"stride": 1, "padding": 1}
    assert full[f"{block}.bn1"].params["weight"].shape == (c_in,)
    assert full[f"{block}.bn_add1"].params["weight"].shape == (c_out,)
    assert full[f"{block}.bn2"].params["weight"].shape == (c_out,)
    assert full[f"{block}.prelu1"].params["weight"].shape == (c_out,)
    # the shortcut: identity, or maxpool2x2 + zero channels on a downsampling block
    add1 = full[f"{block}.add1"]
    names = full.layer_names
    if stride == 2:
        assert full[f"{block}.shortcut_pool"].attrs == {"kernel": 2, "stride": 2, "padding": 0}
        assert full[f"{block}.shortcut_pad"].attrs == {"out_channels": c_out}
        assert add1.inputs == [f"{block}.bn_add1", f"{block}.shortcut_pad"]
    else:
        assert f"{block}.shortcut_pool" not in names
        assert add1.inputs[0] == f"{block}.bn_add1"
        assert add1.inputs[1] == names[names.index(f"{block}.bn1") - 1]  # the block input
    assert full[f"{block}.add2"].inputs == [f"{block}.bn_add2", f"{block}.prelu1"]


def test_resnet18_block_wiring(full):
    """Per block: bn1 -> tact1 -> conv1 -> bn_add1 -> add1 -> prelu1 -> bn2 -> tact2 -> conv2 -> ..."""
    for block, *_ in OFFICIAL_PLAN:
        chain = ["bn1", "tact1", "conv1", "bn_add1", "add1", "prelu1", "bn2", "tact2", "conv2", "bn_add2", "add2", "prelu2"]
        for src, dst in zip(chain, chain[1:]):
            assert full[f"{block}.{dst}"].inputs[0] == f"{block}.{src}"
        assert full[f"{block}.tact1"].attrs == {"lo": -0.5, "hi": 0.5}
        assert full[f"{block}.tact2"].kind == "ternary_act"


def test_resnet18_downsampling_blocks(full):
    pools = [l.name for l in full if l.name.endswith("shortcut_pool")]
    assert pools == ["features.6.shortcut_pool", "features.8.shortcut_pool", "features.10.shortcut_pool"]
    strided = [l.name for l in full.ternary_layers() if l.attrs["stride"] == 2]
    assert strided == ["features.6.conv1", "features.8.conv1", "features.10.conv1"]


def test_resnet18_ternary_parameter_count(full):
    weights = sum(l.params["weight1"].size + l.params["weight2"].size for l in full.ternary_layers())
    biases = sum(l.params["bias1"].size + l.params["bias2"].size for l in full.ternary_layers())
    assert weights == 2 * RESNET18_3X3_WEIGHTS
    # 2 convs per block, 2 biases per conv: 2 * 2 * (64+64+128+128+256+256+512+512)
    assert biases == 4 * 1920
    assert sum(l.param_count() for l in full.ternary_layers()) == 2 * RESNET18_3X3_WEIGHTS + 4 * 1920


def test_resnet18_shapes_infer(full):
    shapes = infer_shapes(full)
    # 224 -> 112 (conv7/2) -> 56 (maxpool) -> 56, 56, 28, 28, 14, 14, 7, 7
    assert shapes["features.3"] == (64, 56, 56)
    assert shapes["features.5.prelu2"] == (64, 56, 56)
    assert shapes["features.6.prelu2"] == (128, 28, 28)
    assert shapes["features.8.prelu2"] == (256, 14, 14)
    assert shapes["features.11.prelu2"] == (512, 7, 7)
    assert shapes["avgpool"] == (512, 1, 1)
    assert shapes["fc"] == (1000,)


def test_resnet18_latent_weights(full):
    for layer in full.ternary_layers():
        for key in ("weight1", "weight2"):
            w = layer.params[key]
            assert w.dtype == np.float32
            assert np.all(w >= -1.0) and np.all(w <= 1.0)
            assert np.count_nonzero(w == 0) == 0, f"{layer.name}.{key} holds an exact zero"
            assert np.all(np.isfinite(w))


def test_resnet18_all_params_float32(full):
    for layer in full:
        for key, value in layer.params.items():
            assert value.dtype == np.float32, f"{layer.name}.{key}"


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "width, num_classes, input_size, base, final",
    [
        (0.5, 10, 64, 32, 2),
        (0.25, 100, 96, 16, 3),
        (0.125, 7, 32, 8, 1),
        (0.75, 3, 32, 48, 1),
    ],
)
def test_resnet18_width_classes_input_size_propagate(width, num_classes, input_size, base, final):
    m = sttn_resnet18(width=width, num_classes=num_classes, input_size=input_size)
    assert m.input_shape == (3, input_size, input_size)
    assert m["features.0"].params["weight"].shape == (base, 3, 7, 7)
    assert m["features.4.conv1"].params["weight1"].shape == (base, base, 3, 3)
    assert m["features.6.conv1"].params["weight1"].shape == (2 * base, base, 3, 3)
    assert m["features.11.conv2"].params["weight2"].shape == (8 * base, 8 * base, 3, 3)
    assert m["fc"].params["weight"].shape == (num_classes, 8 * base)
    assert m["avgpool"].attrs == {"kernel": final, "stride": final}
    shapes = infer_shapes(m)
    assert shapes["features.11.prelu2"] == (8 * base, final, final)
    assert shapes["fc"] == (num_classes,)
    assert m.metadata["width"] == width and m.metadata["num_classes"] == num_classes
    assert m.metadata["input_size"] == input_size


def test_resnet18_in_channels_and_blocks():
    m = sttn_resnet18(width=0.125, num_classes=5, input_size=32, in_channels=1, blocks=3)
    assert m.input_shape == (1, 32, 32)
    assert m["features.0"].params["weight"].shape == (8, 1, 7, 7)
    assert [l.name for l in m.ternary_layers()] == [f"features.{n}.conv{k}" for n in (4, 5, 6) for k in (1, 2)]
    assert m["fc"].params["weight"].shape == (5, 16)


@pytest.mark.parametrize(
    "input_size, stem, block",
    [
        (100, "imagenet", "features.6"),   # 100 -> 50 -> 25: features.6 downsamples 25
        (200, "imagenet", "features.8"),   # 200 -> 100 -> 50 -> 25 at features.8
        (112, "imagenet", "features.10"),  # 112 -> 56 -> 28 -> 14 -> 7 at features.10
        (6, "small", "features.8"),        # 6 -> 3 at features.8
        (12, "small", "features.10"),      # 12 -> 6 -> 3 at features.10
    ],
)
def test_resnet18_odd_map_at_downsampling_raises(input_size, stem, block):
    with pytest.raises(ModelError) as info:
        sttn_resnet18(width=0.125, input_size=input_size, stem=stem)
    msg = str(info.value)
    assert f"block {block} downsamples" in msg
    assert f"input_size={input_size}" in msg
    assert "even" in msg


def test_resnet18_small_stem_8x8_runs():
    m = sttn_resnet18(width=0.125, num_classes=10, input_size=8, in_channels=1, stem="small")
    assert m["features.0"].params["weight"].shape == (8, 1, 3, 3)
    assert m["features.0"].attrs == {"stride": 1, "padding": 1}
    assert "features.3" not in m.layer_names  # no maxpool
    assert m.layer_names[:3] == ["features.0", "features.1", "features.2"]
    assert m.layer_names[3] == "features.4.bn1"
    assert len(m.ternary_layers()) == 16
    shapes = infer_shapes(m)
    # 8 -> 8, 8, 4, 4, 2, 2, 1, 1
    assert shapes["features.5.prelu2"] == (8, 8, 8)
    assert shapes["features.6.prelu2"] == (16, 4, 4)
    assert shapes["features.11.prelu2"] == (64, 1, 1)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    out = reference_forward(m, x)
    assert out.shape == (2, 10)
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"width": 0}, "width"),
        ({"width": -0.5}, "width"),
        ({"width": "1"}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"input_size": 0}, "input_size"),
        ({"in_channels": 0}, "in_channels"),
        ({"stem": "cifar"}, "stem"),
        ({"blocks": 0}, "blocks"),
        ({"blocks": 9}, "blocks"),
    ],
)
def test_resnet18_bad_arguments(kwargs, argument):
    with pytest.raises(ModelError, match=rf"argument {argument}="):
        sttn_resnet18(**kwargs)


# --------------------------------------------------------------------------- other builders


def test_plain_ternary_cnn_structure():
    m = plain_ternary_cnn(channels=(16, 32, 32), num_classes=10, input_size=8, in_channels=1)
    assert [(l.name, l.kind) for l in m] == [
        ("features.0", "conv"), ("features.1", "batchnorm"), ("features.2", "ternary_act"),
        ("features.3", "sttn_conv"), ("features.4", "batchnorm"), ("features.5", "ternary_act"),
        ("features.6", "sttn_conv"), ("features.7", "batchnorm"), ("features.8", "ternary_act"),
        ("features.9", "sttn_conv"), ("features.10", "batchnorm"), ("features.11", "ternary_act"),
        ("avgpool", "avgpool"), ("flatten", "flatten"), ("fc", "linear"),
    ]
    for name, src in zip(m.layer_names[1:], m.layer_names):
        assert m[name].inputs == [src]
    assert m["features.0"].params["weight"].shape == (16, 1, 3, 3)
    assert m["features.0"].params["bias"].shape == (16,)
    assert m["features.3"].params["weight1"].shape == (16, 16, 3, 3)
    assert m["features.6"].params["weight1"].shape == (32, 16, 3, 3)
    assert m["features.9"].params["weight2"].shape == (32, 32, 3, 3)
    assert [m[n].attrs["stride"] for n in ("features.3", "features.6", "features.9")] == [1, 2, 2]
    assert m["avgpool"].attrs == {"kernel": 2, "stride": 2}  # 8 -> 8 -> 4 -> 2
    assert m["fc"].params["weight"].shape == (10, 32)
    assert infer_shapes(m)["fc"] == (10,)
    # every ternary conv feeds a BN feeding a ternary activation (the integer-threshold pattern)
    for layer in m.ternary_layers():
        (bn,) = m.consumers(layer.name)
        (act,) = m.consumers(bn.name)
        assert (bn.kind, act.kind) == ("batchnorm", "ternary_act")


@pytest.mark.parametrize("channels, input_size, final", [((4,), 5, 5), ((4, 8), 8, 4), ((2, 3, 5, 7), 16, 2)])
def test_plain_ternary_cnn_channels(channels, input_size, final):
    m = plain_ternary_cnn(channels=channels, num_classes=3, input_size=input_size, in_channels=2)
    assert len(m.ternary_layers()) == len(channels)
    prev = channels[0]
    for layer, c in zip(m.ternary_layers(), channels):
        assert layer.params["weight1"].shape == (c, prev, 3, 3)
        prev = c
    assert m["avgpool"].attrs["kernel"] == final
    assert infer_shapes(m)["fc"] == (3,)


def test_ternary_mlp_structure():
    m = ternary_mlp(hidden=(64, 32), num_classes=10, input_shape=(1, 8, 8))
    assert [(l.name, l.kind) for l in m] == [
        ("input_flatten", "flatten"), ("bn0", "batchnorm"), ("tact0", "ternary_act"),
        ("fc1", "sttn_linear"), ("bn1", "batchnorm"), ("tact1", "ternary_act"),
        ("fc2", "sttn_linear"), ("bn2", "batchnorm"), ("tact2", "ternary_act"),
        ("fc", "linear"),
    ]
    assert m.input_shape == (1, 8, 8)
    assert m["bn0"].params["weight"].shape == (64,)
    assert m["fc1"].params["weight1"].shape == (64, 64)
    assert m["fc2"].params["weight2"].shape == (32, 64)
    assert m["fc2"].params["bias1"].shape == (32,)
    assert m["fc"].params["weight"].shape == (10, 32)
    assert infer_shapes(m)["fc"] == (10,)


@pytest.mark.parametrize(
    "builder, kwargs, argument",
    [
        (plain_ternary_cnn, {"num_classes": 0}, "num_classes"),
        (plain_ternary_cnn, {"input_size": 0}, "input_size"),
        (plain_ternary_cnn, {"channels": ()}, "channels"),
        (plain_ternary_cnn, {"channels": (4, 0)}, "channels"),
        (ternary_mlp, {"num_classes": 0}, "num_classes"),
        (ternary_mlp, {"hidden": ()}, "hidden"),
        (ternary_mlp, {"hidden": (3, -1)}, "hidden"),
    ],
)
def test_other_builders_bad_arguments(builder, kwargs, argument):
    with pytest.raises(ModelError, match=rf"argument {argument}="):
        builder(**kwargs)


# --------------------------------------------------------------------------- build_model


def test_model_builders_registry():
    assert set(MODEL_BUILDERS) == {"sttn_resnet18", "plain_ternary_cnn", "ternary_mlp"}


@pytest.mark.parametrize("name", ["resnet18", "STTN_RESNET18", "", "mlp"])
def test_build_model_unknown_name(name):
    with pytest.raises(ModelError) as info:
        build_model(name)
    msg = str(info.value)
    assert f"unknown model name {name!r}" in msg
    assert msg.split("valid names: ")[1].split(", ") == ["sttn_resnet18", "plain_ternary_cnn", "ternary_mlp"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sttn_resnet18", {"width": 0.125, "input_size": 32, "num_classes": 4}),
        ("plain_ternary_cnn", {"channels": (4, 8)}),
        ("ternary_mlp", {"hidden": (8,)}),
    ],
)
def test_build_model_dispatches(name, kwargs):
    m = build_model(name, seed=3, **kwargs)
    assert m.arch == name
    assert m.metadata["builder"] == name
    direct = MODEL_BUILDERS[name](seed=3, **kwargs)
    assert m.layer_names == direct.layer_names


@pytest.mark.parametrize("name", ["sttn_resnet18", "plain_ternary_cnn", "ternary_mlp"])
def test_build_model_bad_keyword(name):
    with pytest.raises(ModelError, match=rf"build_model\('{name}'\).*no_such_arg"):
        build_model(name, no_such_arg=1)


@pytest.mark.parametrize("name, kwargs", [
    ("sttn_resnet18", {"width": 0}),
    ("plain_ternary_cnn", {"num_classes": 0}),
    ("ternary_mlp", {"num_classes": 0}),
])
def test_build_model_propagates_argument_errors(name, kwargs):
    (argument,) = kwargs
    with pytest.raises(ModelError, match=rf"argument {argument}="):
        build_model(name, **kwargs)


# --------------------------------------------------------------------------- initialisation


SMALL = [
    ("sttn_resnet18", {"width": 0.125, "input_size": 32, "num_classes": 10}),
    ("plain_ternary_cnn", {}),
    ("ternary_mlp", {}),
]


@pytest.mark.parametrize("name, kwargs", SMALL)
def test_latent_weights_in_range_no_zeros(name, kwargs):
    m = build_model(name, **kwargs)
    assert m.form == "latent"
    assert m.ternary_layers()
    for layer in m.ternary_layers():
        for key in ("weight1", "weight2"):
            w = layer.params[key]
            assert w.dtype == np.float32
            assert float(w.min()) >= -1.0 and float(w.max()) <= 1.0
            assert np.count_nonzero(w == 0) == 0


@pytest.mark.parametrize("name, kwargs", SMALL)
def test_same_seed_identical_params(name, kwargs):
    a = build_model(name, seed=11, **kwargs)
    b = build_model(name, seed=11, **kwargs)
    c = build_model(name, seed=12, **kwargs)
    assert a.layer_names == b.layer_names == c.layer_names
    differs = False
    for la, lb, lc in zip(a, b, c):
        assert la.attrs == lb.attrs
        assert list(la.params) == list(lb.params)
        for key in la.params:
            assert la.params[key].dtype == lb.params[key].dtype
            assert np.array_equal(la.params[key], lb.params[key])
            differs |= not np.array_equal(la.params[key], lc.params[key])
    assert differs, "a different seed must give different parameters"

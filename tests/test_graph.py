"""Tests of sttn_sim.graph: the Layer / Model description and its validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sttn_sim.errors import ModelError
from sttn_sim.graph import Layer, Model
from sttn_sim.kinds import REGISTRY

# --------------------------------------------------------------------------- helpers


def _bn(c: int) -> dict[str, np.ndarray]:
    return {
        "weight": np.ones(c, np.float32),
        "bias": np.zeros(c, np.float32),
        "running_mean": np.zeros(c, np.float32),
        "running_var": np.ones(c, np.float32),
    }


def small_layers() -> list[Layer]:
    """input (2, 4, 4) -> conv -> bn -> tact -> sttn_conv -> add(conv, sttn) -> flatten -> linear.

    Parameter counts (by hand): conv 3*2*3*3 + 3 = 57; bn 4*3 = 12; sttn_conv 2*(3*3*3*3) + 2*3 = 168;
    linear 5*48 + 5 = 245; the others 0.
    """
    return [
        Layer("conv", "conv", ["input"], {"stride": 1, "padding": 1},
              {"weight": np.zeros((3, 2, 3, 3), np.float32), "bias": np.zeros(3, np.float32)}),
        Layer("bn", "batchnorm", ["conv"], {"eps": 1e-5}, _bn(3)),
        Layer("tact", "ternary_act", ["bn"], {"lo": -0.5, "hi": 0.5}),
        Layer("tconv", "sttn_conv", ["tact"], {"stride": 1, "padding": 1},
              {"weight1": np.full((3, 3, 3, 3), 0.5, np.float32), "weight2": np.full((3, 3, 3, 3), -0.5, np.float32),
               "bias1": np.zeros(3, np.float32), "bias2": np.zeros(3, np.float32)}),
        Layer("sum", "add", ["tconv", "conv"]),
        Layer("flat", "flatten", ["sum"]),
        Layer("fc", "linear", ["flat"], {}, {"weight": np.zeros((5, 48), np.float32), "bias": np.zeros(5, np.float32)}),
    ]


EXPECTED_PARAM_COUNTS = {"conv": 57, "bn": 12, "tact": 0, "tconv": 168, "sum": 0, "flat": 0, "fc": 245}


@pytest.fixture
def model() -> Model:
    return Model("toy", (2, 4, 4), small_layers())


def _with(layers: list[Layer], index: int, layer: Layer) -> list[Layer]:
    layers = list(layers)
    layers[index] = layer
    return layers


# --------------------------------------------------------------------------- validation


def test_valid_model_builds(model):
    assert model.layer_names == ["conv", "bn", "tact", "tconv", "sum", "flat", "fc"]
    assert model.output == "fc"
    assert model.input_shape == (2, 4, 4)
    assert len(model) == 7
    assert [l.name for l in model] == model.layer_names


def test_input_shape_is_converted_to_int_tuple():
    m = Model("toy", [np.int64(2), 4.0, 4], small_layers())
    assert m.input_shape == (2, 4, 4)
    assert all(type(d) is int for d in m.input_shape)


def test_empty_model_is_rejected():
    with pytest.raises(ModelError, match="'empty'.*no layers"):
        Model("empty", (1,), [])


@pytest.mark.parametrize("dup_name", ["bn", "conv", "input"])
def test_duplicate_layer_name(dup_name):
    layers = small_layers()
    layers[2] = Layer(dup_name, "ternary_act", ["bn"])
    with pytest.raises(ModelError, match=rf"layer '{dup_name}'.*duplicate"):
        Model("toy", (2, 4, 4), layers)


@pytest.mark.parametrize("bad_kind", ["convolution", "Conv", "sttn", ""])
def test_unknown_kind_lists_known_kinds(bad_kind):
    layers = _with(small_layers(), 2, Layer("tact", bad_kind, ["bn"]))
    with pytest.raises(ModelError) as info:
        Model("toy", (2, 4, 4), layers)
    msg = str(info.value)
    assert "layer 'tact'" in msg
    assert f"unknown kind {bad_kind!r}" in msg
    for kind in ("conv", "sttn_conv", "ternary_conv", "batchnorm", "threshold", "channel_pad", "flatten"):
        assert kind in msg
    assert msg.split("known kinds: ")[1].split(", ") == list(REGISTRY)


@pytest.mark.parametrize(
    "index, inputs",
    [
        (2, ["fc"]),          # a later layer
        (2, ["tact"]),        # itself
        (2, ["nowhere"]),     # no such layer
        (4, ["tconv", "flat"]),  # add with one later input
    ],
)
def test_input_not_an_earlier_layer(index, inputs):
    layers = small_layers()
    old = layers[index]
    layers[index] = Layer(old.name, old.kind, inputs, old.attrs, old.params)
    with pytest.raises(ModelError, match=rf"layer '{old.name}'.*is not an earlier layer"):
        Model("toy", (2, 4, 4), layers)


@pytest.mark.parametrize(
    "index, inputs",
    [
        (4, ["tconv"]),                  # add with one input
        (4, ["tconv", "conv", "bn"]),    # add with three inputs
        (4, []),
        (2, ["bn", "conv"]),             # an activation with two inputs
        (5, []),                         # flatten with none
    ],
)
def test_wrong_number_of_inputs(index, inputs):
    layers = small_layers()
    old = layers[index]
    layers[index] = Layer(old.name, old.kind, inputs, old.attrs, old.params)
    want = 2 if old.kind == "add" else 1
    with pytest.raises(ModelError, match=rf"layer '{old.name}'.*takes {want} input\(s\)"):
        Model("toy", (2, 4, 4), layers)


@pytest.mark.parametrize(
    "index, drop, add, missing, extra",
    [
        (0, "weight", None, ["weight"], []),
        (1, "running_var", None, ["running_var"], []),
        (3, "weight2", None, ["weight2"], []),
        (3, None, "weight", [], ["weight"]),
        (2, None, "weight", [], ["weight"]),     # ternary_act has no parameters
        (6, "weight", "codes", ["weight"], ["codes"]),
    ],
)
def test_missing_or_extra_params(index, drop, add, missing, extra):
    layers = small_layers()
    old = layers[index]
    params = dict(old.params)
    if drop:
        del params[drop]
    if add:
        params[add] = np.zeros(3, np.float32)
    layers[index] = Layer(old.name, old.kind, old.inputs, old.attrs, params)
    with pytest.raises(ModelError) as info:
        Model("toy", (2, 4, 4), layers)
    msg = str(info.value)
    assert f"layer '{old.name}'" in msg
    assert f"missing parameters {missing}" in msg
    assert f"unexpected parameters {extra}" in msg


def test_optional_params_may_be_absent():
    layers = small_layers()
    old = layers[3]
    params = {k: v for k, v in old.params.items() if k.startswith("weight")}
    layers[3] = Layer(old.name, old.kind, old.inputs, old.attrs, params)
    m = Model("toy", (2, 4, 4), layers)
    assert sorted(m["tconv"].params) == ["weight1", "weight2"]


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0], 1.0, None, (0.0,)])
def test_non_array_params(value):
    layers = small_layers()
    old = layers[1]
    params = dict(old.params, running_mean=value)
    layers[1] = Layer(old.name, old.kind, old.inputs, old.attrs, params)
    with pytest.raises(ModelError, match=rf"layer 'bn'.*'running_mean' is a {type(value).__name__}, expected a numpy array"):
        Model("toy", (2, 4, 4), layers)


@pytest.mark.parametrize("index,attrs,message", [
    (0, {"padding": 1}, r"layer 'conv' \(conv\): attribute 'stride' must be an integer >= 1, got None"),
    (0, {"stride": 0, "padding": 1}, r"'stride' must be an integer >= 1, got 0"),
    (3, {"stride": 1, "padding": -1}, r"layer 'tconv' \(sttn_conv\): attribute 'padding' must be an integer >= 0"),
    (3, {"stride": 1.0, "padding": 1}, r"'stride' must be an integer >= 1, got 1.0"),
    (3, {"stride": True, "padding": 1}, r"'stride' must be an integer >= 1, got True"),
])
def test_missing_or_bad_attributes(index, attrs, message):
    """An in-memory model is checked like a loaded one: no KeyError later in an executor."""
    layers = small_layers()
    old = layers[index]
    layers[index] = Layer(old.name, old.kind, old.inputs, attrs, old.params)
    with pytest.raises(ModelError, match=message):
        Model("toy", (2, 4, 4), layers)


def test_validate_catches_later_mutation(model):
    model.layers[3].params.pop("weight1")
    with pytest.raises(ModelError, match="layer 'tconv'"):
        model.validate()


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize("name", ["conv", "tconv", "fc"])
def test_getitem(model, name):
    layer = model[name]
    assert layer.name == name
    assert layer is model.layers[model.layer_names.index(name)]


@pytest.mark.parametrize("name", ["nope", "input", "features.4.conv1"])
def test_getitem_unknown_lists_valid_names(model, name):
    with pytest.raises(ModelError) as info:
        model[name]
    msg = str(info.value)
    assert repr(name) in msg
    assert msg.split("valid layers: ")[1].split(", ") == ["conv", "bn", "tact", "tconv", "sum", "flat", "fc"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conv", ["bn", "sum"]),
        ("bn", ["tact"]),
        ("tconv", ["sum"]),
        ("sum", ["flat"]),
        ("fc", []),
        ("input", ["conv"]),
    ],
)
def test_consumers(model, name, expected):
    assert [l.name for l in model.consumers(name)] == expected


def test_ternary_layers_and_activation_quantizers():
    layers = small_layers()
    # add a folded ternary layer and a threshold to see all kinds picked up, in model order
    layers.insert(5, Layer("thr", "threshold", ["sum"], {"integer": False},
                           {"direction": np.ones(3, np.int8), "lo": np.zeros(3), "hi": np.ones(3),
                            "constant": np.zeros(3, np.int8)}))
    layers.insert(6, Layer("tern", "ternary_conv", ["thr"], {"stride": 1, "padding": 1, "epilogue": "affine"},
                           {"codes": np.zeros((3, 3, 3, 3), np.int8), "scale": np.ones(3), "bias": np.zeros(3)}))
    layers[7] = Layer("flat", "flatten", ["tern"])
    m = Model("toy", (2, 4, 4), layers)
    assert [l.name for l in m.ternary_layers()] == ["tconv", "tern"]
    assert [l.name for l in m.activation_quantizers()] == ["tact", "thr"]
    assert [l.is_ternary for l in m] == [False, False, False, True, False, False, True, False, False]


@pytest.mark.parametrize("kind", ["sttn_conv", "sttn_linear", "ter_conv", "ter_linear", "ternary_conv", "ternary_linear"])
def test_is_ternary_kinds(kind):
    assert Layer("x", kind, ["input"]).is_ternary


@pytest.mark.parametrize("kind", ["conv", "linear", "batchnorm", "ternary_act", "threshold", "add"])
def test_is_not_ternary_kinds(kind):
    assert not Layer("x", kind, ["input"]).is_ternary


def test_copy_is_deep(model):
    clone = model.copy()
    assert clone is not model
    assert clone.layer_names == model.layer_names
    clone["tconv"].params["weight1"][0, 0, 0, 0] = -1.0
    clone["tconv"].attrs["stride"] = 2
    clone["sum"].inputs.append("bn")
    clone.metadata["x"] = 1
    clone.layers.pop()
    assert model["tconv"].params["weight1"][0, 0, 0, 0] == np.float32(0.5)
    assert model["tconv"].attrs["stride"] == 1
    assert model["sum"].inputs == ["tconv", "conv"]
    assert "x" not in model.metadata
    assert len(model) == 7
    for a, b in zip(model.copy().layers, model.layers):
        for k in a.params:
            assert not np.shares_memory(a.params[k], b.params[k])
            assert np.array_equal(a.params[k], b.params[k])


# --------------------------------------------------------------------------- summary


def test_param_count(model):
    assert {l.name: l.param_count() for l in model} == EXPECTED_PARAM_COUNTS


def test_summary(model):
    df = model.summary()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 7
    assert list(df["layer"]) == ["conv", "bn", "tact", "tconv", "sum", "flat", "fc"]
    assert list(df["kind"]) == ["conv", "batchnorm", "ternary_act", "sttn_conv", "add", "flatten", "linear"]
    assert list(df["inputs"]) == ["input", "conv", "bn", "tact", "tconv,conv", "sum", "flat"]
    assert dict(zip(df["layer"], df["param_count"])) == EXPECTED_PARAM_COUNTS
    assert df.loc[df["layer"] == "fc", "params"].item() == "weight[5, 48]; bias[5]"
    assert df.loc[df["layer"] == "tact", "params"].item() == ""

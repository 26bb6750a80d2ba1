"""One validation of a model (sttn_sim.validation), run by fold(), reference_forward() and
Engine(): the audit's "wrong models accepted silently" cases, each a named regression."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim import Engine, fold, load_checkpoint, save_model
from sttn_sim.errors import ModelError, ShapeError
from sttn_sim.graph import Layer, Model
from sttn_sim.reference import reference_forward
from sttn_sim.synthetic import synthetic_input, synthetic_model

RESNET = dict(width=0.125, input_size=32, num_classes=10)


@pytest.fixture(scope="module")
def folded_resnet():
    return fold(synthetic_model("sttn_resnet18", seed=0, **RESNET))


@pytest.fixture(scope="module")
def folded_cnn():
    return fold(synthetic_model("plain_ternary_cnn", seed=0))


def _set(model: Model, layer: str, param: str, value) -> Model:
    bad = model.copy()
    bad[layer].params[param] = value
    return bad


def _both_refuse(model: Model, error, pattern: str) -> None:
    """The reference executor and the engine refuse the model with the same message."""
    x = synthetic_input(model, 1)
    with pytest.raises(error, match=pattern):
        reference_forward(model, x)
    with pytest.raises(error, match=pattern):
        Engine(model)


def test_nan_scale(folded_resnet):
    scale = folded_resnet["features.4.conv1"].params["scale"].copy()
    scale[2] = np.nan
    _both_refuse(_set(folded_resnet, "features.4.conv1", "scale", scale), ModelError,
                 r"layer 'features.4.conv1' \(ternary_conv\): parameter 'scale' holds 1 NaN/Inf")


def test_inf_bias(folded_resnet):
    bias = folded_resnet["features.5.conv2"].params["bias"].copy()
    bias[0] = np.inf
    _both_refuse(_set(folded_resnet, "features.5.conv2", "bias", bias), ModelError, r"'features.5.conv2'.*'bias'.*Inf")


def test_nan_threshold(folded_cnn):
    lo = folded_cnn["features.2"].params["lo"].copy()
    lo[3] = np.nan
    _both_refuse(_set(folded_cnn, "features.2", "lo", lo), ModelError, r"'features.2' \(threshold\).*'lo' holds 1 NaN")


def test_threshold_direction_seven(folded_cnn):
    d = folded_cnn["features.5"].params["direction"].copy()
    d[0] = 7
    _both_refuse(_set(folded_cnn, "features.5", "direction", d), ModelError,
                 r"'features.5'.*'direction' must be in \{-1, 0, \+1\}.*7")


def test_constant_code_nine(folded_cnn):
    c = folded_cnn["features.8"].params["constant"].copy()
    c[1] = 9
    _both_refuse(_set(folded_cnn, "features.8", "constant", c), ModelError, r"'features.8'.*'constant'.*9")


def test_complex_fc_weight(folded_cnn):
    w = folded_cnn["fc"].params["weight"].astype(np.complex64)
    _both_refuse(_set(folded_cnn, "fc", "weight", w), ModelError, r"'fc' \(linear\).*real floating point.*complex64")


def test_codes_equal_to_five(folded_cnn):
    codes = folded_cnn["features.6"].params["codes"].copy()
    codes[0, 0, 0, 0] = 5
    _both_refuse(_set(folded_cnn, "features.6", "codes", codes), ModelError, r"'features.6'.*'codes'.*5")


def test_float_codes(folded_cnn):
    codes = folded_cnn["features.6"].params["codes"].astype(np.float32)
    _both_refuse(_set(folded_cnn, "features.6", "codes", codes), ModelError, r"'codes' must be int8.*float32")


def test_scale_with_three_entries_on_an_eight_channel_layer(folded_resnet):
    layer = folded_resnet["features.4.conv1"]
    assert layer.params["codes"].shape[0] == 8
    _both_refuse(_set(folded_resnet, "features.4.conv1", "scale", np.ones(3)), ShapeError,
                 r"'features.4.conv1'.*'scale' has shape \[3\], expected \[8\]")


def _with_attrs(model: Model, name: str, **attrs) -> Model:
    layers = [Layer(l.name, l.kind, l.inputs, dict(l.attrs, **attrs) if l.name == name else l.attrs, l.params)
              for l in model.layers]
    return model.replace_layers(layers)


def test_huge_stride(folded_cnn):
    _both_refuse(_with_attrs(folded_cnn, "features.6", stride=10**30), ShapeError,
                 r"'features.6'.*stride 10{30} is longer than the padded input")


def test_padding_3000(folded_cnn):
    _both_refuse(_with_attrs(folded_cnn, "features.6", padding=3000), ShapeError,
                 r"'features.6'.*padding 3000 exceeds 2 for a 3x3 window")


def test_avgpool_kernel_larger_than_its_input(folded_cnn):
    _both_refuse(_with_attrs(folded_cnn, "avgpool", kernel=9, stride=1), ShapeError,
                 r"'avgpool'.*output shape \[32, -6, -6\] is empty for input \[32, 2, 2\]")


def test_fold_latent_conv_that_does_not_fit_its_input():
    model = synthetic_model("plain_ternary_cnn", seed=0)
    bad = model.copy()
    for key in ("weight1", "weight2"):
        bad["features.6"].params[key] = np.full((32, 8, 3, 3), 0.5, np.float32)
    with pytest.raises(ShapeError, match=r"'features.6'.*weight \[32, 8, 3, 3\] does not fit input \[16, 8, 8\]"):
        fold(bad)


def test_fold_batchnorm_mean_of_one_entry():
    model = synthetic_model("plain_ternary_cnn", seed=0)
    bad = _set(model, "features.4", "running_mean", np.zeros(1, np.float32))
    with pytest.raises(ShapeError, match=r"'features.4'.*'running_mean' has shape \[1\], expected \[16\]"):
        fold(bad)


@pytest.mark.parametrize("kind, attrs, pattern", [
    ("batchnorm", {"eps": "x"}, r"'eps' must be a finite number >= 0.0, got 'x'"),
    ("batchnorm", {"eps": []}, r"'eps' must be a finite number >= 0.0, got \[\]"),
    ("ternary_act", {"lo": "1"}, r"'lo' must be a finite number, got '1'"),
    ("ternary_act", {"hi": []}, r"'hi' must be a finite number, got \[\]"),
    ("ternary_act", {"lo": 0.6, "hi": 0.5}, r"expected lo <= hi"),
])
def test_bad_attributes_refused_when_built_and_when_loaded(tmp_path, kind, attrs, pattern):
    model = synthetic_model("plain_ternary_cnn", seed=0)
    name = next(l.name for l in model.layers if l.kind == kind)
    if kind == "ternary_act" and "lo" in attrs and "hi" in attrs:  # consistency: checked on use and on load
        bad = _with_attrs(model, name, **attrs)
        with pytest.raises(ModelError, match=pattern):
            fold(bad)
        return
    with pytest.raises(ModelError, match=rf"layer {name!r}.*{pattern}"):
        _with_attrs(model, name, **attrs)


@pytest.mark.parametrize("param", ["gain", "offset"])
def test_threshold_gain_or_offset_of_the_wrong_length(tmp_path, folded_cnn, param):
    bad = _set(folded_cnn, "features.5", param, np.ones(3))
    with pytest.raises(ShapeError, match=rf"'features.5'.*'{param}' has shape \[3\], expected \[16\]"):
        Engine(bad)
    path = tmp_path / "bad.safetensors"
    save_model(bad, path)
    with pytest.raises(Exception, match=rf"{param}.*has shape \[3\], expected \[16\]"):
        load_checkpoint(path)


def test_unordered_thresholds(folded_cnn):
    lo = folded_cnn["features.5"].params["lo"].copy()
    hi = folded_cnn["features.5"].params["hi"].copy()
    c = int(np.flatnonzero(folded_cnn["features.5"].params["direction"] != 0)[0])
    lo[c], hi[c] = hi[c] + 1, lo[c]
    bad = _set(_set(folded_cnn, "features.5", "lo", lo), "features.5", "hi", hi)
    _both_refuse(bad, ModelError, rf"'features.5'.*lo <= hi, channel {c}")


def test_infinite_thresholds_are_valid_by_design(folded_cnn):
    """A threshold no value reaches (a tiny BN gain gives ±inf) is allowed."""
    hi = folded_cnn["features.2"].params["hi"].copy()
    hi[0] = np.inf
    ok = _set(folded_cnn, "features.2", "hi", hi)
    x = synthetic_input(ok, 2)
    assert np.all(np.isfinite(reference_forward(ok, x)))
    assert np.all(np.isfinite(Engine(ok).run(x)))

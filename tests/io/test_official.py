"""Tests of sttn_sim.io.official: official STTN checkpoints ↔ Model: loading both forms,
matching PyTorch's logits, key/shape errors, writing the official forms back out (and
opening them with ``torch.load(weights_only=True)``; PyTorch is a test dependency).

Logit tolerance: the fixtures' logits come from PyTorch in float32; sttn_sim's
reference runs in float64.  With no activation near a ternary threshold (the fixture
script guarantees a margin of 1e-4 at every ternary activation), the only difference
is float32 rounding, measured at about 7e-7 (training form) and 1.2e-6 (merged form).
The tests allow ``1e-5 * max(1, |logit|)`` and require the same top-1.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from sttn_sim import fold, load_checkpoint, reference_forward, save_model, sttn_resnet18, synthetic_model
from sttn_sim.errors import CheckpointError, FoldError, ModelError
from sttn_sim.io.official import (load_official, model_from_official, official_layout, official_state_dict,
                                  save_official)
from sttn_sim.io.torch_reader import read_torch_file
from sttn_sim.io.torch_writer import write_torch_legacy, write_torch_zip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZIP = FIXTURES / "sttn_bwx2_zip.pth.tar"
LEGACY = FIXTURES / "sttn_bwx2_legacy.pth.tar"
TER = FIXTURES / "sttn_ter_zip.pth"
LOGITS = np.load(FIXTURES / "logits.npz")
X = LOGITS["inputs_q"].astype(np.float32) * LOGITS["input_scale"]
RTOL = 1e-5
CASES = [(ZIP, "latent", "logits_bwx2"), (LEGACY, "latent", "logits_bwx2"), (TER, "merged", "logits_ter")]


def assert_logits_match(got, expected):
    expected = np.asarray(expected, np.float64)
    tol = RTOL * np.maximum(1.0, np.abs(expected))
    assert np.all(np.abs(got - expected) <= tol), f"max |diff| = {np.abs(got - expected).max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.fixture(scope="module")
def models():
    return {path.name: load_checkpoint(path, input_size=32) for path, _, _ in CASES}


# --------------------------------------------------------------------------- loading the fixtures


@pytest.mark.parametrize("path, form, key", CASES, ids=lambda v: getattr(v, "name", v))
def test_fixture_reproduces_pytorch_logits(models, path, form, key):
    model = models[path.name]
    assert model.form == form
    assert_logits_match(reference_forward(model, X), LOGITS[key])
    assert_logits_match(reference_forward(fold(model), X), LOGITS[key])


@pytest.mark.parametrize("path, form, key", CASES, ids=lambda v: getattr(v, "name", v))
def test_structure_is_the_builders(models, path, form, key):
    model = models[path.name]
    template = sttn_resnet18(width=1 / 64, num_classes=10, input_size=32)
    assert model.layer_names == template.layer_names
    kinds = [l.kind for l in model.layers]
    expected = [("ter_conv" if form == "merged" and k == "sttn_conv" else k) for k in (l.kind for l in template.layers)]
    assert kinds == expected
    assert model.input_shape == (3, 32, 32)
    m = model.metadata
    assert m["width"] == 1 / 64 and m["num_classes"] == 10 and m["module_prefix"] is True
    assert m["official_arch"] == ("resnet18_bwx2" if form == "latent" else "resnet18_ter")
    assert all(l.attrs["eps"] == 1e-5 for l in model.layers if l.kind == "batchnorm")


def test_training_form_metadata(models):
    m = models[ZIP.name].metadata
    assert m["epoch"] == 42 and m["best_prec1"] == 61.25
    assert m["ignored_entries"] == ["optimizer"]
    assert "cuda:0" in m["devices"] and m["container"] == "pytorch-zip"
    assert m["form_detected_from"] == "arch and keys"
    assert models[LEGACY.name].metadata["container"] == "pytorch-legacy"
    assert models[TER.name].metadata["form_detected_from"] == "keys"


def test_zip_and_legacy_give_identical_models(models):
    a, b = models[ZIP.name], models[LEGACY.name]
    for la, lb in zip(a.layers, b.layers):
        assert la.params.keys() == lb.params.keys()
        for k in la.params:
            assert np.array_equal(la.params[k], lb.params[k])


def test_merged_fixture_folds_to_the_same_codes(models):
    fl, fm = fold(models[ZIP.name]), fold(models[TER.name])
    for a, b in zip(fl.ternary_layers(), fm.ternary_layers()):
        assert np.array_equal(a.params["codes"], b.params["codes"]), a.name
        np.testing.assert_allclose(a.params["scale"], b.params["scale"], rtol=1e-6)
        np.testing.assert_allclose(a.params["bias"], b.params["bias"], rtol=1e-6, atol=1e-7)


def test_default_input_size_is_imagenet():
    model = load_checkpoint(ZIP)
    assert model.input_shape == (3, 224, 224)
    assert model["avgpool"].attrs["kernel"] == 7  # the official AvgPool2d(7)


@pytest.mark.parametrize("base, in_channels, classes", [(1, 3, 10), (3, 1, 7), (64, 3, 1000)])
@pytest.mark.parametrize("form", ["bwx2", "ter"])
def test_official_layout_is_the_builders(base, in_channels, classes, form):
    """The layout the keys are checked against (before building anything) names exactly the
    builder's parameters, with their shapes, in the builder's order (the stem bias is the
    one optional extra)."""
    template = sttn_resnet18(width=base / 64, num_classes=classes, in_channels=in_channels, input_size=224)
    expected = {}
    for layer in template.layers:
        for param, value in layer.params.items():
            if layer.kind == "sttn_conv":
                suffix = "_" + param[-1] if form == "bwx2" else ""
                key = f"{layer.name}{suffix}.{param[:-1]}"
            else:
                key = f"{layer.name}.{param}"
            expected[key] = (layer.name, layer.kind, value.shape)
    layout = official_layout(base, in_channels, classes, form)
    assert layout.pop("features.0.bias") == ("features.0", "conv", (base,))
    assert list(layout.items()) == list(expected.items())


def test_file_name_does_not_decide(tmp_path, models):
    disguised = tmp_path / "weights.safetensors"
    shutil.copy(LEGACY, disguised)
    assert load_checkpoint(disguised, input_size=32).form == "latent"
    own = save_model(models[TER.name], tmp_path / "model_best.pth.tar")
    again = load_checkpoint(own)
    assert again.form == "merged" and again.metadata["official_arch"] == "resnet18_ter"


# --------------------------------------------------------------------------- key and shape errors


@pytest.fixture(scope="module")
def training_obj():
    return read_torch_file(ZIP).obj


def _write(tmp_path, obj, name="bad.pth"):
    return write_torch_zip(tmp_path / name, obj)


def _with_state(obj, change):
    state = OrderedDict(obj["state_dict"])
    change(state)
    return {**obj, "state_dict": state}


def test_missing_keys_are_named(tmp_path, training_obj):
    def drop(sd):
        del sd["module.features.7.conv2_2.weight"]
        del sd["module.features.9.bn_add1.running_var"]

    path = _write(tmp_path, _with_state(training_obj, drop))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "missing keys: features.7.conv2_2.weight, features.9.bn_add1.running_var" in msg


def test_unexpected_keys_are_named_and_strict_false_records_them(tmp_path, training_obj):
    def add(sd):
        sd["module.features.4.extra.weight"] = np.ones(3, np.float32)

    path = _write(tmp_path, _with_state(training_obj, add))
    with pytest.raises(CheckpointError, match=r"unexpected keys: module\.features\.4\.extra\.weight"):
        load_checkpoint(path)
    model = load_official(path, input_size=32, strict=False)
    assert model.metadata["unexpected_keys"] == ["module.features.4.extra.weight"]


def test_missing_biases_strict_and_lenient(tmp_path, training_obj):
    def drop(sd):
        del sd["module.features.4.conv1_2.bias"]

    path = _write(tmp_path, _with_state(training_obj, drop))
    with pytest.raises(CheckpointError, match=r"missing keys: features\.4\.conv1_2\.bias"):
        load_checkpoint(path)
    model = load_official(path, input_size=32, strict=False)
    assert model.metadata["missing_biases"] == ["features.4.conv1_2.bias"]
    assert "bias2" not in model["features.4.conv1"].params
    fold(model)  # a latent layer without its second bias still folds


def test_shape_mismatch_names_key_and_shapes(tmp_path, training_obj):
    def bad(sd):
        sd["module.features.6.conv1_2.weight"] = np.full((2, 2, 3, 3), 0.5, np.float32)

    path = _write(tmp_path, _with_state(training_obj, bad))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: key 'module.features.6.conv1_2.weight' has shape "
                                                        "[2, 2, 3, 3], expected [2, 1, 3, 3]")):
        load_checkpoint(path)


def test_fc_that_does_not_fit_the_width(tmp_path, training_obj):
    def bad(sd):
        sd["module.fc.weight"] = np.zeros((10, 16), np.float32)

    with pytest.raises(CheckpointError, match=r"key 'module\.fc\.weight' has shape \[10, 16\], expected \[10, 8\]"):
        load_checkpoint(_write(tmp_path, _with_state(training_obj, bad)))


@pytest.mark.parametrize("arch, message", [
    ("resnet18_ter", "arch 'resnet18_ter' but the keys are those of 'resnet18_bwx2'"),
    ("resnet50", "arch 'resnet50' is not supported"),
])
def test_arch_field_is_checked(tmp_path, training_obj, arch, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_write(tmp_path, {**training_obj, "arch": arch}))


def test_not_an_sttn_checkpoint(tmp_path):
    path = _write(tmp_path, {"state_dict": {"layer1.weight": np.ones(2, np.float32)}})
    with pytest.raises(CheckpointError, match="not an official STTN ResNet-18 state_dict"):
        load_checkpoint(path)
    path = _write(tmp_path, {"model": 3}, "other.pth")
    with pytest.raises(CheckpointError, match="expected a dict with a 'state_dict' entry"):
        load_checkpoint(path)


def test_mixed_forms_are_refused(tmp_path, training_obj):
    def mix(sd):
        sd["module.features.4.conv1.weight"] = np.ones((1, 1, 3, 3), np.float32)

    with pytest.raises(CheckpointError, match="mixes training-form keys"):
        load_checkpoint(_write(tmp_path, _with_state(training_obj, mix)))


def test_bare_state_dict_without_prefix_in_legacy_format(tmp_path, training_obj, models):
    bare = OrderedDict((k[len("module."):], v) for k, v in training_obj["state_dict"].items())
    path = write_torch_legacy(tmp_path / "bare.pth", bare)
    model = load_checkpoint(path, input_size=32)
    assert model.metadata["module_prefix"] is False and "epoch" not in model.metadata
    assert_logits_match(reference_forward(model, X), LOGITS["logits_bwx2"])


def test_best_prec1_as_a_number(tmp_path, training_obj):
    model = load_checkpoint(_write(tmp_path, {**training_obj, "best_prec1": 70.5, "epoch": np.array(9)}))
    assert model.metadata["best_prec1"] == 70.5 and model.metadata["epoch"] == 9


def test_nan_weight_names_file_and_key(tmp_path, training_obj):
    def poison(sd):
        w = sd["module.features.5.conv2_1.weight"].copy()
        w.flat[3] = np.nan
        sd["module.features.5.conv2_1.weight"] = w

    path = _write(tmp_path, _with_state(training_obj, poison))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: key 'module.features.5.conv2_1.weight' holds 1 NaN")):
        load_checkpoint(path)


def test_non_ternary_merged_kernel_names_file_and_key(tmp_path):
    obj = read_torch_file(TER).obj
    state = OrderedDict(obj["state_dict"])
    w = state["module.features.8.conv1.weight"].copy()
    nz = np.flatnonzero(w[0])
    w[0].flat[nz[0]] *= 1.5  # a second non-zero magnitude in channel 0
    state["module.features.8.conv1.weight"] = w
    path = _write(tmp_path, {"state_dict": state})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: key 'module.features.8.conv1.weight'")
                       + ": channel 0 is not ternary"):
        load_checkpoint(path)


def test_integer_weights_are_refused(tmp_path, training_obj):
    def ints(sd):
        sd["module.fc.bias"] = np.zeros(10, np.int64)

    with pytest.raises(CheckpointError, match=r"key 'module\.fc\.bias' has dtype int64, expected floating point"):
        load_checkpoint(_write(tmp_path, _with_state(training_obj, ints)))


def test_exact_zero_latent_weight_is_a_fold_error(tmp_path, training_obj):
    def zero(sd):
        w = sd["module.features.10.conv1_1.weight"].copy()
        w.flat[0] = 0.0
        sd["module.features.10.conv1_1.weight"] = w

    model = load_checkpoint(_write(tmp_path, _with_state(training_obj, zero)), input_size=32)
    with pytest.raises(FoldError, match="features.10.conv1"):
        fold(model)


def test_model_from_official_names_the_source():
    with pytest.raises(CheckpointError, match=r"^my.pth: expected a dict"):
        model_from_official([1, 2], source="my.pth")


# --------------------------------------------------------------------------- writing the official forms


def test_save_training_form_round_trips_exactly(tmp_path, models):
    model = models[ZIP.name]
    path = save_official(model, tmp_path / "out.pth.tar", "bwx2", epoch=7, best_prec1=12.5)
    obj = read_torch_file(path).obj
    assert sorted(obj) == ["arch", "best_prec1", "epoch", "state_dict"]
    assert obj["arch"] == "resnet18_bwx2" and obj["epoch"] == 7 and obj["best_prec1"] == 12.5
    original = read_torch_file(ZIP).obj["state_dict"]
    assert list(obj["state_dict"]) == list(original)  # same keys, same order as PyTorch's state_dict()
    for key, value in original.items():
        if not key.endswith("num_batches_tracked"):
            assert np.array_equal(obj["state_dict"][key], value), key
    again = load_checkpoint(path, input_size=32)
    assert_logits_match(reference_forward(again, X), LOGITS["logits_bwx2"])


def test_save_merged_form(tmp_path, models):
    path = save_official(models[ZIP.name], tmp_path / "ter.pth", "ter")
    obj = read_torch_file(path).obj
    assert list(obj) == ["state_dict"]
    original = read_torch_file(TER).obj["state_dict"]
    assert list(obj["state_dict"]) == list(original)
    for key, value in original.items():
        if not key.endswith("num_batches_tracked"):  # ignored on load, written as 0
            np.testing.assert_allclose(obj["state_dict"][key], value, rtol=2e-7, atol=0, err_msg=key)
    again = load_checkpoint(path, input_size=32)
    assert again.form == "merged"
    assert_logits_match(reference_forward(again, X), LOGITS["logits_ter"])


def test_merged_model_written_as_training_form_keeps_the_forward(tmp_path, models):
    path = save_official(models[TER.name], tmp_path / "synth.pth", "bwx2", module_prefix=False)
    obj = read_torch_file(path).obj
    assert not any(k.startswith("module.") for k in obj["state_dict"])
    again = load_checkpoint(path, input_size=32)
    assert again.form == "latent"
    a, b = fold(again), fold(models[TER.name])
    for la, lb in zip(a.ternary_layers(), b.ternary_layers()):
        assert np.array_equal(la.params["codes"], lb.params["codes"])
    assert_logits_match(reference_forward(again, X), LOGITS["logits_ter"])


def test_save_official_refuses_other_models(tmp_path, models):
    with pytest.raises(ModelError, match="folded"):
        save_official(fold(models[ZIP.name]), tmp_path / "f.pth")
    with pytest.raises(ModelError, match="not the official STTN ResNet-18"):
        save_official(synthetic_model("plain_ternary_cnn"), tmp_path / "p.pth")
    with pytest.raises(ModelError, match="not the official STTN ResNet-18 layout"):
        save_official(sttn_resnet18(width=1 / 64, num_classes=10, input_size=32, blocks=4), tmp_path / "b.pth")
    with pytest.raises(ModelError, match="form='x'"):
        official_state_dict(models[ZIP.name], "x")
    assert list(tmp_path.iterdir()) == []


def test_save_official_of_a_synthetic_model(tmp_path):
    model = synthetic_model("sttn_resnet18", seed=1, width=1 / 64, input_size=32, num_classes=5)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for form in ("bwx2", "ter"):
        again = load_checkpoint(save_official(model, tmp_path / f"{form}.pth", form), input_size=32)
        np.testing.assert_allclose(reference_forward(again, x), reference_forward(model, x), rtol=1e-5, atol=1e-5)


def _fixture_script():
    """The fixture script's own re-implementation of the official model (PyTorch)."""
    spec = importlib.util.spec_from_file_location("make_official_fixtures", FIXTURES / "make_official_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("form", ["bwx2", "ter"])
def test_written_files_load_into_the_official_model_with_torch(tmp_path, models, form):
    script = _fixture_script()
    path = save_official(models[ZIP.name], tmp_path / f"{form}.pth", form)
    obj = torch.load(path, weights_only=True)
    net = script.ResNet18STTN(merged=form == "ter")
    net.load_state_dict(script.strip_module(obj["state_dict"]), strict=True)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(X)).numpy()
    assert_logits_match(logits.astype(np.float64), LOGITS["logits_bwx2" if form == "bwx2" else "logits_ter"])


@pytest.mark.parametrize("form, prefix", [("bwx2", True), ("ter", False)])
def test_torch_load_of_save_official_equals_official_state_dict(tmp_path, models, form, prefix):
    model = models[ZIP.name]
    path = save_official(model, tmp_path / f"{form}.pth.tar", form, module_prefix=prefix, epoch=5)
    obj = torch.load(path, weights_only=True)
    expected = official_state_dict(model, form, module_prefix=prefix)
    assert sorted(obj) == (["arch", "best_prec1", "epoch", "state_dict"] if form == "bwx2" else ["state_dict"])
    if form == "bwx2":
        assert obj["arch"] == "resnet18_bwx2" and obj["epoch"] == 5 and obj["best_prec1"] == 61.25
    assert type(obj["state_dict"]) is OrderedDict and list(obj["state_dict"]) == list(expected)
    for key, value in expected.items():
        t = obj["state_dict"][key]
        assert t.numpy().dtype == value.dtype and t.shape == value.shape, key
        assert t.numpy().tobytes() == value.tobytes(), key


# --------------------------------------------------------------------------- verify CLI


@pytest.mark.slow
def test_verify_cli_on_the_training_fixture():
    proc = subprocess.run([sys.executable, "-m", "sttn_sim.verify", "--checkpoint", str(ZIP), "--batch", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PASS" in proc.stdout


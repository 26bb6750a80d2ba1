"""The embedded default model: loads, folds, verifies, and the folded model's accuracy on
the digits test split equals the training-time accuracy stored in its metadata."""

import numpy as np
import pytest

import sttn_sim
from sttn_sim.datasets import data_path, digits
from sttn_sim.fold import fold
from sttn_sim.reference import reference_forward
from sttn_sim.check import verify_model


@pytest.fixture(scope="module")
def model():
    return sttn_sim.default_model()


def test_default_model_metadata_and_size(model):
    assert model.form == "latent" and model.arch == "sttn_resnet18"
    assert model.input_shape == (1, 8, 8)
    meta = model.metadata
    for key in ("method", "seed", "test_accuracy", "training_command", "epochs", "train_config", "dataset"):
        assert key in meta, key
    assert meta["method"] == "sttn" and meta["training_command"].startswith("python scripts/train_default_model.py")
    assert data_path("default_model.safetensors").stat().st_size < 1_000_000
    assert len(model.ternary_layers()) == 2 * meta["blocks"]


def test_folded_accuracy_equals_training_time_accuracy(model):
    _, _, x_te, y_te = digits()
    pred = reference_forward(fold(model), x_te.astype(np.float64)).argmax(1)
    accuracy = float(np.mean(pred == y_te))
    assert accuracy == model.metadata["test_accuracy"]
    assert accuracy >= 0.97  # the float model reaches ~99 %; STTN must be within 2 points


def test_default_model_verifies_bit_exactly_on_digits(model):
    _, _, x_te, _ = digits()
    report = verify_model(model, fold(model), x=x_te[:32].astype(np.float64))
    assert report.passed
    # the latent kernels are clamped and have no exact zeros (sign(0) would be a fifth level)
    for layer in model.ternary_layers():
        for key in ("weight1", "weight2"):
            w = layer.params[key]
            assert np.abs(w).max() <= 1.0 and np.count_nonzero(w == 0) == 0


def test_packed_engine_reproduces_the_accuracy(model):
    from sttn_sim.engine import Engine

    _, _, x_te, y_te = digits()
    accuracy = float(np.mean(Engine(fold(model)).run(x_te).argmax(1) == y_te))
    assert accuracy == model.metadata["test_accuracy"]

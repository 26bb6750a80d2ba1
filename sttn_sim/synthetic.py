"""Seeded synthetic models and inputs for verification and tests.

A synthetic model is a builder's latent-form model (random latent kernels) whose
BatchNorm layers are given non-trivial statistics: running mean and variance are the
batch statistics of a calibration batch at that layer, γ is drawn from ±U(0.5, 1.5)
with about a third negative and one channel per layer (when it has >= 4) exactly 0, and
β ~ N(0, 0.3²).  The BN output before each ternary activation is then roughly
γ·N(0,1) + β, so the activations hit all three ternary values.
"""

from __future__ import annotations

import numpy as np

from .builders import build_model
from .graph import Model
from .reference import run_layer


def synthetic_input(model: Model, batch: int = 4, seed: int = 0) -> np.ndarray:
    """A float32 batch of standard normal inputs of shape (batch, *model.input_shape)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch,) + tuple(model.input_shape)).astype(np.float32)


def calibrate_batchnorm(model: Model, x: np.ndarray, seed: int = 0) -> Model:
    """Set every BN layer's statistics from the batch ``x`` (in place; returns model)."""
    rng = np.random.default_rng(seed)
    values = {"input": np.asarray(x, np.float64)}
    for layer in model.layers:
        inputs = [values[src] for src in layer.inputs]
        if layer.kind == "batchnorm":
            data = np.asarray(inputs[0], np.float64)
            axes = (0,) + tuple(range(2, data.ndim))
            mean, var = data.mean(axis=axes), data.var(axis=axes)
            var = np.where(var > 1e-12, var, 1.0)
            c = mean.size
            gamma = rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 1 / 3, -1.0, 1.0)
            if c >= 4:
                gamma[rng.integers(c)] = 0.0
            layer.params.update(
                weight=gamma.astype(np.float32),
                bias=rng.normal(0.0, 0.3, c).astype(np.float32),
                running_mean=mean.astype(np.float32),
                running_var=var.astype(np.float32),
            )
        values[layer.name] = run_layer(layer, inputs)
    return model


def synthetic_model(name: str = "sttn_resnet18", seed: int = 0, calibration_batch: int = 8, **builder_kwargs) -> Model:
    """A latent-form model from builder ``name`` with calibrated, non-trivial BN.

    ``builder_kwargs`` go to the builder (e.g. ``width=0.125, input_size=32``).
    """
    model = build_model(name, seed=seed, **builder_kwargs)
    calibrate_batchnorm(model, synthetic_input(model, calibration_batch, seed + 1), seed=seed + 2)
    model.metadata.update(synthetic=True, synthetic_seed=seed)
    return model

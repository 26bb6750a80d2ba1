"""docs/design.md §5 "A new layer kind": a float elementwise kind added in one class.

The toy kind is registered only for these tests (``kinds.registered``); the reference,
the engine, shape inference and training then all run it, and every one of them refuses
a kind that is not registered.
"""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim import Engine, fold
from sttn_sim.errors import ModelError
from sttn_sim.graph import Layer, Model
from sttn_sim.kinds import REGISTRY, Attr, LayerKind, registered
from sttn_sim.reference import reference_forward, run_reference
from sttn_sim.shapes import infer_shapes
from sttn_sim.synthetic import synthetic_input, synthetic_model
from sttn_sim.train import Network


class HardTanh(LayerKind):
    """``clip(x, -limit, limit)``: the whole recipe — declaration, reference, engine op,
    training forward/backward — in one class."""

    name = "toy_hardtanh"
    summary = "clip to [-limit, limit]"
    attrs = (Attr("limit", float, default=1.0, minimum=0.0),)
    trainable = True

    def reference(self, layer, inputs, run=None):
        limit = self.attr(layer, "limit")
        return np.clip(np.asarray(inputs[0], np.float64), -limit, limit)

    def engine_forward(self, layer):
        limit = np.float32(self.attr(layer, "limit"))
        return lambda x: np.clip(np.asarray(x, np.float32), -limit, limit)

    def train_forward(self, layer, inputs, net):
        limit = self.attr(layer, "limit")
        x = inputs[0]
        return np.clip(x, -limit, limit), np.abs(x) < limit

    def train_backward(self, layer, dy, cache, net, grads):
        return [dy * cache]


def with_toy(model: Model, after: str, limit: float = 0.75) -> Model:
    """``model`` with a toy layer inserted after layer ``after``."""
    layers = []
    for layer in model.layers:
        layers.append(Layer(layer.name, layer.kind, [("toy" if s == after else s) for s in layer.inputs],
                            layer.attrs, layer.params))
        if layer.name == after:
            layers.append(Layer("toy", HardTanh.name, [after], {"limit": limit}))
    return model.replace_layers(layers)


@pytest.fixture
def toy_registered():
    with registered(HardTanh):
        yield
    assert HardTanh.name not in REGISTRY  # removed again


def test_reference_engine_and_shapes_run_the_new_kind(toy_registered):
    model = synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10)
    # after the stem's PReLU, before the maxpool: a float layer in the residual stream
    toy = with_toy(model, "features.2")
    assert infer_shapes(toy)["toy"] == infer_shapes(model)["features.2"]
    x = synthetic_input(model, 2, seed=1)
    run = run_reference(toy, x)
    # independent check: the toy output is the clipped stem output of the original model
    stem = run_reference(model, x).outputs["features.2"]
    np.testing.assert_array_equal(run.outputs["toy"], np.clip(stem, -0.75, 0.75))
    folded = fold(toy)
    engine = Engine(folded)
    assert "toy" in [s.name for s in engine.steps]
    # tolerance: float32 engine against the float64 reference, as in verify's end-to-end check
    ref = reference_forward(folded, x)
    np.testing.assert_allclose(engine.run(x), ref, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(ref).max()))


def test_training_runs_the_new_kind(toy_registered):
    model = synthetic_model("plain_ternary_cnn", seed=2, channels=(4, 6), input_size=8)
    toy = with_toy(model, "features.1")
    net = Network(toy.copy(), dtype=np.float64)
    x = synthetic_input(toy, 3, seed=3)
    logits = net.forward(x, train=True)
    grads = net.backward(np.ones_like(logits))
    assert grads and all(np.all(np.isfinite(g)) for g in grads.values())
    # the toy layer's gradient is dy·1{|x| < limit}: check it on the layer alone
    layer = toy["toy"]
    xin = np.array([[-2.0, -0.5, 0.0, 0.74, 0.76, 3.0]])
    y, cache = HardTanh().train_forward(layer, [xin], net)
    assert y.tolist() == [[-0.75, -0.5, 0.0, 0.74, 0.75, 0.75]]
    assert HardTanh().train_backward(layer, np.ones_like(xin), cache, net, {})[0].tolist() == [[0, 1, 1, 1, 0, 0]]


def test_attribute_types_are_checked(toy_registered):
    model = synthetic_model("plain_ternary_cnn", seed=2, channels=(4, 6), input_size=8)
    with pytest.raises(ModelError, match=r"layer 'toy'.*'limit' must be a finite number >= 0.0, got 'x'"):
        with_toy(model, "features.1", limit="x")


def test_an_unregistered_kind_is_an_error_everywhere():
    model = synthetic_model("plain_ternary_cnn", seed=2, channels=(4, 6), input_size=8)
    with pytest.raises(ModelError, match=r"layer 'toy'.*unknown kind 'toy_hardtanh'; known kinds: conv"):
        with_toy(model, "features.1")
    with registered(HardTanh):
        toy = with_toy(model, "features.1")
    x = synthetic_input(model, 1)
    for run in (lambda: infer_shapes(toy), lambda: reference_forward(toy, x), lambda: fold(toy),
                lambda: Network(toy.copy())):
        with pytest.raises(ModelError, match="unknown kind 'toy_hardtanh'"):
            run()

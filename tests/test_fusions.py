"""The engine's rewrites (sttn_sim.fusions): listed, one per class, meaning-preserving."""

from __future__ import annotations

import numpy as np
import pytest

from sttn_sim import Engine, fold
from sttn_sim.fusions import (
    ENGINE_REWRITES,
    FuseConvBatchNorm,
    FuseConvMaxPool,
    FusePReLU,
    FuseResidualAdd,
    FuseTernaryBatchNorm,
    fuse_for_engine,
)
from sttn_sim.graph import Transformation
from sttn_sim.reference import reference_forward, run_reference
from sttn_sim.synthetic import synthetic_input, synthetic_model


def test_the_rewrites_are_listed_in_order():
    assert [r.__name__ for r in ENGINE_REWRITES] == [
        "FuseConvBatchNorm", "FuseTernaryBatchNorm", "FuseResidualAdd", "FusePReLU", "FuseConvMaxPool"]
    assert all(issubclass(r, Transformation) for r in ENGINE_REWRITES)


@pytest.fixture(scope="module")
def resnet():
    model = synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10)
    return fold(model)


@pytest.mark.parametrize("stage", range(len(ENGINE_REWRITES)), ids=[r.__name__ for r in ENGINE_REWRITES])
def test_each_rewrite_keeps_the_model_meaning(resnet, stage):
    """After the rewrites before it, every rewrite (until it changes nothing) changes the
    graph, and the reference gives the same values under every kept name."""
    earlier = fuse_for_engine(resnet, ENGINE_REWRITES[:stage])
    fused = earlier.transform(ENGINE_REWRITES[stage]())
    assert len(fused) < len(earlier)
    x = synthetic_input(resnet, 2, seed=5)
    before, after = run_reference(resnet, x), run_reference(fused, x)
    for name, value in after.outputs.items():
        # tolerance: BN folded into weights/scales in float64 reorders a few float64 products
        np.testing.assert_allclose(value, before.outputs[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_one_match_per_call_and_changed_flags(resnet):
    once, changed = FuseTernaryBatchNorm().apply(resnet)
    assert changed and len(once) == len(resnet) - 1
    # the first folded ternary layer with a BN after it is fused, under the BN's name
    fused = once["features.4.bn_add1"]
    assert fused.kind == "ternary_conv" and fused.attrs["fused_from"] == ["features.4.conv1", "features.4.bn_add1"]
    g = resnet["features.4.bn_add1"].params
    gain = np.asarray(g["weight"], np.float64) / np.sqrt(np.asarray(g["running_var"], np.float64) + 1e-5)
    np.testing.assert_allclose(fused.params["scale"], gain * resnet["features.4.conv1"].params["scale"], rtol=1e-15)
    done = resnet.transform(FuseTernaryBatchNorm())
    assert FuseTernaryBatchNorm().apply(done)[1] is False


def test_channel_pad_shortcut_is_absorbed(resnet):
    fused = fuse_for_engine(resnet)
    layer = fused["features.6.prelu1"]
    assert layer.attrs["fused_from"] == ["features.6.conv1", "features.6.bn_add1", "features.6.shortcut_pad",
                                         "features.6.add1", "features.6.prelu1"]
    assert layer.inputs[1] == resnet["features.6.shortcut_pad"].inputs[0]  # the residual before zero-padding
    assert "slope" in layer.params and "features.6.shortcut_pad" not in fused.layer_names


def test_order_matters_prelu_is_last(resnet):
    """PReLU first would leave BN and add unfused: the later rewrites refuse a layer that
    already has a tail, so the epilogue order acc→BN→add→PReLU is never broken."""
    prelu_first = resnet.transform(FusePReLU())
    assert prelu_first.layer_names == resnet.layer_names  # nothing: every PReLU follows an add or a BN here
    stem_only = resnet.transform(FuseConvBatchNorm()).transform(FusePReLU())
    assert stem_only["features.2"].attrs["fused_from"] == ["features.0", "features.1", "features.2"]
    chained = resnet.transform(FuseTernaryBatchNorm()).transform(FusePReLU())
    again = chained.transform(FuseResidualAdd())
    assert again.layer_names == chained.layer_names or all(
        "slope" not in l.params for l in again.layers if len(l.inputs) == 2)


def test_engine_runs_the_rewritten_graph(resnet):
    engine = Engine(resnet)
    assert [s.name for s in engine.steps] == engine.graph.layer_names
    assert engine.fused["features.0"] == ["features.1", "features.2", "features.3"]
    x = synthetic_input(resnet, 2, seed=6)
    ref = reference_forward(resnet, x)
    # tolerance: float32 engine vs float64 reference end to end (verify's END_TO_END_RTOL)
    np.testing.assert_allclose(engine.run(x), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_conv_maxpool_takes_the_pool_window_last(resnet):
    """The stem's pooling becomes the fused conv's ``pool`` attribute (after BN and
    PReLU), under the pool's name, read by the pool's consumers; a second pass changes
    nothing."""
    before = fuse_for_engine(resnet, ENGINE_REWRITES[:-1])
    fused, changed = FuseConvMaxPool().apply(before)
    assert changed and len(fused) == len(before) - 1
    stem = fused["features.3"]
    assert stem.kind == "conv" and stem.attrs["pool"] == [3, 2, 1]
    assert stem.attrs["fused_from"] == ["features.0", "features.1", "features.2", "features.3"]
    assert "slope" in stem.params
    assert FuseConvMaxPool().apply(fused)[1] is False


def test_engine_stem_with_pooling_is_the_separate_stem_then_pool(resnet, monkeypatch):
    """The engine's fused stem + max pooling gives, bit for bit, the stem's output pooled
    by the engine's separate max pooling kernel."""
    import sttn_sim.engine as engine_module
    from sttn_sim.kernels.fused import maxpool2d

    x = synthetic_input(resnet, 3, seed=7)
    with_pool = Engine(resnet)
    monkeypatch.setattr(engine_module, "fuse_for_engine", lambda m: fuse_for_engine(m, ENGINE_REWRITES[:-1]))
    without = Engine(resnet)
    stem_pooled = with_pool.steps[0].run([x], None)[0]
    stem = without.steps[0].run([x], None)[0]
    assert with_pool.steps[0].name == "features.3" and without.steps[0].name == "features.2"
    assert np.array_equal(stem_pooled.view(np.int32), maxpool2d(stem, 3, 2, 1).view(np.int32))
    assert np.array_equal(with_pool.run(x).view(np.int32), without.run(x).view(np.int32))

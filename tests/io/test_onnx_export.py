"""sttn_sim.io.onnx_export: folded models → ONNX (standard operators) → onnxruntime.

Tolerances (docs/design.md §2.6): onnxruntime computes in float32, the reference in
float64, so logits agree within END_TO_END_RTOL·max(1, |logit|) when no activation code
differs; activation codes are compared with ``==`` layer by layer (the thresholds are
rounded for float32 so that the float32 comparison is the model's rule; a code may differ
only where the reference value lies within float32 rounding of a threshold — none does
on these inputs, and the test says how many would)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sttn_sim import fold, synthetic_input, synthetic_model
from sttn_sim.check.engine_check import END_TO_END_RTOL
from sttn_sim.errors import CheckpointError, ModelError
from sttn_sim.io.onnx_export import export_onnx, onnx_model
from sttn_sim.reference import run_reference


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": np.asarray(x, np.float32)})))


def thresholds(model):
    return [l.name for l in model.layers if l.kind == "threshold"]


@pytest.fixture(scope="module")
def resnet():
    return fold(synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10))


def check_agreement(folded, path, x):
    """Logits within the float32 tolerance, identical top-1, every code equal."""
    out = run_onnx(path, x)
    ref = run_reference(folded, x.astype(np.float64))
    for name in thresholds(folded):
        assert out[name].shape == ref.outputs[name].shape
        assert int(np.sum(out[name] != ref.outputs[name])) == 0, name
    diff = np.max(np.abs(out["logits"] - ref.logits))
    assert diff <= END_TO_END_RTOL * max(1.0, np.max(np.abs(ref.logits)))
    assert np.array_equal(out["logits"].argmax(1), ref.logits.argmax(1))
    return diff


def test_resnet_through_onnxruntime_layer_by_layer(resnet, tmp_path):
    path = export_onnx(resnet, tmp_path / "m.onnx", extra_outputs=thresholds(resnet))
    onnx.checker.check_model(str(path), full_check=True)
    x = synthetic_input(resnet, 16, seed=3).astype(np.float32)
    check_agreement(resnet, path, x)


def test_only_standard_operators_and_a_dynamic_batch(resnet, tmp_path):
    path = export_onnx(resnet, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert {op.domain for op in proto.opset_import} == {""}
    assert all(n.domain == "" for n in proto.graph.node)
    assert {n.op_type for n in proto.graph.node} <= {
        "Conv", "Gemm", "BatchNormalization", "PRelu", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Add", "Pad", "Flatten", "Mul", "GreaterOrEqual", "Less", "Cast", "Sub"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    for n in (1, 5):  # the same file runs any batch size
        assert run_onnx(path, synthetic_input(resnet, n, seed=n))["logits"].shape == (n, 10)


def test_ternary_weights_are_codes_times_scales(resnet):
    proto = onnx_model(resnet)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    layer = resnet.ternary_layers()[3]
    codes, scale = layer.params["codes"], layer.params["scale"]
    want = (codes * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    assert np.array_equal(inits[f"{layer.name}.weight"], want)


@pytest.mark.parametrize("ttq", [False, True])
@pytest.mark.parametrize("tie", ["sttn", "half_even"])
def test_exact_ties_and_ttq_scales(tie_model, tie, ttq, tmp_path):
    """Dyadic values on the thresholds: both tie rules are reproduced exactly by the
    exported comparisons (strict sides included), and TTQ layers export as convolutions
    with W_p/W_n weights."""
    folded = fold(tie_model(tie, ttq))
    path = export_onnx(folded, tmp_path / "t.onnx", extra_outputs=thresholds(folded))
    x = tie_model.input(folded, 6)
    ref = run_reference(folded, x)
    assert sum(int(np.sum(np.abs(v) == 0.5)) for v in ref.pre_activations.values()) > 0 or ttq
    check_agreement(folded, path, x)


def test_integer_thresholds_at_midpoints_survive_large_biases(tmp_path):
    """A layer whose integer thresholds are compared on s·acc + b: a bias of 1000·s
    still leaves the codes exact (float32 error far below s/2)."""
    folded = fold(synthetic_model("plain_ternary_cnn", seed=2))
    for layer in folded.ternary_layers():
        layer.params["bias"] = layer.params["bias"] + 1000 * layer.params["scale"]
    # folded thresholds stay as they are: their meaning is on acc, not on y
    path = export_onnx(folded, tmp_path / "b.onnx", extra_outputs=thresholds(folded))
    x = synthetic_input(folded, 8, seed=1)
    out, ref = run_onnx(path, x), run_reference(folded, x.astype(np.float64))
    for name in thresholds(folded):
        if folded[name].attrs["integer"]:
            assert np.array_equal(out[name], ref.outputs[name]), name


def test_unsafe_integer_thresholds_are_refused():
    folded = fold(synthetic_model("plain_ternary_cnn", seed=2))
    layer = next(l for l in folded.ternary_layers() if l.attrs["epilogue"] == "none")
    layer.params["bias"] = layer.params["bias"] + 1e9 * layer.params["scale"]
    with pytest.raises(CheckpointError, match=rf"layer '.*' channel \d+: float32 error .* half the scale"):
        onnx_model(folded)


def test_refuses_an_unfolded_model_and_unknown_outputs(resnet):
    with pytest.raises(ModelError, match="needs a folded model.*fold"):
        onnx_model(synthetic_model("ternary_mlp"))
    with pytest.raises(ModelError, match="extra_outputs: no layer 'nope'"):
        onnx_model(resnet, extra_outputs=["nope"])


def test_written_atomically(resnet, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CheckpointError):
        export_onnx(resnet, tmp_path / "sub")  # a folder: nothing replaced, nothing left behind
    export_onnx(resnet, target)
    assert onnx.load(str(target)).graph.name == resnet.arch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "sub"]

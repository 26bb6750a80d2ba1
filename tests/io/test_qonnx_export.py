"""sttn_sim.io.qonnx_export: folded models → QONNX (FINN dialect), checked with qonnx's own tools.

qonnx's executor (execute_onnx) runs Quant and MultiThreshold in numpy and the standard
nodes in onnxruntime, all float32: codes are compared with ``==`` layer by layer, logits
within END_TO_END_RTOL·max(1, |logit|) against the float64 reference (docs/design.md §2.6).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model
from qonnx.util.inference_cost import inference_cost

from sttn_sim import fold, synthetic_input, synthetic_model
from sttn_sim.check.engine_check import END_TO_END_RTOL
from sttn_sim.errors import CheckpointError
from sttn_sim.io.onnx_common import QONNX_DOMAIN
from sttn_sim.io.qonnx_export import export_qonnx, qonnx_model
from sttn_sim.reference import run_reference
from sttn_sim.stats.profile import TERNARY_BITS, model_profile

BATCH = 4


def thresholds(model):
    return [l.name for l in model.layers if l.kind == "threshold"]


def qonnx_run(wrapper, x, names):
    """Outputs of qonnx's executor by our names (cleanup renames tensors; the order stays)."""
    out = execute_onnx(wrapper, {wrapper.graph.input[0].name: np.asarray(x, np.float32)})
    return dict(zip(names, (out[o.name] for o in wrapper.graph.output)))


@pytest.fixture(scope="module")
def resnet():
    return fold(synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10))


@pytest.fixture(scope="module")
def resnet_file(resnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("qonnx") / "m.onnx"
    return export_qonnx(resnet, path, extra_outputs=thresholds(resnet), batch=BATCH)


def test_qonnx_tools_load_infer_and_clean_it(resnet_file):
    w = ModelWrapper(str(resnet_file))
    w = w.transform(InferShapes()).transform(InferDataTypes())
    mt = w.get_nodes_by_op_type("MultiThreshold")
    assert len(mt) == 16 and all(n.domain == QONNX_DOMAIN for n in mt)
    assert all(w.get_tensor_datatype(n.output[0]) == DataType["TERNARY"] for n in mt)
    quant = w.get_nodes_by_op_type("Quant")
    assert len(quant) == 16
    for node in quant:
        bits = w.get_initializer(node.input[3])
        assert float(bits) == 2 and w.get_initializer(node.input[2]) == 0
        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["narrow"] == 1
        assert w.get_initializer(node.input[1]).shape[1:] == (1, 1, 1)  # per output channel
    cleaned = cleanup_model(w)
    assert len(cleaned.graph.node) > 0 and cleaned.graph.input[0].name


def test_qonnx_executor_reproduces_codes_and_logits(resnet, resnet_file):
    w = cleanup_model(ModelWrapper(str(resnet_file)).transform(InferShapes()).transform(InferDataTypes()))
    x = synthetic_input(resnet, BATCH, seed=5).astype(np.float32)
    out = qonnx_run(w, x, ["logits"] + thresholds(resnet))
    ref = run_reference(resnet, x.astype(np.float64))
    for name in thresholds(resnet):
        assert int(np.sum(out[name] != ref.outputs[name])) == 0, name
    assert np.max(np.abs(out["logits"] - ref.logits)) <= END_TO_END_RTOL * max(1.0, np.max(np.abs(ref.logits)))
    assert np.array_equal(out["logits"].argmax(1), ref.logits.argmax(1))


@pytest.mark.parametrize("tie", ["sttn", "half_even"])
def test_strict_and_non_strict_sides_on_exact_ties(tie_model, tie, tmp_path):
    folded = fold(tie_model(tie))
    x = tie_model.input(folded, 2)
    path = export_qonnx(folded, tmp_path / "t.onnx", extra_outputs=thresholds(folded), batch=2)
    w = ModelWrapper(str(path)).transform(InferShapes()).transform(InferDataTypes())
    out = qonnx_run(w, x, ["logits"] + thresholds(folded))
    ref = run_reference(folded, x)
    for name in thresholds(folded):
        assert np.array_equal(out[name], ref.outputs[name]), name


def test_inference_cost_agrees_with_the_profile(resnet, resnet_file):
    """qonnx's inference_cost against sttn_sim's profile: MACs, BOPs, weight counts and
    weight bits agree.  By definition qonnx counts the whole batch (× BATCH), counts a
    scaled 2-bit Quant weight as SCALEDINT<2> (2 bits, its scale not counted, as in
    sttn_sim's packed size), ternary MACs as TERNARY × SCALEDINT<2> (2·2 bit operations,
    sttn_sim's BOPs), and adds activation memory (mem_o), which sttn_sim does not count;
    MultiThreshold, PRelu and pooling have no MACs in either."""
    prof = model_profile(resnet)
    totals = prof.totals()
    ternary_w = totals["ternary_weights"]
    float_w = sum(p.weights for p in prof.layers if p.form is None)
    cost = inference_cost(str(resnet_file), output_json=None, preprocess=True, discount_sparsity=False)["total_cost"]
    assert cost["total_macs"] == BATCH * totals["macs"]
    assert cost["op_mac_TERNARY_SCALEDINT<2>"] == BATCH * totals["ternary_macs"]
    assert cost["total_bops"] == BATCH * totals["bops"]
    assert cost["total_mem_w_elems"] == ternary_w + float_w
    assert cost["mem_w_SCALEDINT<2>"] == ternary_w
    assert cost["total_mem_w_bits"] == TERNARY_BITS * ternary_w + 32 * float_w
    assert 8 * sum(p.packed_bytes for p in prof.ternary()) == TERNARY_BITS * ternary_w  # whole bytes per layer here


def test_ttq_layers_are_refused_with_their_name(tie_model):
    with pytest.raises(CheckpointError, match=r"layer 'conv1' has two scales.*--onnx"):
        qonnx_model(fold(tie_model("sttn", ttq=True)))

"""sttn_sim.io.qonnx_import: QONNX ternary models into sttn_sim (Brevitas fixture, round trips, bad files).

The Brevitas fixture (tests/fixtures/make_brevitas_fixture.py, run in a separate
environment with Brevitas and PyTorch) is read here without either.  Brevitas computed
its logits in float32, the reference computes in float64 and the engine in float32, so
logits agree within END_TO_END_RTOL·max(1, |logit|) (docs/design.md §2.6) when no
activation code differs — and none does: the ternary codes are compared exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.quant import quant as qonnx_quant

from sttn_sim import Engine, fold, load_checkpoint, synthetic_input, synthetic_model, verify_model
from sttn_sim.check.engine_check import END_TO_END_RTOL
from sttn_sim.errors import CheckpointError
from sttn_sim.io import sniff_format
from sttn_sim.io.onnx_export import export_onnx
from sttn_sim.io.qonnx_export import export_qonnx
from sttn_sim.io.qonnx_import import load_qonnx
from sttn_sim.reference import reference_forward, run_reference
from sttn_sim.rules import comparison_thresholds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BREVITAS = FIXTURES / "brevitas_ternary_cnn.onnx"
BREVITAS_LOGITS = FIXTURES / "brevitas_ternary_cnn_logits.npz"


@pytest.fixture(scope="module")
def brevitas():
    with np.load(BREVITAS_LOGITS) as npz:
        return load_checkpoint(BREVITAS), npz["images"], npz["logits"]


def within_end_to_end(got, want) -> bool:
    return float(np.max(np.abs(got - want))) <= END_TO_END_RTOL * max(1.0, float(np.max(np.abs(want))))


# --------------------------------------------------------------------------------------
# the Brevitas fixture


def test_brevitas_fixture_is_sniffed_and_mapped(brevitas):
    model, _, _ = brevitas
    assert sniff_format(BREVITAS) == "onnx"
    assert model.form == "merged" and model.input_shape == (1, 8, 8)
    kinds = [l.kind for l in model.layers]
    assert kinds.count("ter_conv") == 2 and kinds.count("ter_linear") == 1 and kinds[0] == "conv"
    # layer names from the exporter's module names (PyTorch's namespace metadata)
    assert [l.name for l in model.ternary_layers()] == ["conv2", "conv3", "fc"]
    acts = [l for l in model.layers if l.kind == "ternary_act"]
    assert len(acts) == 3 and all(a.attrs["tie"] == "half_even" for a in acts)
    # the pooled activation: MaxPool moved before its (non-decreasing) activation
    assert kinds[kinds.index("maxpool") + 1] == "ternary_act"


def test_brevitas_weight_codes_are_qonnx_quant(brevitas):
    """Our codes (the half_even rule at ±s/2, exact) equal qonnx's own Quant of the stored
    float weights (float32 division and round-half-even) on every weight of the fixture."""
    model, _, _ = brevitas
    proto = onnx.load(str(BREVITAS))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    quants = [n for n in proto.graph.node if n.op_type == "Quant" and n.input[0] in inits]
    assert len(quants) == 4
    ternary = [l for l in model.layers if l.kind in ("conv", "ter_conv", "ter_linear")]
    for node, layer in zip(quants, ternary):
        w, s = inits[node.input[0]], inits[node.input[1]]
        want = qonnx_quant(w, s, np.float32(0), np.float32(2), 1, 1, "ROUND") / s
        codes = np.sign(layer.params["weight"])
        assert np.array_equal(codes, np.asarray(want, np.float64)), layer.name


def test_brevitas_fixture_matches_brevitas_logits(brevitas):
    model, images, logits = brevitas
    folded = fold(model)
    ref = reference_forward(folded, images.astype(np.float64))
    engine = Engine(folded).run(images)
    assert within_end_to_end(ref, logits) and within_end_to_end(engine, logits)
    assert np.array_equal(ref.argmax(1), logits.argmax(1)) and np.array_equal(engine.argmax(1), logits.argmax(1))
    # and qonnx's own executor on the same file agrees with Brevitas
    w = ModelWrapper(str(BREVITAS))
    out = execute_onnx(w, {w.graph.input[0].name: images[:1]})[w.graph.output[0].name]
    assert within_end_to_end(out, logits[:1])


def test_brevitas_fixture_verifies_with_zero_mismatches(brevitas):
    model, images, _ = brevitas
    report = verify_model(model, x=images.astype(np.float64), engine=True)
    assert report.passed, report.to_text()
    assert (report.table["code_mismatches"].dropna() == 0).all()
    engine = report.engine.table
    assert (engine["acc_mismatches"].dropna() == 0).all() and len(engine["acc_mismatches"].dropna()) == 3
    assert (engine["code_mismatches"].dropna() == 0).all()
    assert report.engine.end_to_end_code_differences == 0


# --------------------------------------------------------------------------------------
# round trip: folded → QONNX → import → fold == folded


def _same_folded(a, b):
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    for la in a.layers:
        lb = b[la.name]
        assert la.kind == lb.kind, la.name
        if la.ternary_form == "folded":
            assert np.array_equal(la.params["codes"], lb.params["codes"]), la.name
            assert la.attrs["epilogue"] == lb.attrs["epilogue"], la.name
        if la.kind == "threshold":
            assert la.attrs["integer"] == lb.attrs["integer"], la.name
            assert np.array_equal(la.params["direction"], lb.params["direction"]), la.name
            active = la.params["direction"] != 0
            ca = comparison_thresholds(la.params["lo"], la.params["hi"], integer=la.attrs["integer"],
                                       tie=la.attrs.get("tie", "sttn"))
            cb = comparison_thresholds(lb.params["lo"], lb.params["hi"], integer=lb.attrs["integer"],
                                       tie=lb.attrs.get("tie", "sttn"))
            for ta, tb in zip(ca, cb):  # what the engine compares with: equal
                assert np.array_equal(ta[active], tb[active]), la.name
            assert np.array_equal(la.params["constant"][~active], lb.params["constant"][~active]), la.name


@pytest.mark.parametrize("name, kwargs", [("sttn_resnet18", dict(width=0.125, input_size=32, num_classes=10)),
                                          ("plain_ternary_cnn", {}), ("ternary_mlp", {})])
def test_round_trip_through_qonnx(name, kwargs, tmp_path):
    folded = fold(synthetic_model(name, seed=4, **kwargs))
    again = fold(load_checkpoint(export_qonnx(folded, tmp_path / "m.onnx")))
    _same_folded(folded, again)
    x = synthetic_input(folded, 6, seed=2)
    a, b = reference_forward(folded, x), reference_forward(again, x)
    # the file holds float32 scales, biases and BN parameters: float32 rounding of the
    # parameters (2⁻²⁴ relative), through a few thousand terms
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.max(np.abs(a)))
    ea, eb = Engine(folded).run(x.astype(np.float32)), Engine(again).run(x.astype(np.float32))
    assert np.max(np.abs(ea - eb)) <= 1e-5 * max(1.0, np.max(np.abs(ea)))


@pytest.mark.parametrize("tie", ["sttn", "half_even"])
def test_round_trip_keeps_exact_ties(tie_model, tie, tmp_path):
    folded = fold(tie_model(tie))
    again = fold(load_checkpoint(export_qonnx(folded, tmp_path / "t.onnx")))
    _same_folded(folded, again)
    x = tie_model.input(folded, 4)
    ra, rb = run_reference(folded, x), run_reference(again, x)
    for layer in folded.layers:
        if layer.kind == "threshold":
            assert np.array_equal(ra.outputs[layer.name], rb.outputs[layer.name]), layer.name


# --------------------------------------------------------------------------------------
# bad files: one clear error, nothing executed


def _edit(proto, path):
    onnx.save_model(proto, str(path))
    return path


def test_truncated_and_malformed_files(tmp_path):
    data = BREVITAS.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.onnx: not a valid ONNX file"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07\x12" + bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"junk\.onnx: (not a valid ONNX file|an ONNX file without a graph)"):
        load_qonnx(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a recognised checkpoint"):
        load_checkpoint(empty)


def test_plain_onnx_is_not_qonnx(tmp_path):
    path = export_onnx(fold(synthetic_model("plain_ternary_cnn")), tmp_path / "plain.onnx")
    with pytest.raises(CheckpointError, match=r"plain\.onnx: .*not QONNX"):
        load_checkpoint(path)


def test_unsupported_operator_names_the_node(tmp_path):
    proto = onnx.load(str(BREVITAS))
    node = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    node.op_type = "LpPool"
    with pytest.raises(CheckpointError, match=r"node 'node_max_pool2d' \(LpPool\): unsupported operator; supported: "
                                              r"Conv, Gemm"):
        load_checkpoint(_edit(proto, tmp_path / "lp.onnx"))


def test_other_bit_widths_name_the_node(tmp_path):
    proto = onnx.load(str(BREVITAS))
    act = next(n for n in proto.graph.node if n.op_type == "Quant" and "act" in n.input[1])
    four = onnx.numpy_helper.from_array(np.float32(4), "four_bits")
    proto.graph.initializer.append(four)
    act.input[3] = "four_bits"
    with pytest.raises(CheckpointError, match=rf"node '{act.name}' \(Quant\): bit width \[4.0\].*supported is Quant "
                                              r"with bit width 2"):
        load_checkpoint(_edit(proto, tmp_path / "int4.onnx"))


def test_shape_mismatch_names_the_layer(tmp_path):
    proto = onnx.load(str(BREVITAS))
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    for init in proto.graph.initializer:
        if init.name == bn.input[1]:
            init.CopyFrom(onnx.numpy_helper.from_array(np.ones(5, np.float32), init.name))
    with pytest.raises(CheckpointError, match=r"shape\.onnx: .*layer 'bn1'.*'weight' has 5 entries"):
        load_checkpoint(_edit(proto, tmp_path / "shape.onnx"))


def test_external_data_inside_the_folder_is_read_outside_is_refused(tmp_path):
    proto = onnx.load(str(BREVITAS))
    inside = tmp_path / "inside"
    inside.mkdir()
    onnx.save_model(proto, str(inside / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    model = load_checkpoint(inside / "m.onnx")
    assert len(model.ternary_layers()) == 3
    # the same file pointing one folder up
    (tmp_path / "weights.bin").write_bytes((inside / "weights.bin").read_bytes())
    escaped = onnx.load(str(inside / "m.onnx"), load_external_data=False)
    for init in escaped.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.onnx").write_bytes(escaped.SerializeToString())
    with pytest.raises(CheckpointError, match=r"external data '\.\./weights\.bin' outside the model's folder"):
        load_checkpoint(outside / "m.onnx")
    for init in escaped.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = str(tmp_path / "weights.bin")
    (outside / "m.onnx").write_bytes(escaped.SerializeToString())
    with pytest.raises(CheckpointError, match="outside the model's folder"):
        load_checkpoint(outside / "m.onnx")

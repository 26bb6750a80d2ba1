"""sttn_sim.io.qonnx_import: QONNX ternary models into sttn_sim (Brevitas fixture, round trips, bad files).

The Brevitas fixture (tests/fixtures/make_brevitas_fixture.py, run in a separate
environment with Brevitas and PyTorch) is read here without either.  Brevitas computed
its logits in float32, the reference computes in float64 and the engine in float32, so
logits agree within END_TO_END_RTOL·max(1, |logit|) (docs/design.md §2.6) when no
activation code differs — and none does: the ternary codes are compared exactly.
Small foreign graphs (written here with onnx.helper) are compared with qonnx's own
executor: a weight's scale belongs to the consuming op's output axis.
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


# --------------------------------------------------------------------------------------
# foreign graphs written with onnx.helper: the weight's output axis is the consumer's


#: qonnx executes in float32 (onnxruntime node by node, NumPy for Quant / MultiThreshold),
#: the reference in float64 on the same float32 file values: float32 rounding (2⁻²⁴
#: relative) through at most a few hundred terms per value, when no activation code differs
#: (the random data has no value within 1e-6 of a threshold); a weight scale on the wrong
#: axis changes logits by ~0.1
QONNX_EXEC_RTOL = 1e-5


class _Graph:
    """A QONNX graph as another tool writes it (onnx.helper, qonnx's domain)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.inits, self.nodes = [], []

    def const(self, name, a, dtype=np.float32) -> str:
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(a, dtype), name))
        return name

    def node(self, op, inputs, name, domain="", **attrs) -> str:
        self.nodes.append(onnx.helper.make_node(op, list(inputs), [name], name=name, domain=domain, **attrs))
        return name

    def quant(self, x, scale, name) -> str:
        """A ternary Quant (bit width 2, signed, narrow, zero point 0, ROUND) of ``x``."""
        ins = [x, self.const(f"{name}.scale", scale), self.const(f"{name}.zeropt", 0.0),
               self.const(f"{name}.bits", 2.0)]
        return self.node("Quant", ins, name, domain="qonnx.custom_op.general", signed=1, narrow=1,
                         rounding_mode="ROUND")

    def ternary_weight(self, name, shape, scale_shape) -> str:
        """A float weight of ``shape`` through a Quant whose scale has ``scale_shape``: values
        up to ±1.5 scales, so all three codes occur."""
        scale = self.rng.uniform(0.05, 0.3, scale_shape)
        w = self.rng.uniform(-1.5, 1.5, shape) * scale
        return self.quant(self.const(f"{name}.w", w), scale, f"{name}.q")

    def batchnorm(self, x, channels, name) -> str:
        rng = self.rng
        params = [self.const(f"{name}.{k}", v) for k, v in (("gamma", rng.uniform(0.5, 1.5, channels)),
                                                             ("beta", rng.normal(0, 0.3, channels)),
                                                             ("mean", rng.normal(0, 0.3, channels)),
                                                             ("var", rng.uniform(0.5, 2, channels)))]
        return self.node("BatchNormalization", [x, *params], name, epsilon=1e-5)

    def save(self, path, input_shape, output, output_shape) -> Path:
        graph = onnx.helper.make_graph(
            self.nodes, "foreign", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, input_shape)],
            [onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, output_shape)], self.inits)
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13),
                                                             onnx.helper.make_opsetid("qonnx.custom_op.general", 1)])
        onnx.save_model(proto, str(path))
        return Path(path)


def _qonnx_logits(path, x):
    from qonnx.transformation.infer_shapes import InferShapes

    w = ModelWrapper(str(path)).transform(InferShapes())
    return execute_onnx(w, {"input": x.astype(np.float32)})[w.graph.output[0].name]


def _agrees_with_qonnx(path, x):
    got = reference_forward(load_checkpoint(path), x.astype(np.float64))
    want = _qonnx_logits(path, x)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) <= QONNX_EXEC_RTOL * max(1.0, float(np.max(np.abs(want))))


def _one_layer(op, attrs, w_shape, s_shape, features, classes, path):
    """input [4, features] → ternary Quant (scale 0.5) → ``op`` with a Quant'ed weight."""
    g = _Graph(seed=3)
    a = g.quant("input", 0.5, "act")
    ins = [a, g.ternary_weight("fc", w_shape, s_shape)]
    if op == "Gemm":
        ins.append(g.const("fc.bias", g.rng.normal(0, 0.3, classes)))
    g.node(op, ins, "fc", **attrs)
    return g.save(path, [4, features], "fc", [4, classes])


@pytest.mark.parametrize("op, attrs, w_shape, s_shape", [
    ("MatMul", {}, (24, 10), (1, 10)),            # [in, out], one scale per output (axis 1)
    ("MatMul", {}, (16, 16), (1, 16)),            # square: axis 1 still the outputs
    ("MatMul", {}, (24, 10), ()),                 # one scale (the audit's crash)
    ("Gemm", {"transB": 0}, (24, 10), (1, 10)),   # [in, out]
    ("Gemm", {"transB": 0}, (24, 10), (10,)),     # 1-D: aligned on the right, axis 1
    ("Gemm", {"transB": 1}, (10, 24), (10, 1)),   # [out, in], axis 0
], ids=["matmul", "matmul-square", "matmul-scalar", "gemm-transB0", "gemm-transB0-1d", "gemm-transB1"])
def test_linear_weight_scale_along_the_output_axis(op, attrs, w_shape, s_shape, tmp_path):
    features, classes = (w_shape[1], w_shape[0]) if attrs.get("transB") else w_shape
    path = _one_layer(op, attrs, w_shape, s_shape, features, classes, tmp_path / "fc.onnx")
    model = load_checkpoint(path)
    assert [l.kind for l in model.layers] == ["ternary_act", "ter_linear"]
    assert model["fc"].params["weight"].shape == (classes, features)
    x = np.random.default_rng(1).normal(0, 1, (4, features))
    assert _agrees_with_qonnx(path, x)


@pytest.mark.parametrize("op, attrs, s_shape, match", [
    ("MatMul", {}, (16, 1), (r"\[16, 1\] \(along axis 0\) .*\(MatMul's \[in, out\]\): expected one scale, or one "
                             r"per output channel \(along axis 1 only\)")),
    ("Gemm", {"transB": 0}, (16, 1), r"\[16, 1\] \(along axis 0\) .*Gemm transB=0's \[in, out\].*axis 1 only"),
    ("Gemm", {"transB": 1}, (1, 16), r"\[1, 16\] \(along axis 1\) .*Gemm transB=1's \[out, in\].*axis 0 only"),
    ("Gemm", {"transB": 1}, (16,), r"\[16\] \(along axis 1\) .*Gemm transB=1's \[out, in\].*axis 0 only"),
    ("MatMul", {}, (16, 16), r"\[16, 16\] \(along axis 0, 1\)"),
], ids=["matmul-per-input", "gemm-transB0-per-input", "gemm-transB1-per-input", "gemm-transB1-1d",
        "matmul-per-element"])
def test_weight_scale_along_the_input_axis_is_refused(op, attrs, s_shape, match, tmp_path):
    """A square weight, so only the axis tells outputs from inputs: a scale per input is no
    per-output-channel ternary scale."""
    path = _one_layer(op, attrs, (16, 16), s_shape, 16, 16, tmp_path / "fc.onnx")
    with pytest.raises(CheckpointError, match=rf"fc\.onnx: node 'fc' \({op}\): weight scale of shape {match}"):
        load_checkpoint(path)


def test_weight_scale_per_input_channel_of_a_conv_is_refused(tmp_path):
    g = _Graph()
    g.node("Conv", [g.quant("input", 0.5, "act"), g.ternary_weight("c", (8, 8, 3, 3), (1, 8, 1, 1))], "c",
           pads=[1, 1, 1, 1])
    path = g.save(tmp_path / "conv.onnx", [1, 8, 4, 4], "c", [1, 8, 4, 4])
    with pytest.raises(CheckpointError, match=r"node 'c' \(Conv\): weight scale of shape \[1, 8, 1, 1\] \(along "
                                              r"axis 1\) .*Conv's \[O, I, kH, kW\].*along axis 0 only"):
        load_checkpoint(path)


def test_weight_scale_that_does_not_broadcast_is_refused(tmp_path):
    path = _one_layer("MatMul", {}, (24, 10), (1, 10), 24, 10, tmp_path / "fc.onnx")
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        if init.name == "fc.q.scale":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(3, 0.1, np.float32), init.name))
    with pytest.raises(CheckpointError, match=r"node 'fc\.q' \(Quant\): weight scale of shape \[3\] for a weight "
                                              r"of shape \[24, 10\]: expected a scale that broadcasts"):
        load_checkpoint(_edit(proto, tmp_path / "bad.onnx"))


def test_foreign_cnn_with_multithreshold_concat_and_pools(tmp_path):
    """Float stem, Relu, a FINN-style MultiThreshold (out_scale 0.5, no data_layout, a ±1/0
    direction) and a Quant branch concatenated, AveragePool, GlobalAveragePool, and a
    MatMul head with one scale per output column."""
    g = _Graph(seed=5)
    rng = g.rng
    x = g.node("Relu", [g.node("Conv", ["input", g.const("stem.w", rng.normal(0, 0.4, (8, 3, 3, 3)))], "stem",
                               pads=[1, 1, 1, 1])], "relu")
    a0 = g.quant(x, 0.5, "act0")
    # branch 1: Mul by a direction, MultiThreshold with two thresholds per channel
    b1 = g.batchnorm(g.node("Conv", [a0, g.ternary_weight("c1", (8, 8, 3, 3), (8, 1, 1, 1))], "c1",
                            pads=[1, 1, 1, 1]), 8, "bn1")
    d = g.const("dir", np.array([1, -1, 1, 0, 1, -1, 1, 1]).reshape(1, 8, 1, 1))
    t = np.sort(rng.normal(0, 0.5, (8, 2)), axis=1)
    a1 = g.node("MultiThreshold", [g.node("Mul", [b1, d], "dirmul"), g.const("thr", t)], "thr1",
                domain="qonnx.custom_op.general", out_dtype="INT2", out_scale=0.5, out_bias=-0.5)
    # branch 2: a Quant of the same scale, one weight scale
    b2 = g.batchnorm(g.node("Conv", [a0, g.ternary_weight("c2", (8, 8, 3, 3), ())], "c2", pads=[1, 1, 1, 1]),
                     8, "bn2")
    a2 = g.quant(b2, 0.5, "act2")
    cat = g.node("Concat", [a1, a2], "cat", axis=1)
    b3 = g.batchnorm(g.node("Conv", [cat, g.ternary_weight("c3", (8, 16, 3, 3), (8, 1, 1, 1))], "c3",
                            pads=[1, 1, 1, 1]), 8, "bn3")
    pool = g.node("AveragePool", [g.node("Relu", [b3], "relu3")], "pool", kernel_shape=[2, 2], strides=[2, 2])
    a3 = g.quant(g.batchnorm(pool, 8, "bn4"), 0.5, "act3")
    c4 = g.node("Conv", [a3, g.ternary_weight("c4", (8, 8, 3, 3), (8, 1, 1, 1))], "c4", pads=[1, 1, 1, 1])
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [c4], "gap")], "flat", axis=1)
    a4 = g.quant(flat, 0.25, "act4")
    fc = g.node("MatMul", [a4, g.ternary_weight("fc", (8, 10), (1, 10))], "fc")
    g.node("Add", [fc, g.const("fc.bias", rng.normal(0, 0.3, 10))], "logits")
    path = g.save(tmp_path / "cnn.onnx", [2, 3, 8, 8], "logits", [2, 10])
    model = load_checkpoint(path)
    kinds = [l.kind for l in model.layers]
    assert kinds.count("ter_conv") == 4 and kinds[-1] == "ter_linear" and "threshold" in kinds
    assert {"concat", "avgpool", "relu", "flatten"} <= set(kinds)
    assert model["fc"].params["weight"].shape == (10, 8) and model["fc"].params["bias"].shape == (10,)
    x = np.random.default_rng(2).normal(0, 1, (2, 3, 8, 8))
    assert _agrees_with_qonnx(path, x)
    # and folded, in the engine (float32): end to end within §2.6
    folded = fold(model)
    assert within_end_to_end(Engine(folded).run(x.astype(np.float32)), _qonnx_logits(path, x))

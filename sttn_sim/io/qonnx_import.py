r"""Import QONNX ternary models (Brevitas exports, FINN graphs, sttn_sim's own QONNX files).

``load_qonnx(path)`` (and ``sttn_sim.load_checkpoint(path)``, which recognises an ONNX
file by its content) parses the file with the ``onnx`` package only — protobuf, nothing
in it is executed — and maps its graph onto sttn_sim layer kinds.  The result is a
``"merged"`` model: it folds (:func:`sttn_sim.fold`) and runs in the packed engine.

==============================  =============================================================
QONNX / ONNX node               sttn_sim layer
==============================  =============================================================
``Quant`` on a weight           ternary codes ``t`` and scale ``s`` (bit width 2, signed,
(constant input)                narrow range, zero point 0, rounding ``ROUND``):
                                ``t = clip(round_half_even(w/s), -1, 1)`` element by element
                                (``s`` broadcast onto ``w``, NumPy's rule), i.e. the
                                ``half_even`` rule with thresholds ``±s/2`` (exact); ``s`` is
                                one value or one per output channel of the consuming op
                                (see ``_channel_scale``)
``Quant`` on an activation      ``ternary_act`` with ``lo, hi = ∓s/2`` and ``tie="half_even"``
                                (:func:`sttn_sim.rules.quant_ternary_bounds`); one scale ``s``
``MultiThreshold`` (2 per       ``threshold`` (non-strict, FINN's rule) with ``lo = T₀``,
channel), after an optional     ``hi = T₁``; a preceding ``Mul`` by a per-channel constant in
``Mul`` by ±1/0                 {-1, 0, +1} becomes its direction; ``out_bias = -out_scale``
``Conv`` / ``Gemm`` /           with ternary weights on a ternary activation: ``ter_conv`` /
``MatMul``                      ``ter_linear`` holding ``a·s·t`` (``a`` the activation's scale,
                                absorbed: ``conv(a·q, s·t) = conv(q, a·s·t)``), bias as it is;
                                otherwise (float input, e.g. the stem) ``conv`` / ``linear``
                                with the dequantized or float weights.  The weight's output
                                axis (0 of Conv's ``[O, I, kH, kW]`` and of Gemm
                                ``transB=1``'s ``[out, in]``; 1 of MatMul's and Gemm
                                ``transB=0``'s ``[in, out]``) is moved first
``BatchNormalization``          ``batchnorm``
``Relu`` / ``PRelu``            ``relu`` / ``prelu``
``MaxPool``                     ``maxpool``; on a ternary activation it is moved before the
                                activation: ``max(f(y)) = f(max(y))`` for the non-decreasing
                                activation f, exactly, so the codes stay packed
``AveragePool`` /               ``avgpool``
``GlobalAveragePool``
``Add``                         ``add`` of two values; with a constant, a bias of the
                                weighted layer before it
``Concat`` (channels)           ``concat``
``Pad`` (zeros after the        ``channel_pad`` (the downsampling shortcut)
channels)
``Flatten`` / ``Reshape``       ``flatten`` (a reshape to ``[N, features]`` only)
``Identity``, ``Constant``      dropped / constants
==============================  =============================================================

Anything else — another operator, another bit width, a ``Quant`` with a zero point, a
per-channel activation scale, a weight scale along another axis than the output
channels, a float operation on ternary codes of a scale other than 1 — is refused with a
:class:`~sttn_sim.errors.CheckpointError` naming the file, the node, its op type and what
is supported.  So are a truncated or malformed file, an ONNX graph without QONNX
quantizers ("not QONNX"), shape mismatches (the model's validation, naming the node)
and an external-data reference that points outside the model's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, SttnError
from ..graph import Layer, Model
from ..rules import quant_ternary_bounds, ternary_activation
from ..shapes import infer_shapes
from ..validation import validate_model
from .onnx_common import QONNX_DOMAIN, require_onnx

#: ModelProto field tags (field number << 3 | wire type) that may follow ir_version
_MODEL_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A}
#: QONNX quantizer operators (any domain spelling Brevitas and FINN use)
QONNX_OPS = ("Quant", "MultiThreshold")
SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "PRelu", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Add", "Concat", "Pad", "Flatten", "Reshape", "Identity", "Constant", "Mul",
                 "Quant", "MultiThreshold")
TERNARY_QUANT = "Quant with bit width 2, signed=1, narrow=1, zero point 0, rounding ROUND (ternary)"
#: largest ONNX file read (bytes): far beyond any ternary model this toolkit analyses
MAX_FILE_BYTES = 2**31


def looks_like_onnx(head: bytes) -> bool:
    """True when ``head`` starts like a serialized ONNX ``ModelProto``: field 1
    (``ir_version``, a small varint) followed by another ModelProto field."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 64 and head[2] in _MODEL_TAGS


@dataclass
class _Value:
    """What the importer knows about one ONNX value."""

    layer: str | None = None          # the sttn_sim layer producing it (None: a constant)
    const: np.ndarray | None = None   # constant values
    codes: np.ndarray | None = None   # a Quant'ed weight: ternary codes ...
    scale: np.ndarray | None = None   # ... and its Quant scale (broadcasts onto the codes)
    act_scale: float | None = None    # a ternary activation: value = act_scale · codes
    direction: np.ndarray | None = None  # a Mul by ±1/0 awaiting its MultiThreshold


#: module classes of an exporter's own machinery (not a user's layer)
_MACHINERY = ("brevitas.proxy", "brevitas.export", "brevitas.core")


def _module_name(node) -> str | None:
    """The innermost user module in a node's ``namespace`` metadata (PyTorch's exporter:
    ``": Net/conv1: brevitas.nn.QuantConv2d/conv2d: aten.conv2d.default"`` → ``conv1``)."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    names = []
    for segment in namespace.split("/")[1:-1]:  # without the root model and the final operation
        name, _, cls = segment.partition(":")
        if name.strip() and not cls.strip().startswith(_MACHINERY):
            names.append(name.strip())
    return names[-1] if names else None


def _narrowest(a: np.ndarray) -> np.ndarray:
    """float32 when that is exact (the file's own float32 values, dequantized ``s·t``),
    float64 otherwise (products of two float32 scales)."""
    if a.dtype == np.float64:
        with np.errstate(over="ignore"):
            a32 = a.astype(np.float32)
        if np.array_equal(a32.astype(np.float64), a):
            return a32
    return a


class _Importer:
    def __init__(self, path: Path, proto, onnx):
        self.path, self.proto, self.onnx = path, proto, onnx
        self.graph = proto.graph
        self.layers: list[Layer] = []
        self.values: dict[str, _Value] = {}
        self.names: set[str] = {"input"}
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1

    # -- errors and small helpers -----------------------------------------------------
    def fail(self, node, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: node {node.name or '(unnamed)'!r} ({node.op_type}): {message}")

    def attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def layer_name(self, node, index: int) -> str:
        """The node's module name when the exporter recorded one (PyTorch's ``namespace``
        metadata: ``conv1``, ``layer1.0.bn2``), else its node name, made unique."""
        base = _module_name(node) or (re.sub(r"\s+", "_", node.name) if node.name else f"{node.op_type}_{index}")
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def value(self, node, name: str) -> _Value:
        if name not in self.values:
            raise self.fail(node, f"input {name!r} is produced by no earlier node, initializer or graph input "
                                  f"(nodes must be in topological order)")
        return self.values[name]

    def constant(self, node, name: str) -> np.ndarray:
        v = self.value(node, name)
        if v.const is None:
            raise self.fail(node, f"input {name!r} must be a constant (an initializer)")
        return v.const

    def dynamic(self, node, name: str) -> _Value:
        v = self.value(node, name)
        if v.layer is None and v.const is None and v.codes is None:
            raise self.fail(node, f"input {name!r} has no value")
        if v.layer is None:
            raise self.fail(node, f"input {name!r} is a constant where a computed value was expected")
        return v

    def add(self, node, index: int, kind: str, inputs: list[str], attrs: dict | None = None, params=None,
            act_scale: float | None = None) -> str:
        name = self.layer_name(node, index)
        self.layers.append(Layer(name, kind, inputs, dict(attrs or {}),
                                 {k: _narrowest(np.asarray(v)) for k, v in (params or {}).items()}))
        self.values[node.output[0]] = _Value(layer=name, act_scale=act_scale)
        return name

    # -- the graph --------------------------------------------------------------------
    def run(self) -> Model:
        onnx = self.onnx
        ops = {n.op_type for n in self.graph.node}
        if not ops & set(QONNX_OPS):
            raise CheckpointError(f"{self.path}: an ONNX graph without QONNX quantizers (no Quant or "
                                  f"MultiThreshold node): it is not QONNX, so nothing in it is ternary")
        for init in self.graph.initializer:
            self.values[init.name] = _Value(const=onnx.numpy_helper.to_array(init))
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise CheckpointError(f"{self.path}: expected one graph input (the images), found "
                                  f"{[i.name for i in inputs]}")
        input_shape = self._input_shape(inputs[0])
        self.values[inputs[0].name] = _Value(layer="input")
        for index, node in enumerate(self.graph.node):
            if node.op_type not in SUPPORTED_OPS:
                raise self.fail(node, f"unsupported operator; supported: {', '.join(SUPPORTED_OPS)}")
            if node.op_type in QONNX_OPS and node.domain not in (QONNX_DOMAIN, "qonnx.custom_op.general", "finn",
                                                                  "finn.custom_op.general", "onnx.brevitas"):
                raise self.fail(node, f"domain {node.domain!r} is not QONNX's ({QONNX_DOMAIN})")
            if node.op_type not in QONNX_OPS and node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"domain {node.domain!r}: expected the standard ONNX domain")
            getattr(self, f"op_{node.op_type}")(node, index)
        if len(self.graph.output) != 1:
            raise CheckpointError(f"{self.path}: expected one graph output (the logits), found "
                                  f"{len(self.graph.output)}")
        out = self.values.get(self.graph.output[0].name)
        if out is None or out.layer is None or out.layer == "input":
            raise CheckpointError(f"{self.path}: the graph output is not computed by any supported node")
        if out.act_scale is not None:
            raise CheckpointError(f"{self.path}: the graph output is a ternary activation; expected float logits")
        if self.layers[-1].name != out.layer:  # the output must be the last layer
            raise CheckpointError(f"{self.path}: the graph output {self.graph.output[0].name!r} is not the last "
                                  f"value computed")
        model = Model(self.graph.name or self.path.stem, input_shape, self.layers,
                      "merged" if any(l.kind.startswith("ter_") for l in self.layers) else "float",
                      {"source": "qonnx", "file": self.path.name, "producer": self.proto.producer_name or ""})
        if model.form == "float":
            raise CheckpointError(f"{self.path}: no layer has ternary weights and a ternary input "
                                  f"(a Quant'ed Conv/Gemm/MatMul after a ternary activation); nothing to fold")
        return model

    def _input_shape(self, value_info) -> tuple[int, ...]:
        dims = value_info.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) not in (2, 4) or any(s is None or s < 1 for s in shape[1:]):
            raise CheckpointError(f"{self.path}: graph input {value_info.name!r} has shape "
                                  f"{[s if s is not None else '?' for s in shape]}; expected [N, C, H, W] or "
                                  f"[N, features] with static C, H, W")
        return tuple(int(s) for s in shape[1:])

    # -- QONNX quantizers -------------------------------------------------------------
    def op_Quant(self, node, index):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        scale, zeropt, bits = (self.constant(node, n) for n in node.input[1:4])
        rounding = a.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
        if np.asarray(bits).size != 1 or float(np.asarray(bits).reshape(-1)[0]) != 2 or a.get("signed", 1) != 1 \
                or a.get("narrow", 0) != 1 or rounding.upper() not in ("ROUND", "HALF_EVEN") \
                or np.any(np.asarray(zeropt) != 0):
            raise self.fail(node, f"bit width {np.asarray(bits).reshape(-1).tolist()}, signed={a.get('signed', 1)}, "
                                  f"narrow={a.get('narrow', 0)}, zero point {np.unique(zeropt).tolist()[:3]}, "
                                  f"rounding {rounding}: supported is {TERNARY_QUANT}")
        scale = np.asarray(scale, np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise self.fail(node, "the scale must be finite and > 0")
        if x.const is not None:  # a weight: codes element by element; the consumer reads the scale
            w = np.asarray(x.const, np.float64)
            try:
                fits = np.broadcast_shapes(scale.shape, w.shape) == w.shape
            except ValueError:
                fits = False
            if not fits:
                raise self.fail(node, f"weight scale of shape {list(scale.shape)} for a weight of shape "
                                      f"{list(w.shape)}: expected a scale that broadcasts onto the weight")
            lo, hi = quant_ternary_bounds(scale)
            self.values[node.output[0]] = _Value(codes=ternary_activation(w, lo, hi, tie="half_even"),
                                                 scale=scale)
            return
        self._dynamic_input(node, x)
        if scale.size != 1:
            raise self.fail(node, f"an activation Quant with {scale.size} scales: supported is one scale per tensor")
        s = float(scale.reshape(-1)[0])
        lo, hi = quant_ternary_bounds(s)
        self.add(node, index, "ternary_act", [x.layer], {"lo": float(lo), "hi": float(hi), "tie": "half_even"},
                 act_scale=s)

    def _channel_scale(self, node, scale: np.ndarray, shape, out_axis: int, layout: str) -> np.ndarray:
        """A weight ``Quant``'s scale as one value per output channel: ``s_o``.

        ``Quant`` dequantizes element by element, ``W = s·t`` with ``s`` broadcast onto
        ``t`` (NumPy's rule: shapes aligned on the right, missing axes of size 1).  The
        layer needs ``W[..., o, ...] = s_o·t[..., o, ...]``: one scale, or ``s`` of size 1
        on every axis but the output axis ``out_axis`` (of the consumer's ``layout``),
        which holds the ``C_out`` values.  A scale along another axis (per input channel
        or per tap) is no per-output-channel ternary scale: refused."""
        if scale.size == 1:
            return np.full(shape[out_axis], float(scale.reshape(-1)[0]))
        aligned = (1,) * (len(shape) - scale.ndim) + tuple(scale.shape)
        if aligned[out_axis] == shape[out_axis] and all(n == 1 for k, n in enumerate(aligned) if k != out_axis):
            return scale.reshape(-1)
        axes = ", ".join(str(k) for k, n in enumerate(aligned) if n != 1)
        raise self.fail(node, f"weight scale of shape {list(scale.shape)} (along axis {axes}) for the weight of "
                              f"shape {list(shape)} ({layout}): expected one scale, or one per output channel "
                              f"(along axis {out_axis} only)")

    def _dynamic_input(self, node, x: _Value) -> None:
        if x.layer is None:
            raise self.fail(node, "its input must be a computed value or a constant weight")
        if x.act_scale is not None:
            raise self.fail(node, "quantizes a value that is already ternary")
        if x.direction is not None:
            raise self.fail(node, "a Mul by ±1/0 is supported only right before a MultiThreshold")

    def op_Mul(self, node, index):
        a, b = (self.value(node, n) for n in node.input)
        data, const = (a, b) if b.const is not None else (b, a)
        if const.const is None or data.layer is None:
            raise self.fail(node, "supported only as a multiplication by a constant in {-1, 0, +1} per channel "
                                  "right before a MultiThreshold (a threshold direction)")
        d = np.asarray(const.const, np.float64).reshape(-1)
        if not np.all(np.isin(d, (-1.0, 0.0, 1.0))):
            raise self.fail(node, "supported only with a constant in {-1, 0, +1} (a threshold direction)")
        users = [n for n in self.graph.node if node.output[0] in n.input]
        if not users or any(u.op_type != "MultiThreshold" for u in users):
            raise self.fail(node, "supported only right before a MultiThreshold (a threshold direction)")
        self._dynamic_input(node, data)
        self.values[node.output[0]] = _Value(layer=data.layer, direction=d)

    def op_MultiThreshold(self, node, index):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        table = np.asarray(self.constant(node, node.input[1]), np.float64)
        out_scale, out_bias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
        layout = a.get("data_layout", b"")
        layout = layout.decode() if isinstance(layout, bytes) else str(layout)
        if table.ndim != 2 or table.shape[1] != 2 or not out_scale > 0 or out_bias != -out_scale \
                or layout not in ("", "NCHW", "NC"):
            raise self.fail(node, f"thresholds of shape {list(table.shape)}, out_scale {out_scale}, out_bias "
                                  f"{out_bias}, layout {layout or 'default'}: supported are two thresholds per "
                                  f"channel ([C, 2] or [1, 2]) with out_bias = -out_scale (ternary) in NCHW / NC")
        if x.direction is None:
            self._dynamic_input(node, x)
        channels = self._channels(x.layer)
        if table.shape[0] not in (1, channels):
            raise self.fail(node, f"{table.shape[0]} threshold rows for {channels} channels")
        lo = np.broadcast_to(table[:, 0], (channels,)).astype(np.float64)
        hi = np.broadcast_to(table[:, 1], (channels,)).astype(np.float64)
        d = np.ones(channels) if x.direction is None else np.broadcast_to(x.direction, (channels,))
        constant = ternary_activation(np.zeros(channels), lo, hi)  # z = 0·x on direction-0 channels
        self.add(node, index, "threshold", [x.layer], {"integer": False, "tie": "sttn"},
                 {"direction": d.astype(np.int8), "lo": lo, "hi": hi, "constant": constant}, act_scale=out_scale)

    def _channels(self, layer_name: str) -> int:
        return int(self._shape_of(None, layer_name)[0])

    def _model_input_shape(self):
        inputs = [i for i in self.graph.input if self.values.get(i.name, _Value()).layer == "input"]
        return self._input_shape(inputs[0])

    # -- weighted layers --------------------------------------------------------------
    def _weighted(self, node, index, family: str, x: _Value, w: _Value, out_axis: int, layout: str, bias,
                  attrs: dict):
        """The layer of a Conv / Gemm / MatMul whose weight has its output channels along
        ``out_axis`` (of ``layout``, named in errors): the layer's kernel is
        ``moveaxis(W, out_axis, 0)`` (``[O, I, kH, kW]`` or ``[out, in]``), scaled per
        output channel (:meth:`_channel_scale`)."""
        if x.act_scale is None:
            self._dynamic_input(node, x)
        elif x.direction is not None:
            raise self.fail(node, "a Mul by ±1/0 is supported only right before a MultiThreshold")
        raw = w.codes if w.codes is not None else w.const
        if raw is None:
            raise self.fail(node, "the weight must be a constant or a Quant of a constant")
        if np.ndim(raw) != (4 if family == "conv" else 2):
            raise self.fail(node, f"weight of shape {list(np.shape(raw))}: expected a "
                                  f"{4 if family == 'conv' else 2}-D weight ({layout})")
        if w.codes is not None:
            s = self._channel_scale(node, w.scale, w.codes.shape, out_axis, layout)
            codes = np.moveaxis(w.codes, out_axis, 0)
            per = (-1,) + (1,) * (codes.ndim - 1)
            if x.act_scale is not None:  # ternary codes in, ternary weights: a ternary layer
                kernel = (x.act_scale * s).reshape(per) * codes
                kind = "ter_conv" if family == "conv" else "ter_linear"
            else:
                kernel, kind = s.reshape(per) * codes, family
        else:  # float weights (on codes of scale a: conv(a·q, W) = conv(q, a·W))
            kernel = np.moveaxis(np.asarray(w.const, np.float64), out_axis, 0) * (x.act_scale or 1.0)
            kind = family
        params = {"weight": kernel}
        if bias is not None:
            params["bias"] = np.asarray(bias, np.float64).reshape(-1)
        self.add(node, index, kind if kind in ("ter_conv", "ter_linear") else ("conv" if family == "conv" else "linear"),
                 [x.layer], attrs, params)

    def op_Conv(self, node, index):
        a = self.attrs(node)
        x, w = self.value(node, node.input[0]), self.value(node, node.input[1])
        bias = self.constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        strides, pads = list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0]))
        auto_pad = a.get("auto_pad", b"NOTSET")
        if a.get("group", 1) != 1 or set(a.get("dilations", [1, 1])) != {1} or len(set(strides)) != 1 \
                or len(set(pads)) != 1 or (auto_pad not in (b"NOTSET", "NOTSET")):
            raise self.fail(node, f"group {a.get('group', 1)}, dilations {a.get('dilations', [1, 1])}, strides "
                                  f"{strides}, pads {pads}: supported are group 1, dilation 1, equal strides and "
                                  f"equal pads on every side")
        self._weighted(node, index, "conv", x, w, 0, "Conv's [O, I, kH, kW]", bias,
                       {"stride": int(strides[0]), "padding": int(pads[0])})

    def op_Gemm(self, node, index):
        a = self.attrs(node)
        x, w = self.value(node, node.input[0]), self.value(node, node.input[1])
        bias = self.constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if a.get("transA", 0) != 0 or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise self.fail(node, "supported is transA=0, alpha=1, beta=1")
        if a.get("transB", 0) == 1:
            self._weighted(node, index, "linear", x, w, 0, "Gemm transB=1's [out, in]", bias, {})
        else:
            self._weighted(node, index, "linear", x, w, 1, "Gemm transB=0's [in, out]", bias, {})

    def op_MatMul(self, node, index):
        x, w = self.value(node, node.input[0]), self.value(node, node.input[1])
        self._weighted(node, index, "linear", x, w, 1, "MatMul's [in, out]", None, {})

    # -- float and shape layers -------------------------------------------------------
    def _float_input(self, node, name: str) -> _Value:
        """A value a float operation reads: a float value, or ternary codes of scale 1
        (their values are the codes)."""
        x = self.value(node, name)
        if x.act_scale is not None and x.act_scale != 1.0 and x.direction is None and x.layer is not None:
            raise self.fail(node, f"reads a ternary activation of scale {x.act_scale:g}: supported are ternary "
                                  f"activations into ternary-weight layers, MaxPool, Concat and Flatten/Reshape (or "
                                  f"of scale 1)")
        if x.act_scale is None:
            self._dynamic_input(node, x)
        elif x.direction is not None:
            raise self.fail(node, "a Mul by ±1/0 is supported only right before a MultiThreshold")
        return x

    def op_BatchNormalization(self, node, index):
        a = self.attrs(node)
        if a.get("training_mode", 0) != 0:
            raise self.fail(node, "training_mode=1: supported is inference BatchNormalization")
        x = self._float_input(node, node.input[0])
        gamma, beta, mean, var = (np.asarray(self.constant(node, n), np.float64) for n in node.input[1:5])
        self.add(node, index, "batchnorm", [x.layer], {"eps": float(a.get("epsilon", 1e-5))},
                 {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var})

    def op_Relu(self, node, index):
        self.add(node, index, "relu", [self._float_input(node, node.input[0]).layer])

    def op_PRelu(self, node, index):
        x = self._float_input(node, node.input[0])
        slope = np.asarray(self.constant(node, node.input[1]), np.float64).reshape(-1)
        self.add(node, index, "prelu", [x.layer], {}, {"weight": slope})

    def _window(self, node, a) -> tuple[int, int, int]:
        k, s = list(a.get("kernel_shape", [])), list(a.get("strides", [1, 1]))
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(set(k)) != 1 or len(set(s)) != 1 or len(set(p)) != 1 or a.get("ceil_mode", 0) != 0 \
                or set(a.get("dilations", [1, 1])) != {1} or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.fail(node, f"kernel {k}, strides {s}, pads {p}: supported are square windows, equal "
                                  f"strides and pads, ceil_mode 0, dilation 1")
        return int(k[0]), int(s[0]), int(p[0])

    def op_MaxPool(self, node, index):
        k, s, p = self._window(node, self.attrs(node))
        x = self.value(node, node.input[0])
        if x.act_scale is not None and self.layers and self.layers[-1].name == x.layer \
                and self.consumers.get(node.input[0], 0) == 1:
            # max(f(y)) = f(max(y)) for the non-decreasing activation f: pool first, exactly
            act = self.layers.pop()
            self.names.discard(act.name)
            pool = self.add(node, index, "maxpool", list(act.inputs), {"kernel": k, "stride": s, "padding": p})
            self.layers.append(Layer(act.name, act.kind, [pool], act.attrs, act.params))
            self.names.add(act.name)
            self.values[node.output[0]] = _Value(layer=act.name, act_scale=x.act_scale)
            return
        self._dynamic_input(node, x)
        self.add(node, index, "maxpool", [x.layer], {"kernel": k, "stride": s, "padding": p})

    def op_AveragePool(self, node, index):
        a = self.attrs(node)
        k, s, p = self._window(node, a)
        if p:
            raise self.fail(node, "padded average pooling is not supported (pads must be 0)")
        self.add(node, index, "avgpool", [self._float_input(node, node.input[0]).layer], {"kernel": k, "stride": s})

    def op_GlobalAveragePool(self, node, index):
        x = self._float_input(node, node.input[0])
        c, h, w = self._shape_of(node, x.layer)
        if h != w:
            raise self.fail(node, f"global pooling of a {h}x{w} map: supported are square maps")
        self.add(node, index, "avgpool", [x.layer], {"kernel": h, "stride": h})

    def _shape_of(self, node, layer_name: str) -> tuple[int, ...]:
        """Per-sample shape of a layer's output (shape inference of the model so far)."""
        if layer_name == "input":
            return self._model_input_shape()
        try:
            partial = Model("partial", self._model_input_shape(), list(self.layers), "merged")
            return tuple(infer_shapes(partial)[layer_name])
        except SttnError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None

    def op_Add(self, node, index):
        a, b = (self.value(node, n) for n in node.input)
        if a.const is not None or b.const is not None:  # a bias of the layer before
            data, const = (a, b) if b.const is not None else (b, a)
            self._dynamic_input(node, data)
            last = self.layers[-1] if self.layers else None
            if last is None or last.name != data.layer or last.kind not in ("conv", "linear", "ter_conv", "ter_linear") \
                    or self.consumers.get(data.layer, 1) > 1:
                raise self.fail(node, "adding a constant is supported only as the bias of the Conv/Gemm/MatMul "
                                      "right before it")
            channels = last.params["weight"].shape[0]
            bias = np.asarray(const.const, np.float64)
            if bias.size not in (1, channels):
                raise self.fail(node, f"a bias of {bias.size} values for {channels} output channels")
            last.params["bias"] = last.params.get("bias", np.zeros(channels)) + np.broadcast_to(bias.reshape(-1),
                                                                                                 (channels,))
            self.values[node.output[0]] = _Value(layer=last.name)
            return
        for name in node.input:
            self._float_input(node, name)
        self.add(node, index, "add", [a.layer, b.layer])

    def op_Concat(self, node, index):
        a = self.attrs(node)
        if a.get("axis") != 1:
            raise self.fail(node, f"axis {a.get('axis')}: supported is concatenation of channels (axis 1)")
        parts = [self.value(node, n) for n in node.input]
        scales = {p.act_scale for p in parts}
        if len(scales) != 1:
            raise self.fail(node, "concatenates values of different scales (ternary and float, or two ternary "
                                  "scales): supported are all float or all ternary with one scale")
        for p in parts:
            if p.layer is None or p.direction is not None:
                raise self.fail(node, "supported are concatenations of computed values")
        self.add(node, index, "concat", [p.layer for p in parts], act_scale=scales.pop())

    def op_Pad(self, node, index):
        a = self.attrs(node)
        mode = a.get("mode", b"constant")
        x = self._float_input(node, node.input[0])
        pads = np.asarray(self.constant(node, node.input[1]), np.int64).reshape(-1)
        value = self.constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        shape = self._shape_of(node, x.layer)
        ndim = len(shape) + 1
        expected = np.zeros(2 * ndim, np.int64)
        if pads.size == 2 * ndim:
            expected[ndim + 1] = pads[ndim + 1]
        if mode not in (b"constant", "constant") or pads.size != 2 * ndim or not np.array_equal(pads, expected) \
                or pads[ndim + 1] < 0 or np.any(np.asarray(value) != 0):
            raise self.fail(node, f"pads {pads.tolist()}, mode {mode!r}: supported are zeros appended after the "
                                  f"channels (the downsampling shortcut)")
        self.add(node, index, "channel_pad", [x.layer], {"out_channels": int(shape[0] + pads[ndim + 1])})

    def op_Flatten(self, node, index):
        if self.attrs(node).get("axis", 1) != 1:
            raise self.fail(node, "supported is axis 1 (to [N, features])")
        x = self.value(node, node.input[0])
        if x.layer is None or x.direction is not None:
            raise self.fail(node, "expected a computed value")
        self.add(node, index, "flatten", [x.layer], act_scale=x.act_scale)

    def op_Reshape(self, node, index):
        x = self.value(node, node.input[0])
        target = np.asarray(self.constant(node, node.input[1])).reshape(-1)
        if x.layer is None or x.direction is not None:
            raise self.fail(node, "expected a computed value")
        shape = self._shape_of(node, x.layer)
        features = int(np.prod(shape))
        if not (len(target) == 2 and target[0] in (-1, 0, 1) and target[1] in (-1, features)):
            raise self.fail(node, f"reshape of {list(shape)} to {target.tolist()}: supported is a flatten to "
                                  f"[N, {features}]")
        self.add(node, index, "flatten", [x.layer], act_scale=x.act_scale)

    def op_Identity(self, node, index):
        self.values[node.output[0]] = self.value(node, node.input[0])

    def op_Constant(self, node, index):
        a = self.attrs(node)
        if "value" not in a:
            raise self.fail(node, "supported is a Constant with a tensor 'value'")
        self.values[node.output[0]] = _Value(const=self.onnx.numpy_helper.to_array(a["value"]))


# --------------------------------------------------------------------------------------
# reading the file


def _parse(path: Path, onnx):
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(f"{path}: {size} bytes, more than the {MAX_FILE_BYTES} an ONNX file may have here")
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckpointError(f"{path}: not a valid ONNX file (truncated or malformed protobuf: {exc})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise CheckpointError(f"{path}: an ONNX file without a graph (truncated, or not a model)")
    return proto


def _load_external_data(path: Path, proto, onnx) -> None:
    """Read initializers stored in side files, after checking every location stays inside
    the model's folder (no absolute paths, no ``..``, no symlink out)."""
    folder = path.resolve().parent
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise CheckpointError(f"{path}: initializer {tensor.name!r} refers to external data {location!r} outside "
                                  f"the model's folder {folder}; refused")
        if not target.is_file():
            raise CheckpointError(f"{path}: initializer {tensor.name!r}: external data file {location!r} is missing")
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(folder))
        except Exception as exc:
            raise CheckpointError(f"{path}: external data cannot be read ({exc})") from None


def load_qonnx(path) -> Model:
    """Read a QONNX ternary model (see the module docstring) as a ``"merged"`` Model."""
    onnx = require_onnx("reading an ONNX file")
    path = Path(path)
    proto = _parse(path, onnx)
    _load_external_data(path, proto, onnx)
    model = _Importer(path, proto, onnx).run()
    try:
        validate_model(model)
    except SttnError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model


__all__ = ["load_qonnx", "looks_like_onnx", "SUPPORTED_OPS", "MAX_FILE_BYTES"]

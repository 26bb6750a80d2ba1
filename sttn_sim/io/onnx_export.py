r"""Export a folded model to ONNX with standard operators only (no custom ops).

``export_onnx(folded, path)`` (or ``sttn export --onnx OUT.onnx``) writes a graph that
any ONNX runtime executes in float32, with a dynamic batch axis:

=====================  ==================================================================
folded layer           ONNX
=====================  ==================================================================
``conv`` / ``linear``  ``Conv`` / ``Gemm`` (float weights as they are)
``ternary_conv`` /     ``Conv`` / ``Gemm`` whose weights are codes × scales, float32
``ternary_linear``     (``s·t``; TTQ layers ``W_p·[t=+1] − W_n·[t=−1]``), bias ``b``
``threshold``          ``z = Mul(x, d)`` (when a direction is not +1), then
                       ``Cast(GreaterOrEqual(z, hi')) − Cast(Less(z, lo'))``: float codes
``batchnorm``          ``BatchNormalization``
``prelu`` / ``relu``   ``PRelu`` / ``Relu``
``maxpool``            ``MaxPool`` (padding never wins a max: −inf padding)
``avgpool``            ``AveragePool``, or ``GlobalAveragePool`` over the whole input
``add``                ``Add``
``channel_pad``        ``Pad`` (zeros appended on the channel axis)
``flatten``            ``Flatten(axis=1)``
=====================  ==================================================================

Thresholds (docs/design.md §2.2).  The comparison is the canonical one, ``-1 iff z < lo'``,
``+1 iff z >= hi'``, with :func:`sttn_sim.rules.comparison_thresholds`: float thresholds
rounded up to float32 (a strict ``half_even`` ``hi`` to the smallest float32 above it),
so the float32 comparison is exactly the model's rule on the runtime's float32 value.
A channel whose direction is 0 gets :func:`sttn_sim.rules.constant_thresholds` (its
``z = 0`` then gives the constant code).

Integer thresholds compare the integer accumulator ``acc`` of a ternary layer with
epilogue ``"none"``.  The exported convolution computes ``y = s·acc + b`` in float32
(weights ``s·t``, as above), so the thresholds move onto y at the midpoints between
integers, :func:`sttn_sim.rules.midpoint_thresholds`: ``d·acc >= T ⟺ d·y >= s(T − ½) + d·b``.
Any float32 error of y below ``s/2`` then leaves every code exact; the export checks,
per channel, the worst-case float32 error of the sum
(:func:`sttn_sim.rules.float32_sum_error_bound`) against that margin and refuses a
layer where it could fail.

The batch axis is dynamic (``batch=None``) unless fixed.  The file is written atomically (temporary file, then rename); the graph passes
``onnx.checker.check_model`` before it is written.  ``extra_outputs`` adds the values of
named layers as graph outputs (for layer-by-layer checks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ModelError
from ..graph import Layer, Model
from ..rules import (
    BN_EPS,
    comparison_thresholds,
    constant_thresholds,
    float32_sum_error_bound,
    midpoint_thresholds,
)
from ..validation import validate_model
from .atomic import atomic_write_binary
from .onnx_common import INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, require_onnx


class OnnxGraph:
    """The ONNX graph of one folded model, built layer by layer (standard operators).

    Subclasses change how ternary weights and thresholds are expressed
    (:class:`sttn_sim.io.qonnx_export.QonnxGraph`)."""

    #: what the error messages call this format
    format_name = "ONNX"

    def __init__(self, model: Model, extra_outputs=(), batch: int | None = None):
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise ModelError(f"batch: expected None (a dynamic batch axis) or an integer >= 1, got {batch!r}")
        self.batch = "batch" if batch is None else batch
        if not isinstance(model, Model):
            raise ModelError(f"export expects a sttn_sim Model, got {type(model).__name__}")
        if model.form != "folded":
            raise ModelError(f"export needs a folded model, got form {model.form!r} for {model.arch!r}; "
                             f"call sttn_sim.fold(model) first")
        self.onnx = require_onnx(f"{self.format_name} export")
        self.helper = self.onnx.helper
        self.model = model
        self.shapes = validate_model(model)
        self.nodes: list = []
        self.initializers: list = []
        self.opset_imports = [self.helper.make_opsetid("", OPSET)]
        #: epilogue-"none" ternary layers: name -> (s32, b32, terms) of their exported y = s·acc + b
        self.accumulators: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.names = {"input": INPUT_NAME, model.output: OUTPUT_NAME}
        unknown = [n for n in extra_outputs if n not in model.layer_names]
        if unknown:
            raise ModelError(f"extra_outputs: no layer {unknown[0]!r} in model {model.arch!r}")
        self.extra_outputs = list(extra_outputs)

    # -- helpers ----------------------------------------------------------------------
    def value(self, name: str) -> str:
        """The ONNX value name of a layer's output (``input``/``logits`` at the ends)."""
        return self.names.get(name, name)

    def const(self, name: str, array, dtype=np.float32) -> str:
        """An initializer ``name`` holding ``array`` (float32 unless ``dtype``)."""
        arr = np.array(array, dtype, order="C")  # (ascontiguousarray would turn a scalar into shape [1])
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, domain: str = "", **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, domain=domain, **attrs))
        return output

    def per_channel(self, layer: Layer, values) -> np.ndarray:
        """A per-channel vector shaped to broadcast along axis 1 of the layer's input."""
        ndim = 1 + len(self.input_shape(layer))
        return np.asarray(values).reshape((1, -1) + (1,) * (ndim - 2))

    def input_shape(self, layer: Layer) -> tuple[int, ...]:
        src = layer.inputs[0]
        return tuple(self.model.input_shape) if src == "input" else tuple(self.shapes[src])

    # -- the graph --------------------------------------------------------------------
    def build(self):
        """The checked ``ModelProto``."""
        for layer in self.model.layers:
            emit = getattr(self, f"emit_{layer.kind}", None)
            if emit is None:
                raise ModelError(f"layer {layer.name!r}: kind {layer.kind!r} has no {self.format_name} export "
                                 f"(export a folded model: sttn_sim.fold(model))")
            emit(layer, [self.value(s) for s in layer.inputs], self.value(layer.name))
        h = self.helper
        dtype = self.onnx.TensorProto.FLOAT
        graph_in = h.make_tensor_value_info(INPUT_NAME, dtype, [self.batch, *self.model.input_shape])
        outputs = [h.make_tensor_value_info(OUTPUT_NAME, dtype, [self.batch, *self.shapes[self.model.output]])]
        outputs += [h.make_tensor_value_info(self.value(n), dtype, [self.batch, *self.shapes[n]])
                    for n in self.extra_outputs if n != self.model.output]
        graph = h.make_graph(self.nodes, self.model.arch, [graph_in], outputs, self.initializers)
        proto = h.make_model(graph, opset_imports=self.opset_imports, producer_name="sttn_sim",
                             ir_version=IR_VERSION)
        proto.metadata_props.add(key="sttn_sim.arch", value=self.model.arch)
        proto.metadata_props.add(key="sttn_sim.format", value=self.format_name)
        self.check(proto)
        return proto

    def check(self, proto) -> None:
        try:
            self.onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:  # the checker's own exception types vary by version
            raise CheckpointError(f"{self.format_name} export of {self.model.arch!r} fails the ONNX checker: "
                                  f"{exc}") from None

    # -- float layers -----------------------------------------------------------------
    def emit_conv(self, layer, ins, out):
        p = layer.params
        inputs = [ins[0], self.const(f"{layer.name}.weight", p["weight"])]
        if "bias" in p:
            inputs.append(self.const(f"{layer.name}.bias", p["bias"]))
        self._conv(layer, inputs, out, p["weight"].shape[2:])

    def _conv(self, layer, inputs, out, kernel):
        stride, padding = int(layer.attrs["stride"]), int(layer.attrs["padding"])
        self.node("Conv", inputs, out, layer.name, kernel_shape=[int(k) for k in kernel], strides=[stride, stride],
                  pads=[padding] * 4)

    def emit_linear(self, layer, ins, out):
        p = layer.params
        inputs = [ins[0], self.const(f"{layer.name}.weight", p["weight"])]
        if "bias" in p:
            inputs.append(self.const(f"{layer.name}.bias", p["bias"]))
        self.node("Gemm", inputs, out, layer.name, transB=1)

    def emit_batchnorm(self, layer, ins, out):
        p = layer.params
        names = [self.const(f"{layer.name}.{k}", p[k]) for k in ("weight", "bias", "running_mean", "running_var")]
        self.node("BatchNormalization", [ins[0], *names], out, layer.name, epsilon=float(layer.attrs.get("eps", BN_EPS)))

    def emit_prelu(self, layer, ins, out):
        slope = np.asarray(layer.params["weight"]).reshape(-1)
        shape = (-1,) + (1,) * (len(self.input_shape(layer)) - 1) if slope.size > 1 else (1,)
        self.node("PRelu", [ins[0], self.const(f"{layer.name}.slope", slope.reshape(shape))], out, layer.name)

    def emit_relu(self, layer, ins, out):
        self.node("Relu", ins, out, layer.name)

    def emit_maxpool(self, layer, ins, out):
        k, s, pad = int(layer.attrs["kernel"]), int(layer.attrs["stride"]), int(layer.attrs.get("padding", 0))
        self.node("MaxPool", ins, out, layer.name, kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4)

    def emit_avgpool(self, layer, ins, out):
        k, s = int(layer.attrs["kernel"]), int(layer.attrs["stride"])
        _, h, w = self.input_shape(layer)
        if k == h == w:
            self.node("GlobalAveragePool", ins, out, layer.name)
        else:
            self.node("AveragePool", ins, out, layer.name, kernel_shape=[k, k], strides=[s, s])

    def emit_add(self, layer, ins, out):
        self.node("Add", ins, out, layer.name)

    def emit_channel_pad(self, layer, ins, out):
        shape = self.input_shape(layer)
        extra = int(layer.attrs["out_channels"]) - shape[0]
        ndim = len(shape) + 1
        pads = [0] * (2 * ndim)
        pads[ndim + 1] = extra  # end of the channel axis
        self.node("Pad", [ins[0], self.const(f"{layer.name}.pads", pads, np.int64)], out, layer.name, mode="constant")

    def emit_flatten(self, layer, ins, out):
        self.node("Flatten", ins, out, layer.name, axis=1)

    # -- ternary layers ---------------------------------------------------------------
    def ternary_kernel(self, layer) -> np.ndarray:
        """The float32 kernel ``s·t`` (TTQ: ``W_p·[t=+1] − W_n·[t=−1]``)."""
        return layer.spec.ternary_weights(layer).dequantize().astype(np.float32)

    def ternary_weight(self, layer) -> str:
        """The name of the weight value of a ternary layer (an initializer here)."""
        return self.const(f"{layer.name}.weight", self.ternary_kernel(layer))

    def emit_ternary_conv(self, layer, ins, out):
        self._ternary(layer, ins, out)

    def emit_ternary_linear(self, layer, ins, out):
        self._ternary(layer, ins, out)

    def _ternary(self, layer, ins, out):
        p = layer.params
        if len(layer.inputs) != 1 or "slope" in p:
            raise ModelError(f"layer {layer.name!r}: export the folded model, not the engine's fused graph")
        bias32 = np.asarray(p["bias"], np.float32)
        inputs = [ins[0], self.ternary_weight(layer), self.const(f"{layer.name}.bias", bias32)]
        if layer.spec.family == "conv":
            self._conv(layer, inputs, out, p["codes"].shape[2:])
        else:
            self.node("Gemm", inputs, out, layer.name, transB=1)
        if layer.attrs.get("epilogue", "affine") == "none":
            codes = p["codes"].reshape(p["codes"].shape[0], -1)
            self.accumulators[layer.name] = (np.asarray(p["scale"], np.float32).astype(np.float64),
                                             bias32.astype(np.float64),
                                             np.count_nonzero(codes, axis=1))

    # -- thresholds -------------------------------------------------------------------
    def threshold_values(self, layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(d, lo', hi')``: directions and float32 canonical thresholds on ``z = d·x``
        for the exported input x (``-1 iff z < lo'``, ``+1 iff z >= hi'``)."""
        p = layer.params
        d = np.asarray(p["direction"], np.int64).reshape(-1)
        tie = layer.attrs.get("tie", "sttn")
        integer = bool(layer.attrs.get("integer"))
        lo_c, hi_c = comparison_thresholds(p["lo"], p["hi"], integer=integer, tie=tie)
        lo_c, hi_c = lo_c.reshape(-1).astype(np.float64), hi_c.reshape(-1).astype(np.float64)
        if integer:
            lo_c, hi_c = self._midpoints(layer, d, lo_c, hi_c)
        k_lo, k_hi = constant_thresholds(np.asarray(p["constant"]).reshape(-1))
        lo_c, hi_c = np.where(d == 0, k_lo, lo_c), np.where(d == 0, k_hi, hi_c)
        with np.errstate(over="ignore"):  # an unreachable threshold beyond float32 stays unreachable
            return d, lo_c.astype(np.float32), hi_c.astype(np.float32)

    def _midpoints(self, layer, d, lo_c, hi_c):
        """Integer thresholds on ``d·acc`` → float thresholds on ``d·y``, y = s·acc + b."""
        src = layer.inputs[0]
        if src not in self.accumulators:
            raise ModelError(f"layer {layer.name!r}: integer thresholds must read a ternary layer with epilogue "
                             f"'none', got {src!r}")
        s, b, terms = self.accumulators[src]
        active = d != 0
        if np.any(active & (s <= 0)):
            c = int(np.flatnonzero(active & (s <= 0))[0])
            raise CheckpointError(f"{self.format_name} export: layer {src!r} channel {c} has scale {s[c]:g}: its "
                                  f"accumulator cannot be recovered from s·acc + b (expected a scale > 0)")
        # |acc| <= terms: a threshold beyond that range decides nothing, and clipped to
        # [-terms, terms + 1] it still decides nothing (every code is kept)
        lo_c, hi_c = (np.clip(t, -terms, terms + 1) for t in (lo_c, hi_c))
        lo_m = midpoint_thresholds(lo_c, s, d * b)
        hi_m = midpoint_thresholds(hi_c, s, d * b)
        worst = np.maximum(np.abs(lo_m), np.abs(hi_m))
        error = float32_sum_error_bound(terms + 1, terms * s + np.abs(b)) + 2.0**-24 * worst
        unsafe = active & (error >= s / 2)
        if unsafe.any():
            c = int(np.flatnonzero(unsafe)[0])
            raise CheckpointError(f"{self.format_name} export: layer {layer.name!r} channel {c}: float32 error of "
                                  f"s·acc + b (bound {error[c]:.3g}) could reach half the scale ({s[c] / 2:.3g}); "
                                  f"its integer thresholds would not be exact")
        return lo_m, hi_m

    def emit_threshold(self, layer, ins, out):
        d, lo, hi = self.threshold_values(layer)
        z = self.direction(layer, ins[0], d)
        lo_name = self.const(f"{layer.name}.lo", self.per_channel(layer, lo))
        hi_name = self.const(f"{layer.name}.hi", self.per_channel(layer, hi))
        ge = self.node("GreaterOrEqual", [z, hi_name], f"{layer.name}.plus", f"{layer.name}.plus")
        lt = self.node("Less", [z, lo_name], f"{layer.name}.minus", f"{layer.name}.minus")
        to_float = self.onnx.TensorProto.FLOAT
        plus = self.node("Cast", [ge], f"{layer.name}.plus_f", f"{layer.name}.plus_f", to=to_float)
        minus = self.node("Cast", [lt], f"{layer.name}.minus_f", f"{layer.name}.minus_f", to=to_float)
        self.node("Sub", [plus, minus], out, layer.name)

    def direction(self, layer, x: str, d: np.ndarray) -> str:
        """``z = d·x`` (``x`` itself when every direction is +1)."""
        if np.all(d == 1):
            return x
        name = self.const(f"{layer.name}.direction", self.per_channel(layer, d))
        return self.node("Mul", [x, name], f"{layer.name}.z", f"{layer.name}.z")


def onnx_model(folded: Model, extra_outputs=(), batch: int | None = None):
    """The checked ONNX ``ModelProto`` of a folded model (standard operators); ``batch``
    None gives a dynamic batch axis."""
    return OnnxGraph(folded, extra_outputs, batch).build()


def write_proto(proto, path) -> Path:
    """Write a ``ModelProto`` atomically (temporary file beside ``path``, then rename)."""
    data = proto.SerializeToString()
    return atomic_write_binary(path, lambda f: f.write(data), error=CheckpointError)


def export_onnx(folded: Model, path, *, extra_outputs=(), batch: int | None = None) -> Path:
    """Write ``folded`` to ``path`` as ONNX with standard operators (see the module doc);
    the batch axis is dynamic unless ``batch`` fixes it."""
    return write_proto(onnx_model(folded, extra_outputs, batch), path)


__all__ = ["OnnxGraph", "onnx_model", "export_onnx", "write_proto"]

"""The packed ternary inference engine: runs a folded model layer by layer.

``Engine(folded_model).run(x, recorder=None)`` takes an NCHW float32 batch and
returns float32 logits.  Ternary layers use the packed bit-plane arithmetic of
:mod:`sttn_sim.kernels` (DESIGN §2.5): the threshold layer writes channel-packed NHWC
bit planes in one pass, the packed convolution produces exact int32 accumulators, and
one fused epilogue applies the layer's scale and bias, the following BatchNorm, the
residual addition (zero-extended for the channel-pad shortcut) and the PReLU.  Float
layers (stem convolution, pooling, head) run in numpy / Numba float32.

Arithmetic: accumulators are exact integers; float math is float32, as a deployment
does; float thresholds are rounded up to float32 so that the engine's comparison is
exactly the float64 rule applied to its float32 value.  The engine therefore differs
from the float64 reference only by float32 rounding of the residual stream, and an
activation code can differ only where the pre-activation is within float32 rounding
of a threshold (``python -m sttn_sim.verify`` reports such near-ties).

A recorder (:class:`sttn_sim.recording.Recorder`) receives a
:class:`~sttn_sim.recording.LayerEvent` for every executed step: ternary layers with
their int32 accumulators, threshold layers with their input and int8 codes, and other
layers with their output.  A recorder that offers a statistics accumulator
(:meth:`~sttn_sim.recording.Recorder.threshold_accumulator`, as
:class:`sttn_sim.stats.ActivationRecorder` does) gets it filled by the threshold kernel
itself, without the codes being written out.  Layers fused into an epilogue (BN, add,
channel-pad, PReLU after a ternary layer) are reported once, under the last fused
layer's name, and listed in :attr:`Engine.fused`.

``use_reference=True`` runs the same model through the float64/int64 reference
(:func:`sttn_sim.reference.run_reference`) instead, for debugging.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ModelError
from .graph import Layer, Model
from .recording import LayerEvent
from .reference import check_input
from .shapes import infer_shapes


#: float convolutions with at most this many input channels run as a direct convolution
#: (vectorised over output channels); wider ones as im2col + BLAS sgemm
DIRECT_CONV_MAX_CHANNELS = 8


@dataclass
class Step:
    """One executed operation: a layer, or a ternary layer with its fused tail."""

    name: str  # the name its output is stored under (last fused layer)
    layer: Layer  # the first layer of the step
    inputs: list[str]
    run: callable
    fused: list[str] = field(default_factory=list)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class Engine:
    """Packed ternary execution of a folded model (see the module docstring)."""

    def __init__(self, model: Model, *, use_reference: bool = False):
        if not isinstance(model, Model):
            raise ModelError(f"Engine() expects a sttn_sim Model, got {type(model).__name__}")
        if model.form != "folded":
            raise ModelError(
                f"Engine needs a folded model, got form {model.form!r} for {model.arch!r}; "
                f"call sttn_sim.fold(model) first")
        from . import kernels  # noqa: F401  (sets numba's environment before compiling)

        self.model = model
        self.use_reference = use_reference
        self.shapes = infer_shapes(model)
        self._position = {layer.name: i for i, layer in enumerate(model.layers)}
        self.steps = self._compile()
        # how many steps read each value, so that run() can free it after its last use
        self._reads: dict[str, int] = {}
        for step in self.steps:
            for src in step.inputs:
                self._reads[src] = self._reads.get(src, 0) + 1

    @property
    def fused(self) -> dict[str, list[str]]:
        """Layers fused into each step, keyed by the step's first layer."""
        return {s.layer.name: list(s.fused) for s in self.steps if s.fused}

    # ----------------------------------------------------------------------------------
    # compilation: prepack weights, choose packed or code outputs, fuse epilogues

    def _single_consumer(self, name: str) -> Layer | None:
        consumers = self.model.consumers(name)
        return consumers[0] if len(consumers) == 1 and name != self.model.output else None

    def _absorb_prelu(self, last: Layer, fused: list[str]):
        """Fuse a PReLU that is the only consumer of ``last``: ``(slope, new last)``,
        or ``(None, last)`` when there is none."""
        nxt = self._single_consumer(last.name)
        if nxt is None or nxt.kind != "prelu":
            return None, last
        fused.append(nxt.name)
        return _f32(nxt.params["weight"]).reshape(-1), nxt

    def _compile(self) -> list[Step]:
        steps: list[Step] = []
        fused_away: set[str] = set()
        for layer in self.model.layers:
            kind = layer.kind
            if layer.name in fused_away:
                continue
            if kind in ("ternary_conv", "ternary_linear"):
                step = self._ternary_step(layer)
            elif kind == "conv":
                step = self._float_conv_step(layer)
            elif kind == "threshold":
                step = self._threshold_step(layer)
            else:
                step = self._float_step(layer)
            steps.append(step)
            fused_away.update(step.fused)
        # layers fused into an epilogue (some, like a channel-pad shortcut, come earlier
        # in model order than the ternary layer that absorbs them) run no step of their own
        return [s for s in steps if s.layer.name not in fused_away]

    def _threshold_step(self, layer: Layer) -> Step:
        from .kernels.fused import float32_thresholds, int32_thresholds, threshold_codes, threshold_pack
        from .kernels.quantizer_stats import FusedThresholdStatistics

        p = layer.params
        integer = bool(layer.attrs.get("integer"))
        to_type = int32_thresholds if integer else float32_thresholds
        direction = np.ascontiguousarray(p["direction"], np.int8)
        lo, hi = to_type(p["lo"]), to_type(p["hi"])
        constant = np.ascontiguousarray(p["constant"], np.int8)
        consumers = self.model.consumers(layer.name)
        packed_out = bool(consumers) and all(c.kind == "ternary_conv" for c in consumers) and \
            len(self.shapes[layer.name]) == 3

        prepared = {}  # the fused statistics kernel of the last recorder's accumulator

        def run(x, recorder):
            x = np.ascontiguousarray(x, np.int32 if integer else np.float32)
            want_codes = recorder is not None
            # recorders need not subclass Recorder: the fast path is optional
            offer = getattr(recorder, "threshold_accumulator", None) if want_codes and packed_out else None
            acc = offer(layer) if offer is not None else None
            if acc is not None:  # the recorder's statistics, computed inside the threshold pass
                if prepared.get("acc") is not acc:
                    prepared.update(acc=acc, run=FusedThresholdStatistics(acc, integer, direction, lo, hi, constant))
                out = prepared["run"](x)
                return out, LayerEvent(layer, out, pre_activation=x, statistics=acc)
            if packed_out and want_codes:
                out, codes = threshold_pack(x, direction, lo, hi, constant, with_codes=True)
            elif packed_out:
                out, codes = threshold_pack(x, direction, lo, hi, constant), None
            else:
                out = codes = threshold_codes(x, direction, lo, hi, constant)
            return out, LayerEvent(layer, codes if codes is not None else out, pre_activation=x, codes=codes)

        return Step(layer.name, layer, list(layer.inputs), run)

    def _ternary_step(self, layer: Layer) -> Step:
        from .kernels import prepack_conv_weights, prepack_gemm_columns, prepack_gemm_weights, ternary_gemm
        from .kernels.conv import ternary_conv2d
        from .kernels.fused import affine_epilogue
        from .rules import batchnorm_affine

        p, a = layer.params, layer.attrs
        is_conv = layer.kind == "ternary_conv"
        weights = prepack_conv_weights(p["codes"], name=f"layer {layer.name!r} codes") if is_conv else \
            prepack_gemm_weights(p["codes"], name=f"layer {layer.name!r} codes")
        affine = a.get("epilogue", "affine") == "affine"

        # Fuse the float tail: y = s·acc + b → BN (g, h) → + residual → PReLU.
        # With BN: g·(s·acc + b) + h = (g·s)·acc + (g·b + h), so scale and shift fold into
        # one per-channel (mult, shift) pair computed in float64, rounded once to float32.
        mult = np.asarray(p["scale"], np.float64)
        shift = np.asarray(p["bias"], np.float64)
        fused: list[str] = []
        residual_name = slope = None
        last = layer
        if affine:
            nxt = self._single_consumer(last.name)
            if nxt is not None and nxt.kind == "batchnorm":
                g, h = batchnorm_affine(nxt)
                mult, shift = g * mult, g * shift + h
                fused.append(nxt.name)
                last = nxt
                nxt = self._single_consumer(last.name)
            other = None
            if nxt is not None and nxt.kind == "add":
                other = nxt.inputs[1] if nxt.inputs[0] == last.name else nxt.inputs[0]
                if other != "input" and self._position[other] > self._position[layer.name]:
                    nxt = None  # the residual is computed after this layer: cannot fuse the add
            if nxt is not None and nxt.kind == "add":
                other_layer = None if other == "input" else self.model[other]
                if other_layer is not None and other_layer.kind == "channel_pad" and \
                        self._single_consumer(other) is nxt:
                    residual_name = other_layer.inputs[0]  # zero channels are added implicitly
                    fused.append(other)
                else:
                    residual_name = other
                fused.append(nxt.name)
                last = nxt
            slope, last = self._absorb_prelu(last, fused)
        mult32, shift32 = _f32(mult), _f32(shift)
        stride, padding = a.get("stride", 1), a.get("padding", 0)

        def run(x, residual=None):
            if is_conv:
                acc = ternary_conv2d(x, weights, stride, padding)
            else:
                acc = np.ascontiguousarray(ternary_gemm(weights, prepack_gemm_columns(x)).T)
            if not affine:
                return acc, LayerEvent(layer, acc, accumulator=acc)
            y = affine_epilogue(acc, mult32, shift32, residual, slope)
            return y, LayerEvent(layer, y, accumulator=acc)

        inputs = list(layer.inputs) + ([residual_name] if residual_name is not None else [])
        return Step(last.name, layer, inputs, run, fused)

    def _float_conv_step(self, layer: Layer) -> Step:
        """Float convolution with a following BN and PReLU fused in.

        BN after a convolution folds into it: g·(W*x + b) + h = (g·W)*x + (g·b + h)
        (per output channel, computed in float64, rounded once to float32).  Few input
        channels (the stem): a direct convolution, bias and PReLU in its output pass;
        otherwise im2col + sgemm, bias and PReLU in the pass that transposes to NCHW."""
        from .rules import batchnorm_affine
        from .kernels.fused import bias_prelu_to_nchw, direct_conv2d, prepack_direct_conv_weights

        p, a = layer.params, layer.attrs
        w = np.asarray(p["weight"], np.float64)
        b = np.asarray(p["bias"], np.float64) if "bias" in p else np.zeros(w.shape[0])
        fused, last, slope = [], layer, None
        nxt = self._single_consumer(layer.name)
        if nxt is not None and nxt.kind == "batchnorm":
            g, h = batchnorm_affine(nxt)
            w, b = w * g.reshape(-1, 1, 1, 1), g * b + h
            fused.append(nxt.name)
            last = nxt
        slope, last = self._absorb_prelu(last, fused)
        w32, b32 = _f32(w), _f32(b)
        stride, padding, kh, kw = a["stride"], a["padding"], w.shape[2], w.shape[3]
        if w.shape[1] <= DIRECT_CONV_MAX_CHANNELS:
            direct, w_mat = prepack_direct_conv_weights(w32), None
        else:
            direct, w_mat = None, np.ascontiguousarray(w32.reshape(w32.shape[0], -1).T)  # [C·kh·kw, O]

        def run(x):
            if direct is not None:
                out = direct_conv2d(x, direct, b32, slope, stride, padding)
            else:
                cols, n, oh, ow = _im2col_f32(x, kh, kw, stride, padding)
                out = bias_prelu_to_nchw(cols @ w_mat, b32, slope, n, oh, ow)
            return out, LayerEvent(layer, out)

        return Step(last.name, layer, list(layer.inputs), run, fused)

    def _float_step(self, layer: Layer) -> Step:
        from .kernels.fused import maxpool2d

        kind, p, a = layer.kind, layer.params, layer.attrs
        if kind == "linear":
            w = _f32(p["weight"])
            bias = np.zeros(w.shape[0], np.float32) if "bias" not in p else _f32(p["bias"])

            from .kernels.fused import linear_f32

            def op(x):
                return linear_f32(x, w, bias)
        elif kind == "batchnorm":
            from .rules import batchnorm_affine

            g, h = batchnorm_affine(layer)
            g32, h32 = _f32(g), _f32(h)

            def op(x):
                return _f32(x) * _channel(g32, x.ndim) + _channel(h32, x.ndim)
        elif kind == "prelu":
            slope = _f32(p["weight"]).reshape(-1)

            def op(x):
                x = _f32(x)
                s = _channel(slope, x.ndim) if slope.size > 1 else slope[0]
                return np.where(x >= 0, x, x * s)
        elif kind == "relu":
            def op(x):
                return np.maximum(_f32(x), np.float32(0))
        elif kind == "maxpool":
            def op(x):
                return maxpool2d(_f32(x), a["kernel"], a["stride"], a.get("padding", 0))
        elif kind == "avgpool":
            k, s = a["kernel"], a["stride"]

            def op(x):
                x = _f32(x)
                if k == x.shape[2] == x.shape[3] and s == k:  # global pooling
                    return x.mean(axis=(2, 3), dtype=np.float32, keepdims=True)
                from numpy.lib.stride_tricks import sliding_window_view

                return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].mean(axis=(4, 5), dtype=np.float32)
        elif kind == "add":
            def op(x, y):
                return _f32(x) + _f32(y)
        elif kind == "channel_pad":
            out_c = a["out_channels"]

            def op(x):
                x = _f32(x)
                out = np.zeros((x.shape[0], out_c) + x.shape[2:], np.float32)
                out[:, : x.shape[1]] = x
                return out
        elif kind == "flatten":
            def op(x):
                return np.ascontiguousarray(x).reshape(x.shape[0], -1)
        else:
            raise ModelError(f"layer {layer.name!r}: the engine cannot run kind {kind!r} (fold the model first)")

        def run(*xs):
            out = op(*xs)
            return out, LayerEvent(layer, out)

        return Step(layer.name, layer, list(layer.inputs), run)

    # ----------------------------------------------------------------------------------
    # execution

    def run(self, x: np.ndarray, recorder=None) -> np.ndarray:
        """Float32 logits for the NCHW batch ``x`` (float64 logits with ``use_reference``)."""
        if self.use_reference:
            from .reference import run_reference

            return run_reference(self.model, x, record=False, recorder=recorder).logits
        x = check_input(self.model, x)
        if recorder is not None:
            recorder.on_batch_start(self.model, len(x))
        values: dict[str, object] = {"input": _f32(x)}
        uses = dict(self._reads)
        for step in self.steps:
            args = [values[src] for src in step.inputs]
            if step.layer.kind == "threshold":
                out, event = step.run(args[0], recorder)
            else:
                out, event = step.run(*args)
            if recorder is not None:
                recorder.on_layer(event)
            values[step.name] = out
            for src in step.inputs:
                uses[src] -= 1
                if uses[src] == 0 and src != "input":
                    values.pop(src, None)
        return np.asarray(values[self.model.output], np.float32)

    __call__ = run

    def describe(self) -> list[dict]:
        """One dict per executed step: the layer, its kind and the layers fused into it."""
        return [{"step": s.name, "layer": s.layer.name, "kind": s.layer.kind, "fused": list(s.fused)}
                for s in self.steps]


def _im2col_f32(x: np.ndarray, kh: int, kw: int, stride: int, padding: int):
    """float32 im2col: rows = output pixels (n, oy, ox), columns = (c, dy, dx)."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = _f32(x)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow = win.shape[:4]
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, c * kh * kw)
    return cols, n, oh, ow

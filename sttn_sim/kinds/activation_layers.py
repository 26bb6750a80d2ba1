"""Activation quantizer kinds: the ternary activation and its folded form, the threshold.

* ``ternary_act`` — :func:`sttn_sim.rules.ternary_activation` with attributes ``lo``,
  ``hi`` (the STTN ±0.5 by default) and ``tie`` (``"sttn"``: ``+1 if x >= hi``;
  ``"half_even"``: ``+1 if x > hi``, QONNX ``Quant``); its output is int8 codes.
* ``threshold`` — the folded BN + activation, :func:`sttn_sim.rules.apply_threshold`:
  ``z = direction·x``, ``+1 if z >= hi`` (``z > hi`` with ``tie="half_even"``),
  ``-1 if z < lo``, ``constant`` where the direction is 0.  ``integer`` thresholds compare an integer accumulator; float ones a
  float.  ``gain``/``offset`` (optional) give ``y = gain·x + offset``, the value the
  original activation saw (for statistics); ``activation_lo``/``activation_hi`` its
  thresholds.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, ShapeError
from ..kernels.fused import threshold_codes, threshold_pack
from ..kernels.quantizer_stats import FusedThresholdStatistics
from ..ops import gradients as G
from ..recording import LayerEvent
from ..rules import (
    ACTIVATION_HI,
    ACTIVATION_LO,
    TIE_RULES,
    apply_threshold,
    comparison_thresholds,
    ternary_activation,
)
from .base import Attr, LayerKind, Param, check_channel_params, register_kind


@register_kind
class TernaryAct(LayerKind):
    """``-1 if x < lo``, ``0 if lo <= x < hi``, ``+1 if x >= hi`` (int8 codes; ``x > hi``
    with ``tie="half_even"``)."""

    name = "ternary_act"
    summary = "ternary activation with fixed thresholds"
    attrs = (Attr("lo", float, default=ACTIVATION_LO), Attr("hi", float, default=ACTIVATION_HI),
             Attr("tie", str, default="sttn", choices=TIE_RULES, doc="which side the value hi belongs to"))
    quantizer = True
    trainable = True

    def bounds(self, layer) -> tuple[float, float]:
        return float(self.attr(layer, "lo")), float(self.attr(layer, "hi"))

    def check_consistency(self, layer, where):
        lo, hi = self.bounds(layer)
        if lo > hi:
            raise ModelError(f"{where}: expected lo <= hi, got lo={lo} > hi={hi}")

    def reference(self, layer, inputs, run=None):
        x = np.asarray(inputs[0], np.float64)
        if run is not None:
            run.pre_activations[layer.name] = x
        return ternary_activation(x, *self.bounds(layer), tie=self.attr(layer, "tie"))

    def engine_step(self, layer, ctx):
        raise ModelError(f"layer {layer.name!r}: the engine runs folded thresholds, not {self.name!r} "
                         f"(fold the model first)")

    def train_forward(self, layer, inputs, net):
        return G.ternary_act_forward(inputs[0], *self.bounds(layer), net.ste_clip, tie=self.attr(layer, "tie"))

    def train_backward(self, layer, dy, cache, net, grads):
        return [G.ternary_act_backward(dy, cache)]


@register_kind
class Threshold(LayerKind):
    """Folded per-channel thresholds (see the module docstring)."""

    name = "threshold"
    summary = "folded BN + ternary activation: per-channel thresholds"
    params = (Param("direction", "codes"), Param("lo", "number"), Param("hi", "number"), Param("constant", "codes"),
              Param("gain", optional=True), Param("offset", optional=True))
    attrs = (Attr("integer", bool, default=False), Attr("folded_from", list, default=None),
             Attr("activation_lo", float, default=ACTIVATION_LO), Attr("activation_hi", float, default=ACTIVATION_HI),
             Attr("tie", str, default="sttn", choices=TIE_RULES, doc="sttn: +1 iff z >= hi; half_even: z > hi"))
    quantizer = True

    def output_shape(self, layer, in_shapes, where):
        x = in_shapes[0]
        n = layer.params["direction"].size
        if n != x[0]:
            raise ShapeError(f"{where}: parameter 'direction' has {n} entries, input has {x[0]} channels")
        check_channel_params(self, layer, where, x[0])
        return x

    def check_consistency(self, layer, where):
        """``lo <= hi`` where the direction is not 0; integer thresholds are integers."""
        p = layer.params
        if self.attr(layer, "integer") and (p["lo"].dtype.kind not in "iu" or p["hi"].dtype.kind not in "iu"):
            raise ModelError(f"{where}: integer thresholds need integer 'lo'/'hi', got {p['lo'].dtype}/{p['hi'].dtype}")
        active = np.asarray(p["direction"]).reshape(-1) != 0
        lo, hi = np.asarray(p["lo"]).reshape(-1), np.asarray(p["hi"]).reshape(-1)
        if lo.shape == hi.shape == active.shape:
            unordered = active & (lo > hi)
            if unordered.any():
                c = int(np.flatnonzero(unordered)[0])
                raise ModelError(f"{where}: thresholds must satisfy lo <= hi, channel {c} has lo={lo[c]} > hi={hi[c]}")

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        if run is not None:
            run.pre_activations[layer.name] = x
        p = layer.params
        return apply_threshold(x, p["direction"], p["lo"], p["hi"], p["constant"], tie=self.attr(layer, "tie"))

    def engine_step(self, layer, ctx):
        """Threshold and bit-pack in one pass into the NHWC planes the packed
        convolution reads (when every consumer is a ternary convolution), else int8
        codes.  A recorder that offers an accumulator
        (:meth:`~sttn_sim.recording.Recorder.threshold_accumulator`) gets its statistics
        computed in the same pass, without the codes being written out.  The kernels
        compare ``z < lo'``, ``z >= hi'`` with :func:`sttn_sim.rules.comparison_thresholds`
        (float thresholds rounded up to float32, a strict ``hi`` to the next float32 or
        integer above), so the comparison is the float64 rule on the engine's value."""
        p = layer.params
        integer = bool(self.attr(layer, "integer"))
        direction = np.ascontiguousarray(p["direction"], np.int8)
        lo, hi = comparison_thresholds(p["lo"], p["hi"], integer=integer, tie=self.attr(layer, "tie"))
        constant = np.ascontiguousarray(p["constant"], np.int8)
        consumers = ctx.consumers(layer.name)
        packed_out = bool(consumers) and all(c.kind == "ternary_conv" for c in consumers) and \
            len(ctx.shapes[layer.name]) == 3
        prepared = {}  # the fused statistics constants of the last recorder's quantizer
        first = ctx.first_layer(layer)

        def run(args, recorder=None):
            x = np.ascontiguousarray(args[0], np.int32 if integer else np.float32)
            want_codes = recorder is not None
            # recorders need not subclass Recorder: the fast path is optional
            offer = getattr(recorder, "threshold_accumulator", None) if want_codes and packed_out else None
            acc = offer(first) if offer is not None else None
            if acc is not None:  # the recorder's statistics, computed inside the threshold pass
                # one preparation serves every accumulator of the same quantizer arrays
                # (a recorder's merged or empty_like copies); the accumulator is passed per call
                fused = prepared.get("run")
                if fused is None or not fused.acc.same_quantizer(acc):
                    fused = prepared["run"] = FusedThresholdStatistics(acc, integer, direction, lo, hi, constant)
                out = fused(x, acc=acc)
                return out, LayerEvent(first, out, pre_activation=x, statistics=acc)
            if packed_out and want_codes:
                out, codes = threshold_pack(x, direction, lo, hi, constant, with_codes=True)
            elif packed_out:
                out, codes = threshold_pack(x, direction, lo, hi, constant), None
            else:
                out = codes = threshold_codes(x, direction, lo, hi, constant)
            return out, LayerEvent(first, codes if codes is not None else out, pre_activation=x, codes=codes)
        return run

"""Ternary-weight layer kinds in their three forms (docs/design.md §2.1).

* latent ``sttn_conv`` / ``sttn_linear`` — the training form: two latent float kernels
  ``weight1``, ``weight2`` (and biases ``bias1``, ``bias2``); the layer computes
  ``conv(x, αB1) + b1 + conv(x, αB2) + b2`` with ``B_k = sign(clamp(W_k))`` and the
  shared ``α`` of :func:`sttn_sim.rules.sttn_alpha`;
* merged ``ter_conv`` / ``ter_linear`` — one float kernel ``α(B1 + B2)``;
* folded ``ternary_conv`` / ``ternary_linear`` — int8 codes ``t``, scale ``s`` and bias
  ``b``: ``acc = conv(x_codes, t)`` (exact integers), output ``s·acc + b`` (epilogue
  ``"affine"``) or ``acc`` itself (epilogue ``"none"``, when an integer threshold
  follows).  The engine's rewrites (:mod:`sttn_sim.fusions`) may give a folded layer a
  second input, a residual added after the affine epilogue (zero-extended over
  channels), and a PReLU ``slope`` applied last.

  Asymmetric scales (TTQ, docs/design.md §2.4): with the optional ``scale_neg`` the
  kernel is ``W_p·[t = +1] − W_n·[t = −1]`` (``scale = W_p``, ``scale_neg = W_n``, per
  channel), and the layer computes the two exact partial sums
  ``acc₊ = conv(x, [t = +1])``, ``acc₋ = conv(x, [t = −1])`` (masks in {0, 1}):
  ``y = W_p·acc₊ − W_n·acc₋ + b``.  Its accumulator (for statistics and checks) is
  ``acc = acc₊ − acc₋ = conv(x, t)``; the epilogue is always ``"affine"``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, ShapeError
from ..kernels import prepack_conv_weights, prepack_gemm_columns, prepack_gemm_weights, ternary_gemm
from ..kernels.conv import ternary_conv2d
from ..kernels.fused import AffineEpilogue, affine_epilogue, asymmetric_epilogue
from ..ops.reference import conv2d, integer_conv2d, integer_linear, is_ternary
from ..quantizers import TernaryWeights, recover_merged_ternary, sttn_ternarize
from ..recording import LayerEvent
from ..rules import sttn_alpha
from .base import Attr, LayerKind, Param, check_channel_params, per_channel, register_kind
from .float_layers import (
    CONV_ATTRS,
    FUSED_SLOPE,
    WeightedTraining,
    bias_of,
    check_in_channels,
    conv_output_shape,
    f32,
    linear_output_shape,
    prelu64,
)

EPILOGUES = ("affine", "none")


def weight_shape(kind, layer, in_shapes, where, weight_key: str) -> tuple[int, ...]:
    """Output shape of a conv-family or linear-family layer with ``weight_key``."""
    weight = layer.params[weight_key]
    if kind.family == "conv":
        out = conv_output_shape(kind, layer, in_shapes[0], weight, where)
    else:
        out = linear_output_shape(in_shapes[0], weight, where)
    check_channel_params(kind, layer, where, out[0])
    return out


def weighted_map(kind, layer, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 ``conv(x, w)`` or ``x @ wᵀ`` (w with any trailing shape)."""
    if kind.family == "conv":
        return conv2d(x, w, kind.attr(layer, "stride"), kind.attr(layer, "padding"))
    return np.asarray(x, np.float64) @ w.reshape(w.shape[0], -1).T


def require_ternary_input(layer, x: np.ndarray) -> None:
    if not is_ternary(x):
        raise ModelError(f"layer {layer.name!r} ({layer.kind}) must receive ternary codes from an activation "
                         f"quantizer, got values outside {{-1, 0, 1}} from {layer.inputs[0]!r}")


# --------------------------------------------------------------------------------------
# latent: two binary kernels


class LatentTernary(WeightedTraining, LayerKind):
    """Training form of an STTN layer (see the module docstring)."""

    ternary_form = "latent"
    trainable = True
    params = (Param("weight1", "real", "weight"), Param("weight2", "real", "weight"),
              Param("bias1", "real", "channel", optional=True), Param("bias2", "real", "channel", optional=True))

    def output_shape(self, layer, in_shapes, where):
        out = weight_shape(self, layer, in_shapes, where, "weight1")
        p = layer.params
        if p["weight2"].shape != p["weight1"].shape:
            raise ShapeError(f"{where}: weight2 {list(p['weight2'].shape)} differs from weight1 "
                             f"{list(p['weight1'].shape)}")
        return out

    def ternary_weights(self, layer) -> TernaryWeights:
        return sttn_ternarize(layer.params["weight1"], layer.params["weight2"], name=f"layer {layer.name!r}")

    def reference(self, layer, inputs, run=None):
        """``α·acc1 + b1 + α·acc2 + b2`` with ``acc_k = conv(x, B_k)`` exact integers
        when x is ternary (recorded in ``run``); two float convolutions otherwise."""
        x = inputs[0]
        w1 = np.clip(np.asarray(layer.params["weight1"], np.float64), -1.0, 1.0)
        w2 = np.clip(np.asarray(layer.params["weight2"], np.float64), -1.0, 1.0)
        check_in_channels(layer, x, w1)
        alpha, s1, s2 = sttn_alpha(w1, w2), np.sign(w1), np.sign(w2)
        if is_ternary(x):
            acc1 = weighted_map(self, layer, x, s1).astype(np.int64)
            acc2 = weighted_map(self, layer, x, s2).astype(np.int64)
            if run is not None:
                run.accumulators[layer.name] = {"acc1": acc1, "acc2": acc2}
            y1, y2 = acc1 * per_channel(alpha, acc1.ndim), acc2 * per_channel(alpha, acc2.ndim)
        else:  # a latent layer fed by floats: two float convolutions with α·B_k
            scale = alpha.reshape((-1,) + (1,) * (s1.ndim - 1))
            y1, y2 = weighted_map(self, layer, x, s1 * scale), weighted_map(self, layer, x, s2 * scale)
        c = y1.shape[1]
        return (y1 + per_channel(bias_of(layer, "bias1", c), y1.ndim)) + \
            (y2 + per_channel(bias_of(layer, "bias2", c), y2.ndim))


@register_kind
class SttnConv(LatentTernary):
    name = "sttn_conv"
    summary = "STTN convolution, training form (two latent kernels)"
    family = "conv"
    conv = True
    attrs = CONV_ATTRS


@register_kind
class SttnLinear(LatentTernary):
    name = "sttn_linear"
    summary = "STTN fully connected layer, training form (two latent kernels)"
    family = "linear"
    conv = False


# --------------------------------------------------------------------------------------
# merged: one float kernel α(B1 + B2)


class MergedTernary(LayerKind):
    """A float layer whose kernel holds one non-zero magnitude per output channel."""

    ternary_form = "merged"
    params = (Param("weight", "real", "weight"), Param("bias", "real", "channel", optional=True))

    def output_shape(self, layer, in_shapes, where):
        return weight_shape(self, layer, in_shapes, where, "weight")

    def ternary_weights(self, layer) -> TernaryWeights:
        """Codes and scale(s) recovered per channel; a TTQ layer
        (``attrs["ternary_method"] == "ttq"``) has one magnitude per sign."""
        asymmetric = layer.attrs.get("ternary_method") == "ttq"
        return recover_merged_ternary(layer.params["weight"], name=f"layer {layer.name!r}", asymmetric=asymmetric)

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        w = np.asarray(layer.params["weight"], np.float64)
        check_in_channels(layer, x, w)
        y = weighted_map(self, layer, x, w)
        return y + per_channel(bias_of(layer, "bias", y.shape[1]), y.ndim)


@register_kind
class TerConv(MergedTernary):
    name = "ter_conv"
    summary = "STTN convolution, merged form α(B1+B2)"
    family = "conv"
    attrs = CONV_ATTRS + (Attr("ternary_method", str, default=None),)


@register_kind
class TerLinear(MergedTernary):
    name = "ter_linear"
    summary = "STTN fully connected layer, merged form α(B1+B2)"
    family = "linear"
    attrs = (Attr("ternary_method", str, default=None),)


# --------------------------------------------------------------------------------------
# folded: int8 codes, scale, bias


class FoldedTernary(LayerKind):
    """``acc = conv(x_codes, t)``; ``s·acc + b`` [+ residual] [→ PReLU] or ``acc``."""

    ternary_form = "folded"
    inputs = (1, 2)
    params = (Param("codes", "codes", "weight"), Param("scale", "real", "channel"), Param("bias", "real", "channel"),
              Param("scale_neg", "real", "channel", optional=True,
                    doc="TTQ: W_n, the magnitude of the -1 codes (then scale = W_p)"),
              FUSED_SLOPE)
    common_attrs = (Attr("epilogue", str, default="affine", choices=EPILOGUES),
                    Attr("folded_from", str, default=None))

    def affine(self, layer) -> bool:
        return self.attr(layer, "epilogue") == "affine"

    @staticmethod
    def asymmetric(layer) -> bool:
        """True for a layer with separate positive and negative scales (TTQ)."""
        return "scale_neg" in layer.params

    def check_consistency(self, layer, where):
        if self.asymmetric(layer) and not self.affine(layer):
            raise ModelError(f"{where}: a layer with 'scale_neg' (two scales) needs epilogue 'affine'; its two "
                             f"partial sums are not one integer accumulator")

    def output_shape(self, layer, in_shapes, where):
        out = weight_shape(self, layer, in_shapes, where, "codes")
        if len(in_shapes) == 2:
            res = in_shapes[1]
            if not self.affine(layer):
                raise ShapeError(f"{where}: a residual input needs epilogue 'affine'")
            if len(res) != len(out) or res[0] > out[0] or tuple(res[1:]) != tuple(out[1:]):
                raise ShapeError(f"{where}: residual {list(res)} ({layer.inputs[1]}) does not fit output {list(out)} "
                                 f"(at most {out[0]} channels, the rest zero-extended)")
        return out

    def ternary_weights(self, layer) -> TernaryWeights:
        p = layer.params
        if self.asymmetric(layer):
            return TernaryWeights(p["codes"], np.asarray(p["scale"], np.float64), "ttq", "channel", None,
                                  scale_neg=np.asarray(p["scale_neg"], np.float64))
        return TernaryWeights(p["codes"], np.asarray(p["scale"], np.float64), "sttn", "channel", None)

    def accumulate(self, layer, x: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Exact int64 ``conv(x_codes, t)`` or ``x_codes @ tᵀ`` (``codes``: other codes
        of the same shape, e.g. a sign mask)."""
        codes = layer.params["codes"] if codes is None else codes
        if self.family == "conv":
            return integer_conv2d(x, codes, self.attr(layer, "stride"), self.attr(layer, "padding"))
        return integer_linear(x, codes)

    def partial_sums(self, layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact int64 partial sums ``acc₊ = conv(x, [t = +1])``, ``acc₋ = conv(x, [t = −1])``."""
        codes = layer.params["codes"]
        return (self.accumulate(layer, x, (codes > 0).astype(np.int8)),
                self.accumulate(layer, x, (codes < 0).astype(np.int8)))

    def affine_output(self, layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(acc, y, accumulators)`` for ternary codes ``x``: the int64 accumulator, the
        float64 affine output ``s·acc + b`` (asymmetric: ``W_p·acc₊ − W_n·acc₋ + b``),
        whatever the epilogue, and the accumulators a reference run records."""
        p = layer.params
        if self.asymmetric(layer):
            acc_pos, acc_neg = self.partial_sums(layer, x)
            acc = acc_pos - acc_neg
            y = acc_pos * per_channel(np.asarray(p["scale"], np.float64), acc.ndim) - \
                acc_neg * per_channel(np.asarray(p["scale_neg"], np.float64), acc.ndim)
            recorded = {"acc": acc, "acc_pos": acc_pos, "acc_neg": acc_neg}
        else:
            acc = self.accumulate(layer, x)
            y = acc * per_channel(np.asarray(p["scale"], np.float64), acc.ndim)
            recorded = {"acc": acc}
        return acc, y + per_channel(np.asarray(p["bias"], np.float64), acc.ndim), recorded

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        check_in_channels(layer, x, layer.params["codes"])
        require_ternary_input(layer, x)
        if not self.affine(layer):
            acc = self.accumulate(layer, x)
            if run is not None:
                run.accumulators[layer.name] = {"acc": acc}
            return acc
        p = layer.params
        acc, y, recorded = self.affine_output(layer, x)
        if run is not None:
            run.accumulators[layer.name] = recorded
        if len(inputs) == 2:  # residual, zero-extended over channels
            res = np.asarray(inputs[1], np.float64)
            y[:, : res.shape[1]] += res
        return prelu64(y, p["slope"]) if "slope" in p else y

    def packed_accumulator(self, layer, ctx, codes, what: str):
        """``x -> conv(x, codes)`` (or ``x·codesᵀ``) as exact int32 accumulators, with
        ``codes`` prepacked once for the engine's ternary micro-kernel (the CPU class's,
        :mod:`sttn_sim.kernels.selection`)."""
        kernel = ctx.kernels.ternary
        where = f"layer {layer.name!r} {what}"
        if self.family == "conv":
            weights = prepack_conv_weights(codes, where, kernel)
            stride, padding = self.attr(layer, "stride"), self.attr(layer, "padding")
            return lambda x, epilogue=None: ternary_conv2d(x, weights, stride, padding, epilogue=epilogue)
        weights = prepack_gemm_weights(codes, where, kernel)
        return lambda x: np.ascontiguousarray(ternary_gemm(weights, prepack_gemm_columns(x, kernel=kernel)).T)

    def engine_step(self, layer, ctx):
        """Packed popcount convolution (or GEMM) with exact int32 accumulators, then one
        fused float32 epilogue ``acc·s + b [+ residual] [→ PReLU]`` (scale and bias
        rounded once to float32).  A convolution applies the epilogue inside its kernel,
        tile by tile, unless the recorder :attr:`~sttn_sim.recording.Recorder.wants_accumulators`
        (the same float32 values either way).  Asymmetric layers:
        :meth:`asymmetric_engine_step`."""
        if self.asymmetric(layer):
            return self.asymmetric_engine_step(layer, ctx)
        p = layer.params
        accumulate = self.packed_accumulator(layer, ctx, p["codes"], "codes")
        affine = self.affine(layer)
        mult32, shift32 = f32(p["scale"]), f32(p["bias"])
        slope = f32(p["slope"]).reshape(-1) if "slope" in p else None
        first = ctx.first_layer(layer)

        fusable = affine and self.family == "conv"

        def run(args, recorder=None):
            residual = args[1] if len(args) == 2 else None
            if fusable and not getattr(recorder, "wants_accumulators", recorder is not None):
                y = accumulate(args[0], AffineEpilogue(mult32, shift32, residual, slope))
                return y, LayerEvent(first, y)
            acc = accumulate(args[0])
            if not affine:
                return acc, LayerEvent(first, acc, accumulator=acc)
            y = affine_epilogue(acc, mult32, shift32, residual, slope)
            return y, LayerEvent(first, y, accumulator=acc)
        return run

    def asymmetric_engine_step(self, layer, ctx):
        """TTQ layers: the packed convolution (or GEMM) run twice, on the masks
        ``[t = +1]`` and ``[t = −1]`` (both exact int32 partial sums), then one fused
        float32 epilogue ``W_p·acc₊ − W_n·acc₋ + b [+ residual] [→ PReLU]``
        (:func:`~sttn_sim.kernels.fused.asymmetric_epilogue`).  The event's accumulator
        is ``acc₊ − acc₋ = conv(x, t)``."""
        p = layer.params
        positive = self.packed_accumulator(layer, ctx, (p["codes"] > 0).astype(np.int8), "+ mask")
        negative = self.packed_accumulator(layer, ctx, (p["codes"] < 0).astype(np.int8), "- mask")
        a_pos, a_neg, b32 = f32(p["scale"]), f32(p["scale_neg"]), f32(p["bias"])
        slope = f32(p["slope"]).reshape(-1) if "slope" in p else None
        first = ctx.first_layer(layer)

        def run(args, recorder=None):
            acc_pos, acc_neg = positive(args[0]), negative(args[0])
            residual = args[1] if len(args) == 2 else None
            y = asymmetric_epilogue(acc_pos, acc_neg, a_pos, a_neg, b32, residual, slope)
            return y, LayerEvent(first, y, accumulator=acc_pos - acc_neg)
        return run


@register_kind
class TernaryConv(FoldedTernary):
    name = "ternary_conv"
    summary = "folded ternary convolution (int8 codes, per-channel scale and bias)"
    family = "conv"
    attrs = CONV_ATTRS + FoldedTernary.common_attrs


@register_kind
class TernaryLinear(FoldedTernary):
    name = "ternary_linear"
    summary = "folded ternary fully connected layer (int8 codes, per-channel scale and bias)"
    family = "linear"
    attrs = FoldedTernary.common_attrs

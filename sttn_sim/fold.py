"""Folding: a training-time model → a folded model of int8 codes, scales and thresholds.

The fold is a sequence of small rewrites, one per class (in the style of FINN's
streamline transformations); each takes a :class:`Model` and returns a new one:

1. :class:`FoldTernaryWeights` — ``sttn_*`` (two latent kernels) and ``ter_*``
   (merged α(B1+B2)) layers → ``ternary_*`` layers with int8 codes, per-channel scale
   ``s_o = 2 α_o`` and bias ``b1 + b2``.
2. :class:`FoldAccumulatorThreshold` — ``ternary_* → batchnorm → ternary_act`` →
   ``ternary_*`` (epilogue ``"none"``: it outputs its integer accumulator) followed by
   an integer ``threshold``: data between ternary layers stays integer.
3. :class:`FoldBatchNormThreshold` — ``batchnorm → ternary_act`` → one ``threshold``
   on the pre-BN value (float64 thresholds).
4. :class:`FoldBareThreshold` — any remaining ``ternary_act`` → ``threshold``.

:func:`fold` applies all four.  The ``threshold`` layer takes the name of the
activation it replaces, so statistics keyed by layer name line up across forms.
"""

from __future__ import annotations

import numpy as np

from .errors import FoldError, ModelError, QuantizationError
from .graph import Layer, Model
from .shapes import infer_shapes
from .quantizers import recover_merged_ternary, sttn_ternarize

# --------------------------------------------------------------------------------------
# threshold derivation


def thresholds_from_affine(gain, offset, lo: float = -0.5, hi: float = 0.5, *, integer: bool = False):
    """Per-channel thresholds on x for the ternary activation of ``y = gain·x + offset``.

    The activation is ``+1 iff y >= hi``, ``-1 iff y < lo`` (DESIGN §2.2).  With
    ``d = sign(gain)`` and ``z = d·x`` we have ``y = |gain|·z + offset``, so for gain ≠ 0

        y >= hi  ⟺  |gain|·z >= hi - offset  ⟺  z >= (hi - offset) / |gain|
        y <  lo  ⟺  |gain|·z <  lo - offset  ⟺  z <  (lo - offset) / |gain|

    (dividing by a positive number keeps both the direction and the strictness; for
    gain < 0 the comparisons on x itself reverse: ``+1 iff x <= -(hi-offset)/|gain|``,
    which ``z = -x`` expresses without a second rule).  For gain == 0, y = offset is a
    constant and the code is the activation of ``offset``.

    ``integer=True`` is for an integer x (an accumulator): for integer z and real t,
    ``z >= t ⟺ z >= ceil(t)`` and ``z < t ⟺ z < ceil(t)``, so both thresholds become
    ``ceil`` of the real ones and the strict / non-strict forms are kept.

    All arithmetic is float64.  Returns ``(direction int8, lo_t, hi_t, constant int8)``
    with ``lo_t``/``hi_t`` float64, or int64 when ``integer``.
    """
    gain = np.asarray(gain, np.float64)
    offset = np.broadcast_to(np.asarray(offset, np.float64), gain.shape)
    direction = np.sign(gain).astype(np.int8)
    magnitude = np.where(gain == 0, 1.0, np.abs(gain))  # placeholder 1 where unused
    with np.errstate(over="ignore"):  # a tiny |gain| may give ±inf: a threshold no value reaches
        t_hi = (hi - offset) / magnitude
        t_lo = (lo - offset) / magnitude
    constant = ((offset >= hi).astype(np.int8) - (offset < lo).astype(np.int8)).astype(np.int8)
    t_hi = np.where(direction == 0, 0.0, t_hi)
    t_lo = np.where(direction == 0, 0.0, t_lo)
    if integer:
        t_hi = _exact_ceil(hi, offset, magnitude, direction)
        t_lo = _exact_ceil(lo, offset, magnitude, direction)
    return direction, t_lo, t_hi, constant


def _exact_ceil(bound, offset, magnitude, direction):
    """``ceil((bound - offset) / magnitude)`` of the exact rational values of the float64
    inputs, clipped to ±2**62 (beyond any reachable accumulator); 0 where
    ``direction == 0``.

    The float64 quotient is rounded twice, so when the real quotient lies within an ulp
    of an integer, ``ceil`` of the float can be off by one and flip the code of that
    integer accumulator.  Non-finite inputs (``fold`` refuses them) fall back to the
    clipped float quotient.
    """
    from fractions import Fraction
    import math

    limit = 2**62
    bound, offset, magnitude, direction = np.broadcast_arrays(
        np.asarray(bound, np.float64), offset, magnitude, direction)
    out = np.zeros(direction.shape, np.int64)
    for i in np.ndindex(out.shape):
        if direction[i] == 0:
            continue
        if np.isfinite(bound[i]) and np.isfinite(offset[i]) and np.isfinite(magnitude[i]):
            q = math.ceil((Fraction(float(bound[i])) - Fraction(float(offset[i]))) / Fraction(float(magnitude[i])))
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                f = (bound[i] - offset[i]) / magnitude[i]
            q = 0 if np.isnan(f) else (limit if f > 0 else -limit) if np.isinf(f) else math.ceil(f)
        out[i] = min(max(q, -limit), limit)
    return out


def batchnorm_affine(bn: Layer) -> tuple[np.ndarray, np.ndarray]:
    """BN as ``y = g·x + h`` (float64): ``g = γ / sqrt(var + eps)``, ``h = β - g·mean``."""
    p = {k: np.asarray(v, np.float64) for k, v in bn.params.items()}
    var = p["running_var"]
    if np.any(var < 0):
        bad = np.flatnonzero(var < 0)
        raise FoldError(
            f"layer {bn.name!r}: running_var is negative in {bad.size} channel(s) (first: channel {bad[0]}, "
            f"value {var[bad[0]]:.6g}); a variance must be >= 0"
        )
    eps = float(bn.attrs.get("eps", 1e-5))
    if not np.all(var + eps > 0):
        raise FoldError(f"layer {bn.name!r}: running_var + eps must be > 0 (eps={eps})")
    g = p["weight"] / np.sqrt(var + eps)
    h = p["bias"] - g * p["running_mean"]
    return g, h


# --------------------------------------------------------------------------------------
# rewrites


def _single_consumer(model: Model, name: str) -> Layer | None:
    consumers = model.consumers(name)
    return consumers[0] if len(consumers) == 1 and name != model.output else None


def _replace(model: Model, layers: list[Layer]) -> Model:
    return Model(model.arch, model.input_shape, layers, model.form, dict(model.metadata))


def _check_finite(layer: Layer) -> None:
    for pname, value in layer.params.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            count = int(np.sum(~np.isfinite(value)))
            raise FoldError(f"layer {layer.name!r}: parameter {pname!r} holds {count} NaN/Inf value(s)")


class FoldTernaryWeights:
    """Latent or merged ternary layers → ``ternary_conv`` / ``ternary_linear``.

    Latent (DESIGN §2.1): codes ``t = (sign W1 + sign W2) / 2`` after clamping, scale
    ``s_o = 2 α_o`` with ``α_o = (Σ|W1_o| + Σ|W2_o|) / (2n)``, bias ``b1 + b2``.
    Because ``α(B1 + B2) = 2α·t = s·t``, the training-time output
    ``conv(x, αB1) + b1 + conv(x, αB2) + b2 = s·conv(x, t) + (b1 + b2)``.
    Merged: ``t`` and ``s`` recovered per channel from α(B1 + B2).
    """

    def __init__(self, zero_policy: str = "error", merged_rtol: float = 1e-5):
        self.zero_policy = zero_policy
        self.merged_rtol = merged_rtol

    def apply(self, model: Model) -> Model:
        layers = []
        for layer in model.layers:
            if layer.kind in ("sttn_conv", "sttn_linear", "ter_conv", "ter_linear"):
                _check_finite(layer)
                try:
                    if layer.kind.startswith("sttn"):
                        q = sttn_ternarize(layer.params["weight1"], layer.params["weight2"],
                                           zero_policy=self.zero_policy, name=f"layer {layer.name!r}")
                        bias = np.zeros(q.codes.shape[0])
                        for key in ("bias1", "bias2"):
                            if key in layer.params:
                                bias = bias + np.asarray(layer.params[key], np.float64)
                    else:
                        q = recover_merged_ternary(layer.params["weight"], rtol=self.merged_rtol,
                                                   name=f"layer {layer.name!r}")
                        b = layer.params.get("bias")
                        bias = np.zeros(q.codes.shape[0]) if b is None else np.asarray(b, np.float64)
                except QuantizationError as exc:
                    raise FoldError(str(exc)) from None
                kind = "ternary_conv" if layer.kind.endswith("conv") else "ternary_linear"
                attrs = dict(layer.attrs, epilogue="affine", folded_from=layer.kind)
                params = {"codes": q.codes.astype(np.int8), "scale": np.asarray(q.scale, np.float64), "bias": bias}
                layers.append(Layer(layer.name, kind, list(layer.inputs), attrs, params))
            else:
                layers.append(layer)
        return _replace(model, layers)


class FoldAccumulatorThreshold:
    """``ternary_* → batchnorm → ternary_act`` → integer accumulator + integer threshold.

    With the folded layer ``x = s·acc + b`` and BN ``y = g·x + h`` (g = γ/σ,
    h = β - g·mean):  ``y = (g·s)·acc + (g·b + h)``, an affine function of the
    integer accumulator.  :func:`thresholds_from_affine` with ``integer=True`` gives
    ``ceil`` thresholds on acc; the ternary layer's epilogue becomes ``"none"`` (its
    scale and bias stay in the model for statistics, folded into the thresholds).
    """

    def apply(self, model: Model) -> Model:
        layers = list(model.layers)
        for i, conv in enumerate(model.layers):
            if conv.kind not in ("ternary_conv", "ternary_linear") or conv.attrs.get("epilogue") != "affine":
                continue
            bn = _single_consumer(model, conv.name)
            act = _single_consumer(model, bn.name) if bn is not None and bn.kind == "batchnorm" else None
            if act is None or act.kind != "ternary_act":
                continue
            _check_finite(bn)
            g, h = batchnorm_affine(bn)
            s = np.asarray(conv.params["scale"], np.float64)
            b = np.asarray(conv.params["bias"], np.float64)
            direction, lo, hi, constant = thresholds_from_affine(
                g * s, g * b + h, act.attrs.get("lo", -0.5), act.attrs.get("hi", 0.5), integer=True)
            new_conv = Layer(conv.name, conv.kind, list(conv.inputs), dict(conv.attrs, epilogue="none"), dict(conv.params))
            threshold = Layer(act.name, "threshold", [conv.name],
                              {"integer": True, "folded_from": [conv.name, bn.name, act.name],
                               "activation_lo": act.attrs.get("lo", -0.5), "activation_hi": act.attrs.get("hi", 0.5)},
                              {"direction": direction, "lo": lo, "hi": hi, "constant": constant,
                               "gain": g * s, "offset": g * b + h})
            layers = [new_conv if l is conv else threshold if l is act else l for l in layers if l is not bn]
        return _replace(model, layers)


class FoldBatchNormThreshold:
    """``batchnorm → ternary_act`` → one float64 ``threshold`` on the pre-BN value.

    BN is ``y = g·x + h`` with ``g = γ / sqrt(var + eps)``, ``h = β - g·mean``;
    :func:`thresholds_from_affine` turns the activation of y into per-channel
    comparisons on x (reversed for γ < 0, a constant code for γ == 0).
    """

    def apply(self, model: Model) -> Model:
        layers = list(model.layers)
        for bn in model.layers:
            if bn.kind != "batchnorm":
                continue
            act = _single_consumer(model, bn.name)
            if act is None or act.kind != "ternary_act":
                continue
            _check_finite(bn)
            g, h = batchnorm_affine(bn)
            direction, lo, hi, constant = thresholds_from_affine(
                g, h, act.attrs.get("lo", -0.5), act.attrs.get("hi", 0.5), integer=False)
            threshold = Layer(act.name, "threshold", list(bn.inputs),
                              {"integer": False, "folded_from": [bn.name, act.name],
                               "activation_lo": act.attrs.get("lo", -0.5), "activation_hi": act.attrs.get("hi", 0.5)},
                              {"direction": direction, "lo": lo, "hi": hi, "constant": constant, "gain": g, "offset": h})
            layers = [threshold if l is act else l for l in layers if l is not bn]
        return _replace(model, layers)


class FoldBareThreshold:
    """A ``ternary_act`` with no BN before it → ``threshold`` with unit gain."""

    def apply(self, model: Model) -> Model:
        layers = []
        for layer in model.layers:
            if layer.kind != "ternary_act":
                layers.append(layer)
                continue
            channels = _input_channels(model, layer)
            lo, hi = layer.attrs.get("lo", -0.5), layer.attrs.get("hi", 0.5)
            direction, t_lo, t_hi, constant = thresholds_from_affine(np.ones(channels), np.zeros(channels), lo, hi)
            layers.append(Layer(layer.name, "threshold", list(layer.inputs),
                                {"integer": False, "folded_from": [layer.name], "activation_lo": lo, "activation_hi": hi},
                                {"direction": direction, "lo": t_lo, "hi": t_hi, "constant": constant,
                                 "gain": np.ones(channels), "offset": np.zeros(channels)}))
        return _replace(model, layers)


def _input_channels(model: Model, layer: Layer) -> int:
    """Channel (or feature) count of the tensor feeding ``layer``."""
    shapes = infer_shapes(model)
    src = layer.inputs[0]
    shape = model.input_shape if src == "input" else shapes[src]
    return int(shape[0])


FOLD_PASSES = (FoldTernaryWeights, FoldAccumulatorThreshold, FoldBatchNormThreshold, FoldBareThreshold)


def fold(model: Model, *, zero_policy: str = "error", merged_rtol: float = 1e-5) -> Model:
    """Fold a training-time (latent or merged) model into integer codes and thresholds.

    ``zero_policy`` decides what an exactly-zero latent weight means (see
    :func:`sttn_sim.quantizers.sttn_ternarize`; the default raises :class:`FoldError`
    naming the layer and the count).  A model that is already folded is returned as a
    copy.
    """
    if not isinstance(model, Model):
        raise ModelError(f"fold() expects a sttn_sim Model, got {type(model).__name__}")
    if model.form == "folded":
        return model.copy()
    if model.form == "float":
        raise FoldError(f"model {model.arch!r} has no ternary layers to fold (form 'float')")
    for layer in model.layers:  # every layer, not only those a rewrite touches
        _check_finite(layer)
        if layer.kind == "batchnorm":
            batchnorm_affine(layer)  # raises on a negative variance
    passes = [FoldTernaryWeights(zero_policy, merged_rtol), FoldAccumulatorThreshold(),
              FoldBatchNormThreshold(), FoldBareThreshold()]
    folded = model
    for rewrite in passes:
        folded = rewrite.apply(folded)
    folded.form = "folded"
    folded.metadata = dict(model.metadata, folded_from_form=model.form)
    return folded


__all__ = [
    "fold", "thresholds_from_affine", "batchnorm_affine", "FoldTernaryWeights",
    "FoldAccumulatorThreshold", "FoldBatchNormThreshold", "FoldBareThreshold", "FOLD_PASSES",
]

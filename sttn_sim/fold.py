"""Folding: a training-time model → a folded model of int8 codes, scales and thresholds.

The fold is a sequence of small rewrites, one per class (in the style of FINN's
streamline transformations); each is a :class:`~sttn_sim.graph.Transformation`,
``apply(model) -> (model, changed)``, and rewrites every match it finds in one sweep:

1. :class:`FoldTernaryWeights` — ``sttn_*`` (two latent kernels) and ``ter_*``
   (merged α(B1+B2)) layers → ``ternary_*`` layers with int8 codes, per-channel scale
   ``s_o = 2 α_o`` and bias ``b1 + b2``.
2. :class:`FoldAccumulatorThreshold` — ``ternary_* → batchnorm → ternary_act`` →
   ``ternary_*`` (epilogue ``"none"``: it outputs its integer accumulator) followed by
   an integer ``threshold``: data between ternary layers stays integer.
3. :class:`FoldBatchNormThreshold` — ``batchnorm → ternary_act`` → one ``threshold``
   on the pre-BN value (float64 thresholds).
4. :class:`FoldBareThreshold` — any remaining ``ternary_act`` → ``threshold``.
5. :class:`FoldAffineThreshold` — ``ternary_* → threshold`` (a float threshold on the
   affine output, as an imported FINN ``MultiThreshold`` gives) → integer accumulator +
   integer ``threshold``, like pass 2.

The activation's tie rule (``attrs["tie"]``, :data:`sttn_sim.rules.TIE_RULES`) goes into
the thresholds and the ``threshold`` layer.  TTQ layers (merged ``ter_*`` with
``attrs["ternary_method"] == "ttq"``) fold into the asymmetric form (``scale_neg``);
their two partial sums are no single integer accumulator, so passes 2 and 5 leave them
alone and their BN + activation becomes a float threshold (pass 3).

:func:`fold` applies all five (:data:`FOLD_PASSES`).  The ``threshold`` layer takes the
name of the activation it replaces, so statistics keyed by layer name line up across
forms.  The algebra (BN as an affine map, thresholds through it, exact integer
ceilings) is :mod:`sttn_sim.rules`.
"""

from __future__ import annotations

import numpy as np

from .errors import FoldError, ModelError, QuantizationError
from .graph import Layer, Model, Transformation
from .kinds import weighted_kind
from .quantizers import recover_merged_ternary, sttn_ternarize
from .rules import activation_bounds, batchnorm_affine, thresholds_from_affine
from .shapes import infer_shapes
from .validation import validate_model

# --------------------------------------------------------------------------------------
# rewrites


class FoldTernaryWeights(Transformation):
    """Latent or merged ternary layers → ``ternary_conv`` / ``ternary_linear``.

    Latent (docs/design.md §2.1): codes ``t = (sign W1 + sign W2) / 2`` after clamping, scale
    ``s_o = 2 α_o`` with ``α_o = (Σ|W1_o| + Σ|W2_o|) / (2n)``, bias ``b1 + b2``.
    Because ``α(B1 + B2) = 2α·t = s·t``, the training-time output
    ``conv(x, αB1) + b1 + conv(x, αB2) + b2 = s·conv(x, t) + (b1 + b2)``.
    Merged: ``t`` and ``s`` recovered per channel from α(B1 + B2); a TTQ layer
    (``attrs["ternary_method"] == "ttq"``) holds ``W_p·[t=+1] − W_n·[t=−1]`` and keeps
    both magnitudes (``scale = W_p``, ``scale_neg = W_n``).
    """

    def __init__(self, zero_policy: str = "error", merged_rtol: float = 1e-5):
        self.zero_policy = zero_policy
        self.merged_rtol = merged_rtol

    def apply(self, model: Model) -> tuple[Model, bool]:
        layers, changed = [], False
        for layer in model.layers:
            if layer.ternary_form in ("latent", "merged"):
                try:
                    if layer.ternary_form == "latent":
                        q = sttn_ternarize(layer.params["weight1"], layer.params["weight2"],
                                           zero_policy=self.zero_policy, name=f"layer {layer.name!r}")
                        bias = np.zeros(q.codes.shape[0])
                        for key in ("bias1", "bias2"):
                            if key in layer.params:
                                bias = bias + np.asarray(layer.params[key], np.float64)
                    else:
                        q = recover_merged_ternary(layer.params["weight"], rtol=self.merged_rtol,
                                                   name=f"layer {layer.name!r}",
                                                   asymmetric=layer.attrs.get("ternary_method") == "ttq")
                        b = layer.params.get("bias")
                        bias = np.zeros(q.codes.shape[0]) if b is None else np.asarray(b, np.float64)
                except QuantizationError as exc:
                    raise FoldError(str(exc)) from None
                kind = weighted_kind(layer.spec.family, "folded")
                attrs = dict(layer.attrs, epilogue="affine", folded_from=layer.kind)
                params = {"codes": q.codes.astype(np.int8), "scale": np.asarray(q.scale, np.float64), "bias": bias}
                if q.scale_neg is not None:
                    params["scale_neg"] = np.asarray(q.scale_neg, np.float64)
                layers.append(Layer(layer.name, kind, list(layer.inputs), attrs, params))
                changed = True
            else:
                layers.append(layer)
        return model.replace_layers(layers), changed


class FoldAccumulatorThreshold(Transformation):
    """``ternary_* → batchnorm → ternary_act`` → integer accumulator + integer threshold.

    With the folded layer ``x = s·acc + b`` and BN ``y = g·x + h`` (g = γ/σ,
    h = β - g·mean):  ``y = (g·s)·acc + (g·b + h)``, an affine function of the
    integer accumulator.  :func:`thresholds_from_affine` with ``integer=True`` gives
    ``ceil`` thresholds on acc; the ternary layer's epilogue becomes ``"none"`` (its
    scale and bias stay in the model for statistics, folded into the thresholds).
    """

    def apply(self, model: Model) -> tuple[Model, bool]:
        layers, changed = list(model.layers), False
        for conv in model.layers:
            if not _is_integer_affine(conv):
                continue
            bn = model.single_consumer(conv.name)
            act = model.single_consumer(bn.name) if bn is not None and bn.kind == "batchnorm" else None
            if act is None or act.kind != "ternary_act":
                continue
            g, h = batchnorm_affine(bn)
            s = np.asarray(conv.params["scale"], np.float64)
            b = np.asarray(conv.params["bias"], np.float64)
            lo_act, hi_act = activation_bounds(act.attrs)
            tie = _tie(act)
            direction, lo, hi, constant = thresholds_from_affine(g * s, g * b + h, lo_act, hi_act, integer=True,
                                                                 tie=tie)
            new_conv = Layer(conv.name, conv.kind, list(conv.inputs), dict(conv.attrs, epilogue="none"), dict(conv.params))
            threshold = Layer(act.name, "threshold", [conv.name],
                              {"integer": True, "folded_from": [conv.name, bn.name, act.name],
                               "activation_lo": lo_act, "activation_hi": hi_act, "tie": tie},
                              {"direction": direction, "lo": lo, "hi": hi, "constant": constant,
                               "gain": g * s, "offset": g * b + h})
            layers = [new_conv if l is conv else threshold if l is act else l for l in layers if l is not bn]
            changed = True
        return model.replace_layers(layers), changed


class FoldBatchNormThreshold(Transformation):
    """``batchnorm → ternary_act`` → one float64 ``threshold`` on the pre-BN value.

    BN is ``y = g·x + h`` with ``g = γ / sqrt(var + eps)``, ``h = β - g·mean``;
    :func:`thresholds_from_affine` turns the activation of y into per-channel
    comparisons on x (reversed for γ < 0, a constant code for γ == 0).
    """

    def apply(self, model: Model) -> tuple[Model, bool]:
        layers, changed = list(model.layers), False
        for bn in model.layers:
            if bn.kind != "batchnorm":
                continue
            act = model.single_consumer(bn.name)
            if act is None or act.kind != "ternary_act":
                continue
            g, h = batchnorm_affine(bn)
            lo_act, hi_act = activation_bounds(act.attrs)
            tie = _tie(act)
            direction, lo, hi, constant = thresholds_from_affine(g, h, lo_act, hi_act, integer=False, tie=tie)
            threshold = Layer(act.name, "threshold", list(bn.inputs),
                              {"integer": False, "folded_from": [bn.name, act.name],
                               "activation_lo": lo_act, "activation_hi": hi_act, "tie": tie},
                              {"direction": direction, "lo": lo, "hi": hi, "constant": constant, "gain": g, "offset": h})
            layers = [threshold if l is act else l for l in layers if l is not bn]
            changed = True
        return model.replace_layers(layers), changed


class FoldBareThreshold(Transformation):
    """A ``ternary_act`` with no BN before it → ``threshold`` with unit gain."""

    def apply(self, model: Model) -> tuple[Model, bool]:
        layers, changed = [], False
        for layer in model.layers:
            if layer.kind != "ternary_act":
                layers.append(layer)
                continue
            channels = _input_channels(model, layer)
            lo, hi = activation_bounds(layer.attrs)
            tie = _tie(layer)
            direction, t_lo, t_hi, constant = thresholds_from_affine(np.ones(channels), np.zeros(channels), lo, hi,
                                                                     tie=tie)
            changed = True
            layers.append(Layer(layer.name, "threshold", list(layer.inputs),
                                {"integer": False, "folded_from": [layer.name], "activation_lo": lo, "activation_hi": hi,
                                 "tie": tie},
                                {"direction": direction, "lo": t_lo, "hi": t_hi, "constant": constant,
                                 "gain": np.ones(channels), "offset": np.zeros(channels)}))
        return model.replace_layers(layers), changed


class FoldAffineThreshold(Transformation):
    """``ternary_* → threshold`` (float thresholds on the affine output ``x = s·acc + b``,
    the threshold its only reader) → ``ternary_*`` with epilogue ``"none"`` + an integer
    ``threshold`` on ``acc``.

    The threshold compares ``z = d·x = (d·s)·acc + d·b`` with per-channel ``lo``/``hi``
    under its tie rule: :func:`thresholds_from_affine` with gain ``d·s``, offset ``d·b``
    and those thresholds gives exact integer thresholds on ``sign(d·s)·acc``.  Layers
    with two scales (TTQ) have no single accumulator and are left alone.
    """

    def apply(self, model: Model) -> tuple[Model, bool]:
        layers, changed = list(model.layers), False
        for conv in model.layers:
            if not _is_integer_affine(conv):
                continue
            th = model.single_consumer(conv.name)
            if th is None or th.kind != "threshold" or th.attrs.get("integer"):
                continue
            p = th.params
            d = np.asarray(p["direction"], np.float64)
            s = np.asarray(conv.params["scale"], np.float64)
            b = np.asarray(conv.params["bias"], np.float64)
            tie = _tie(th)
            lo_t, hi_t = np.asarray(p["lo"], np.float64), np.asarray(p["hi"], np.float64)
            direction, lo, hi, constant = thresholds_from_affine(d * s, d * b, lo_t, hi_t, integer=True, tie=tie)
            # a channel the threshold already held constant stays that constant
            constant = np.where(d == 0, np.asarray(p["constant"], np.int8), constant).astype(np.int8)
            attrs = {k: v for k, v in th.attrs.items() if k not in ("integer", "folded_from")}
            attrs.update(integer=True, folded_from=[conv.name] + list(th.attrs.get("folded_from") or [th.name]))
            new_conv = Layer(conv.name, conv.kind, list(conv.inputs), dict(conv.attrs, epilogue="none"), dict(conv.params))
            threshold = Layer(th.name, "threshold", [conv.name], attrs,
                              {"direction": direction, "lo": lo, "hi": hi, "constant": constant,
                               "gain": d * s, "offset": d * b})
            layers = [new_conv if l is conv else threshold if l is th else l for l in layers]
            changed = True
        return model.replace_layers(layers), changed


def _is_integer_affine(layer: Layer) -> bool:
    """A folded ternary layer with one scale, an affine epilogue and one input: its output
    ``s·acc + b`` can hand an integer accumulator to a threshold instead."""
    return (layer.ternary_form == "folded" and layer.attrs.get("epilogue", "affine") == "affine"
            and "scale_neg" not in layer.params and len(layer.inputs) == 1 and "slope" not in layer.params)


def _tie(layer: Layer) -> str:
    """The tie rule of an activation or threshold layer (default ``"sttn"``)."""
    return layer.attrs.get("tie", "sttn")


def _input_channels(model: Model, layer: Layer) -> int:
    """Channel (or feature) count of the tensor feeding ``layer``."""
    shapes = infer_shapes(model)
    src = layer.inputs[0]
    shape = model.input_shape if src == "input" else shapes[src]
    return int(shape[0])


FOLD_PASSES = (FoldTernaryWeights, FoldAccumulatorThreshold, FoldBatchNormThreshold, FoldBareThreshold,
               FoldAffineThreshold)


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
    validate_model(model)  # every layer, not only those a rewrite touches
    for layer in model.layers:  # every layer, not only those a rewrite touches
        if layer.kind == "batchnorm":
            batchnorm_affine(layer)  # raises on a negative variance
    passes = [FoldTernaryWeights(zero_policy, merged_rtol), FoldAccumulatorThreshold(),
              FoldBatchNormThreshold(), FoldBareThreshold(), FoldAffineThreshold()]
    folded = model
    for rewrite in passes:
        folded, _ = rewrite.apply(folded)
    folded.form = "folded"
    folded.metadata = dict(model.metadata, folded_from_form=model.form)
    return folded


__all__ = [
    "fold", "FoldTernaryWeights",
    "FoldAccumulatorThreshold", "FoldBatchNormThreshold", "FoldBareThreshold", "FoldAffineThreshold", "FOLD_PASSES",
]

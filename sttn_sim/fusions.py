r"""The engine's fusions: named rewrites of a folded model, one per class.

Before it runs a folded model, the packed engine rewrites its graph with
:data:`ENGINE_REWRITES` (each applied until it changes nothing, in this order), so that
the float tail of a layer runs in the same pass as the layer itself.  Every rewrite is
a :class:`~sttn_sim.graph.Transformation` — ``apply(model) -> (model, changed)`` —
that fuses one match per call and keeps the model's meaning: the reference executor
gives the rewritten model the same outputs (up to float64 rounding of the folded
parameters).

A fused layer takes the name of the LAST layer it absorbs (so the values later layers
read keep their names) and records the chain in ``attrs["fused_from"]``
(first layer, then the absorbed ones, in order).

* :class:`FuseConvBatchNorm` — ``conv → batchnorm``:
  :math:`g(W*x + b) + h = (gW)*x + (gb + h)` per output channel.
* :class:`FuseTernaryBatchNorm` — ``ternary_* → batchnorm``:
  :math:`g(s\,acc + b) + h = (gs)\,acc + (gb + h)`; with two scales (TTQ)
  :math:`g(W_p acc_+ - W_n acc_- + b) + h = (gW_p) acc_+ - (gW_n) acc_- + (gb + h)`.
* :class:`FuseResidualAdd` — ``ternary_* → add(·, r)`` with ``r`` computed earlier:
  the residual becomes the layer's second input; a ``channel_pad`` shortcut read only
  by this add is absorbed (its zero channels are added implicitly).
* :class:`FusePReLU` — ``conv | ternary_* → prelu``: the slope becomes the layer's
  ``slope`` parameter, applied last.
* :class:`FuseConvMaxPool` — ``conv → maxpool`` (the stem): the window becomes the
  conv's ``pool`` attribute, applied after everything else, so the engine pools each
  convolution row while it is in cache and never writes the convolution's output.

The BN algebra is :func:`sttn_sim.rules.batchnorm_affine`, computed in float64.
"""

from __future__ import annotations

import numpy as np

from .graph import Layer, Model, Transformation
from .rules import batchnorm_affine


def _fused_from(layer: Layer) -> list[str]:
    return list(layer.attrs.get("fused_from", [layer.name]))


def _fuse(model: Model, head: Layer, absorbed: list[Layer], *, kind: str | None = None, inputs=None,
          params=None, attrs=None) -> Model:
    """Replace ``head`` (and remove the ``absorbed`` layers) by one layer named after the
    last absorbed layer, placed where ``head`` was (with ``attrs`` added to its own)."""
    last = absorbed[-1]
    attrs = dict(head.attrs, **(attrs or {}), fused_from=_fused_from(head) + [l.name for l in absorbed])
    fused = Layer(last.name, kind or head.kind, list(inputs if inputs is not None else head.inputs), attrs,
                  dict(params if params is not None else head.params))
    gone = {id(l) for l in absorbed}
    layers = [fused if l is head else l for l in model.layers if id(l) not in gone]
    return model.replace_layers(layers)


def _is_affine_ternary(layer: Layer) -> bool:
    return layer.ternary_form == "folded" and layer.attrs.get("epilogue", "affine") == "affine"


def _has_tail(layer: Layer) -> bool:
    """True when a residual or a PReLU is already fused in (later stages come after)."""
    return "slope" in layer.params or len(layer.inputs) > 1


class FuseConvBatchNorm(Transformation):
    """``conv → batchnorm`` (the BN its only reader) → one conv with ``(gW, gb + h)``."""

    def apply(self, model):
        for conv in model.layers:
            if conv.kind != "conv" or _has_tail(conv):
                continue
            bn = model.single_consumer(conv.name)
            if bn is None or bn.kind != "batchnorm":
                continue
            g, h = batchnorm_affine(bn)
            p = conv.params
            w = np.asarray(p["weight"], np.float64) * g.reshape(-1, 1, 1, 1)
            b = np.asarray(p["bias"], np.float64) if "bias" in p else np.zeros(w.shape[0])
            return _fuse(model, conv, [bn], params={"weight": w, "bias": g * b + h}), True
        return model, False


class FuseTernaryBatchNorm(Transformation):
    """``ternary_* → batchnorm`` → one ternary layer with ``(gs, gb + h)``."""

    def apply(self, model):
        for layer in model.layers:
            if not _is_affine_ternary(layer) or _has_tail(layer):
                continue
            bn = model.single_consumer(layer.name)
            if bn is None or bn.kind != "batchnorm":
                continue
            g, h = batchnorm_affine(bn)
            s, b = np.asarray(layer.params["scale"], np.float64), np.asarray(layer.params["bias"], np.float64)
            params = dict(layer.params, scale=g * s, bias=g * b + h)
            if "scale_neg" in layer.params:
                params["scale_neg"] = g * np.asarray(layer.params["scale_neg"], np.float64)
            return _fuse(model, layer, [bn], params=params), True
        return model, False


class FuseResidualAdd(Transformation):
    """``ternary_* → add(·, r)`` with ``r`` computed before the layer → the layer with
    ``r`` as its second input (a ``channel_pad`` of ``r`` read only by the add is
    absorbed: the layer zero-extends the residual itself)."""

    def apply(self, model):
        for layer in model.layers:
            if not _is_affine_ternary(layer) or _has_tail(layer):
                continue
            add = model.single_consumer(layer.name)
            if add is None or add.kind != "add":
                continue
            other = add.inputs[1] if add.inputs[0] == layer.name else add.inputs[0]
            if model.position(other) > model.position(layer.name):
                continue  # the residual is computed after this layer
            absorbed, residual = [add], other
            if other != "input":
                pad = model[other]
                if pad.kind == "channel_pad" and model.single_consumer(other) is add:
                    absorbed, residual = [pad, add], pad.inputs[0]
            return _fuse(model, layer, absorbed, inputs=[layer.inputs[0], residual]), True
        return model, False


class FusePReLU(Transformation):
    """``conv | ternary_* → prelu`` → the layer with the PReLU ``slope``, applied last."""

    def apply(self, model):
        for layer in model.layers:
            if not (layer.kind == "conv" or _is_affine_ternary(layer)) or "slope" in layer.params:
                continue
            prelu = model.single_consumer(layer.name)
            if prelu is None or prelu.kind != "prelu":
                continue
            slope = np.asarray(prelu.params["weight"], np.float64).reshape(-1)
            return _fuse(model, layer, [prelu], params=dict(layer.params, slope=slope)), True
        return model, False


class FuseConvMaxPool(Transformation):
    """``conv → maxpool`` (the pool its only reader) → the conv with ``pool = [kernel,
    stride, padding]``, applied last (after the bias and a fused PReLU)."""

    def apply(self, model):
        for conv in model.layers:
            if conv.kind != "conv" or conv.attrs.get("pool") is not None:
                continue
            pool = model.single_consumer(conv.name)
            if pool is None or pool.kind != "maxpool":
                continue
            a = pool.attrs
            window = [int(a["kernel"]), int(a["stride"]), int(a.get("padding", 0))]
            return _fuse(model, conv, [pool], attrs={"pool": window}), True
        return model, False


#: the engine's rewrites, in the order they are applied (each until it changes nothing)
ENGINE_REWRITES = (FuseConvBatchNorm, FuseTernaryBatchNorm, FuseResidualAdd, FusePReLU, FuseConvMaxPool)


def fuse_for_engine(model: Model, rewrites=ENGINE_REWRITES) -> Model:
    """``model`` rewritten by every rewrite in ``rewrites`` (classes), in order."""
    for rewrite in rewrites:
        model = model.transform(rewrite())
    return model


__all__ = ["ENGINE_REWRITES", "FuseConvBatchNorm", "FuseTernaryBatchNorm", "FuseResidualAdd", "FusePReLU",
           "FuseConvMaxPool", "fuse_for_engine"]

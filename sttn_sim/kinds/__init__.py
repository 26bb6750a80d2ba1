"""Layer kinds: one unit per kind, looked up in one registry.

A :class:`~sttn_sim.graph.Layer` names its kind; :func:`get_kind` returns the
:class:`LayerKind` that declares the kind's parameters and attributes (with types),
its shape rule, its float64 reference forward, what the packed engine runs and the
training forward/backward.  The reference executor, the engine, training and shape
inference all look kinds up here, so an unknown kind is an error everywhere.

=====================  =====================================  ==============================
kind                   params                                 attrs
=====================  =====================================  ==============================
``conv``               weight [O,I,kh,kw], bias [O]?          stride, padding
``linear``             weight [O,I], bias [O]?
``sttn_conv``          weight1, weight2 [O,I,kh,kw],          stride, padding
                       bias1 [O]?, bias2 [O]?                 (training form: two latent kernels)
``sttn_linear``        weight1, weight2 [O,I], bias1?, bias2?
``ter_conv``           weight [O,I,kh,kw] = α(B1+B2), bias?   stride, padding   (merged form)
``ter_linear``         weight [O,I], bias?
``ternary_conv``       codes int8 [O,I,kh,kw], scale [O],     stride, padding, epilogue
                       bias [O], scale_neg [O]? (TTQ: W_n)    (folded form)
``ternary_linear``     codes int8 [O,I], scale [O], bias [O]  epilogue
``batchnorm``          weight, bias, running_mean,            eps
                       running_var [C]
``prelu``              weight [C] or [1]
``relu``               -
``ternary_act``        -                                      lo, hi (default -0.5, 0.5), tie
``threshold``          direction int8 [C], lo [C], hi [C],    integer (bool), folded_from,
                       constant int8 [C], gain [C]?,          activation_lo, activation_hi
                       offset [C]?                            tie ("sttn" | "half_even")
``maxpool``            -                                      kernel, stride, padding
``avgpool``            -                                      kernel, stride
``add``                - (two inputs)
``concat``             - (two or more inputs, channel axis)
``channel_pad``        -                                      out_channels (zeros appended)
``flatten``            -
=====================  =====================================  ==============================

The engine's rewrites (:mod:`sttn_sim.fusions`) use two optional extensions declared by
the kinds themselves: a PReLU ``slope`` parameter on ``conv`` and the folded ternary
kinds, and a second (residual) input on the folded ternary kinds.

To add a kind, subclass :class:`LayerKind` in the module of its family and decorate it
with :func:`register_kind` (docs/design.md §5 lists the files a new kind touches).
"""

# importing the family modules registers their kinds, in this (the registry's) order
from . import float_layers  # noqa: F401, I001
from . import ternary_layers  # noqa: F401
from . import activation_layers  # noqa: F401
from .base import (
    REGISTRY,
    REQUIRED,
    Attr,
    LayerKind,
    Param,
    check_channel_params,
    get_kind,
    kinds_where,
    per_channel,
    register_kind,
    registered,
)


def weighted_kind(family: str, form: str) -> str:
    """The kind of a ``family`` ("conv" or "linear") layer in ``form`` ("float",
    "latent", "merged" or "folded"), e.g. ``weighted_kind("conv", "folded") == "ternary_conv"``."""
    for name, kind in REGISTRY.items():
        if getattr(kind, "family", None) == family and (kind.ternary_form or "float") == form:
            return name
    raise KeyError((family, form))


__all__ = [
    "REGISTRY", "REQUIRED", "Attr", "LayerKind", "Param", "check_channel_params", "get_kind", "kinds_where",
    "per_channel", "register_kind", "registered", "weighted_kind",
]

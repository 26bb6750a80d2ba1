"""The model description: a small graph of named layers holding numpy parameters.

A :class:`Model` is an ordered list of :class:`Layer` objects in execution order
(a topological order).  Each layer names the layers whose outputs it consumes
(``"input"`` is the model input) and carries JSON-serialisable attributes and numpy
parameters.  The output of the model is the output of its last layer.

Layer kinds and their parameters (axis 0 of every weight is the output channel):

=====================  ===================================  =================================
kind                   params                               attrs
=====================  ===================================  =================================
``conv``               weight [O,I,kh,kw], bias [O]?        stride, padding
``linear``             weight [O,I], bias [O]?
``sttn_conv``          weight1, weight2 [O,I,kh,kw],        stride, padding
                       bias1 [O]?, bias2 [O]?               (training form: two latent kernels)
``sttn_linear``        weight1, weight2 [O,I], bias1?, bias2?
``ter_conv``           weight [O,I,kh,kw] = α(B1+B2), bias? stride, padding   (merged form)
``ter_linear``         weight [O,I], bias?
``ternary_conv``       codes int8 [O,I,kh,kw], scale [O],   stride, padding, epilogue
                       bias [O]                             (folded form)
``ternary_linear``     codes int8 [O,I], scale [O], bias [O] epilogue
``batchnorm``          weight, bias, running_mean,          eps
                       running_var [C]
``prelu``              weight [C] or [1]
``relu``               -
``ternary_act``        -                                    lo, hi (default -0.5, 0.5)
``threshold``          direction int8 [C], lo [C], hi [C],  integer (bool), folded_from
                       constant int8 [C], gain [C]?,        (folded BN + ternary activation;
                       offset [C]?                          y = gain·x + offset is the value
                                                            the activation saw, for statistics)
``maxpool``            -                                    kernel, stride, padding
``avgpool``            -                                    kernel, stride
``add``                - (two inputs)
``channel_pad``        -                                    out_channels (zeros appended)
``flatten``            -
=====================  ===================================  =================================

Latent kinds (``sttn_*``) and merged kinds (``ter_*``) describe a training-time model;
:func:`sttn_sim.fold.fold` turns them into ``ternary_*`` and ``threshold`` layers.
Layer names follow the official STTN checkpoint keys (``features.4.conv1`` for the
pair ``conv1_1``/``conv1_2``) so that statistics line up with the paper.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .errors import ModelError

#: kinds whose weights are ternary (in any of the three forms)
LATENT_TERNARY_KINDS = ("sttn_conv", "sttn_linear")
MERGED_TERNARY_KINDS = ("ter_conv", "ter_linear")
FOLDED_TERNARY_KINDS = ("ternary_conv", "ternary_linear")
TERNARY_KINDS = LATENT_TERNARY_KINDS + MERGED_TERNARY_KINDS + FOLDED_TERNARY_KINDS
CONV_KINDS = ("conv", "sttn_conv", "ter_conv", "ternary_conv")
ACTIVATION_QUANTIZER_KINDS = ("ternary_act", "threshold")

#: required and optional parameters of every kind
PARAM_SPEC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "conv": (("weight",), ("bias",)),
    "linear": (("weight",), ("bias",)),
    "sttn_conv": (("weight1", "weight2"), ("bias1", "bias2")),
    "sttn_linear": (("weight1", "weight2"), ("bias1", "bias2")),
    "ter_conv": (("weight",), ("bias",)),
    "ter_linear": (("weight",), ("bias",)),
    "ternary_conv": (("codes", "scale", "bias"), ()),
    "ternary_linear": (("codes", "scale", "bias"), ()),
    "batchnorm": (("weight", "bias", "running_mean", "running_var"), ()),
    "prelu": (("weight",), ()),
    "relu": ((), ()),
    "ternary_act": ((), ()),
    "threshold": (("direction", "lo", "hi", "constant"), ("gain", "offset")),
    "maxpool": ((), ()),
    "avgpool": ((), ()),
    "add": ((), ()),
    "channel_pad": ((), ()),
    "flatten": ((), ()),
}
KINDS = tuple(PARAM_SPEC)

#: integer attributes every layer of a kind must have, with their smallest valid value
#: (optional ones, e.g. pooling ``padding`` or BN ``eps``, have defaults where used)
REQUIRED_INT_ATTRS: dict[str, dict[str, int]] = {
    **{kind: {"stride": 1, "padding": 0} for kind in CONV_KINDS},
    "maxpool": {"kernel": 1, "stride": 1},
    "avgpool": {"kernel": 1, "stride": 1},
    "channel_pad": {"out_channels": 1},
}


@dataclass
class Layer:
    """One named node of the graph.

    ``inputs`` lists the names of the layers it consumes (``"input"`` = model input).
    ``attrs`` must be JSON-serialisable; ``params`` maps names to numpy arrays.
    """

    name: str
    kind: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_ternary(self) -> bool:
        """True for layers whose weights are ternary (latent, merged or folded)."""
        return self.kind in TERNARY_KINDS

    def param_count(self) -> int:
        """Number of weights (bias and BN parameters included)."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.params.items())
        return f"Layer({self.name!r}, {self.kind}, inputs={self.inputs}, {shapes})"


@dataclass
class Model:
    """An ordered layer graph with an input shape (C, H, W) or (features,).

    ``form`` is ``"latent"`` (two binary kernels per ternary layer), ``"merged"``
    (one float kernel α(B1+B2)), ``"folded"`` (int8 codes, scales, thresholds) or
    ``"float"`` (no ternary layer).  ``metadata`` is free-form (str -> JSON value).
    """

    arch: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    form: str = "latent"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.validate()

    # -- access ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ModelError(
            f"model {self.arch!r} has no layer {name!r}; valid layers: "
            + ", ".join(l.name for l in self.layers)
        )

    @property
    def layer_names(self) -> list[str]:
        return [l.name for l in self.layers]

    @property
    def output(self) -> str:
        return self.layers[-1].name

    def ternary_layers(self) -> list[Layer]:
        """The layers with ternary weights, in model order."""
        return [l for l in self.layers if l.is_ternary]

    def activation_quantizers(self) -> list[Layer]:
        """The ternary activation layers (``ternary_act`` or folded ``threshold``)."""
        return [l for l in self.layers if l.kind in ACTIVATION_QUANTIZER_KINDS]

    def consumers(self, name: str) -> list[Layer]:
        """The layers that read the output of layer ``name``."""
        return [l for l in self.layers if name in l.inputs]

    def copy(self) -> "Model":
        """A deep copy (parameters copied too)."""
        return copy.deepcopy(self)

    # -- checks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check names, kinds, inputs and parameters; raise ModelError naming the layer."""
        seen: set[str] = {"input"}
        if not self.layers:
            raise ModelError(f"model {self.arch!r} has no layers")
        for layer in self.layers:
            where = f"model {self.arch!r}, layer {layer.name!r}"
            if layer.name in seen:
                raise ModelError(f"{where}: duplicate layer name (or the reserved name 'input')")
            if layer.kind not in PARAM_SPEC:
                raise ModelError(f"{where}: unknown kind {layer.kind!r}; known kinds: {', '.join(KINDS)}")
            want_inputs = 2 if layer.kind == "add" else 1
            if len(layer.inputs) != want_inputs:
                raise ModelError(f"{where}: kind {layer.kind} takes {want_inputs} input(s), got {layer.inputs}")
            for src in layer.inputs:
                if src not in seen:
                    raise ModelError(f"{where}: input {src!r} is not an earlier layer (layers must be in execution order)")
            required, optional = PARAM_SPEC[layer.kind]
            missing = [p for p in required if p not in layer.params]
            extra = [p for p in layer.params if p not in required + optional]
            if missing or extra:
                raise ModelError(
                    f"{where} ({layer.kind}): missing parameters {missing}, unexpected parameters {extra}; "
                    f"expected {list(required)} and optionally {list(optional)}"
                )
            for pname, value in layer.params.items():
                if not isinstance(value, np.ndarray):
                    raise ModelError(f"{where}: parameter {pname!r} is a {type(value).__name__}, expected a numpy array")
            for attr, smallest in REQUIRED_INT_ATTRS.get(layer.kind, {}).items():
                value = layer.attrs.get(attr)
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < smallest:
                    raise ModelError(f"{where} ({layer.kind}): attribute {attr!r} must be an integer >= {smallest}, "
                                     f"got {value!r}")
            seen.add(layer.name)

    def summary(self) -> "pd.DataFrame":  # noqa: F821 - pandas imported lazily
        """One row per layer: name, kind, inputs, parameter shapes and count."""
        import pandas as pd

        rows = []
        for layer in self.layers:
            rows.append(
                {
                    "layer": layer.name,
                    "kind": layer.kind,
                    "inputs": ",".join(layer.inputs),
                    "params": "; ".join(f"{k}{list(v.shape)}" for k, v in layer.params.items()),
                    "param_count": layer.param_count(),
                }
            )
        return pd.DataFrame(rows)

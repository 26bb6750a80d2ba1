"""The model description: a small graph of named layers holding numpy parameters.

A :class:`Model` is an ordered list of :class:`Layer` objects in execution order
(a topological order).  Each layer names the layers whose outputs it consumes
(``"input"`` is the model input), its kind (declared in :mod:`sttn_sim.kinds`, which
lists every kind with its parameters and attributes), JSON-serialisable attributes and
numpy parameters.  The output of the model is the output of its last layer.

Latent kinds (``sttn_*``) and merged kinds (``ter_*``) describe a training-time model;
:func:`sttn_sim.fold.fold` turns them into ``ternary_*`` and ``threshold`` layers.
Layer names follow the official STTN checkpoint keys (``features.4.conv1`` for the
pair ``conv1_1``/``conv1_2``) so that statistics line up with the paper.

Rewrites of a graph are :class:`Transformation` objects (QONNX style):
``apply(model) -> (model, changed)``, run by :meth:`Model.transform` until nothing
changes (the fold passes in :mod:`sttn_sim.fold`, the engine's fusions in
:mod:`sttn_sim.fusions`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import pandas as pd

from .errors import ModelError
from .kinds import REGISTRY, get_kind

#: the model forms
FORMS = ("latent", "merged", "folded", "float")


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
    params: dict[str, "np.ndarray"] = field(default_factory=dict)  # noqa: F821

    @property
    def spec(self):
        """The :class:`~sttn_sim.kinds.LayerKind` of this layer (ModelError if unknown)."""
        return get_kind(self.kind, f"layer {self.name!r}")

    @property
    def ternary_form(self) -> str | None:
        """"latent", "merged" or "folded" for layers with ternary weights, else None."""
        kind = REGISTRY.get(self.kind)
        return None if kind is None else kind.ternary_form

    @property
    def is_ternary(self) -> bool:
        """True for layers whose weights are ternary (latent, merged or folded)."""
        return self.ternary_form is not None

    @property
    def is_quantizer(self) -> bool:
        """True for activation quantizers (``ternary_act``, folded ``threshold``)."""
        kind = REGISTRY.get(self.kind)
        return kind is not None and kind.quantizer

    def param_count(self) -> int:
        """Number of weights (bias and BN parameters included)."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.params.items())
        return f"Layer({self.name!r}, {self.kind}, inputs={self.inputs}, {shapes})"


class Transformation:
    """One rewrite of a model graph.  ``apply(model)`` returns ``(model, changed)``:
    the rewritten model (a new :class:`Model`; the input is not modified) and whether
    anything was rewritten."""

    def apply(self, model: "Model") -> tuple["Model", bool]:  # pragma: no cover - interface
        raise NotImplementedError


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
        return [l for l in self.layers if l.is_quantizer]

    def consumers(self, name: str) -> list[Layer]:
        """The layers that read the output of layer ``name``."""
        return [l for l in self.layers if name in l.inputs]

    def single_consumer(self, name: str) -> Layer | None:
        """The only layer reading ``name`` (None if there are several or none, or if
        ``name`` is the model output, which the caller reads too)."""
        consumers = self.consumers(name)
        return consumers[0] if len(consumers) == 1 and name != self.output else None

    def position(self, name: str) -> int:
        """Index of layer ``name`` in execution order (-1 for ``"input"``)."""
        if name == "input":
            return -1
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise ModelError(f"model {self.arch!r} has no layer {name!r}")

    def copy(self) -> "Model":
        """A deep copy (parameters copied too)."""
        return copy.deepcopy(self)

    def replace_layers(self, layers: list[Layer], **changes) -> "Model":
        """A new model with ``layers`` (and optionally another ``form``/``metadata``)."""
        return Model(self.arch, self.input_shape, layers, changes.get("form", self.form),
                     dict(changes.get("metadata", self.metadata)))

    def transform(self, transformation: Transformation, *, until_fixpoint: bool = True) -> "Model":
        """Apply ``transformation`` (repeatedly, until it changes nothing)."""
        model, changed = transformation.apply(self)
        while changed and until_fixpoint:
            model, changed = transformation.apply(model)
        return model

    # -- checks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check names, kinds, inputs, parameters and attribute types; raise ModelError
        naming the layer (shapes: :func:`sttn_sim.shapes.infer_shapes`)."""
        seen: set[str] = {"input"}
        if not self.layers:
            raise ModelError(f"model {self.arch!r} has no layers")
        if self.form not in FORMS:
            raise ModelError(f"model {self.arch!r}: form {self.form!r} is not one of {list(FORMS)}")
        for layer in self.layers:
            where = f"model {self.arch!r}, layer {layer.name!r}"
            if not isinstance(layer.name, str) or layer.name in seen:
                raise ModelError(f"{where}: duplicate layer name (or the reserved name 'input')")
            kind = get_kind(layer.kind, where)
            for src in layer.inputs:
                if src not in seen:
                    raise ModelError(f"{where}: input {src!r} is not an earlier layer (layers must be in execution order)")
            kind.validate(layer, where)
            seen.add(layer.name)

    def summary(self) -> "pd.DataFrame":  # noqa: F821 - pandas imported lazily
        """One row per layer: name, kind, inputs, parameter shapes and count."""

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

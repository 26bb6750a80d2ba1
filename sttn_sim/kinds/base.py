"""What a layer kind is: its declaration (parameters, attributes, inputs) and its rules.

One :class:`LayerKind` subclass per kind holds everything the toolkit knows about it
(docs/design.md §4.3; the recipe for a new kind is §5):

* the declaration: :class:`Param` and :class:`Attr` entries with types, shapes and
  defaults, the number of inputs, and flags (``ternary_form``, ``quantizer``,
  ``trainable``) that the rest of the toolkit queries instead of lists of names;
* :meth:`LayerKind.output_shape` — the shape rule (per sample, batch axis omitted),
  which also checks that every per-channel parameter fits;
* :meth:`LayerKind.reference` — the float64/int64 forward (the ground truth);
* :meth:`LayerKind.engine_step` — what the packed engine runs (by default the float32
  :meth:`LayerKind.engine_forward`);
* :meth:`LayerKind.train_forward` / :meth:`LayerKind.train_backward` — training.

Kinds are looked up in one registry (:data:`REGISTRY`, :func:`get_kind`); an unknown
kind is an error everywhere.  :func:`registered` adds kinds for the duration of a
``with`` block (tests, experiments).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..errors import ModelError, ShapeError
from ..recording import LayerEvent

#: marker for an attribute without a default (it must be given)
REQUIRED = object()

#: parameter value classes: what the numbers may be
#:   "real"      real floating point (float16/32/64)
#:   "codes"     integer ternary codes in {-1, 0, +1}
#:   "number"    real floating point or integer (thresholds: float, or int for accumulators)
PARAM_VALUES = ("real", "codes", "number")
#: parameter shapes
#:   "weight"      axis 0 = output channel: [O, I, kh, kw] (conv) or [O, I] (linear)
#:   "channel"     one value per channel: [C]
#:   "channel_or_one"  [C] or [1] (a shared value, e.g. a PReLU slope)
PARAM_SHAPES = ("weight", "channel", "channel_or_one")


@dataclass(frozen=True)
class Param:
    """A declared parameter: name, value class, shape class, optional or required."""

    name: str
    values: str = "real"
    shape: str = "channel"
    optional: bool = False
    doc: str = ""

    def check_values(self, value: np.ndarray, where: str) -> None:
        """Raise ModelError naming ``where`` unless the values fit the declared class:

        * ``real``: real floating point (float16/32/64), every value finite;
        * ``codes``: int8, every value in {-1, 0, +1};
        * ``number``: real floating point (±inf allowed: a threshold no value reaches;
          NaN refused) or integer."""
        label = f"{where}: parameter {self.name!r}"
        kind = value.dtype.kind
        if self.values == "codes":
            if value.dtype != np.int8:
                raise ModelError(f"{label} must be int8 codes in {{-1, 0, +1}}, got dtype {value.dtype}")
            bad = (value < -1) | (value > 1)
            if bad.any():
                raise ModelError(f"{label} must be in {{-1, 0, +1}}, found {int(bad.sum())} value(s) such as "
                                 f"{int(value[bad].flat[0])}")
            return
        if self.values == "number" and kind in "iu":
            return
        if kind != "f":
            raise ModelError(f"{label} must be real floating point, got dtype {value.dtype}")
        if self.values == "number":
            nan = np.isnan(value)
            if nan.any():
                raise ModelError(f"{label} holds {int(nan.sum())} NaN value(s)")
            return
        bad = ~np.isfinite(value)
        if bad.any():
            raise ModelError(f"{label} holds {int(bad.sum())} NaN/Inf value(s); expected finite values")


@dataclass(frozen=True)
class Attr:
    """A declared attribute: name, accepted Python type(s), default, bounds, choices."""

    name: str
    types: type | tuple[type, ...]
    default: Any = REQUIRED
    minimum: float | None = None
    choices: tuple | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """What the attribute must be, in words (for error messages)."""
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        words = {int: "an integer", float: "a finite number", bool: "a boolean", str: "a string", list: "a list"}
        text = " or ".join(words.get(t, t.__name__) for t in types)
        if self.minimum is not None:
            text += f" >= {self.minimum}"
        if self.choices is not None:
            text += f" in {list(self.choices)}"
        return text

    def accepts(self, value) -> bool:
        """True when ``value`` has the declared type, bounds and choices (bool is not an
        int, an int is a float, a float must be finite)."""
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if isinstance(value, (bool, np.bool_)):
            ok = bool in types
        elif isinstance(value, (int, np.integer)):
            ok = int in types or float in types
        elif isinstance(value, (float, np.floating)):
            ok = float in types and bool(np.isfinite(value))
        else:
            ok = isinstance(value, types)
        if ok and self.minimum is not None and not isinstance(value, (bool, np.bool_)):
            ok = value >= self.minimum
        if ok and self.choices is not None:
            ok = value in self.choices
        return ok

    def check(self, value, where: str) -> None:
        """Raise ModelError naming ``where`` unless :meth:`accepts` ``value``."""
        if not self.accepts(value):
            raise ModelError(f"{where}: attribute {self.name!r} must be {self.describe()}, got {_short(value)}")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LayerKind:
    """Base class of every layer kind (see the module docstring).

    Subclasses set the class attributes and override the rules they support; a rule a
    kind does not support raises :class:`~sttn_sim.errors.ModelError` naming the layer.
    """

    #: the kind's name, as stored in ``Layer.kind`` and in files
    name: ClassVar[str] = ""
    #: one line: what the layer computes
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    attrs: ClassVar[tuple[Attr, ...]] = ()
    #: smallest and largest number of inputs
    inputs: ClassVar[tuple[int, int]] = (1, 1)
    #: "latent" | "merged" | "folded" for layers with ternary weights, else None
    ternary_form: ClassVar[str | None] = None
    #: True for activation quantizers (their output is ternary codes)
    quantizer: ClassVar[bool] = False
    #: True when training (sttn_sim.train) can run it
    trainable: ClassVar[bool] = False

    # -- declaration helpers ----------------------------------------------------------
    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def attr(self, layer, name: str):
        """The value of attribute ``name`` of ``layer``, or its declared default."""
        for a in self.attrs:
            if a.name == name:
                value = layer.attrs.get(name, a.default)
                if value is REQUIRED:
                    raise ModelError(f"layer {layer.name!r} ({self.name}): attribute {name!r} is missing")
                return value
        raise KeyError(f"kind {self.name} declares no attribute {name!r}")

    def validate(self, layer, where: str) -> None:
        """Structure of one layer: input count, parameters present and numpy arrays,
        attribute types (no shapes: see :meth:`output_shape`)."""
        low, high = self.inputs
        if not low <= len(layer.inputs) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise ModelError(f"{where}: kind {self.name} takes {want} input(s), got {layer.inputs}")
        required = [p.name for p in self.params if not p.optional]
        known = [p.name for p in self.params]
        missing = [n for n in required if n not in layer.params]
        extra = [n for n in layer.params if n not in known]
        if missing or extra:
            optional = [p.name for p in self.params if p.optional]
            raise ModelError(f"{where} ({self.name}): missing parameters {missing}, unexpected parameters {extra}; "
                             f"expected {required} and optionally {optional}")
        for pname, value in layer.params.items():
            if not isinstance(value, np.ndarray):
                raise ModelError(f"{where}: parameter {pname!r} is a {type(value).__name__}, expected a numpy array")
        for a in self.attrs:
            if a.name in layer.attrs:
                if a.default is None and layer.attrs[a.name] is None:
                    continue  # an optional attribute explicitly unset
                a.check(layer.attrs[a.name], f"{where} ({self.name})")
            elif a.required:
                a.check(None, f"{where} ({self.name})")

    def check_values(self, layer, where: str) -> None:
        """The numbers of one layer: every parameter's value class (:meth:`Param.check_values`),
        then the kind's own consistency rules (:meth:`check_consistency`)."""
        for p in self.params:
            if p.name in layer.params:
                p.check_values(layer.params[p.name], f"{where} ({self.name})")
        self.check_consistency(layer, f"{where} ({self.name})")

    def check_consistency(self, layer, where: str) -> None:
        """Relations between a layer's numbers (e.g. ordered thresholds); default none."""

    # -- rules (overridden per kind) --------------------------------------------------
    def output_shape(self, layer, in_shapes: list[tuple[int, ...]], where: str) -> tuple[int, ...]:
        """Per-sample output shape for the per-sample input shapes; ShapeError if the
        parameters do not fit.  Default: the shape of the first input (elementwise)."""
        return in_shapes[0]

    def reference(self, layer, inputs: list[np.ndarray], run=None) -> np.ndarray:
        """The float64/int64 forward.  ``run`` (a ReferenceRun or None) receives
        accumulators and pre-activations of the layers that have them."""
        raise ModelError(f"layer {layer.name!r}: the reference has no rule for kind {self.name!r}")

    def engine_forward(self, layer) -> Callable[..., np.ndarray]:
        """The float32 operation the packed engine runs for this layer (a callable of the
        input arrays).  Default: the float64 reference rounded to float32."""
        def op(*xs):
            return np.asarray(self.reference(layer, list(xs)), np.float32)
        return op

    def engine_step(self, layer, ctx):
        """A :class:`~sttn_sim.engine.StepRun` for this layer of the engine's graph.
        Default: :meth:`engine_forward` wrapped with a plain layer event."""
        op = self.engine_forward(layer)
        first = ctx.first_layer(layer)

        def run(args, recorder=None):
            out = op(*args)
            return out, LayerEvent(first, out)
        return run

    def train_forward(self, layer, inputs: list[np.ndarray], net):
        """Training forward: ``(y, cache)`` (``net``: the :class:`~sttn_sim.train.Network`)."""
        raise ModelError(f"layer {layer.name!r}: kind {self.name!r} cannot be trained")

    def train_backward(self, layer, dy: np.ndarray, cache, net, grads: dict) -> list:
        """Training backward: gradients of the inputs (None where not needed); parameter
        gradients go into ``grads[(layer.name, param)]``."""
        raise ModelError(f"layer {layer.name!r}: kind {self.name!r} cannot be trained")


# --------------------------------------------------------------------------------------
# the registry

#: kind name -> kind instance
REGISTRY: dict[str, LayerKind] = {}


def register_kind(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: add a kind to :data:`REGISTRY` (its ``name`` must be new)."""
    if not cls.name:
        raise ModelError(f"{cls.__name__}: a layer kind needs a name")
    if cls.name in REGISTRY:
        raise ModelError(f"layer kind {cls.name!r} is already registered")
    REGISTRY[cls.name] = cls()
    return cls


@contextmanager
def registered(*classes: type[LayerKind]) -> Iterator[None]:
    """Register kinds for the duration of a ``with`` block, then remove them."""
    added = []
    try:
        for cls in classes:
            register_kind(cls)
            added.append(cls.name)
        yield
    finally:
        for name in added:
            REGISTRY.pop(name, None)


def get_kind(name: str, where: str = "") -> LayerKind:
    """The kind called ``name``; ModelError naming ``where`` and the known kinds otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        prefix = f"{where}: " if where else ""
        raise ModelError(f"{prefix}unknown kind {_short(name)}; known kinds: {', '.join(REGISTRY)}") from None


def kinds_where(predicate: Callable[[LayerKind], bool]) -> tuple[str, ...]:
    """Names of the registered kinds for which ``predicate(kind)`` holds."""
    return tuple(name for name, kind in REGISTRY.items() if predicate(kind))


def check_channel_params(kind: LayerKind, layer, where: str, channels: int) -> None:
    """Every declared per-channel parameter of ``layer`` has ``channels`` entries
    (``channel_or_one``: ``channels`` or 1)."""
    for p in kind.params:
        value = layer.params.get(p.name)
        if value is None:
            continue
        if p.shape == "channel" and value.shape != (channels,):
            raise ShapeError(f"{where}: parameter {p.name!r} has shape {list(value.shape)}, expected [{channels}]")
        if p.shape == "channel_or_one" and value.shape not in ((channels,), (1,)):
            raise ShapeError(f"{where}: parameter {p.name!r} has shape {list(value.shape)}, "
                             f"expected [{channels}] or [1]")


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim``-d array."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))

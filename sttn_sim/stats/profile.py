r"""The one model profile: parameters, weight bits, packed sizes, MACs and BOPs per layer.

``model_profile(model)`` (any form) gives one :class:`LayerProfile` per layer; the
``info`` command, :func:`~sttn_sim.stats.weights.weight_statistics` and
:func:`~sttn_sim.stats.cost.layer_costs` all take their sizes and MACs from it.

Per layer, for ONE image (docs/design.md §3 "Cost"):

* ``stored_params`` — the numbers the layer holds in *this* model (a latent ternary layer
  holds two float kernels and two biases);
* ``weights`` — the effective weights: one kernel (``codes``, ``weight1`` or ``weight``;
  for a latent layer the two latent kernels are one ternary kernel);
* ``weight_bits`` — 2 for a ternary layer, else the widest float (or integer) parameter;
* ``packed_bytes`` — a ternary kernel at 2 bits per weight, ``ceil(2·weights / 8)``;
  ``float32_bytes`` — the same weights as one float32 kernel, ``4·weights``;
* ``macs`` — dense multiply-accumulates of a convolution or linear layer,
  ``weights · H'·W'`` (= ``C_out · C_in·kh·kw · H'·W'``; ``H'·W' = 1`` for a linear layer);
  ``macs_nonzero_weight`` — those whose weight is non-zero (ternary layers);
* ``bops`` — bit operations as QONNX's ``inference_cost`` counts them,
  ``macs · weight_bits · input_bits``, with 2-bit ternary inputs for ternary layers and
  32-bit inputs for float layers (the engine computes float layers in float32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import QuantizationError
from ..graph import Layer, Model
from ..shapes import infer_shapes

#: bits per ternary weight or activation in the packed engine (two bit planes)
TERNARY_BITS = 2
#: bits of a float activation in the engine
FLOAT_ACTIVATION_BITS = 32
#: the parameter that holds a weighted layer's effective kernel, by ternary form
WEIGHT_PARAM = {"latent": "weight1", "merged": "weight", "folded": "codes", None: "weight"}


@dataclass(frozen=True)
class LayerProfile:
    """Sizes and cost of one layer (see the module docstring)."""

    layer: str
    kind: str
    form: str | None  # ternary form, or None for a float layer
    output_shape: tuple[int, ...]
    stored_params: int
    weights: int
    weight_bits: int | None
    nonzero_weights: int | None
    packed_bytes: int
    float32_bytes: int
    macs: int
    macs_nonzero_weight: int | None
    bops: int


def weight_array(layer: Layer) -> np.ndarray | None:
    """The layer's effective kernel (None for a layer without weights)."""
    key = WEIGHT_PARAM[layer.ternary_form]
    return layer.params.get(key) if getattr(layer.spec, "family", None) else None


def stored_bits(layer: Layer) -> int | None:
    """2 for a ternary layer; else the widest float parameter's bits (integer parameters'
    bits if there is no float one); None without parameters."""
    if layer.is_ternary:
        return TERNARY_BITS
    floats = [v.dtype.itemsize * 8 for v in layer.params.values() if v.dtype.kind == "f"]
    if floats:
        return max(floats)
    ints = [v.dtype.itemsize * 8 for v in layer.params.values()]
    return max(ints) if ints else None


def layer_profile(layer: Layer, output_shape: tuple[int, ...]) -> LayerProfile:
    """The profile of one layer whose per-sample output shape is ``output_shape``."""
    w = weight_array(layer)
    weights = 0 if w is None else int(w.size)
    bits = stored_bits(layer)
    positions = int(np.prod(output_shape[1:])) if len(output_shape) > 1 else 1
    macs = weights * positions
    nonzero = None
    if layer.is_ternary:
        try:
            nonzero = int(np.count_nonzero(layer.spec.ternary_weights(layer).codes))
        except QuantizationError:  # codes undefined (e.g. an exactly-zero latent weight): unknown
            nonzero = None
    input_bits = TERNARY_BITS if layer.is_ternary else FLOAT_ACTIVATION_BITS
    return LayerProfile(
        layer=layer.name, kind=layer.kind, form=layer.ternary_form, output_shape=tuple(output_shape),
        stored_params=layer.param_count(), weights=weights, weight_bits=bits, nonzero_weights=nonzero,
        packed_bytes=(TERNARY_BITS * weights + 7) // 8 if layer.is_ternary else 0, float32_bytes=4 * weights,
        macs=macs, macs_nonzero_weight=None if nonzero is None else nonzero * positions,
        bops=macs * (bits or 0) * input_bits,
    )


@dataclass(frozen=True)
class ModelProfile:
    """Per-layer profiles of a model, in model order, and their totals."""

    model: str
    layers: tuple[LayerProfile, ...]

    def __getitem__(self, name: str) -> LayerProfile:
        for p in self.layers:
            if p.layer == name:
                return p
        raise KeyError(name)

    def ternary(self) -> list[LayerProfile]:
        return [p for p in self.layers if p.form is not None]

    def totals(self) -> dict:
        ternary = self.ternary()
        return {
            "ternary_layers": len(ternary),
            "ternary_weights": sum(p.weights for p in ternary),
            "macs": sum(p.macs for p in self.layers),
            "ternary_macs": sum(p.macs for p in ternary),
            "bops": sum(p.bops for p in self.layers),
        }

    def table(self) -> pd.DataFrame:
        """One row per layer (a tidy DataFrame with a ``layer`` column in model order)."""
        df = pd.DataFrame([asdict(p) for p in self.layers])
        if len(df):
            df["output_shape"] = ["x".join(map(str, s)) for s in df["output_shape"]]
            df["layer"] = pd.Categorical(df["layer"], categories=[p.layer for p in self.layers], ordered=True)
        return df


def model_profile(model: Model) -> ModelProfile:
    """The profile of every layer of ``model`` (see the module docstring)."""
    shapes = infer_shapes(model)
    return ModelProfile(model.arch, tuple(layer_profile(l, shapes[l.name]) for l in model.layers))


__all__ = ["LayerProfile", "ModelProfile", "layer_profile", "model_profile", "stored_bits", "weight_array",
           "TERNARY_BITS"]

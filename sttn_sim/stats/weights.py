"""Weight statistics of the ternary layers of a model (any form).

Per layer: counts of -1 / 0 / +1, sparsity = #0 / n, the per-channel scales s_o, the
parameter count and the packed size at 2 bits per weight against float32 (4 bytes).
A latent or merged layer is ternarized exactly as the fold does (same quantizers), so
the numbers are those of the model that will run.

Sizes (per layer, docs/design.md §3 "Cost"):

* ``n_weights`` — ternary weights (C_out · C_in · kh · kw);
* ``n_params`` — what the folded layer stores: the weights, one scale and one bias per
  output channel (``n_weights + 2·C_out``);
* ``stored_params`` — the parameters of the layer as it is in *this* model (a latent
  layer holds two float kernels and two biases, so about twice ``n_weights``);
* ``packed_bytes`` — the codes at 2 bits per weight, ``ceil(2·n_weights / 8)``;
* ``packed_total_bytes`` — ``packed_bytes`` plus the float32 scales and biases;
* ``float32_bytes`` — the same weights as one float32 kernel (``4·n_weights``);
* ``compression`` — ``float32_bytes / packed_bytes`` (16 for large layers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ModelError
from ..graph import Layer, Model
from ..quantizers import TernaryWeights
from .profile import model_profile


def layer_ternary_weights(layer: Layer) -> TernaryWeights:
    """Codes and per-channel scales of one ternary layer of any form (its kind's
    ``ternary_weights``: the same quantizers the fold uses)."""
    if not layer.is_ternary:
        raise ModelError(f"layer {layer.name!r} ({layer.kind}) has no ternary weights")
    return layer.spec.ternary_weights(layer)


def _ordered(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    if len(df):
        df["layer"] = pd.Categorical(df["layer"], categories=order, ordered=True)
    return df


def weight_statistics(model: Model) -> pd.DataFrame:
    """One row per ternary layer: counts, fractions, sparsity, scales, sizes (see the module note)."""
    rows = []
    profile = model_profile(model)
    for index, layer in enumerate(model.ternary_layers()):
        q = layer_ternary_weights(layer)
        n = q.codes.size
        c_out = q.codes.shape[0]
        neg, zero, pos = (int(np.count_nonzero(q.codes == v)) for v in (-1, 0, 1))
        packed = profile[layer.name].packed_bytes
        rows.append({
            "layer": layer.name, "order": index, "kind": layer.kind, "shape": "x".join(map(str, q.codes.shape)),
            "c_out": c_out, "n_weights": n, "n_neg": neg, "n_zero": zero, "n_pos": pos,
            "frac_neg": neg / n, "frac_zero": zero / n, "frac_pos": pos / n, "sparsity": zero / n,
            "scale_mean": float(q.scale.mean()), "scale_min": float(q.scale.min()), "scale_max": float(q.scale.max()),
            "n_params": n + 2 * c_out, "stored_params": layer.param_count(),
            "packed_bytes": packed, "packed_total_bytes": packed + 4 * 2 * c_out, "float32_bytes": 4 * n,
            "compression": 4 * n / packed,
        })
    return _ordered(pd.DataFrame(rows), [l.name for l in model.ternary_layers()])


def channel_weight_statistics(model: Model) -> pd.DataFrame:
    """One row per ternary layer × output channel: counts, fractions, sparsity and scale s_o."""
    columns = ["layer", "order", "channel", "n_weights", "n_neg", "n_zero", "n_pos",
               "frac_neg", "frac_zero", "frac_pos", "sparsity", "scale"]
    frames = []
    for index, layer in enumerate(model.ternary_layers()):
        q = layer_ternary_weights(layer)
        codes = q.codes.reshape(q.codes.shape[0], -1)
        n = codes.shape[1]
        counts = {v: (codes == v).sum(axis=1) for v in (-1, 0, 1)}
        frames.append(pd.DataFrame({
            "layer": layer.name, "order": index, "channel": np.arange(codes.shape[0]), "n_weights": n,
            "n_neg": counts[-1], "n_zero": counts[0], "n_pos": counts[1],
            "frac_neg": counts[-1] / n, "frac_zero": counts[0] / n, "frac_pos": counts[1] / n,
            "sparsity": counts[0] / n, "scale": q.scale,
        }))
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True)[columns]
    return _ordered(df, [l.name for l in model.ternary_layers()])

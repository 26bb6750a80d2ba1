"""Weight statistics of the ternary layers of a model (any form).

Per layer: counts of -1 / 0 / +1, sparsity = #0 / n, the per-channel scales s_o, the
parameter count and the packed size at 2 bits per weight against float32 (4 bytes).
A latent or merged layer is ternarized exactly as the fold does (same quantizers), so
the numbers are those of the model that will run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..graph import Layer, Model
from ..quantizers import TernaryWeights, recover_merged_ternary, sttn_ternarize


def layer_ternary_weights(layer: Layer) -> TernaryWeights:
    """Codes and per-channel scales of one ternary layer of any form."""
    p = layer.params
    if layer.kind in ("sttn_conv", "sttn_linear"):
        return sttn_ternarize(p["weight1"], p["weight2"], name=f"layer {layer.name!r}")
    if layer.kind in ("ter_conv", "ter_linear"):
        return recover_merged_ternary(p["weight"], name=f"layer {layer.name!r}")
    if layer.kind in ("ternary_conv", "ternary_linear"):
        return TernaryWeights(p["codes"], np.asarray(p["scale"], np.float64), "sttn", "channel", None)
    raise ValueError(f"layer {layer.name!r} ({layer.kind}) has no ternary weights")


def weight_statistics(model: Model) -> pd.DataFrame:
    """One row per ternary layer: counts, fractions, sparsity, scales, sizes."""
    rows = []
    for index, layer in enumerate(model.ternary_layers()):
        q = layer_ternary_weights(layer)
        n = q.codes.size
        neg, zero, pos = (int(np.count_nonzero(q.codes == v)) for v in (-1, 0, 1))
        rows.append({
            "layer": layer.name, "order": index, "kind": layer.kind, "shape": "x".join(map(str, q.codes.shape)),
            "n_weights": n, "n_neg": neg, "n_zero": zero, "n_pos": pos,
            "frac_neg": neg / n, "frac_zero": zero / n, "frac_pos": pos / n, "sparsity": zero / n,
            "scale_mean": float(q.scale.mean()), "scale_min": float(q.scale.min()), "scale_max": float(q.scale.max()),
            "packed_bytes": (2 * n + 7) // 8, "float32_bytes": 4 * n,
        })
    df = pd.DataFrame(rows)
    if len(df):
        df["layer"] = pd.Categorical(df["layer"], categories=list(df["layer"]), ordered=True)
    return df


def channel_weight_statistics(model: Model) -> pd.DataFrame:
    """One row per ternary layer × output channel: counts, sparsity and scale s_o."""
    frames = []
    for layer in model.ternary_layers():
        q = layer_ternary_weights(layer)
        codes = q.codes.reshape(q.codes.shape[0], -1)
        frames.append(pd.DataFrame({
            "layer": layer.name, "channel": np.arange(codes.shape[0]),
            "n_neg": (codes == -1).sum(axis=1), "n_zero": (codes == 0).sum(axis=1), "n_pos": (codes == 1).sum(axis=1),
            "sparsity": (codes == 0).mean(axis=1), "scale": q.scale,
        }))
    if not frames:
        return pd.DataFrame(columns=["layer", "channel", "n_neg", "n_zero", "n_pos", "sparsity", "scale"])
    df = pd.concat(frames, ignore_index=True)
    order = [l.name for l in model.ternary_layers()]
    df["layer"] = pd.Categorical(df["layer"], categories=order, ordered=True)
    return df

"""Cost of the ternary layers: MACs, the MACs a sparsity-aware engine must do, memory.

Per ternary layer (one row, model order), for ONE image:

* ``macs`` — dense multiply-accumulates, ``C_out · (C_in·kh·kw) · H'·W'`` (``H'·W' = 1``
  for a linear layer);
* ``macs_nonzero_weight`` — MACs whose weight is non-zero, ``nnz(t) · H'·W'``;
* ``bops`` — bit operations, ``macs · 2 · 2`` (2-bit weights and activations, QONNX's
  definition);
* ``packed_bytes`` — the codes at 2 bits per weight, ``float32_bytes`` — one float32
  kernel of the same shape, and ``compression`` their ratio.

Sizes, MACs and BOPs come from :func:`sttn_sim.stats.profile.model_profile`.

With an :class:`~sttn_sim.stats.activations.ActivationRecorder` (which counted, while the
model ran, the MACs of each consumer of ternary codes exactly), also the per-image means
``macs_nonzero_act`` (activation ≠ 0) and ``macs_nonzero`` (weight AND activation ≠ 0),
their exact totals over the ``images`` recorded (``*_total``), and
``nonzero_mac_fraction = macs_nonzero / macs``. Padding positions count as zero
activations. A ternary layer not fed by a recorded quantizer gets NaN there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..graph import Model
from .profile import model_profile


def layer_costs(model: Model, activations=None) -> pd.DataFrame:
    """MACs and memory of every ternary layer (see the module note)."""
    profile = model_profile(model)
    measured = activations.consumer_macs() if activations is not None else {}
    rows = []
    ternary = model.ternary_layers()
    for order, layer in enumerate(ternary):
        prof = profile[layer.name]
        codes = layer.spec.ternary_weights(layer).codes
        out = prof.output_shape
        positions = int(np.prod(out[1:])) if len(out) > 1 else 1
        c_out = int(codes.shape[0])
        n, nnz = prof.weights, int(np.count_nonzero(codes))
        row = {
            "layer": layer.name, "order": order, "kind": layer.kind, "c_out": c_out, "c_in": int(codes.shape[1]),
            "kernel": "x".join(map(str, codes.shape[2:])) if codes.ndim > 2 else "-",
            "out_positions": positions, "weights_per_output": n // c_out,
            "macs": prof.macs, "n_weights": n, "nonzero_weights": nnz,
            "weight_sparsity": 1 - nnz / n, "macs_nonzero_weight": nnz * positions, "bops": prof.bops,
            "packed_bytes": prof.packed_bytes, "float32_bytes": prof.float32_bytes,
            "compression": prof.float32_bytes / prof.packed_bytes,
        }
        m = measured.get(layer.name)
        if m is not None and m["images"] > 0:
            images = m["images"]
            row.update({
                "input_quantizer": m["quantizer"], "images": images,
                "macs_nonzero_act": m["macs_nonzero_act"] / images, "macs_nonzero": m["macs_nonzero"] / images,
                "nonzero_mac_fraction": m["macs_nonzero"] / m["macs"] if m["macs"] else np.nan,
                "macs_total": m["macs"], "macs_nonzero_act_total": m["macs_nonzero_act"],
                "macs_nonzero_weight_total": m["macs_nonzero_weight"], "macs_nonzero_total": m["macs_nonzero"],
            })
        elif activations is not None:
            row.update({"input_quantizer": None, "images": 0, "macs_nonzero_act": np.nan, "macs_nonzero": np.nan,
                        "nonzero_mac_fraction": np.nan, "macs_total": np.nan, "macs_nonzero_act_total": np.nan,
                        "macs_nonzero_weight_total": np.nan, "macs_nonzero_total": np.nan})
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in ternary], ordered=True)
    return df


__all__ = ["layer_costs"]

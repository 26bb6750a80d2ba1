"""Cost of the ternary layers: MACs, the MACs a sparsity-aware engine must do, memory.

Per ternary layer (one row, model order), for ONE image:

* ``macs`` — dense multiply-accumulates, ``C_out · (C_in·kh·kw) · H'·W'`` (``H'·W' = 1``
  for a linear layer);
* ``macs_nonzero_weight`` — MACs whose weight is non-zero, ``nnz(t) · H'·W'``;
* ``packed_bytes`` — the codes at 2 bits per weight, ``float32_bytes`` — one float32
  kernel of the same shape, and ``compression`` their ratio.

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
from ..shapes import infer_shapes
from .weights import layer_ternary_weights


def layer_costs(model: Model, activations=None) -> pd.DataFrame:
    """MACs and memory of every ternary layer (see the module note)."""
    shapes = infer_shapes(model)
    measured = activations.consumer_macs() if activations is not None else {}
    rows = []
    ternary = model.ternary_layers()
    for order, layer in enumerate(ternary):
        codes = layer_ternary_weights(layer).codes
        out = shapes[layer.name]
        positions = int(np.prod(out[1:])) if len(out) > 1 else 1
        c_out = int(codes.shape[0])
        per_output = int(np.prod(codes.shape[1:]))
        n = int(codes.size)
        nnz = int(np.count_nonzero(codes))
        packed = (2 * n + 7) // 8
        row = {
            "layer": layer.name, "order": order, "kind": layer.kind, "c_out": c_out, "c_in": int(codes.shape[1]),
            "kernel": "x".join(map(str, codes.shape[2:])) if codes.ndim > 2 else "-",
            "out_positions": positions, "weights_per_output": per_output,
            "macs": c_out * per_output * positions, "n_weights": n, "nonzero_weights": nnz,
            "weight_sparsity": 1 - nnz / n, "macs_nonzero_weight": nnz * positions,
            "packed_bytes": packed, "float32_bytes": 4 * n, "compression": 4 * n / packed,
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

r"""Δ sweeps: sparsity and L2 error of the hard threshold as a function of Δ / mean|w|.

For each latent STTN layer, w = (clamp W1 + clamp W2)/2 (the same weights as the
baselines) is ternarized with the hard rule ``t = sign(w)·[|w| > Δ]`` at
``Δ = r · mean|w|`` for every ratio r (per tensor, or per output channel with each
channel's own mean|w_o|), each with its L2-optimal scale ``α = S/k`` (S the sum of the
k kept magnitudes). Then, exactly and without re-quantizing for every r (one sort per
row, prefix sums):

.. math::

    \mathrm{l2} = \lVert w \rVert^2 - \sum_{\text{rows}} S^2 / k, \qquad
    \cos = \sqrt{\textstyle\sum_{\text{rows}} S^2/k} \,/\, \lVert w \rVert

(a row with k = 0 contributes 0). ``agreement`` is the fraction of codes equal to STTN's.

:func:`sttn_sweep_points` gives STTN's own point for each layer: x = its equivalent Δ
relative to mean|w| (the hard Δ with the same sparsity), y = its sparsity, and its L2
error with its own scale and with the best scale for its codes — to mark on the curves.
:func:`fixed_ratio_methods` lists the registered methods whose Δ is a fixed ratio on the
same axis (TWN r = 0.7, absmean r = 0.5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sttn_sim.graph import Model
from sttn_sim.quantizers import Method, all_methods
from sttn_sim.stats.intervals import equivalent_delta, latent_layers

from .baselines import l2_and_cosine, layer_weights, rescaled_sttn

#: default ratios Δ / mean|w|: 0 .. 2 in steps of 0.025
DEFAULT_RATIOS = np.round(np.arange(0, 81) * 0.025, 10)


def fixed_ratio_methods() -> list[Method]:
    """The registered hard-threshold methods whose Δ is a fixed multiple r of mean|w|
    (:attr:`~sttn_sim.quantizers.Method.delta_rel`), in registry order: points on the
    sweep's Δ / mean|w| axis."""
    return [m for m in all_methods() if m.hard_threshold and m.delta_rel is not None]


def sweep_arrays(w: np.ndarray, sttn_codes: np.ndarray, ratios, granularity: str = "tensor") -> dict[str, np.ndarray]:
    """The sweep of one tensor: arrays over ``ratios`` of ``delta`` (mean over rows),
    ``sparsity``, ``l2``, ``l2_rel``, ``cosine``, ``agreement``."""
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"granularity must be 'tensor' or 'channel', got {granularity!r}")
    ratios = np.asarray(ratios, np.float64)
    w = np.asarray(w, np.float64)
    rows = w.reshape(1, -1) if granularity == "tensor" else w.reshape(w.shape[0], -1)
    codes = np.asarray(sttn_codes).reshape(rows.shape)
    n_total = w.size
    norm2 = float(np.sum(w * w))
    gain, agree, delta_sum, zeroed = (np.zeros(ratios.size) for _ in range(4))
    for r, t in zip(rows, codes):
        order = np.argsort(np.abs(r), kind="stable")
        a = np.abs(r)[order]
        z = (t[order] == 0)
        prefix = np.concatenate([[0.0], np.cumsum(a)])
        cum_zero = np.concatenate([[0], np.cumsum(z)])
        n = a.size
        deltas = ratios * a.mean()
        j = np.searchsorted(a, deltas, side="right")  # number of |w| <= Δ (zeroed)
        k = n - j
        s = prefix[-1] - prefix[j]
        gain += np.divide(s * s, k, out=np.zeros_like(s), where=k > 0)
        agree += cum_zero[j] + ((n - cum_zero[-1]) - (j - cum_zero[j]))
        delta_sum += deltas
        zeroed += j
    l2 = np.maximum(norm2 - gain, 0.0)
    return {
        "delta": delta_sum / rows.shape[0], "sparsity": zeroed / n_total, "l2": l2,
        "l2_rel": l2 / norm2 if norm2 > 0 else np.full(ratios.size, np.nan),
        "cosine": np.sqrt(gain) / np.sqrt(norm2) if norm2 > 0 else np.zeros(ratios.size),
        "agreement": agree / n_total,
    }


def delta_sweep(model: Model, *, ratios=None, layers=None, granularity: str = "tensor",
                zero_policy: str = "error") -> pd.DataFrame:
    """One row per latent layer × ratio: ``layer, order, granularity, ratio, delta,
    sparsity, l2, l2_rel, cosine, agreement`` (see the module note).

    Raises :class:`sttn_sim.stats.StatisticsUnavailable` for a model without latent weights.
    """
    ratios = DEFAULT_RATIOS if ratios is None else np.asarray(ratios, np.float64)
    if ratios.ndim != 1 or ratios.size == 0 or not np.all(np.isfinite(ratios)) or np.any(ratios < 0):
        raise ValueError("ratios: expected a non-empty 1-D array of finite values >= 0")
    chosen = latent_layers(model, layers)
    order = {l.name: i for i, l in enumerate(model.ternary_layers())}
    frames = []
    for layer in chosen:
        w, sttn = layer_weights(layer, zero_policy)
        res = sweep_arrays(w, sttn.codes, ratios, granularity)
        frames.append(pd.DataFrame({"layer": layer.name, "order": order[layer.name], "granularity": granularity,
                                    "ratio": ratios, **res}))
    df = pd.concat(frames, ignore_index=True)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in chosen], ordered=True)
    return df


def sttn_sweep_points(model: Model, *, layers=None, zero_policy: str = "error") -> pd.DataFrame:
    """STTN's point per latent layer: ``ratio`` (equivalent Δ / mean|w|, per tensor),
    ``sparsity``, ``l2_rel`` (own scale), ``l2_rel_rescaled`` (best scale for its codes),
    ``cosine``."""
    chosen = latent_layers(model, layers)
    order = {l.name: i for i, l in enumerate(model.ternary_layers())}
    rows = []
    for layer in chosen:
        w, sttn = layer_weights(layer, zero_policy)
        a = np.abs(w)
        n_zero = int(np.count_nonzero(sttn.codes == 0))
        norm2 = float(np.sum(w * w))
        own = l2_and_cosine(w, sttn.dequantize())
        best = l2_and_cosine(w, rescaled_sttn(w, sttn.codes).dequantize())
        rows.append({"layer": layer.name, "order": order[layer.name],
                     "ratio": equivalent_delta(a, n_zero) / a.mean() if a.mean() > 0 else np.nan,
                     "sparsity": n_zero / w.size, "l2_rel": own["l2"] / norm2, "l2_rel_rescaled": best["l2"] / norm2,
                     "cosine": own["cosine"]})
    df = pd.DataFrame(rows)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in chosen], ordered=True)
    return df


__all__ = ["DEFAULT_RATIOS", "fixed_ratio_methods", "sweep_arrays", "delta_sweep", "sttn_sweep_points"]

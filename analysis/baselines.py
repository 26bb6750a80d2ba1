r"""Hard-threshold baselines on the same latent weights as STTN (docs/design.md §2.4, §3).

For every latent STTN layer the reference tensor is the equivalent float weight

.. math::  w = (\operatorname{clamp}(W_1) + \operatorname{clamp}(W_2)) / 2

(:func:`sttn_sim.quantizers.sttn_equivalent_weight`), and each method ternarizes that
same w, per tensor and per output channel:

* ``twn`` — Δ = 0.7·mean|w|;  ``ttq`` — Δ = 0.05·max|w|, separate W_p / W_n;
* ``optimal`` — the exact L2-optimal Δ (= α/2);  ``absmean`` — Δ = 0.5·mean|w|;
* ``sparsity`` — the sparsity-targeted Δ matched to STTN: the hard threshold with the
  same number of zeros as STTN in the tensor (or in each channel), i.e. the equivalent
  Δ of :mod:`sttn_sim.stats.intervals`;
* ``fixed`` — a user Δ, given relative to mean|w| (``fixed_delta_rel``), only when asked.

The methods come from the registry (:func:`sttn_sim.quantizers.all_methods`): every
hard-threshold method without a required parameter is a default baseline (so a newly
registered one appears here), ``sparsity`` gets STTN's sparsity as its target, and every
method whose only required parameter is ``delta`` (``fixed``) gets
``fixed_delta_rel · mean|w|`` when that is given.

Each baseline's scale is the L2-optimal one for its codes (mean |w| over the non-zeros;
TTQ's W_p, W_n are the per-sign means).

**STTN's own error** (method ``sttn``): STTN's dequantized kernel
``s_o·t = α_o(B1 + B2)`` (``s_o = 2α_o``, ``α_o = (Σ|clamp W1_o| + Σ|clamp W2_o|)/(2n)``) is
what the network uses in place of the two latent convolutions, whose float counterpart
is ``W1 + W2 = 2w``. In the units of w the STTN weight is therefore
``Ŵ = (s_o/2)·t = α_o·t``, and its error is ``||w − α t||²`` (equal to
``||(W1+W2) − s·t||² / 4``; ``l2_rel`` and ``cosine`` are the same in either unit).
Because α is the mean latent magnitude, not the best scale for the codes, the row
``sttn_rescaled`` adds STTN's codes with the L2-optimal per-channel scale (mean |w| over
its non-zeros), which separates the effect of the codes from that of the scale.

Columns, one row per layer × method × granularity (STTN rows are per channel, as STTN's
scale is):

* ``l2 = ||w - Ŵ||²`` (sum over the layer), ``l2_rel = l2 / ||w||²``, ``cosine`` between
  w and Ŵ (0 if either is zero);
* ``sparsity`` — fraction of zero codes; ``agreement`` — fraction of codes equal to the
  STTN codes (sign included);
* ``delta`` — the threshold on |w| (the mean over channels for ``channel``; for STTN
  the equivalent Δ), ``delta_rel`` — Δ / mean|w| (per channel: the mean over channels
  of Δ_o / mean|w_o|); ``scale_mean`` — the mean scale (TTQ: of W_p and W_n).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sttn_sim.graph import Layer, Model
from sttn_sim.quantizers import (
    MethodNames,
    TernaryWeights,
    get_method,
    hard_threshold,
    sttn_equivalent_weight,
    sttn_ternarize,
)
from sttn_sim.stats.intervals import equivalent_delta, latent_layers

#: the baseline whose target sparsity is matched to STTN's (:func:`matched_sparsity`)
MATCHED_SPARSITY = "sparsity"
#: default baselines in the order of tables and figures (a live view of the registry):
#: the hard-threshold methods without a required parameter, and the matched sparsity
BASELINE_METHODS = MethodNames(lambda m: m.hard_threshold and (not m.required_params or m.name == MATCHED_SPARSITY))
#: baselines that take a user Δ (``fixed_delta_rel``) (a live view of the registry)
DELTA_METHODS = MethodNames(lambda m: m.hard_threshold and m.required_params == ("delta",))
GRANULARITIES = ("tensor", "channel")


def _rows(w: np.ndarray, granularity: str) -> np.ndarray:
    return w.reshape(1, -1) if granularity == "tensor" else w.reshape(w.shape[0], -1)


def matched_sparsity(w: np.ndarray, sttn_codes: np.ndarray, *, granularity: str = "tensor",
                     name: str = "weights") -> TernaryWeights:
    """Hard threshold with as many zeros as STTN has, per tensor or per output channel.

    Δ (per row) is the k-th smallest |w| with k the STTN zeros in that row (0 for k = 0);
    ties at Δ are zeroed too (the shared hard rule).
    """
    rows, codes = _rows(w, granularity), _rows(sttn_codes, granularity)
    deltas = np.array([equivalent_delta(np.abs(r), int(np.count_nonzero(c == 0))) for r, c in zip(rows, codes)])
    tw = hard_threshold(w, deltas if granularity == "channel" else float(deltas[0]), granularity=granularity, name=name)
    return TernaryWeights(tw.codes, tw.scale, "sparsity", granularity, tw.delta)


def rescaled_sttn(w: np.ndarray, sttn_codes: np.ndarray) -> TernaryWeights:
    """STTN's codes with the L2-optimal per-channel scale ``mean{|w| : t ≠ 0}``."""
    rows, codes = _rows(w, "channel"), _rows(sttn_codes, "channel")
    nz = codes != 0
    count = nz.sum(axis=1)
    total = np.where(nz, np.abs(rows), 0.0).sum(axis=1)
    scale = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return TernaryWeights(sttn_codes, scale, "sttn", "channel", None)


def l2_and_cosine(w: np.ndarray, w_hat: np.ndarray) -> dict[str, float]:
    """``{"l2": ||w - ŵ||², "cosine": <w, ŵ> / (||w|| ||ŵ||)}`` in float64, cosine 0 when a
    norm is 0 and clipped to [-1, 1] — the definition of
    :func:`sttn_sim.quantizers.quantization_error`, computed with elementwise sums (the
    BLAS ``dot`` it uses is slow on some OpenBLAS builds for long vectors)."""
    w = np.asarray(w, np.float64).ravel()
    w_hat = np.asarray(w_hat, np.float64).ravel()
    diff = w - w_hat
    nw, nq = float(np.sum(w * w)), float(np.sum(w_hat * w_hat))
    cosine = 0.0 if nw == 0.0 or nq == 0.0 else float(np.clip(np.sum(w * w_hat) / np.sqrt(nw * nq), -1.0, 1.0))
    return {"l2": float(np.sum(diff * diff)), "cosine": cosine}


def _row(w: np.ndarray, tw: TernaryWeights, sttn_codes: np.ndarray, method: str, granularity: str,
         delta_rows: np.ndarray, name: str) -> dict:
    err = l2_and_cosine(w, tw.dequantize())
    rows = _rows(w, granularity)
    mean_abs = np.abs(rows).mean(axis=1)
    rel = np.divide(delta_rows, mean_abs, out=np.full_like(delta_rows, np.nan), where=mean_abs > 0)
    scale = tw.scale if tw.scale_neg is None else (tw.scale + tw.scale_neg) / 2
    norm2 = float(np.sum(w * w))
    return {
        "method": method, "granularity": granularity, "n_weights": int(w.size),
        "l2": err["l2"], "l2_rel": err["l2"] / norm2 if norm2 > 0 else np.nan, "cosine": err["cosine"],
        "sparsity": tw.sparsity, "agreement": float(np.mean(tw.codes == sttn_codes)),
        "delta": float(np.mean(delta_rows)), "delta_rel": float(np.nanmean(rel)) if np.any(mean_abs > 0) else np.nan,
        "scale_mean": float(np.mean(scale)),
    }


def compare_quantizers(w: np.ndarray, sttn: TernaryWeights, *, methods=BASELINE_METHODS,
                       granularities=GRANULARITIES, fixed_delta_rel: float | None = None,
                       name: str = "weights") -> list[dict]:
    """STTN (own scale and rescaled) and every baseline on one equivalent-weight tensor ``w``.

    Returns a list of row dicts (see the module note for the columns).
    """
    w = np.asarray(w, np.float64)
    rows = []
    eq = np.array([equivalent_delta(np.abs(r), int(np.count_nonzero(c == 0)))
                   for r, c in zip(_rows(w, "channel"), _rows(sttn.codes, "channel"))])
    rows.append(_row(w, sttn, sttn.codes, "sttn", "channel", eq, name))
    rows.append(_row(w, rescaled_sttn(w, sttn.codes), sttn.codes, "sttn_rescaled", "channel", eq, name))
    for method in methods:
        if method not in BASELINE_METHODS:
            get_method(method)  # an unknown name: the registry's error lists the known ones
            raise ValueError(f"{method!r} is not a default baseline; baselines: {', '.join(BASELINE_METHODS)}"
                             f" (and {', '.join(DELTA_METHODS)} with fixed_delta_rel)")
    for granularity in granularities:
        for method in methods:
            if method == MATCHED_SPARSITY:
                tw = matched_sparsity(w, sttn.codes, granularity=granularity, name=name)
            else:
                tw = get_method(method).ternarize(w, granularity=granularity, name=name)
            rows.append(_row(w, tw, sttn.codes, method, granularity, np.atleast_1d(tw.delta), name))
        if fixed_delta_rel is not None:
            mean_abs = np.abs(_rows(w, granularity)).mean(axis=1)
            d = fixed_delta_rel * mean_abs
            for method in DELTA_METHODS:
                tw = get_method(method).ternarize(w, d if granularity == "channel" else float(d[0]),
                                                  granularity=granularity, name=name)
                rows.append(_row(w, tw, sttn.codes, method, granularity, np.atleast_1d(tw.delta), name))
    return rows


def layer_weights(layer: Layer, zero_policy: str = "error") -> tuple[np.ndarray, TernaryWeights]:
    """The equivalent weights w = (W1+W2)/2 of one latent layer and STTN's quantization of
    them in the same units: codes t with scale α_o = s_o / 2 (see the module note)."""
    p = layer.params
    name = f"layer {layer.name!r}"
    q = sttn_ternarize(p["weight1"], p["weight2"], zero_policy=zero_policy, name=name)
    return (sttn_equivalent_weight(p["weight1"], p["weight2"], name=name),
            TernaryWeights(q.codes, q.scale / 2.0, "sttn", "channel", None))


def baseline_table(model: Model, *, methods=BASELINE_METHODS, granularities=GRANULARITIES, layers=None,
                   fixed_delta_rel: float | None = None, zero_policy: str = "error") -> pd.DataFrame:
    """STTN against every hard-threshold baseline, one row per layer × method × granularity.

    Only latent layers have the w these methods need: a merged or folded model raises
    :class:`sttn_sim.stats.StatisticsUnavailable`. Columns: ``layer, order`` and those of
    the module note.
    """
    if isinstance(granularities, str):
        granularities = (granularities,)
    chosen = latent_layers(model, layers)
    order = {l.name: i for i, l in enumerate(model.ternary_layers())}
    rows = []
    for layer in chosen:
        w, sttn = layer_weights(layer, zero_policy)
        for row in compare_quantizers(w, sttn, methods=methods, granularities=granularities,
                                      fixed_delta_rel=fixed_delta_rel, name=f"layer {layer.name!r}"):
            rows.append({"layer": layer.name, "order": order[layer.name], **row})
    df = pd.DataFrame(rows)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in chosen], ordered=True)
    return df


__all__ = ["l2_and_cosine", "BASELINE_METHODS", "DELTA_METHODS", "MATCHED_SPARSITY", "GRANULARITIES", "baseline_table", "compare_quantizers", "matched_sparsity",
           "rescaled_sttn", "layer_weights"]

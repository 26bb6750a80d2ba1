r"""Learned quantization intervals of STTN layers, from the latent kernels W1, W2 (docs/design.md §3).

STTN has no threshold: a code is 0 exactly where the two latent kernels disagree in sign.
To see *which* weights it zeroes, each layer is compared with the "equivalent" float
weight (:func:`sttn_sim.quantizers.sttn_equivalent_weight`)

.. math::

    w = \frac{\operatorname{clamp}(W_1) + \operatorname{clamp}(W_2)}{2}

and with the hard-threshold rule shared by every baseline, ``t_Δ(w) = sign(w)·[|w| > Δ]``
(a magnitude equal to Δ becomes 0). Per layer (or per output channel):

* **class-conditional distributions** of |w| for the STTN codes -1, 0, +1: count, min,
  5/25/50/75/95 % quantiles (numpy's linear interpolation), max and mean;
* **equivalent Δ** — the hard threshold giving the same number of zeros as STTN. With the
  magnitudes sorted ascending ``a_1 <= ... <= a_n`` and ``k`` STTN zeros,
  ``Δ_eq = a_k`` (0 when k = 0), i.e. the largest zeroed magnitude; any Δ in
  ``[a_k, a_{k+1})`` gives the same codes. (This is what
  :func:`~sttn_sim.quantizers.sparsity_ternarize` does with target sparsity k/n. If
  ``a_k == a_{k+1}`` the hard rule zeroes the whole tie run, so ``hard_sparsity_at_eq``
  may exceed the STTN sparsity; it is reported.)
* **overlap** — the fraction of weights whose STTN code differs from ``t_{Δ_eq}``:
  STTN zeros above Δ_eq (``overlap_zero_above``) plus STTN non-zeros at or below it
  (``overlap_nonzero_below``). Non-zero STTN codes always have the sign of w (both
  latent signs agree), so only zero/non-zero disagreements occur.
* **best separating Δ** — the threshold on |w| that misclassifies the fewest weights
  between the STTN zero and non-zero classes,
  ``E(Δ) = #{t = 0, |w| > Δ} + #{t ≠ 0, |w| <= Δ}``. Exact: a threshold zeroes a prefix of
  the ascending magnitudes that ends at a tie-run boundary, so every prefix length j is
  tried with cumulative sums (``E(j) = #non-zeros among the first j + #zeros after them``).
  ``best_delta = a_j`` (0 for j = 0), ``best_delta_upper = a_{j+1}`` (any Δ in between
  is equally good); among equal errors the smallest Δ is reported. ``best_errors`` is the
  count, ``best_error_rate`` the fraction. ``best_errors <= overlap_count`` always.

A merged (``ter_*``) or folded (``ternary_*``) layer holds only ``α(B1 + B2)`` or int8
codes: the latent kernels are gone, and these statistics cannot be computed. The
functions here raise :class:`StatisticsUnavailable` in that case rather than invent them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ModelError, StatisticsUnavailable
from ..graph import Layer, Model
from ..quantizers import sttn_equivalent_weight, sttn_ternarize

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CLASS_NAMES = {-1: "neg", 0: "zero", 1: "pos"}



# --------------------------------------------------------------------------------------
# layer lookup


def ternary_layer(model: Model, name: str) -> Layer:
    """The ternary layer ``name``; a :class:`ModelError` listing the valid names otherwise."""
    names = [l.name for l in model.ternary_layers()]
    if name not in model.layer_names:
        raise ModelError(f"model {model.arch!r} has no layer {name!r}; ternary layers: {', '.join(names)}")
    layer = model[name]
    if not layer.is_ternary:
        raise ModelError(f"layer {name!r} is a {layer.kind} layer, not a ternary layer; "
                         f"ternary layers: {', '.join(names)}")
    return layer


def _unavailable_reason(model: Model, layer: Layer) -> str:
    if layer.kind.startswith("ter_"):
        what = "a merged layer storing only alpha*(B1+B2)"
    else:
        src = layer.attrs.get("folded_from")
        what = "a folded layer storing only int8 codes and scales" + (f" (folded from {src})" if src else "")
    return (f"model {model.arch!r} (form {model.form!r}), layer {layer.name!r} ({layer.kind}) is {what}: the latent "
            f"kernels W1, W2 are not in this model, so w = (W1+W2)/2 and the learned intervals are not available. "
            f"Load the training checkpoint (latent form) instead")


def require_latent(model: Model, layer: Layer) -> None:
    """Raise :class:`StatisticsUnavailable` unless ``layer`` holds latent kernels."""
    if layer.ternary_form != "latent":
        raise StatisticsUnavailable(_unavailable_reason(model, layer))


def has_latent_weights(model: Model) -> bool:
    """True when at least one ternary layer holds the latent kernels W1, W2."""
    return any(l.ternary_form == "latent" for l in model.ternary_layers())


def latent_layers(model: Model, layers=None) -> list[Layer]:
    """The latent ternary layers (all of them, or those named in ``layers``, in model order).

    Raises :class:`StatisticsUnavailable` when a named layer (or, with ``layers=None``,
    every ternary layer) has no latent weights, and :class:`ModelError` for unknown names.
    """
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        wanted = [ternary_layer(model, n) for n in layers]
        for layer in wanted:
            require_latent(model, layer)
        return [l for l in model.ternary_layers() if l.name in {w.name for w in wanted}]
    ternary = model.ternary_layers()
    if not ternary:
        raise StatisticsUnavailable(f"model {model.arch!r} has no ternary layers: no learned intervals to report")
    latent = [l for l in ternary if l.ternary_form == "latent"]
    if not latent:
        raise StatisticsUnavailable(_unavailable_reason(model, ternary[0]))
    return latent


# --------------------------------------------------------------------------------------
# the statistics of one tensor


@dataclass(frozen=True)
class IntervalSamples:
    """The equivalent weights of one STTN layer and their STTN codes, for plotting.

    ``w`` (float64) and ``codes`` (int8) have the kernel's shape; :meth:`by_class`
    returns the flattened w of each code.
    """

    layer: str
    w: np.ndarray
    codes: np.ndarray

    def by_class(self) -> dict[int, np.ndarray]:
        """``{-1: w[t == -1], 0: w[t == 0], +1: w[t == +1]}`` (flat float64 arrays)."""
        flat_w, flat_t = self.w.ravel(), self.codes.ravel()
        return {v: flat_w[flat_t == v] for v in (-1, 0, 1)}

    @property
    def mean_abs(self) -> float:
        return float(np.abs(self.w).mean())


def equivalent_delta(abs_w: np.ndarray, n_zero: int) -> float:
    """``Δ_eq = a_k``: the k-th smallest magnitude (k = ``n_zero``), 0 for k = 0."""
    if n_zero <= 0:
        return 0.0
    a = np.sort(np.asarray(abs_w, np.float64).ravel())
    return float(a[min(n_zero, a.size) - 1])


def best_separating_delta(abs_w: np.ndarray, is_zero: np.ndarray) -> tuple[float, float, int]:
    """Exact minimiser of ``#{zero, |w| > Δ} + #{non-zero, |w| <= Δ}`` (see the module note).

    Returns ``(best_delta, best_delta_upper, errors)``; ``best_delta_upper`` is ``inf``
    when every weight is zeroed.
    """
    a = np.asarray(abs_w, np.float64).ravel()
    z = np.asarray(is_zero, bool).ravel()
    order = np.argsort(a, kind="stable")
    a, z = a[order], z[order]
    n = a.size
    cum_nonzero = np.concatenate([[0], np.cumsum(~z)])  # non-zeros among the first j
    cum_zero = np.concatenate([[0], np.cumsum(z)])
    errors = cum_nonzero + (cum_zero[-1] - cum_zero)  # E(j), j = 0..n
    valid = np.ones(n + 1, bool)
    valid[1:n] = a[:-1] < a[1:]  # a prefix may not split a run of equal magnitudes
    valid[0] = n == 0 or a[0] > 0  # Δ >= 0 always zeroes exact zeros
    j = int(np.argmin(np.where(valid, errors, np.iinfo(np.int64).max)))
    best = float(a[j - 1]) if j > 0 else 0.0
    upper = float(a[j]) if j < n else float("inf")
    return best, upper, int(errors[j])


def interval_statistics(w: np.ndarray, codes: np.ndarray) -> dict:
    """All learned-interval statistics of one tensor (or channel): see the module note.

    ``w`` are the equivalent float weights, ``codes`` the STTN codes (same size).
    """
    w = np.asarray(w, np.float64).ravel()
    t = np.asarray(codes).ravel()
    if w.size != t.size or w.size == 0:
        raise ValueError(f"interval_statistics: w ({w.size}) and codes ({t.size}) must be non-empty and the same size")
    a = np.abs(w)
    n = w.size
    is_zero = t == 0
    n_zero = int(is_zero.sum())
    mean_abs = float(a.mean())
    row: dict = {"n_weights": n}
    for v, cname in CLASS_NAMES.items():
        sel = a[t == v]
        row[f"n_{cname}"] = int(sel.size)
    row["sparsity"] = n_zero / n
    row["mean_abs_w"] = mean_abs
    # equivalent Δ and overlap
    d_eq = equivalent_delta(a, n_zero)
    hard = (np.sign(w) * (a > d_eq)).astype(np.int8)
    zero_above = int(np.count_nonzero(is_zero & (a > d_eq)))
    nonzero_below = int(np.count_nonzero(~is_zero & (a <= d_eq)))
    row.update({
        "eq_delta": d_eq, "eq_delta_rel": d_eq / mean_abs if mean_abs > 0 else np.nan,
        "hard_sparsity_at_eq": float(np.count_nonzero(hard == 0)) / n,
        "overlap_count": int(np.count_nonzero(hard != t)), "overlap_zero_above": zero_above,
        "overlap_nonzero_below": nonzero_below,
    })
    row["overlap"] = row["overlap_count"] / n
    best, upper, errors = best_separating_delta(a, is_zero)
    row.update({
        "best_delta": best, "best_delta_upper": upper,
        "best_delta_rel": best / mean_abs if mean_abs > 0 else np.nan,
        "best_errors": errors, "best_error_rate": errors / n,
        "best_sparsity": float(np.count_nonzero(a <= best)) / n,
        "sign_mismatches": int(np.count_nonzero((t != 0) & (np.sign(w) != t))),
    })
    for v, cname in CLASS_NAMES.items():
        row.update(class_summary(a[t == v], prefix=f"{cname}_absw_"))
    return row


def class_summary(abs_values: np.ndarray, prefix: str = "") -> dict:
    """min, 5/25/50/75/95 % quantiles, max and mean of ``abs_values`` (NaN when empty)."""
    keys = ["min"] + [f"q{int(round(100 * q)):02d}" for q in QUANTILES] + ["max", "mean"]
    if abs_values.size == 0:
        return {prefix + k: np.nan for k in keys}
    qs = np.quantile(abs_values, QUANTILES)
    values = [abs_values.min(), *qs, abs_values.max(), abs_values.mean()]
    return {prefix + k: float(v) for k, v in zip(keys, values)}


# --------------------------------------------------------------------------------------
# model-level tables


def interval_samples(model: Model, layer: str, *, zero_policy: str = "error") -> IntervalSamples:
    """w = (W1+W2)/2 and the STTN codes of one latent layer (for Figure 1 and histograms).

    Raises :class:`ModelError` (listing the ternary layers) for an unknown or non-ternary
    layer and :class:`StatisticsUnavailable` for a merged or folded one.
    """
    lay = ternary_layer(model, layer)
    require_latent(model, lay)
    return _samples(lay, zero_policy)


def _samples(layer: Layer, zero_policy: str) -> IntervalSamples:
    p = layer.params
    name = f"layer {layer.name!r}"
    w = sttn_equivalent_weight(p["weight1"], p["weight2"], name=name)
    q = sttn_ternarize(p["weight1"], p["weight2"], zero_policy=zero_policy, name=name)
    return IntervalSamples(layer.name, w, q.codes)


def learned_intervals(model: Model, *, layers=None, granularity: str = "tensor",
                      zero_policy: str = "error") -> pd.DataFrame:
    """Learned-interval statistics, one row per latent ternary layer (``granularity="tensor"``)
    or per layer × output channel (``"channel"``), ``layer`` ordered as in the model.

    Columns: ``layer, order[, channel], kind, n_weights, n_neg, n_zero, n_pos, sparsity,
    mean_abs_w, eq_delta, eq_delta_rel, hard_sparsity_at_eq, overlap, overlap_count,
    overlap_zero_above, overlap_nonzero_below, best_delta, best_delta_upper,
    best_delta_rel, best_errors, best_error_rate, best_sparsity, sign_mismatches`` and for
    each class ``neg``, ``zero``, ``pos`` the summary ``<class>_absw_{min,q05,q25,q50,q75,
    q95,max,mean}`` of |w| (definitions in the module note; ``*_rel`` is relative to
    ``mean_abs_w``).

    Raises :class:`StatisticsUnavailable` when the model (or a named layer) has no latent
    kernels (a merged or folded model).
    """
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"granularity must be 'tensor' or 'channel', got {granularity!r}")
    chosen = latent_layers(model, layers)
    order = {l.name: i for i, l in enumerate(model.ternary_layers())}
    rows = []
    for layer in chosen:
        s = _samples(layer, zero_policy)
        head = {"layer": layer.name, "order": order[layer.name]}
        if granularity == "tensor":
            rows.append({**head, "kind": layer.kind, **interval_statistics(s.w, s.codes)})
        else:
            w2, t2 = s.w.reshape(s.w.shape[0], -1), s.codes.reshape(s.codes.shape[0], -1)
            for o in range(w2.shape[0]):
                rows.append({**head, "channel": o, "kind": layer.kind, **interval_statistics(w2[o], t2[o])})
    df = pd.DataFrame(rows)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in chosen], ordered=True)
    return df


def learned_interval_classes(model: Model, *, layers=None, zero_policy: str = "error") -> pd.DataFrame:
    """Long form of the class-conditional distributions: one row per layer × STTN code
    (``code`` -1/0/+1) with ``count`` and the |w| summary ``min, q05 .. q95, max, mean``,
    plus the signed range ``w_min``/``w_max`` of the class."""
    chosen = latent_layers(model, layers)
    order = {l.name: i for i, l in enumerate(model.ternary_layers())}
    rows = []
    for layer in chosen:
        s = _samples(layer, zero_policy)
        for v, sel in s.by_class().items():
            rows.append({"layer": layer.name, "order": order[layer.name], "code": v, "count": int(sel.size),
                         "fraction": sel.size / s.w.size, **class_summary(np.abs(sel)),
                         "w_min": float(sel.min()) if sel.size else np.nan,
                         "w_max": float(sel.max()) if sel.size else np.nan})
    df = pd.DataFrame(rows)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in chosen], ordered=True)
    return df


__all__ = [
    "StatisticsUnavailable", "IntervalSamples", "interval_samples", "learned_intervals", "learned_interval_classes",
    "interval_statistics", "equivalent_delta", "best_separating_delta", "class_summary", "ternary_layer",
    "latent_layers", "has_latent_weights", "require_latent", "QUANTILES",
]

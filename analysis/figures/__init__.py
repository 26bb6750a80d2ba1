"""Paper-style figures.  Every function takes an optional ``ax`` and returns the figure.

Multi-panel figures accept ``ax=None`` (a new figure), a single Axes (its area is split
into the panels, the Axes itself is hidden) or a sequence with one Axes per panel.
Colours: -1 blue, 0 red, +1 green (the STTN paper's), one shared style
(:mod:`analysis.style`).

* :func:`plot_weight_sparsity` — -1/0/+1 weight fractions per layer;
* :func:`plot_figure1` — the paper's Figure 1 for one layer: w coloured by the STTN code
  (soft threshold) beside the TWN hard threshold, each with the sorted-position strip;
* :func:`plot_learned_intervals` — class-conditional |w| ranges per layer with the
  equivalent, best-separating and TWN Δ;
* :func:`plot_sparsity_comparison`, :func:`plot_l2_comparison` — STTN against every
  baseline per layer;
* :func:`plot_delta_sweep` — sparsity and L2 error against Δ / mean|w|, STTN marked;
* :func:`plot_activation_distributions`, :func:`plot_activation_occupancy`,
  :func:`plot_channel_occupancy`, :func:`plot_activation_thresholds` — activations.

``python -m analysis.figures`` writes all of them (see :mod:`analysis.report`).
:func:`default_model_and_data` is the ONE place that chooses the embedded default model.
"""

from __future__ import annotations

import matplotlib
import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from sttn_sim.datasets import default_model, digits
from sttn_sim.rules import ACTIVATION_HI, ACTIVATION_LO
from sttn_sim.quantizers import get_method
from sttn_sim.stats.intervals import IntervalSamples, equivalent_delta, interval_samples

from ..style import (
    METHOD_COLORS,
    TERNARY_COLORS,
    TERNARY_LABELS,
    MethodAttribute,
    apply_style,
    method_order,
    method_style,
    new_axes,
)
from ..sweeps import fixed_ratio_methods

#: ``{method: legend label}`` from the method registry (a live view, legend order)
METHOD_LABELS = MethodAttribute("label")
#: line styles of the fixed-ratio methods' Δ lines, in registry order (TWN, absmean, ...)
_RATIO_LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


# --------------------------------------------------------------------------------------
# the embedded default


def default_model_and_data(batch: int = 8, batches: int = 4, seed: int = 0):
    """The model and input batches used when no checkpoint is given.

    The embedded default model (:func:`sttn_sim.default_model`: a small official-style
    STTN ResNet trained on digits) with the whole digits test split
    (:func:`sttn_sim.datasets.digits`, 360 images) cut into batches of ``batch``
    images; ``batches`` and ``seed`` only matter for synthetic data and are ignored here.

    Returns ``(model, list_of_batches, description)``.
    """

    model = default_model()
    x_test = digits()[2]
    data = [x_test[i:i + batch] for i in range(0, len(x_test), batch)]
    acc = model.metadata.get("test_accuracy")
    text = "embedded default model: STTN ResNet trained on digits"
    if acc is not None:
        text += f" (test accuracy {100 * acc:.2f}%)"
    return model, data, text


# --------------------------------------------------------------------------------------
# helpers


def _grid(ax, nrows: int, ncols: int, *, figsize, height_ratios=None, width_ratios=None,
          hspace: float = 0.08, wspace: float = 0.1, sharex=False):
    """``(fig, axes[nrows][ncols])``: new axes, the given ones, or the given Axes' area split."""
    apply_style()

    hr = list(height_ratios or [1] * nrows)
    wr = list(width_ratios or [1] * ncols)
    if ax is None:
        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False,
                                 gridspec_kw={"height_ratios": hr, "width_ratios": wr}, sharex=sharex)
        return fig, [list(r) for r in axes]
    if isinstance(ax, (list, tuple, np.ndarray)):
        flat = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(flat) != nrows * ncols:
            raise ValueError(f"expected {nrows * ncols} axes for this figure, got {len(flat)}")
        return flat[0].figure, [flat[r * ncols:(r + 1) * ncols] for r in range(nrows)]
    # one Axes: split its area (axes coordinates) into the grid
    ax.set_axis_off()
    total_h = 1.0 - hspace * (nrows - 1)
    total_w = 1.0 - wspace * (ncols - 1)
    heights = [total_h * h / sum(hr) for h in hr]
    widths = [total_w * w / sum(wr) for w in wr]
    axes, top = [], 1.0
    for r in range(nrows):
        row, left = [], 0.0
        top -= heights[r]
        for c in range(ncols):
            row.append(ax.inset_axes([left, top, widths[c], heights[r]]))
            left += widths[c] + wspace
        axes.append(row)
        top -= hspace
    return ax.figure, axes


def _suptitle(fig, ax, text: str) -> None:
    """Title of a multi-panel figure: the figure's suptitle for a new figure, the given
    Axes' own title when its area was split, nothing when the caller passed the panels."""
    if ax is None:
        fig.suptitle(text, fontsize=11)
    elif not isinstance(ax, (list, tuple, np.ndarray)):
        ax.set_title(text, fontsize=11, pad=18)


def _layer_ticks(ax, labels, *, axis="x", fontsize=7, rotation=60):
    pos = np.arange(len(labels))
    if axis == "x":
        ax.set_xticks(pos, [str(l) for l in labels], rotation=rotation, ha="right", fontsize=fontsize,
                      rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
    else:
        ax.set_yticks(pos, [str(l) for l in labels], fontsize=fontsize)


def _code_fraction_bars(table: pd.DataFrame, ax, annotate: str, ylabel: str, title: str):
    """Stacked bars of ``table``'s ``frac_neg`` / ``frac_zero`` / ``frac_pos`` per
    ``layer``, in table order, with ``table[annotate]`` in % above each bar."""
    fig, ax = new_axes(ax, figsize=(max(6.0, 0.4 * len(table) + 2), 3.6))
    labels = [str(n) for n in table["layer"]]
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for value, column in ((-1, "frac_neg"), (0, "frac_zero"), (1, "frac_pos")):
        heights = table[column].to_numpy(float)
        ax.bar(x, heights, bottom=bottom, color=TERNARY_COLORS[value], label=TERNARY_LABELS[value], width=0.8)
        bottom += heights
    for xi, share in zip(x, table[annotate].to_numpy(float)):
        ax.text(xi, 1.01, f"{100 * share:.0f}", ha="center", va="bottom", fontsize=7)
    _layer_ticks(ax, labels)
    ax.set_ylim(0, 1.08)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _require(df: pd.DataFrame, columns, what: str) -> None:
    if df is None or len(df) == 0:
        raise ValueError(f"{what}: the table is empty")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the table lacks columns {missing}")


# --------------------------------------------------------------------------------------
# weights


def plot_weight_sparsity(stats: pd.DataFrame, ax=None, title: str | None = None):
    """Stacked bars of the -1 / 0 / +1 fractions of every ternary layer, in model order.

    ``stats`` is :func:`sttn_sim.stats.weight_statistics` output.
    """
    if len(stats) == 0:
        raise ValueError("plot_weight_sparsity: the statistics table is empty (a model without ternary layers?)")
    return _code_fraction_bars(stats, ax, "sparsity", "fraction of weights",
                               title or "Ternary weight codes per layer (numbers: sparsity %)")


def _class_histogram(ax, w, codes, bins, *, deltas=(), title=None, show_legend=True):
    """Stacked histogram of w by code, with vertical ±Δ lines ``deltas = [(Δ, label, style)]``."""
    data = [w[codes == v] for v in (-1, 0, 1)]
    ax.hist(data, bins=bins, stacked=True, color=[TERNARY_COLORS[v] for v in (-1, 0, 1)],
            label=[f"{TERNARY_LABELS[v]} ({100 * d.size / w.size:.0f}%)" for v, d in zip((-1, 0, 1), data)],
            histtype="stepfilled", alpha=0.9, linewidth=0)
    for delta, label, style in deltas:
        for sign in (-1, 1):
            ax.axvline(sign * delta, color="black", linestyle=style, linewidth=1.1, label=label if sign > 0 else None)
    ax.set_xlim(bins[0], bins[-1])
    ax.set_ylabel("count")
    ax.tick_params(labelbottom=True)
    if title:
        ax.set_title(title, fontsize=10)
    if show_legend:
        ax.legend(fontsize=7, loc="upper left", handlelength=1.5, frameon=True, facecolor="white",
                  edgecolor="none", framealpha=0.85)


def _sorted_strip(ax, w, codes, label=True):
    """One row of colours: the codes of the weights sorted by w (the paper's strip)."""

    order = np.argsort(w, kind="stable")
    palette = np.array([to_rgb(TERNARY_COLORS[v]) for v in (-1, 0, 1)])
    image = palette[codes[order].astype(int) + 1][None, :, :]
    ax.imshow(image, aspect="auto", interpolation="nearest", extent=(0, 1, 0, 1))
    ax.set_yticks([])
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "", "0.5", "", "1"], fontsize=7)
    ax.grid(False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if label:
        ax.set_xlabel("position of w in sorted order (fraction)", fontsize=8)


def plot_figure1(model, layer: str | None = None, ax=None, *, bins: int = 80, zero_policy: str = "error"):
    """The paper's Figure 1 for one layer: soft threshold (STTN) beside hard threshold (TWN).

    Left: the distribution of the equivalent weights w = (W1+W2)/2 coloured by the STTN
    code (stacked histogram), with the TWN ±Δ (dashed) and the STTN-equivalent ±Δ (dotted,
    the hard Δ with STTN's sparsity). Right: the same w coloured by the TWN hard code.
    Below each, the codes of the weights in sorted order: a hard threshold gives three
    clean blocks, STTN's soft threshold mixes 0 and ±1 around the boundary.

    ``model`` is a latent model (with ``layer`` a ternary layer name; default: the middle
    ternary layer) or an :class:`~sttn_sim.stats.IntervalSamples`. ``ax``: None, one Axes
    (split into 2×2), or 4 Axes (hist soft, hist hard, strip soft, strip hard).
    Raises :class:`~sttn_sim.stats.StatisticsUnavailable` for a merged/folded model.
    """

    if isinstance(model, IntervalSamples):
        samples = model
    else:
        if layer is None:
            names = [l.name for l in model.ternary_layers()]
            layer = names[len(names) // 2] if names else ""
        samples = interval_samples(model, layer, zero_policy=zero_policy)
    w = samples.w.ravel()
    sttn = samples.codes.ravel().astype(np.int8)
    twn_method = get_method("twn")
    twn = twn_method.ternarize(w, granularity="tensor", name=samples.layer)
    d_twn = float(twn.delta)
    d_eq = equivalent_delta(np.abs(w), int(np.count_nonzero(sttn == 0)))
    lim = float(np.max(np.abs(w))) * 1.02 or 1.0
    edges = np.linspace(-lim, lim, bins + 1)
    fig, axes = _grid(ax, 2, 2, figsize=(9.5, 4.6), height_ratios=[5, 0.6], hspace=0.3, wspace=0.08)
    (h_soft, h_hard), (s_soft, s_hard) = axes
    overlap = float(np.mean(np.sign(w) * (np.abs(w) > d_eq) != sttn))
    _class_histogram(h_soft, w, sttn, edges,
                     deltas=[(d_twn, f"TWN Δ = {d_twn:.3g}", "--"), (d_eq, f"STTN-equivalent Δ = {d_eq:.3g}", ":")],
                     title=f"soft threshold (STTN): overlap with hard code {100 * overlap:.1f}%")
    _class_histogram(h_hard, w, twn.codes.ravel(), edges, deltas=[(d_twn, f"TWN Δ = {d_twn:.3g}", "--")],
                     title=f"hard threshold (TWN, Δ = {twn_method.delta_rel:g}·mean|w|): sparsity {100 * twn.sparsity:.0f}%")
    h_hard.sharey(h_soft)
    h_hard.set_ylabel("")
    for h in (h_soft, h_hard):
        h.set_xlabel("w = (W1 + W2) / 2", fontsize=9)
    _sorted_strip(s_soft, w, sttn)
    _sorted_strip(s_hard, w, twn.codes.ravel())
    _suptitle(fig, ax, f"Layer {samples.layer}: weights coloured by ternary value")
    return fig


def plot_learned_intervals(intervals: pd.DataFrame, ax=None, title: str | None = None):
    """Per layer, the |w| ranges of the STTN classes -1 / 0 / +1 (thin: 5–95 %, thick:
    25–75 %, dot: median), relative to mean|w|, with the STTN-equivalent Δ (black bar),
    the best separating Δ (hollow circle) and TWN's 0.7 (dashed line).

    ``intervals`` is :func:`sttn_sim.stats.learned_intervals` output (tensor granularity).
    """
    _require(intervals, ["layer", "mean_abs_w", "eq_delta_rel", "best_delta_rel", "zero_absw_q50"],
             "plot_learned_intervals")
    fig, ax = new_axes(ax, figsize=(max(7.0, 0.5 * len(intervals) + 2), 4.0))
    x = np.arange(len(intervals))
    scale = intervals["mean_abs_w"].to_numpy(float)
    for offset, value, cname in ((-0.22, -1, "neg"), (0.0, 0, "zero"), (0.22, 1, "pos")):
        col = lambda q: intervals[f"{cname}_absw_{q}"].to_numpy(float) / scale  # noqa: E731
        c = TERNARY_COLORS[value]
        ax.vlines(x + offset, col("q05"), col("q95"), color=c, linewidth=1.2)
        ax.vlines(x + offset, col("q25"), col("q75"), color=c, linewidth=4.5,
                  label=f"|w| of STTN code {TERNARY_LABELS[value]}")
        ax.plot(x + offset, col("q50"), "o", color="white", markeredgecolor=c, markersize=3.5)
    ax.hlines(intervals["eq_delta_rel"], x - 0.38, x + 0.38, color="black", linewidth=2,
              label="STTN-equivalent Δ (same sparsity)")
    ax.plot(x, intervals["best_delta_rel"], "o", markerfacecolor="none", markeredgecolor="black", markersize=7,
            label="best separating Δ")
    twn = get_method("twn")
    ax.axhline(twn.delta_rel, color=twn.color, linestyle="--", linewidth=1.2,
               label=f"{twn.short} Δ = {twn.delta_rel:g}·mean|w|")
    _layer_ticks(ax, [str(n) for n in intervals["layer"]])
    ax.set_ylabel("|w| / mean|w|")
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)
    ax.set_title(title or "Learned intervals: |w| per STTN class (bars 5–95 %, 25–75 %)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# --------------------------------------------------------------------------------------
# STTN against the baselines


def _method_lines(ax, table: pd.DataFrame, metric: str, granularity: str, methods=None):
    layers = list(table["layer"].cat.categories) if hasattr(table["layer"], "cat") else list(dict.fromkeys(table["layer"]))
    x = np.arange(len(layers))
    wanted = methods or [m for m in method_order() if m in set(table["method"])]
    dodge = 0.5 / max(1, len(wanted))  # small horizontal offsets so that coinciding markers stay visible
    for i, method in enumerate(wanted):
        sub = table[(table["method"] == method) & ((table["granularity"] == granularity) | method.startswith("sttn"))]
        if not len(sub):
            continue
        y = sub.set_index(sub["layer"].astype(str))[metric].reindex(layers).to_numpy(float)
        is_sttn = method == "sttn"
        look = method_style(method)
        style = dict(color=look.color, marker=look.marker, markersize=6 if is_sttn else 4,
                     linewidth=2.2 if is_sttn else 1.0, linestyle=":" if method == "sttn_rescaled" else "-",
                     label=look.label, zorder=3 if is_sttn else 2)
        if method == "sttn_rescaled":
            style["markerfacecolor"] = "none"
        ax.plot(x + (i - (len(wanted) - 1) / 2) * dodge, y, **style)
    _layer_ticks(ax, [str(l) for l in layers])
    ax.grid(axis="x", visible=False)


def plot_sparsity_comparison(baselines: pd.DataFrame, ax=None, *, granularity: str = "tensor", title=None):
    """Per-layer weight sparsity of STTN against each baseline (``granularity`` of the
    baselines; STTN's sparsity does not depend on it). ``baselines`` is
    :func:`analysis.baselines.baseline_table` output."""
    _require(baselines, ["layer", "method", "granularity", "sparsity"], "plot_sparsity_comparison")
    fig, ax = new_axes(ax, figsize=(max(7.0, 0.45 * baselines["layer"].nunique() + 3), 4.0))
    # the STTN-matched-sparsity baseline and STTN's rescaled codes equal STTN's sparsity by construction
    table = baselines[~baselines["method"].isin(["sttn_rescaled", "sparsity"])]
    _method_lines(ax, table, "sparsity", granularity)
    ax.set_ylabel("weight sparsity (fraction of 0)")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"Weight sparsity per layer: STTN vs hard thresholds (per {granularity})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_l2_comparison(baselines: pd.DataFrame, ax=None, *, granularity: str = "tensor", relative: bool = True,
                       title=None):
    """Per-layer L2 quantization error of STTN (own scale; dotted: its codes with the best
    scale) against each baseline on the same w. ``relative``: ``||w − Ŵ||² / ||w||²``."""
    metric = "l2_rel" if relative else "l2"
    _require(baselines, ["layer", "method", "granularity", metric], "plot_l2_comparison")
    fig, ax = new_axes(ax, figsize=(max(7.0, 0.45 * baselines["layer"].nunique() + 3), 4.0))
    _method_lines(ax, baselines, metric, granularity)
    ax.set_ylabel("||w − Ŵ||² / ||w||²" if relative else "||w − Ŵ||²")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"L2 quantization error per layer: STTN vs hard thresholds (per {granularity})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_delta_sweep(sweep: pd.DataFrame, points: pd.DataFrame | None = None, ax=None, title=None):
    """Sparsity (left) and relative L2 error (right) of the hard threshold against
    Δ / mean|w|, one curve per layer (colour = depth), STTN's point per layer marked
    (star: own scale; hollow: its codes with the best scale), and every registered
    method with a fixed Δ / mean|w| (TWN 0.7, absmean 0.5; :func:`analysis.sweeps.fixed_ratio_methods`)
    as a vertical line. ``sweep``: :func:`analysis.sweeps.delta_sweep`; ``points``:
    :func:`analysis.sweeps.sttn_sweep_points`. ``ax``: None, one Axes or two Axes."""

    _require(sweep, ["layer", "ratio", "sparsity", "l2_rel"], "plot_delta_sweep")
    fig, axes = _grid(ax, 1, 2, figsize=(10.0, 4.0), wspace=0.12)
    ax_s, ax_l = axes[0]
    layers = [str(l) for l in (sweep["layer"].cat.categories if hasattr(sweep["layer"], "cat")
                               else dict.fromkeys(sweep["layer"]))]
    cmap = mpl.colormaps["viridis"]
    colors = {l: cmap(i / max(1, len(layers) - 1)) for i, l in enumerate(layers)}
    for layer in layers:
        sub = sweep[sweep["layer"].astype(str) == layer]
        ax_s.plot(sub["ratio"], sub["sparsity"], color=colors[layer], linewidth=1.0, alpha=0.9)
        ax_l.plot(sub["ratio"], sub["l2_rel"], color=colors[layer], linewidth=1.0, alpha=0.9)
    if points is not None and len(points):
        for _, p in points.iterrows():
            c = colors.get(str(p["layer"]), "black")
            ax_s.plot(p["ratio"], p["sparsity"], "*", color=c, markeredgecolor="black", markersize=10, zorder=4)
            ax_l.plot(p["ratio"], p["l2_rel"], "*", color=c, markeredgecolor="black", markersize=10, zorder=4)
            ax_l.plot(p["ratio"], p["l2_rel_rescaled"], "o", markerfacecolor="none", markeredgecolor=c,
                      markersize=6, zorder=4)
    ratio_methods = list(zip(fixed_ratio_methods(), _RATIO_LINESTYLES))
    for a in (ax_s, ax_l):
        for m, ls in ratio_methods:
            a.axvline(m.delta_rel, color=m.color, linestyle=ls, linewidth=1.1, label=f"{m.short} ({m.delta_rel:g})")
        a.set_xlabel("Δ / mean|w|")
    ax_s.set_ylabel("sparsity (fraction of 0)")
    ax_l.set_ylabel("||w − Ŵ||² / ||w||²  (best scale per Δ)")

    handles = [Line2D([], [], color=cmap(0.5), label="hard Δ, one curve per layer"),
               Line2D([], [], marker="*", linestyle="", color="grey", markeredgecolor="black", markersize=10,
                      label="STTN (own scale)"),
               Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="grey",
                      label=method_style("sttn_rescaled").label)]
    handles += [Line2D([], [], color=m.color, linestyle=ls, label=f"{m.short} Δ = {m.delta_rel:g}")
                for m, ls in ratio_methods]
    ax_l.legend(handles=handles, fontsize=7, loc="upper center")
    sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, max(1, len(layers) - 1)))
    if ax is None:
        cbar = fig.colorbar(sm, ax=[ax_s, ax_l], fraction=0.04, pad=0.02)
    else:
        cbar = fig.colorbar(sm, cax=ax_l.inset_axes([1.03, 0.0, 0.03, 1.0]))
    cbar.set_label("layer index (model order)", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    _suptitle(fig, ax, title or "Δ sweep: hard threshold at Δ = r·mean|w| on the STTN equivalent weights")
    return fig


# --------------------------------------------------------------------------------------
# activations


def plot_activation_distributions(histograms: pd.DataFrame, ax=None, *, lo: float = ACTIVATION_LO, hi: float = ACTIVATION_HI,
                                  layer_table: pd.DataFrame | None = None, title=None):
    """Ridgeline of the pre-quantizer value y per activation layer (top = first layer),
    each density scaled to its own peak and filled by the code it gets (y < lo blue,
    lo <= y < hi red, y >= hi green), with the ±0.5 thresholds as dashed lines.
    ``histograms``: :meth:`ActivationRecorder.histogram_table`; ``layer_table`` (optional)
    adds the code percentages at the right."""
    _require(histograms, ["layer", "left", "right", "count"], "plot_activation_distributions")
    layers = [str(l) for l in (histograms["layer"].cat.categories if hasattr(histograms["layer"], "cat")
                               else dict.fromkeys(histograms["layer"]))]
    fig, ax = new_axes(ax, figsize=(7.5, 0.42 * len(layers) + 1.6))
    n = len(layers)
    for i, layer in enumerate(layers):
        sub = histograms[histograms["layer"].astype(str) == layer]
        left, right = sub["left"].to_numpy(float), sub["right"].to_numpy(float)
        counts = sub["count"].to_numpy(float)
        dens = counts / (right - left)
        # scale to the peak of a 5-bin running mean, so a one-bin spike (e.g. a constant
        # channel, BN gamma = 0) does not flatten the rest; spikes are clipped at 1.3 rows
        smooth = np.convolve(dens, np.ones(5) / 5, mode="same")
        peak = smooth.max() if smooth.max() > 0 else (dens.max() or 1.0)
        base = n - 1 - i
        height = np.minimum(0.9 * dens / peak, 1.3)
        xs = np.repeat(np.concatenate([left, right[-1:]]), 2)[1:-1]
        ys = np.repeat(height, 2) + base
        for value, mask in ((-1, right <= lo), (0, (left >= lo) & (right <= hi)), (1, left >= hi)):
            m2 = np.repeat(mask, 2)
            ax.fill_between(xs, base, ys, where=m2, color=TERNARY_COLORS[value], alpha=0.85, linewidth=0,
                            step=None, label=TERNARY_LABELS[value] if i == 0 else None)
        ax.plot(xs, ys, color="black", linewidth=0.5)
    ax.axvline(lo, color="black", linestyle="--", linewidth=0.9)
    ax.axvline(hi, color="black", linestyle="--", linewidth=0.9, label=f"thresholds {lo:+g} / {hi:+g}")
    ax.set_yticks(np.arange(n)[::-1] + 0.3, [str(l) for l in layers], fontsize=7)
    ax.set_ylim(-0.2, n + 0.1)
    x0, x1 = float(histograms["left"].min()), float(histograms["right"].max())
    ax.set_xlim(x0, x1)
    ax.set_xlabel("pre-quantizer value y (BN output)")
    ax.grid(axis="y", visible=False)
    if layer_table is not None and len(layer_table):
        t = layer_table.set_index(layer_table["layer"].astype(str))
        for i, layer in enumerate(layers):
            if layer in t.index:
                r = t.loc[layer]
                ax.text(1.01, (n - 1 - i + 0.3 + 0.2) / (n + 0.3), f"{100 * r['frac_neg']:.0f}/{100 * r['frac_zero']:.0f}/"
                        f"{100 * r['frac_pos']:.0f}%", transform=ax.transAxes, fontsize=6.5, va="center")
        ax.text(1.01, 1.0, "−1/0/+1", transform=ax.transAxes, fontsize=7, va="bottom")
    ax.set_title(title or "Activation distributions per layer (each scaled to its peak)")
    ax.legend(fontsize=7, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig


def plot_activation_occupancy(layer_table: pd.DataFrame, ax=None, title=None):
    """Stacked bars of the -1 / 0 / +1 activation fractions per layer (numbers: % zeros).
    ``layer_table``: :meth:`ActivationRecorder.layer_table`."""
    _require(layer_table, ["layer", "frac_neg", "frac_zero", "frac_pos"], "plot_activation_occupancy")
    return _code_fraction_bars(layer_table, ax, "frac_zero", "fraction of activations",
                               title or "Ternary activation codes per layer (numbers: % zeros)")


def plot_channel_occupancy(channel_table: pd.DataFrame, ax=None, title=None):
    """Heat maps of the per-channel fraction of -1, 0 and +1 (rows: layers; columns:
    channels; grey: no such channel). Dead channels are 1.0 in the 0 panel.
    ``channel_table``: :meth:`ActivationRecorder.channel_table`. ``ax``: None, one Axes
    (split in three) or three Axes."""

    _require(channel_table, ["layer", "channel", "frac_neg", "frac_zero", "frac_pos"], "plot_channel_occupancy")
    layers = [str(l) for l in (channel_table["layer"].cat.categories if hasattr(channel_table["layer"], "cat")
                               else dict.fromkeys(channel_table["layer"]))]
    width = int(channel_table["channel"].max()) + 1
    fig, axes = _grid(ax, 3, 1, figsize=(9.0, 3 * (0.16 * len(layers) + 0.9) + 0.6), hspace=0.12)
    row_of = {l: i for i, l in enumerate(layers)}
    rows = channel_table["layer"].astype(str).map(row_of).to_numpy()
    cols = channel_table["channel"].to_numpy(int)
    for (a,), (value, column, cmap_name) in zip(axes, ((-1, "frac_neg", "Blues"), (0, "frac_zero", "Reds"),
                                                       (1, "frac_pos", "Greens"))):
        grid = np.full((len(layers), width), np.nan)
        grid[rows, cols] = channel_table[column].to_numpy(float)
        cmap = mpl.colormaps[cmap_name].with_extremes(bad="#dddddd")
        im = a.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1)
        a.set_yticks(np.arange(len(layers)), [str(l) for l in layers], fontsize=6.5)
        a.grid(False)
        a.set_title(f"fraction of {TERNARY_LABELS[value]} per channel", fontsize=9, color=TERNARY_COLORS[value])
        cb = (fig.colorbar(im, ax=a, fraction=0.03, pad=0.01) if ax is None
              else fig.colorbar(im, cax=a.inset_axes([1.01, 0.0, 0.02, 1.0])))
        cb.ax.tick_params(labelsize=7)
        if value != 1:
            a.tick_params(labelbottom=False)
    axes[-1][0].set_xlabel("channel")
    _suptitle(fig, ax, title or "Activation code occupancy per layer and channel")
    return fig


def plot_activation_thresholds(thresholds: pd.DataFrame, ax=None, title=None, clip_quantile: float = 0.02):
    """The BN-implied per-channel thresholds on the residual stream: for each channel
    (sorted by the middle of its band within each layer) the zero band between the
    boundary where -1 begins (blue tick) and where +1 begins (green tick); channels with
    γ < 0 (reversed: +1 below the band) are drawn in purple, constant channels (γ = 0)
    as black crosses at 0. The y range is clipped to the central quantiles of all
    boundaries; clipped bands are marked with a triangle at the edge.
    ``thresholds``: :func:`sttn_sim.stats.activation_thresholds` (or the recorder's
    channel table)."""
    _require(thresholds, ["layer", "channel", "direction", "x_plus", "x_minus"], "plot_activation_thresholds")
    layers = [str(l) for l in (thresholds["layer"].cat.categories if hasattr(thresholds["layer"], "cat")
                               else dict.fromkeys(thresholds["layer"]))]
    fig, ax = new_axes(ax, figsize=(11.0, 4.2))
    bounds = np.concatenate([thresholds["x_plus"].to_numpy(float), thresholds["x_minus"].to_numpy(float)])
    bounds = bounds[np.isfinite(bounds)]
    if bounds.size:
        lo_q, hi_q = np.quantile(bounds, [clip_quantile, 1 - clip_quantile])
        pad = 0.08 * (hi_q - lo_q or 1.0)
        y0, y1 = lo_q - pad, hi_q + pad
    else:
        y0, y1 = -1.0, 1.0
    pos, centers, gap = 0.0, [], max(2.0, 0.02 * len(thresholds))
    clipped = 0
    for i, layer in enumerate(layers):
        sub = thresholds[thresholds["layer"].astype(str) == layer]
        low = np.fmin(sub["x_plus"].to_numpy(float), sub["x_minus"].to_numpy(float))
        high = np.fmax(sub["x_plus"].to_numpy(float), sub["x_minus"].to_numpy(float))
        direction = sub["direction"].to_numpy(int)
        order = np.argsort(np.where(direction == 0, np.inf, (low + high) / 2), kind="stable")
        xs = pos + np.arange(len(sub))
        if i % 2:
            ax.axvspan(pos - 0.5, pos + len(sub) - 0.5, color="#000000", alpha=0.04, linewidth=0)
        d, lo_s, hi_s = direction[order], low[order], high[order]
        band_color = np.where(d > 0, TERNARY_COLORS[0], "#9467bd")
        ax.vlines(xs[d != 0], np.clip(lo_s[d != 0], y0, y1), np.clip(hi_s[d != 0], y0, y1),
                  colors=band_color[d != 0], linewidth=1.0)
        plus = np.where(d > 0, hi_s, lo_s)  # where +1 begins: upper end for γ>0, lower for γ<0
        minus = np.where(d > 0, lo_s, hi_s)
        nz = d != 0
        ax.plot(xs[nz], np.clip(plus[nz], y0, y1), "_", color=TERNARY_COLORS[1], markersize=3, markeredgewidth=1)
        ax.plot(xs[nz], np.clip(minus[nz], y0, y1), "_", color=TERNARY_COLORS[-1], markersize=3, markeredgewidth=1)
        out_hi = nz & (hi_s > y1)
        out_lo = nz & (lo_s < y0)
        clipped += int(out_hi.sum() + out_lo.sum())
        ax.plot(xs[out_hi], np.full(out_hi.sum(), y1), "^", color="black", markersize=3)
        ax.plot(xs[out_lo], np.full(out_lo.sum(), y0), "v", color="black", markersize=3)
        if (d == 0).any():
            ax.plot(xs[d == 0], np.zeros((d == 0).sum()), "x", color="black", markersize=4)
        centers.append(pos + (len(sub) - 1) / 2)
        pos += len(sub) + gap
    ax.set_xticks(centers, [str(l) for l in layers], rotation=60, ha="right", fontsize=7, rotation_mode="anchor")
    ax.set_xlim(-gap, pos - gap + 1)
    ax.set_ylim(y0, y1)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("threshold on the quantizer input x\n(residual stream, before BN)", fontsize=9)

    handles = [Line2D([], [], color=TERNARY_COLORS[0], label="zero band, γ > 0 (+1 above, −1 below)"),
               Line2D([], [], color="#9467bd", label="zero band, γ < 0 (+1 below, −1 above)"),
               Line2D([], [], marker="_", linestyle="", color=TERNARY_COLORS[1], markeredgewidth=1.5,
                      label="+1 begins"),
               Line2D([], [], marker="_", linestyle="", color=TERNARY_COLORS[-1], markeredgewidth=1.5,
                      label="−1 begins"),
               Line2D([], [], marker="x", linestyle="", color="black", label="γ = 0: constant code")]
    if clipped:
        handles.append(Line2D([], [], marker="^", linestyle="", color="black", label=f"clipped ({clipped})"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "Learned per-channel activation thresholds implied by BN (channels sorted per layer)")
    return fig


__all__ = [
    "default_model_and_data", "plot_soft_threshold_evolution", "plot_weight_sparsity", "plot_figure1", "plot_learned_intervals",
    "plot_sparsity_comparison", "plot_l2_comparison", "plot_delta_sweep", "plot_activation_distributions",
    "plot_activation_occupancy", "plot_channel_occupancy", "plot_activation_thresholds", "METHOD_LABELS",
]


def plot_soft_threshold_evolution(layer_history: pd.DataFrame, ax=None, title: str | None = None):
    """How STTN's soft threshold evolves during training, one line per ternary layer
    (mean over seeds): weight sparsity, the equivalent Δ (the hard threshold on
    |(W1+W2)/2| with the same sparsity) and the overlap (fraction of weights whose STTN
    code no hard threshold at that Δ reproduces), against the epoch.

    ``layer_history``: :attr:`sttn_sim.train.TrainResult.layer_history` rows (columns
    ``epoch, layer, sparsity, delta, overlap``), e.g. the ``layer_history.csv`` written by
    ``python -m analysis.soft_vs_hard``.
    """
    _require(layer_history, ["epoch", "layer", "sparsity", "delta", "overlap"], "plot_soft_threshold_evolution")
    mean = layer_history.groupby(["layer", "epoch"], sort=False)[["sparsity", "delta", "overlap"]].mean().reset_index()
    layers = list(dict.fromkeys(layer_history["layer"]))
    fig, axes = _grid(ax, 1, 3, figsize=(12.0, 3.4), wspace=0.25)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(layers), 1)))
    for a, (column, label) in zip(axes[0], (("sparsity", "weight sparsity"), ("delta", "equivalent Δ on |w|"),
                                            ("overlap", "overlap with the hard code"))):
        for color, name in zip(colors, layers):
            rows = mean[mean.layer == name]
            a.plot(rows.epoch, rows[column], color=color, label=name, lw=1.4)
        a.set_xlabel("epoch (0 = initial weights)")
        a.set_ylabel(label)
    axes[0][2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    _suptitle(fig, ax, title or "STTN during training: the soft threshold per layer")
    return fig

"""Paper-style figures.  Every function takes an optional ``ax`` and returns the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .style import TERNARY_COLORS, TERNARY_LABELS, new_axes


def plot_weight_sparsity(stats: pd.DataFrame, ax=None, title: str | None = None):
    """Stacked bars of the -1 / 0 / +1 fractions of every ternary layer, in model order.

    ``stats`` is :func:`sttn_sim.stats.weight_statistics` output.
    """
    if len(stats) == 0:
        raise ValueError("plot_weight_sparsity: the statistics table is empty (a model without ternary layers?)")
    fig, ax = new_axes(ax, figsize=(max(6.0, 0.38 * len(stats) + 2), 3.6))
    x = np.arange(len(stats))
    bottom = np.zeros(len(stats))
    for value, column in ((-1, "frac_neg"), (0, "frac_zero"), (1, "frac_pos")):
        heights = stats[column].to_numpy(float)
        ax.bar(x, heights, bottom=bottom, color=TERNARY_COLORS[value], label=TERNARY_LABELS[value], width=0.8)
        bottom += heights
    for xi, s in zip(x, stats["sparsity"].to_numpy(float)):
        ax.text(xi, 1.01, f"{100 * s:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [str(n) for n in stats["layer"]], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("fraction of weights")
    ax.set_title(title or "Ternary weight codes per layer (numbers: sparsity %)")
    ax.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    ax.grid(axis="x", visible=False)
    return fig

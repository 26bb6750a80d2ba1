"""The one figure style shared by every plot, and atomic PNG + PDF saving.

Colours follow the STTN paper: -1 blue, 0 red, +1 green.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from sttn_sim.io.atomic import atomic_path, ensure_output_dir

TERNARY_COLORS = {-1: "#1f77b4", 0: "#d62728", 1: "#2ca02c"}
TERNARY_LABELS = {-1: "−1", 0: "0", 1: "+1"}
METHOD_COLORS = {"sttn": "#000000", "twn": "#ff7f0e", "ttq": "#9467bd", "optimal": "#8c564b",
                 "absmean": "#e377c2", "fixed": "#7f7f7f", "sparsity": "#bcbd22"}

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "pdf.fonttype": 42,
}


def use_file_backend() -> None:
    """Select the non-interactive Agg backend; called by the command-line tools only
    (importing this module leaves a notebook's inline backend alone)."""
    matplotlib.use("Agg")


def apply_style() -> None:
    """Install the shared style into matplotlib's rcParams."""
    plt.rcParams.update(STYLE)


def new_axes(ax=None, figsize=(7.0, 3.5)):
    """Return ``(fig, ax)``: the given axes and its figure, or a new styled figure."""
    apply_style()
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def save_figure(fig, out_dir, stem: str, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<out_dir>/<stem>.png`` and ``.pdf``, each atomically."""
    out = ensure_output_dir(out_dir)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(path)
    return paths

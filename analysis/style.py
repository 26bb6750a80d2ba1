"""The one figure style shared by every plot, and atomic PNG + PDF saving.

Colours follow the STTN paper: -1 blue, 0 red, +1 green.  A method's label, short
label, colour and marker come from the method registry
(:func:`sttn_sim.quantizers.get_method`); :func:`method_style` adds the few
presentation-only rows that are not quantization methods of their own
(:data:`PRESENTATION_ONLY`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from sttn_sim.io.atomic import atomic_path, ensure_output_dir
from sttn_sim.quantizers import all_methods, get_method

TERNARY_COLORS = {-1: "#1f77b4", 0: "#d62728", 1: "#2ca02c"}
TERNARY_LABELS = {-1: "−1", 0: "0", 1: "+1"}


@dataclass(frozen=True)
class MethodStyle:
    """How a method (or a presentation-only row) is shown."""

    name: str
    label: str    #: legends and tables
    short: str    #: tick labels and column headers
    color: str
    marker: str


#: rows of tables and figures that are not registered methods: ``sttn_rescaled`` (STTN's
#: codes with the L2-best scale, analysis.baselines), ``sttn_exact`` (STTN trained with
#: the exact-scale gradient) and ``float`` (the full-precision training baseline).
#: Each is shown after the registered method it derives from (``float`` last).
PRESENTATION_ONLY = {
    "sttn_rescaled": ("sttn", "STTN codes, best scale", "STTN, best scale", "#555555"),
    "sttn_exact": ("sttn", "STTN, exact-scale grad", "STTN-exact", "#555555"),
    "float": (None, "float (FP32 W and A)", "float", "#17becf"),
}


def method_style(name: str) -> MethodStyle:
    """Label, short label, colour and marker of a registered method or a presentation-only
    row (which takes its marker from the method it derives from; ``float``: ``"*"``).
    An unknown name raises the registry's error listing the known methods."""
    if name in PRESENTATION_ONLY:
        base, label, short, color = PRESENTATION_ONLY[name]
        return MethodStyle(name, label, short, color, get_method(base).marker if base else "*")
    m = get_method(name)
    return MethodStyle(m.name, m.label, m.short, m.color, m.marker)


def method_order() -> tuple[str, ...]:
    """Every name :func:`method_style` knows, in the order of legends: the registered
    methods, each followed by the presentation-only rows derived from it, then the rest."""
    names = []
    for m in all_methods():
        names.append(m.name)
        names += [n for n, (base, *_) in PRESENTATION_ONLY.items() if base == m.name]
    return tuple(names) + tuple(n for n, (base, *_) in PRESENTATION_ONLY.items() if base is None)


class MethodAttribute(Mapping):
    """A live ``{name: attribute}`` view over :func:`method_order` (e.g. every colour);
    it reads the registry each time, so registered methods appear."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def __getitem__(self, name):
        if name not in method_order():
            raise KeyError(name)
        return getattr(method_style(name), self._attribute)

    def __iter__(self):
        return iter(method_order())

    def __len__(self) -> int:
        return len(method_order())

    def __repr__(self) -> str:
        return repr(dict(self))


#: ``{method: colour}`` (live view of the registry plus the presentation-only rows)
METHOD_COLORS = MethodAttribute("color")

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

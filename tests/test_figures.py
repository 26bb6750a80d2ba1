"""Tests of analysis.figures / analysis.style: the weight-sparsity plot and atomic saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb, to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.figures import plot_weight_sparsity  # noqa: E402
from analysis.style import TERNARY_COLORS, save_figure  # noqa: E402
from sttn_sim.errors import SttnError  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stats_table(fractions: list[tuple[float, float, float]]) -> pd.DataFrame:
    """A weight_statistics-like table with the given (-1, 0, +1) fractions per layer."""
    names = [f"features.{4 + i}.conv1" for i in range(len(fractions))]
    neg, zero, pos = (np.array(col, float) for col in zip(*fractions))
    return pd.DataFrame({
        "layer": pd.Categorical(names, categories=names, ordered=True),
        "frac_neg": neg, "frac_zero": zero, "frac_pos": pos, "sparsity": zero,
    })


# dyadic fractions: the stacked bottoms (cumulative sums) are exact in float64
TABLES = {
    "one": [(0.25, 0.5, 0.25)],
    "three": [(0.25, 0.5, 0.25), (0.125, 0.75, 0.125), (0.0, 1.0, 0.0)],
    "uneven": [(0.5, 0.0, 0.5), (0.375, 0.25, 0.375), (0.0625, 0.875, 0.0625), (1.0, 0.0, 0.0)],
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_ternary_colors_are_blue_red_green():
    """-1 blue, 0 red, +1 green (the STTN paper): the dominant RGB channel of each colour."""
    dominant = {v: int(np.argmax(to_rgb(c))) for v, c in TERNARY_COLORS.items()}
    assert dominant == {-1: 2, 0: 0, 1: 1}


@pytest.mark.parametrize("name", list(TABLES))
def test_returns_figure_with_bar_heights(name):
    fractions = TABLES[name]
    stats = stats_table(fractions)
    fig = plot_weight_sparsity(stats)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    n = len(fractions)
    patches = ax.patches
    assert len(patches) == 3 * n  # one bar per layer and code, stacked
    neg, zero, pos = patches[:n], patches[n:2 * n], patches[2 * n:]
    for i, (f_neg, f_zero, f_pos) in enumerate(fractions):
        # float64 fractions drawn as heights: compared to the table values (abs 1e-12: bar geometry is float64)
        assert neg[i].get_height() == pytest.approx(f_neg, abs=1e-12)
        assert zero[i].get_height() == pytest.approx(f_zero, abs=1e-12)
        assert pos[i].get_height() == pytest.approx(f_pos, abs=1e-12)
        # stacked: -1 at the bottom, 0 on top of it, +1 on top of both
        assert neg[i].get_y() == pytest.approx(0.0, abs=1e-12)
        assert zero[i].get_y() == pytest.approx(f_neg, abs=1e-12)
        assert pos[i].get_y() == pytest.approx(f_neg + f_zero, abs=1e-12)
        for p in (neg[i], zero[i], pos[i]):
            assert p.get_x() + p.get_width() / 2 == pytest.approx(i, abs=1e-12)


@pytest.mark.parametrize("name", list(TABLES))
def test_bar_colors(name):
    fig = plot_weight_sparsity(stats_table(TABLES[name]))
    (ax,) = fig.axes
    n = len(TABLES[name])
    for k, value in enumerate((-1, 0, 1)):
        for p in ax.patches[k * n:(k + 1) * n]:
            assert p.get_facecolor() == pytest.approx(to_rgba(TERNARY_COLORS[value]))
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["−1", "0", "+1"]


def test_tick_labels_are_layer_names_in_order():
    stats = stats_table(TABLES["three"])
    fig = plot_weight_sparsity(stats)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["features.4.conv1", "features.5.conv1", "features.6.conv1"]
    # sparsity annotations, in percent
    assert [t.get_text() for t in ax.texts] == ["50", "75", "100"]


def test_uses_the_given_ax():
    fig, (ax0, ax1) = plt.subplots(1, 2)
    before = plt.get_fignums()
    out = plot_weight_sparsity(stats_table(TABLES["three"]), ax=ax1, title="mine")
    assert out is fig
    assert plt.get_fignums() == before  # no new figure
    assert len(ax1.patches) == 9
    assert len(ax0.patches) == 0
    assert ax1.get_title() == "mine"


def test_real_statistics_table():
    """Works on the real weight_statistics output (categorical layer column)."""
    from sttn_sim.builders import ternary_mlp
    from sttn_sim.stats import weight_statistics

    stats = weight_statistics(ternary_mlp(hidden=(16, 8)))
    fig = plot_weight_sparsity(stats)
    (ax,) = fig.axes
    n = len(stats)
    assert n == 2
    heights = [p.get_height() for p in ax.patches]
    expected = list(stats["frac_neg"]) + list(stats["frac_zero"]) + list(stats["frac_pos"])
    assert heights == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("empty", [pd.DataFrame(), stats_table(TABLES["one"]).iloc[:0]])
def test_empty_table_raises(empty):
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="empty"):
        plot_weight_sparsity(empty)
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------- save_figure


def test_save_figure_png_and_pdf(tmp_path):
    fig = plot_weight_sparsity(stats_table(TABLES["three"]))
    out = tmp_path / "figs" / "sub"
    paths = save_figure(fig, out, "sparsity")
    assert paths == [out / "sparsity.png", out / "sparsity.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000
    assert pdf[:5] == b"%PDF-" and len(pdf) > 1000
    assert pdf.rstrip().endswith(b"%%EOF")
    assert sorted(p.name for p in out.iterdir()) == ["sparsity.pdf", "sparsity.png"]


@pytest.mark.parametrize("formats, header", [(("png",), PNG_SIGNATURE), (("pdf",), b"%PDF-")])
def test_save_figure_single_format(tmp_path, formats, header):
    fig = plot_weight_sparsity(stats_table(TABLES["one"]))
    (path,) = save_figure(fig, tmp_path, "f", formats=formats)
    assert path == tmp_path / f"f.{formats[0]}"
    assert path.read_bytes()[: len(header)] == header
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_figure_is_atomic(tmp_path, monkeypatch):
    """A failure while writing the PDF leaves the old PDF intact and no temporary file."""
    fig = plot_weight_sparsity(stats_table(TABLES["three"]))
    (tmp_path / "f.png").write_bytes(b"old png")
    (tmp_path / "f.pdf").write_bytes(b"old pdf")
    real_savefig = fig.savefig
    partial = []

    def failing_savefig(fname, *args, format=None, **kwargs):
        if format == "pdf":
            with open(fname, "wb") as f:
                f.write(b"%PDF-1.4 half a file")
            partial.append(fname)
            raise RuntimeError("renderer crashed")
        return real_savefig(fname, *args, format=format, **kwargs)

    monkeypatch.setattr(fig, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_figure(fig, tmp_path, "f")
    assert len(partial) == 1 and partial[0] != tmp_path / "f.pdf"
    assert (tmp_path / "f.pdf").read_bytes() == b"old pdf"
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE  # the PNG finished before the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_save_figure_bad_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fig = plot_weight_sparsity(stats_table(TABLES["one"]))
    with pytest.raises(SttnError, match="file"):
        save_figure(fig, blocker, "f")

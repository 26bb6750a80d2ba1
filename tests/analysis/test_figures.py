"""analysis.figures: every figure returns a Figure, draws into a given ax, uses the paper's colours."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex, to_rgb, to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import figures as F  # noqa: E402
from analysis.baselines import baseline_table  # noqa: E402
from analysis.figures import plot_weight_sparsity  # noqa: E402
from analysis.style import TERNARY_COLORS  # noqa: E402
from analysis.sweeps import delta_sweep, sttn_sweep_points  # noqa: E402
from sttn_sim.fold import fold  # noqa: E402
from sttn_sim.stats import (  # noqa: E402
    StatisticsUnavailable,
    activation_thresholds,
    collect_activations,
    learned_intervals,
    weight_statistics,
)
from sttn_sim.synthetic import synthetic_input, synthetic_model  # noqa: E402


@pytest.fixture(scope="module")
def data():
    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    folded = fold(model)
    rec = collect_activations(folded, [synthetic_input(model, 2, seed=3)], progress=False)
    return {
        "model": model, "folded": folded, "weights": weight_statistics(model), "intervals": learned_intervals(model),
        "baselines": baseline_table(model), "sweep": delta_sweep(model), "points": sttn_sweep_points(model),
        "layers": rec.layer_table(), "channels": rec.channel_table(), "hist": rec.histogram_table(),
        "thresholds": activation_thresholds(folded),
    }


def calls(d):
    return {
        "weight_sparsity": lambda ax: F.plot_weight_sparsity(d["weights"], ax=ax),
        "figure1": lambda ax: F.plot_figure1(d["model"], "features.5.conv1", ax=ax),
        "learned_intervals": lambda ax: F.plot_learned_intervals(d["intervals"], ax=ax),
        "sparsity": lambda ax: F.plot_sparsity_comparison(d["baselines"], ax=ax),
        "l2": lambda ax: F.plot_l2_comparison(d["baselines"], ax=ax),
        "sweep": lambda ax: F.plot_delta_sweep(d["sweep"], d["points"], ax=ax),
        "act_dist": lambda ax: F.plot_activation_distributions(d["hist"], ax=ax, layer_table=d["layers"]),
        "occupancy": lambda ax: F.plot_activation_occupancy(d["layers"], ax=ax),
        "channel_occupancy": lambda ax: F.plot_channel_occupancy(d["channels"], ax=ax),
        "thresholds": lambda ax: F.plot_activation_thresholds(d["thresholds"], ax=ax),
    }


NAMES = ["weight_sparsity", "figure1", "learned_intervals", "sparsity", "l2", "sweep", "act_dist", "occupancy",
         "channel_occupancy", "thresholds"]


@pytest.mark.parametrize("name", NAMES)
def test_returns_a_figure_and_uses_the_given_ax(data, name):
    fig = calls(data)[name](None)
    assert isinstance(fig, Figure) and fig.axes
    plt.close(fig)
    outer, ax = plt.subplots()
    before = len(outer.axes)
    got = calls(data)[name](ax)
    assert got is outer
    # single-panel figures draw into ax itself; multi-panel ones split ax into insets
    drawn = ax.lines or ax.patches or ax.collections or ax.images or ax.child_axes
    assert drawn, name
    assert len(outer.axes) >= before
    plt.close(outer)


def _facecolors(ax):
    return {to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches}


def test_stacked_bars_use_the_paper_colours(data):
    fig = F.plot_activation_occupancy(data["layers"])
    ax = fig.axes[0]
    assert _facecolors(ax) == {TERNARY_COLORS[v] for v in (-1, 0, 1)}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["−1", "0", "+1"]
    # bars in model order: the first bar of the "0" series is the first layer's zero fraction
    zero_bars = [p for p in ax.patches if to_hex(p.get_facecolor(), keep_alpha=False) == TERNARY_COLORS[0]]
    assert zero_bars[0].get_height() == pytest.approx(data["layers"]["frac_zero"].iloc[0])
    plt.close(fig)


def test_figure1_colours_and_panels(data):
    fig = F.plot_figure1(data["model"], "features.5.conv1")
    hist_soft, hist_hard, strip_soft, strip_hard = fig.axes[:4]
    want = {to_hex(TERNARY_COLORS[v]) for v in (-1, 0, 1)}
    for ax in (hist_soft, hist_hard):
        assert {to_hex(p.get_facecolor(), keep_alpha=False) for p in ax.patches} == want
    # TWN +-delta drawn on both histograms (dashed vertical lines at the same x)
    twn_soft = sorted(l.get_xdata()[0] for l in hist_soft.lines if l.get_linestyle() == "--")
    twn_hard = sorted(l.get_xdata()[0] for l in hist_hard.lines if l.get_linestyle() == "--")
    assert len(twn_soft) == 2 and twn_soft == twn_hard and twn_soft[0] == -twn_soft[1]
    # the hard strip is three monotone blocks -1 | 0 | +1 in the paper's colours
    img = strip_hard.images[0].get_array()[0]
    colours = [tuple(np.round(c, 6)) for c in img]
    blocks = [c for i, c in enumerate(colours) if i == 0 or c != colours[i - 1]]
    assert blocks == [tuple(np.round(to_rgba(TERNARY_COLORS[v])[:3], 6)) for v in (-1, 0, 1)]
    assert strip_soft.images
    plt.close(fig)


def test_figure1_splits_a_given_axes_and_rejects_folded(data):
    fig, ax = plt.subplots()
    F.plot_figure1(data["model"], ax=ax)
    assert len(ax.child_axes) == 4 and not ax.axison
    plt.close(fig)
    with pytest.raises(StatisticsUnavailable):
        F.plot_figure1(data["folded"], "features.5.conv1")


def test_channel_heatmap_values(data):
    fig = F.plot_channel_occupancy(data["channels"])
    grid = fig.axes[1].images[0].get_array()  # the "0" panel
    first = data["channels"][data["channels"]["layer"] == data["channels"]["layer"].cat.categories[0]]
    assert np.allclose(grid[0, :len(first)], first["frac_zero"].to_numpy())
    assert np.ma.getmaskarray(grid)[0, len(first):].all() if grid.shape[1] > len(first) else True
    plt.close(fig)


def test_empty_tables_raise_value_error(data):
    with pytest.raises(ValueError, match="empty"):
        F.plot_activation_occupancy(data["layers"].iloc[:0])
    with pytest.raises(ValueError, match="lacks columns"):
        F.plot_delta_sweep(data["layers"])


def test_default_model_and_data_is_the_one_switch():
    model, batches, text = F.default_model_and_data(batch=100)
    assert model.arch == "sttn_resnet18" and model.form == "latent" and model.input_shape == (1, 8, 8)
    assert [len(b) for b in batches] == [100, 100, 100, 60]  # the 360 digits test images
    assert batches[0].shape[1:] == (1, 8, 8) and batches[0].dtype == np.float32
    assert "default model" in text


def test_soft_threshold_evolution_plots_one_line_per_layer_and_panel():
    epochs, layers = 3, ["features.4.conv1", "features.4.conv2"]
    rows = [{"epoch": e, "layer": l, "seed": s, "sparsity": 0.5 - 0.1 * e + 0.01 * s, "delta": 0.02 + 0.001 * e,
             "overlap": 0.2 - 0.02 * e} for s in (0, 1) for e in range(epochs + 1) for l in layers]
    import pandas as pd

    fig = F.plot_soft_threshold_evolution(pd.DataFrame(rows))
    panels = [a for a in fig.axes if a.lines]
    assert len(panels) == 3 and all(len(a.lines) == len(layers) for a in panels)
    # the sparsity panel shows the mean over the two seeds: 0.5 - 0.1·e + 0.005
    y = panels[0].lines[0].get_ydata()
    assert np.allclose(y, [0.505, 0.405, 0.305, 0.205], atol=1e-12)
    with pytest.raises(ValueError):
        F.plot_soft_threshold_evolution(pd.DataFrame(rows).drop(columns=["overlap"]))


# --------------------------------------------------------------------------- the weight-sparsity plot, by hand


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

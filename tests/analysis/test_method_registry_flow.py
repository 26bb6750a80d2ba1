"""A hard-threshold method registered in sttn_sim.quantizers (and nowhere else) flows into
training, the baseline table, the figures and the soft-vs-hard study.

The toy method (Δ = 0.25·max|w|) is registered only for the duration of each test
(:func:`sttn_sim.quantizers.registered_method`). ``analysis.soft_vs_hard.compare`` runs in
spawned worker processes, which import the registry from the files and so do not see a
temporary registration; its tables and figure are checked through ``tabulate`` on
hand-made run results instead.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from analysis import figures  # noqa: E402
from analysis import soft_vs_hard as svh  # noqa: E402
from analysis.baselines import BASELINE_METHODS, baseline_table  # noqa: E402
from analysis.style import METHOD_COLORS  # noqa: E402
from sttn_sim.builders import sttn_resnet18  # noqa: E402
from sttn_sim.datasets import digits  # noqa: E402
from sttn_sim.graph import Layer, Model  # noqa: E402
from sttn_sim.quantizers import registered_method  # noqa: E402
from sttn_sim.train import TRAIN_METHODS, HardQuant, TrainConfig, make_quantizer, train  # noqa: E402

@pytest.fixture
def toy(toy_method):
    """The toy method of tests/conftest.py, registered for one test."""
    with registered_method(toy_method):
        yield toy_method
    assert "toy" not in TRAIN_METHODS and "toy" not in BASELINE_METHODS


# w = (W1 + W2)/2 = [[0.375, 0, 0, 0.625], [-0.5, 0, 0.5, -0.1875]] (tests/test_analysis_baselines.py)
W1 = np.array([[0.5, -0.5, 0.25, 0.75], [-0.25, -0.5, 0.5, 0.125]], np.float32)
W2 = np.array([[0.25, 0.5, -0.25, 0.5], [-0.75, 0.5, 0.5, -0.5]], np.float32)


def tiny_model():
    return Model("tiny", (4,), [Layer("fc1", "sttn_linear", ["input"], {}, {"weight1": W1, "weight2": W2})], "latent")


def test_baseline_table_has_the_toy_rows(toy):
    assert "toy" in BASELINE_METHODS
    t = baseline_table(tiny_model())
    rows = t[t.method == "toy"].set_index("granularity")
    # per tensor Δ = 0.25 · 0.625 = 0.15625; per channel 0.15625 and 0.25 · 0.5 = 0.125.
    # Both keep 0.375, 0.625, -0.5, 0.5, -0.1875 and zero the three exact zeros: 3 of 8
    assert rows.loc["tensor", "delta"] == 0.15625 and rows.loc["channel", "delta"] == (0.15625 + 0.125) / 2
    assert rows.loc["tensor", "sparsity"] == 0.375 and rows.loc["channel", "sparsity"] == 0.375
    # α (per tensor) = (0.375 + 0.625 + 0.5 + 0.5 + 0.1875) / 5 = 0.4375; l2 by hand:
    # 0.0625² + 0.1875² + 0.0625² + 0.0625² + 0.25² = 0.109375 (exact binary fractions)
    assert rows.loc["tensor", "l2"] == 0.109375 and rows.loc["tensor", "scale_mean"] == 0.4375


def test_figures_show_the_toy_with_its_label_colour_and_marker(toy):
    t = baseline_table(tiny_model())
    assert METHOD_COLORS["toy"] == toy.color and figures.METHOD_LABELS["toy"] == toy.label
    for plot in (figures.plot_sparsity_comparison, figures.plot_l2_comparison):
        fig = plot(t)
        ax = fig.axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert toy.label in lines and toy.label in [x.get_text() for x in ax.get_legend().get_texts()]
        assert to_hex(lines[toy.label].get_color()) == toy.color and lines[toy.label].get_marker() == "p"
        plt.close(fig)


def test_training_uses_the_toy_quantizer(toy):
    assert "toy" in TRAIN_METHODS
    q = make_quantizer("toy", granularity="tensor")
    assert isinstance(q, HardQuant) and q.method == "toy" and q.rule == "hard"
    x_tr, y_tr, x_te, y_te = digits()
    model = sttn_resnet18(width=4 / 64, blocks=3, stem="small", input_size=8, in_channels=1, num_classes=10, seed=0)
    res = train(model, (x_tr[:200], y_tr[:200], x_te[:60], y_te[:60]),
                TrainConfig(method="toy", epochs=1, batch_size=50, progress=False))
    assert res.model.metadata["method"] == "toy"
    assert set(res.layer_history.method) == {"toy"}
    for name, quant in res.network.quantizers.items():
        exported = res.model[name]
        assert exported.kind in ("ter_conv", "ter_linear") and exported.attrs["ternary_method"] == "toy"
        # the exported kernel is the toy method's kernel of the trained latent weights
        tw = toy.ternarize(res.network.model[name].params["weight"], granularity="channel")
        np.testing.assert_array_equal(exported.params["weight"], tw.dequantize().astype(np.float32))


def _fake_results():
    """Two methods × three seeds of hand-made run results (what run_one returns)."""
    acc = {"sttn": [0.90, 0.92, 0.94], "toy": [0.97, 0.93, 0.95]}
    return [{"method": m, "seed": s, "test_accuracy": a, "test_accuracy_float32": a, "train_accuracy": 1.0,
             "seconds": 1.0, "history": [], "layers": []} for m, accs in acc.items() for s, a in enumerate(accs)]


def test_soft_vs_hard_lists_labels_and_plots_the_toy(toy):
    assert "toy" in svh.METHODS and svh.LABELS["toy"] == toy.label and svh.SHORT["toy"] == "toy"
    comp = svh.tabulate(_fake_results(), ["sttn", "toy"], [0, 1, 2], svh.Settings().as_dict(), 0.0)
    assert f"| {toy.label} |" in svh.format_table(comp)
    fig = svh.plot_comparison(comp)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["STTN", "toy"]
    assert to_hex(ax.patches[1].get_facecolor(), keep_alpha=False) == toy.color
    plt.close(fig)

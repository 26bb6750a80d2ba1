"""``python -m analysis.figures``: writes every table and figure; clear errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.report import main
from sttn_sim.fold import fold
from sttn_sim.io import save_model
from sttn_sim.synthetic import synthetic_model

ALWAYS_CSV = ["weight_stats", "weight_channels", "cost", "activation_layers", "activation_channels",
              "activation_histograms", "activation_thresholds"]
LATENT_CSV = ["learned_intervals", "learned_interval_classes", "baselines", "delta_sweep", "delta_sweep_sttn"]
ALWAYS_FIG = ["weight_sparsity", "activation_distributions", "activation_occupancy", "channel_occupancy",
              "activation_thresholds"]
LATENT_FIG = ["learned_intervals", "sparsity_vs_baselines", "l2_vs_baselines", "delta_sweep"]


def check_outputs(out, csvs, figs):
    names = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{c}.csv" for c in csvs] + [f"{f}.{e}" for f in figs for e in ("png", "pdf")])
    assert names == expected  # nothing else: no temporary or half-written files
    for f in figs:
        assert (out / f"{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{f}.pdf").read_bytes()[:5] == b"%PDF-"
    for c in csvs:
        assert len(pd.read_csv(out / f"{c}.csv")) > 0


def test_default_model_writes_everything(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["--out", str(out), "--batch", "120", "--layer", "features.6.conv2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the embedded default model (4 blocks: 8 ternary layers) on the 360 digits test images
    assert summary["images"] == 360 and summary["ternary_layers"] == 8 and summary["skipped"] == []
    check_outputs(out, ALWAYS_CSV + LATENT_CSV, ALWAYS_FIG + LATENT_FIG + ["figure1_features.6.conv2"])
    layers = pd.read_csv(out / "activation_layers.csv")
    assert list(layers["layer"]) == [f"features.{b}.tact{k}" for b in range(4, 8) for k in (1, 2)]
    assert (layers["images"] == 360).all()
    cost = pd.read_csv(out / "cost.csv")
    assert (cost["macs_nonzero"] <= cost["macs_nonzero_weight"]).all() and (cost["macs_nonzero"] > 0).all()


@pytest.fixture(scope="module")
def small_model():
    return synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)


def test_bad_data_files(tmp_path, capsys, small_model):
    ckpt = tmp_path / "m.safetensors"
    save_model(small_model, ckpt)
    images = np.zeros((2, 3, 16, 16), np.float32)
    np.savez(tmp_path / "bad.npz", images=images)
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "expects [3, 32, 32]" in err and not (tmp_path / "o").exists()
    np.savez(tmp_path / "nokey.npz", x=images)
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "nokey.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "no array 'images'" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot be read" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_unknown_layer_lists_valid_names_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--layer", "features.4.bn1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layer 'features.4.bn1' is a batchnorm layer") and "features.7.conv2" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["--layer", "nope", "--out", str(out)]) == 2
    assert "ternary layers: features.4.conv1" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output folder") and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("module", ["analysis.figures", "analysis"])
def test_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--checkpoint" in proc.stdout and "--layer" in proc.stdout


FIXTURES = __import__("pathlib").Path(__file__).parents[1] / "fixtures"


@pytest.mark.skipif(not (FIXTURES / "sttn_ter_zip.pth").exists(), reason="official-form fixtures not present")
def test_official_form_fixtures(tmp_path, capsys):
    """A merged official checkpoint goes through the CLI with --data images (intervals skipped with a note);
    the training-form one has latent kernels, so every interval statistic is available."""
    from analysis.baselines import baseline_table
    from sttn_sim.io import load_checkpoint
    from sttn_sim.stats import learned_intervals

    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=images)
    out = tmp_path / "ter"
    assert main(["--checkpoint", str(FIXTURES / "sttn_ter_zip.pth"), "--input-size", "32", "--out", str(out),
                 "--data", str(tmp_path / "d.npz"), "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "note: skipped figure1_<layer>, learned_intervals" in printed
    assert "model form 'merged' has no latent kernels" in printed
    assert ", 3 images;" in printed  # batches of 2 + 1 from the .npz
    check_outputs(out, ALWAYS_CSV, ALWAYS_FIG)
    latent = load_checkpoint(FIXTURES / "sttn_bwx2_zip.pth.tar", input_size=32)
    intervals = learned_intervals(latent)
    assert len(intervals) == 16 and (intervals["best_errors"] <= intervals["overlap_count"]).all()
    assert set(baseline_table(latent)["method"]) >= {"sttn", "twn", "ttq", "optimal", "absmean", "sparsity"}


def test_qonnx_model_writes_every_figure_without_latent_weights(tmp_path, capsys):
    """A Brevitas QONNX export: every table and figure that needs no latent kernels is
    written; the others are named in the note with the reason."""
    out = tmp_path / "brevitas"
    assert main(["--checkpoint", str(FIXTURES / "brevitas_ternary_cnn.onnx"), "--out", str(out), "--batch", "4",
                 "--batches", "2", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    check_outputs(out, ALWAYS_CSV, ALWAYS_FIG)
    assert summary["ternary_layers"] == 3 and summary["images"] == 8
    (note,) = summary["skipped"]
    for name in LATENT_FIG + LATENT_CSV:
        assert name in note
    assert "imported from QONNX (brevitas_ternary_cnn.onnx)" in note and "latent kernels W1, W2" in note
    assert "note: skipped" in captured.err


def test_figures_data_takes_the_sources_of_evaluate(tmp_path, capsys):
    """--data is an ImageFolder tree or 'digits' too (every image of a split, --limit)."""
    from sttn_sim.datasets import digits
    from sttn_sim.images.writing import write_image_folder

    _, _, x, y = digits()
    pick = np.array([np.flatnonzero(y == c)[0] for c in range(10)])  # one image per class (the model has 10)
    root = write_image_folder(tmp_path / "png", x[pick], y[pick])
    out = tmp_path / "f"
    assert main(["--data", str(root), "--engine", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 10
    assert (pd.read_csv(out / "activation_layers.csv")["images"] == 10).all()
    assert main(["--data", "digits", "--limit", "25", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 25

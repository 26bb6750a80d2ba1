"""``python -m analysis.soft_vs_hard`` end to end on a tiny budget (the real defaults
take minutes; their table is in the issue's closing note)."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import soft_vs_hard as svh


def test_cli_tiny_run_writes_table_json_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    code = svh.main(["--epochs", "1", "--seeds", "0,1", "--width", "0.0625", "--blocks", "3", "--workers", "2",
                     "--methods", "sttn,twn,ttq,float", "--out", str(out), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in data["summary"]] == ["sttn", "twn", "ttq", "float"]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and set(runs.seed) == {0, 1}
    s = pd.read_csv(out / "summary.csv").set_index("method")
    for m in ("sttn", "twn"):  # mean ± sample std recomputed from the per-run rows
        acc = runs[runs.method == m].test_accuracy
        assert s.loc[m, "acc_mean"] == pytest.approx(acc.mean())
        assert s.loc[m, "acc_std"] == pytest.approx(acc.std(ddof=1))
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers.method) == {"sttn", "twn", "ttq"}  # the float model has no ternary layer
    assert layers.sparsity.between(0, 1).all() and (layers.l2_rel >= 0).all()
    assert np.isnan(s.loc["float", "sparsity_mean"])
    for name in ("soft_vs_hard.png", "soft_vs_hard.pdf", "soft_vs_hard.md", "history.csv",
                 "soft_threshold_evolution.png", "soft_threshold_evolution.pdf"):
        assert (out / name).stat().st_size > 0
    evolution = pd.read_csv(out / "layer_history.csv")
    sttn = evolution[evolution.method == "sttn"]
    # epoch 0 (initial weights) and epoch 1, for each of the 2 seeds and 6 ternary layers
    assert sorted(set(sttn.epoch)) == [0, 1] and len(sttn) == 2 * 2 * 6
    assert "| STTN |" in (out / "soft_vs_hard.md").read_text()  # the registry label
    # every ternary method (TTQ too, in its asymmetric folded form) ran through the packed
    # engine; float32 against float64 may flip a near-tie, at most an image or two here
    ternary = runs[runs.method != "float"]
    assert np.isfinite(ternary.test_accuracy_engine).all()
    assert (np.abs(ternary.test_accuracy_engine - ternary.test_accuracy) <= 2 / 360).all()
    assert np.isnan(runs[runs.method == "float"].test_accuracy_engine).all()
    # the cost table covers every ternary method: the same architecture, the same dense MACs
    assert ternary.ternary_macs.nunique() == 1 and (ternary.ternary_macs > 0).all()
    assert (ternary.macs_nonzero_weight <= ternary.ternary_macs).all() and (ternary.packed_bytes > 0).all()
    assert s.loc["ttq", "acc_engine_mean"] == pytest.approx(runs[runs.method == "ttq"].test_accuracy_engine.mean())


def test_results_do_not_depend_on_the_number_of_workers():
    settings = svh.Settings(epochs=1, width=0.0625, blocks=3)
    a = svh.compare(["sttn"], [0], settings, workers=1, progress=False)
    b = svh.compare(["sttn"], [0], settings, workers=2, progress=False)
    assert a.runs.test_accuracy.tolist() == b.runs.test_accuracy.tolist()
    pd.testing.assert_frame_equal(a.layers, b.layers)


def test_cli_help_and_bad_arguments(capsys):
    assert svh.main(["--help"]) == 0
    assert "soft threshold" in capsys.readouterr().out
    assert svh.main(["--methods", "sttn,xnor", "--epochs", "1"]) == 2
    assert "unknown method(s) ['xnor']" in capsys.readouterr().err
    assert svh.main(["--seeds", "a,b"]) == 2
    assert svh.main(["--blocks", "9"]) == 2
    assert "blocks=9" in capsys.readouterr().err

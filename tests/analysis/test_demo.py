"""The demo: verification report, accuracy agreement, statistics and figures."""

import json
import subprocess
import sys

import pandas as pd

from analysis.demo import run_demo


def test_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "out"
    summary = run_demo(out, progress=False, verify_batch=16)
    assert summary["passed"] is True and summary["verification_passed"] is True
    report = json.loads((out / "verify_report.json").read_text())
    # the default model has 4 BasicBlocks: 8 ternary convs + 8 thresholds
    assert report["passed"] is True and len(report["layers"]) == 16
    assert report["engine"]["passed"] is True
    assert all(r["acc_mismatches"] == 0 for r in report["engine"]["layers"] if r["kind"].startswith("ternary"))
    assert "PASS" in (out / "verify_report.txt").read_text()
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["test_images"] == 360
    assert accuracy["correct_engine_folded"] == accuracy["correct_reference_training_time"] \
        == accuracy["correct_recorded_at_training"]
    stats = pd.read_csv(out / "weight_stats.csv")
    assert list(stats["layer"]) == [f"features.{b}.conv{k}" for b in range(4, 8) for k in (1, 2)]
    assert (stats["n_neg"] + stats["n_zero"] + stats["n_pos"] == stats["n_weights"]).all()
    for stem in ("weight_sparsity", "learned_intervals", "activation_distributions", "activation_thresholds"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_every_entry_point_has_help():
    for module in ("analysis.demo", "sttn_sim.verify", "sttn_sim", "sttn_sim.bench", "analysis.figures",
                   "analysis.soft_vs_hard", "analysis.compare"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout, module

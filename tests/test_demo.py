"""The demo writes the verification report, the statistics table and the figure."""

import json
import subprocess
import sys

import pandas as pd

from sttn_sim.demo import run_demo


def test_demo_writes_its_outputs(tmp_path):
    summary = run_demo(tmp_path / "out", width=0.125, input_size=32, batch=2, progress=False)
    out = tmp_path / "out"
    assert summary["verification_passed"] is True
    report = json.loads((out / "verify_report.json").read_text())
    assert report["passed"] is True and len(report["layers"]) == 32  # 16 ternary convs + 16 thresholds
    engine_rows = report["engine"]["layers"]
    assert report["engine"]["passed"] is True
    assert sum(r["acc_mismatches"] == 0 for r in engine_rows if r["kind"].startswith("ternary")) == 16
    assert "PASS" in (out / "verify_report.txt").read_text()
    stats = pd.read_csv(out / "weight_stats.csv")
    assert list(stats["layer"]) == [f"features.{b}.conv{k}" for b in range(4, 12) for k in (1, 2)]
    assert (stats["n_neg"] + stats["n_zero"] + stats["n_pos"] == stats["n_weights"]).all()
    assert (out / "weight_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "weight_sparsity.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "model.safetensors").stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_every_entry_point_has_help():
    for module in ("sttn_sim.demo", "sttn_sim.verify"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout

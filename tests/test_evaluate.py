"""``sttn evaluate``: report and files on an ImageFolder, the same counts with --workers,
and every bad input of the issue as one ``error:`` line naming the file or address."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sttn_sim import save_model, synthetic_model
from sttn_sim.datasets import digits
from sttn_sim.evaluate import main
from sttn_sim.images.writing import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
N = 30
RECORDED = {"cost.csv", "activation_layers.csv", "activation_channels.csv", "activation_histograms.csv",
            "activation_thresholds.csv"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    _, _, x, y = digits()
    return write_image_folder(tmp_path_factory.mktemp("digits") / "png", x[:N], y[:N])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_report_and_files(folder, tmp_path, capsys):
    out, rec = tmp_path / "out", tmp_path / "rec"
    assert main(["--data", str(folder), "--batch", "8", "--check", "4", "--record", str(rec), "--out", str(out),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    labels = np.array([int(Path(p).parent.name) for p in sorted(str(p) for p in folder.rglob("*.png"))])
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class["images"].tolist() == np.bincount(labels, minlength=10).tolist()
    assert doc["images_evaluated"] == N and doc["top1_correct"] == per_class["top1_correct"].sum()
    assert doc["check"]["images"] == 4 and doc["check"]["failures"] == [] and doc["passed"]
    assert {Path(p).name for p in doc["written"]} == {"evaluation.json", "per_class.csv"} | RECORDED
    assert {p.name for p in rec.iterdir()} == RECORDED
    layers = pd.read_csv(rec / "activation_layers.csv")
    assert (layers["images"] == N).all() and len(layers) == 8
    assert json.loads((out / "evaluation.json").read_text())["top1_correct"] == doc["top1_correct"]
    assert main(["--data", str(folder), "--check", "0", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"{N} of {N} images evaluated" in text and "top-1 " in text and "top-5 " in text and "wrote" in text


def test_grayscale_cmyk_palette_rgba_are_converted(tmp_path, capsys):
    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=3)
    ckpt = tmp_path / "m.safetensors"
    save_model(model, ckpt)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels, "RGB")
    for cls, (name, img) in enumerate([("a/l.png", rgb.convert("L")), ("b/cmyk.jpg", rgb.convert("CMYK")),
                                       ("c/p.png", rgb.convert("P")), ("c/rgba.png", rgb.convert("RGBA"))]):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "data" / name)
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--preprocess", "resize=36,crop=32",
                 "--check", "2", "--out", str(tmp_path / "o"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images_evaluated"] == 4 and doc["classes"] == 3 and doc["passed"]


def test_bad_folders(folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no class folders" in _error(capsys)
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "readme.txt").write_text("x")
    assert main(["--data", str(tmp_path / "noimg"), "--out", str(tmp_path / "o")]) == 2
    assert "no image file" in _error(capsys)
    three = tmp_path / "three"
    for c in ("0", "1", "2"):
        (three / c).mkdir(parents=True)
        Image.new("L", (8, 8)).save(three / c / "x.png")
    assert main(["--data", str(three), "--out", str(tmp_path / "o")]) == 2
    assert "3 class folders, expected 10 (the model's class count)" in _error(capsys)
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_unreadable_images_are_named_or_skipped(folder, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    png = next((bad / "7").iterdir()).read_bytes()
    (bad / "7" / "cut.png").write_bytes(png[:40])
    (bad / "2" / "text.png").write_text("hello")
    assert main(["--data", str(bad), "--check", "0", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = _error(capsys)
    assert "text.png" in err and "not an image file" in err  # the first bad file in order: class 2
    assert main(["--data", str(bad), "--check", "0", "--skip-bad", "--out", str(tmp_path / "o"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images_evaluated"] == N and doc["images_skipped"] == 2
    assert sorted(Path(s["id"]).name for s in doc["skipped"]) == ["cut.png", "text.png"]
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["id"]) == ["cut.png", "text.png"]


def test_labels_file_missing_and_extra_entries(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (8, 8)).save(flat / name)
    (tmp_path / "short.txt").write_text("a.png 1\nb.png 2\n")
    assert main(["--data", str(flat), "--labels", str(tmp_path / "short.txt"), "--out", str(tmp_path / "o")]) == 2
    err = _error(capsys)
    assert "short.txt" in err and "no label for 1 image(s)" in err and "c.png" in err
    (tmp_path / "long.txt").write_text("a.png 1\nb.png 2\nc.png 3\nd.png 4\n")
    assert main(["--data", str(flat), "--labels", str(tmp_path / "long.txt"), "--out", str(tmp_path / "o")]) == 2
    err = _error(capsys)
    assert "long.txt" in err and "d.png" in err
    (tmp_path / "ok.txt").write_text("a.png 1\nb.png 2\nc.png 3\n")
    assert main(["--data", str(flat), "--labels", str(tmp_path / "ok.txt"), "--check", "1", "--out",
                 str(tmp_path / "o"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images_evaluated"] == 3


def test_scheduler_that_does_not_answer(folder, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    assert main(["--data", str(folder), "--scheduler", address, "--connect-timeout", "1", "--out",
                 str(tmp_path / "o")]) == 2
    err = _error(capsys)
    assert f"--scheduler {address}: no Dask scheduler answered within 1 s" in err


def test_usage_errors(folder, tmp_path, capsys):
    assert main(["--data", str(folder), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "not allowed with argument" in _error(capsys)
    assert main(["--out", str(tmp_path)]) == 2
    assert "--data" in _error(capsys)
    assert main(["--data", str(folder), "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors" in _error(capsys)
    assert main(["--data", str(folder), "--workers", "0"]) == 2
    assert "--workers" in _error(capsys)


@pytest.mark.slow
def test_workers_give_the_counts_of_one_process(folder, tmp_path):
    """`sttn evaluate --workers 2` (a LocalCluster started by the command) against one
    process: the same per-class counts and check counts."""
    def run(*extra):
        proc = subprocess.run([sys.executable, "-m", "analysis.cli", "evaluate", "--data", str(folder), "--batch", "4",
                               "--check", "5", "--json", *extra], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    one = run("--out", str(tmp_path / "one"))
    two = run("--out", str(tmp_path / "two"), "--workers", "2", "--shard", "8")
    assert "LocalCluster of 2" in two["mode"]
    for key in ("images_evaluated", "top1_correct", "topk_correct", "check"):
        assert one[key] == two[key], key
    assert pd.read_csv(tmp_path / "one" / "per_class.csv").equals(pd.read_csv(tmp_path / "two" / "per_class.csv"))

"""``python -m sttn_sim info PATH [--json]`` on official fixtures, own files and bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sttn_sim import fold, load_checkpoint, save_model
from sttn_sim.__main__ import main

FIXTURES = Path(__file__).parent / "fixtures"
ZIP = FIXTURES / "sttn_bwx2_zip.pth.tar"
LEGACY = FIXTURES / "sttn_bwx2_legacy.pth.tar"
TER = FIXTURES / "sttn_ter_zip.pth"


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path, container, form, arch", [
    (ZIP, "pytorch-zip", "latent", "resnet18_bwx2"),
    (LEGACY, "pytorch-legacy", "latent", "resnet18_bwx2"),
    (TER, "pytorch-zip", "merged", "resnet18_ter"),
], ids=["zip", "legacy", "ter"])
def test_info_text_on_fixtures(capsys, path, container, form, arch):
    code, out, err = run(capsys, "info", path)
    assert code == 0 and err == ""
    assert f"container:     {container}" in out
    assert f"form:          {form}" in out
    assert f"sttn_resnet18 (official {arch})" in out
    assert "width 0.015625 (1/64), 10 classes, input 3x224x224" in out
    assert "16 layers, 2682 weights at 2 bits" in out
    kind = "sttn_conv" if form == "latent" else "ter_conv"
    conv = next(line for line in out.splitlines() if line.startswith("features.11.conv2 "))
    assert kind in conv and conv.split()[-1] == "2"
    stem = next(line for line in out.splitlines() if line.startswith("features.0 "))
    assert "weight[1, 3, 7, 7]" in stem and stem.split()[-2:] == ["147", "32"]
    assert "metadata:" in out and "official_arch: " + arch in out


def test_info_json_on_training_fixture(capsys):
    code, out, _ = run(capsys, "info", ZIP, "--json", "--input-size", "32")
    assert code == 0
    info = json.loads(out)
    assert info["form"] == "latent" and info["official_arch"] == "resnet18_bwx2"
    assert info["width"] == 1 / 64 and info["num_classes"] == 10 and info["input_shape"] == [3, 32, 32]
    layers = {row["name"]: row for row in info["layers"]}
    conv = layers["features.4.conv1"]
    assert conv["kind"] == "sttn_conv" and conv["bits"] == 2 and conv["ternary_weights"] == 9
    assert conv["shapes"] == {"weight1": [1, 1, 3, 3], "bias1": [1], "weight2": [1, 1, 3, 3], "bias2": [1]}
    assert conv["params"] == 20
    assert layers["fc"]["bits"] == 32 and layers["fc"]["shapes"]["weight"] == [10, 8]
    assert info["totals"]["ternary_layers"] == 16 and info["totals"]["ternary_weights"] == 2682
    meta = info["metadata"]
    assert meta["epoch"] == 42 and meta["best_prec1"] == 61.25 and "cuda:0" in meta["devices"]
    assert "avgpool" not in layers  # no parameters: only with --all-layers
    code, out, _ = run(capsys, "info", ZIP, "--json", "--all-layers")
    assert code == 0 and "avgpool" in {row["name"] for row in json.loads(out)["layers"]}


def test_info_on_own_format_folded(capsys, tmp_path):
    folded = fold(load_checkpoint(TER, input_size=32))
    path = save_model(folded, tmp_path / "folded.safetensors")
    code, out, _ = run(capsys, "info", path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["container"] == "sttn_sim safetensors" and info["form"] == "folded"
    rows = [r for r in info["layers"] if r["kind"] == "ternary_conv"]
    assert len(rows) == 16 and all(r["bits"] == 2 for r in rows)


@pytest.mark.parametrize("content, message", [
    (b"", "not a recognised checkpoint"),
    (b"PK\x03\x04 truncated zip", "corrupt zip archive"),
    (pickle.dumps({"state_dict": print}, protocol=2), "refused to load global '__builtin__.print'"),
    (pickle.dumps({"state_dict": print}, protocol=4), "refused to load global 'builtins.print'"),
])
def test_info_bad_input_is_one_line_exit_2(capsys, tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    code, out, err = run(capsys, "info", path)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and str(path) in err


def test_info_missing_file_and_bad_option(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path / "nope.pth")
    assert code == 2 and err.startswith("error: ") and "cannot be read" in err
    code, _, err = run(capsys, "info", ZIP, "--input-size", "0")
    assert code == 2 and err == ("error: python -m sttn_sim info: argument --input-size: expected an integer "
                                 "from 1 to 2048, got 0 (see --help)\n")
    code, _, err = run(capsys, "info", ZIP, "--input-size", "100")  # not a multiple of 32
    assert code == 2 and err.startswith("error: ") and "multiple of 32" in err
    assert main([]) == 2


def test_info_state_dict_errors_are_reported(capsys, tmp_path):
    path = tmp_path / "missing.pth"
    with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    code, _, err = run(capsys, "info", path)
    assert code == 0  # a faithful copy loads
    from sttn_sim.io.torch_reader import read_torch_file
    from sttn_sim.io.torch_writer import write_torch_zip

    obj = read_torch_file(ZIP).obj
    del obj["state_dict"]["module.fc.bias"]
    write_torch_zip(path, obj)
    code, _, err = run(capsys, "info", path)
    assert code == 2 and "missing keys: fc.bias" in err


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "sttn_sim", "info", str(TER)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "official resnet18_ter" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sttn_sim", "info", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--json" in proc.stdout

"""verify: passes on clean folds, names the layer when a code, scale or threshold is corrupted."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sttn_sim import fold, save_model, synthetic_model
from sttn_sim.check import verify_model
from sttn_sim.kernels.cpu import CPU_CLASSES
from sttn_sim.verify import main

TINY = {
    "sttn_resnet18": dict(width=0.125, input_size=32, num_classes=10),
    "plain_ternary_cnn": {},
    "ternary_mlp": {},
}


@pytest.fixture(scope="module")
def resnet():
    model = synthetic_model("sttn_resnet18", seed=3, **TINY["sttn_resnet18"])
    return model, fold(model)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("seed", [0, 1])
def test_clean_fold_passes_exactly(name, seed):
    model = synthetic_model(name, seed=seed, **TINY[name])
    report = verify_model(model, batch=3, seed=seed)
    assert report.passed, report.to_text()
    ternary = report.table[report.table["kind"].str.startswith("ternary")]
    assert len(ternary) == len(model.ternary_layers())
    assert (ternary["acc_mismatches"] == 0).all()
    thresholds = report.table[report.table["kind"].str.startswith("threshold")]
    assert (thresholds["code_mismatches"] == 0).all()
    assert report.top1_agreement == 3


def test_corrupted_code_names_the_layer(resnet):
    model, folded = resnet
    bad = folded.copy()
    codes = bad["features.7.conv2"].params["codes"]
    codes[3, 1, 1, 1] = 1 if codes[3, 1, 1, 1] != 1 else -1
    report = verify_model(model, bad, batch=2)
    assert not report.passed
    assert report.first_divergence.layer == "features.7.conv2"
    assert report.first_divergence.check == "accumulator"
    row = report.table.set_index("layer").loc["features.7.conv2"]
    assert row["acc_mismatches"] > 0 and row["status"] == "FAIL"
    # every other ternary layer is checked layer-locally and stays exact
    others = report.table[(report.table["layer"] != "features.7.conv2") & report.table["kind"].str.startswith("ternary")]
    assert (others["acc_mismatches"] == 0).all()


def test_corrupted_scale_names_the_layer(resnet):
    model, folded = resnet
    bad = folded.copy()
    bad["features.9.conv1"].params["scale"][2] *= 1.001
    report = verify_model(model, bad, batch=2)
    assert not report.passed
    assert report.first_divergence.layer == "features.9.conv1"
    assert report.first_divergence.check == "float output"
    assert report.first_divergence.channel == 2


def test_corrupted_float_threshold_names_the_layer(resnet):
    model, folded = resnet
    bad = folded.copy()
    layer = bad["features.5.tact2"]
    channel = int(np.flatnonzero(layer.params["direction"] != 0)[0])
    layer.params["hi"][channel] = layer.params["lo"][channel]  # every 0 code of this channel becomes +1
    report = verify_model(model, bad, batch=2)
    assert not report.passed
    assert report.first_divergence.layer == "features.5.tact2"
    assert report.first_divergence.check == "activation code"
    assert report.first_divergence.channel == channel


def test_corrupted_integer_threshold_names_the_layer():
    model = synthetic_model("plain_ternary_cnn", seed=0)
    folded = fold(model)
    layer = folded["features.8"]
    assert layer.attrs["integer"] and layer.params["hi"].dtype == np.int64
    channel = int(np.flatnonzero(layer.params["direction"] != 0)[0])
    layer.params["hi"][channel] += 1000  # no accumulator reaches it: every +1 becomes 0
    report = verify_model(model, folded, batch=2)
    assert not report.passed and report.first_divergence.layer == "features.8"


def _exact_tie_mlp():
    """An MLP whose first BN is the identity exactly (eps = 0, var = 1), so inputs of
    exactly ±0.5 sit on the activation thresholds."""
    model = synthetic_model("ternary_mlp", seed=0)
    bn = model["bn0"]
    bn.attrs["eps"] = 0.0
    n = bn.params["weight"].size
    bn.params.update(weight=np.ones(n, np.float32), bias=np.zeros(n, np.float32),
                     running_mean=np.zeros(n, np.float32), running_var=np.ones(n, np.float32))
    x = np.random.default_rng(0).standard_normal((2,) + model.input_shape).astype(np.float32)
    x.reshape(2, -1)[0, :4] = [0.5, -0.5, 0.5, 0.25]
    return model, x


def test_exact_ties_are_counted_and_agree():
    model, x = _exact_tie_mlp()
    report = verify_model(model, x=x)
    row = report.table.set_index("layer").loc["tact0"]
    assert row["exact_ties"] == 3  # the three ±0.5 entries placed by hand
    assert row["code_mismatches"] == 0
    assert report.passed


def test_near_tie_flip_is_reported_not_failed():
    model, x = _exact_tie_mlp()
    folded = fold(model)
    folded["tact0"].params["hi"][0] = np.nextafter(0.5, 1.0)  # x = 0.5 exactly now maps to 0, not +1
    report = verify_model(model, folded, x=x)
    row = report.table.set_index("layer").loc["tact0"]
    assert row["code_mismatches"] == 1 and row["status"] == "tie"
    assert report.ties_upstream and report.passed


def test_cli_default_passes_and_prints_table(capsys):
    assert main(["--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "features.11.conv2" in out and "PASS" in out


def test_cli_json(capsys):
    assert main(["--model", "ternary_mlp", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True
    assert [row["layer"] for row in data["layers"]][:2] == ["tact0", "fc1"]
    assert all(row["acc_mismatches"] == 0 for row in data["layers"] if row["kind"] == "ternary_linear")
    kernels = data["engine"]["kernels"]  # what the packed engine ran: CPU class, target, kernels
    assert kernels["cpu_class"] in CPU_CLASSES and kernels["ternary"] and kernels["stem"]


def test_cli_checkpoint_with_corrupted_folded_file_exits_1(tmp_path, capsys):
    model = synthetic_model("plain_ternary_cnn", seed=2)
    folded = fold(model)
    folded["features.6"].params["codes"][0, 0, 0, 0] *= -1 if folded["features.6"].params["codes"][0, 0, 0, 0] else 1
    if folded["features.6"].params["codes"][0, 0, 0, 0] == 0:
        folded["features.6"].params["codes"][0, 0, 0, 0] = 1
    save_model(model, tmp_path / "model.safetensors")
    save_model(folded, tmp_path / "folded.safetensors")
    code = main(["--checkpoint", str(tmp_path / "model.safetensors"), "--folded", str(tmp_path / "folded.safetensors"),
                 "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "first divergence" in out and "'features.6'" in out
    saved = json.loads((tmp_path / "report" / "verify_report.json").read_text())
    assert saved["passed"] is False and saved["first_divergence"]["layer"] == "features.6"


@pytest.mark.parametrize("argv, needle", [
    (["--checkpoint", "/nonexistent/model.safetensors"], "/nonexistent/model.safetensors"),
    (["--model", "resnet50"], "resnet50"),
    (["--batch", "0"], "--batch"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "sttn_sim.verify", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_on_real_images(tmp_path, capsys):
    """--data: the checks run on the dataset's first --limit images (the default model
    when no checkpoint is given); the batch is those images, decoded here independently."""
    from PIL import Image

    from sttn_sim import default_model
    from sttn_sim.datasets import digits
    from sttn_sim.images.writing import write_image_folder

    _, _, x, y = digits()
    pick = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])  # every class (the model has 10)
    root = write_image_folder(tmp_path / "png", x[pick], y[pick])
    assert main(["--data", str(root), "--limit", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["batch"] == 5 and doc["data"]["images"] == 5
    paths = sorted(root.rglob("*.png"), key=lambda p: (p.parent.name, p.name))[:5]
    batch = np.stack([np.asarray(Image.open(p), np.float32)[None] / np.float32(255) for p in paths])
    direct = verify_model(default_model(), x=batch)
    assert [r["values"] for r in doc["layers"]] == direct.table["values"].tolist()
    assert doc["top1_agreement"] == f"{direct.top1_agreement}/5"
    assert main(["--data", "digits", "--limit", "3"]) == 0
    assert "data: 3 images of digits:test" in capsys.readouterr().out


def test_verify_data_errors(tmp_path, capsys):
    assert main(["--limit", "3"]) == 2
    assert "--limit: applies to --data" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "none")]) == 2
    assert "none: no such file or folder" in capsys.readouterr().err
    assert main(["--data", "digits", "--limit", "2000"]) == 2
    assert "expected at most 1024" in capsys.readouterr().err

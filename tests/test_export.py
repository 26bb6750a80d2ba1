"""``sttn export`` (sttn_sim/export.py): the command around the ONNX / QONNX writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from sttn_sim import fold, load_checkpoint, save_model, synthetic_model
from sttn_sim.cli import main as sttn_main
from sttn_sim.export import main
from sttn_sim.reference import reference_forward

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_exports_both_formats_from_a_checkpoint(tmp_path, capsys):
    model = synthetic_model("plain_ternary_cnn", seed=1)
    save_model(model, tmp_path / "m.safetensors")
    rc = main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(tmp_path / "a.onnx"),
               "--qonnx", str(tmp_path / "q.onnx"), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [w["format"] for w in summary["written"]] == ["onnx", "qonnx"]
    plain, q = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "q.onnx"))
    assert plain.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert q.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert {n.op_type for n in q.graph.node} >= {"Quant", "MultiThreshold"}
    # the QONNX file reads back as the same network
    x = np.random.default_rng(0).standard_normal((3,) + model.input_shape)
    back = load_checkpoint(tmp_path / "q.onnx")
    assert np.max(np.abs(reference_forward(back, x) - reference_forward(fold(model), x))) <= 1e-5 * max(
        1.0, np.max(np.abs(reference_forward(fold(model), x))))  # float32 parameters in the file


def test_the_default_model_through_the_sttn_command(tmp_path, capsys):
    assert sttn_main(["export", "--onnx", str(tmp_path / "d.onnx")]) == 0
    assert "wrote ONNX" in capsys.readouterr().out and (tmp_path / "d.onnx").stat().st_size > 0


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.strip() == "error: export: give --onnx OUT.onnx and/or --qonnx OUT.onnx"
    assert main(["--onnx", str(tmp_path / "x.onnx"), "--qonnx", str(tmp_path / "x.onnx")]) == 2
    assert "name the same file" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing.onnx"), "--onnx", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.onnx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_ttq_model_to_qonnx_is_refused_but_onnx_works(tie_model, tmp_path, capsys):
    save_model(tie_model("sttn", ttq=True), tmp_path / "ttq.safetensors")
    assert main(["--checkpoint", str(tmp_path / "ttq.safetensors"), "--qonnx", str(tmp_path / "t.onnx")]) == 2
    assert "two scales per channel" in capsys.readouterr().err and not (tmp_path / "t.onnx").exists()
    assert main(["--checkpoint", str(tmp_path / "ttq.safetensors"), "--onnx", str(tmp_path / "t.onnx")]) == 0


@pytest.mark.slow
def test_verify_command_on_the_brevitas_fixture(capsys):
    from sttn_sim.verify import main as verify_main

    assert verify_main(["--checkpoint", str(FIXTURES / "brevitas_ternary_cnn.onnx"), "--batch", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["engine"]["passed"]
    assert all(r["code_mismatches"] in (None, 0) for r in report["layers"])
    assert all(r["acc_mismatches"] in (None, 0) for r in report["engine"]["layers"])

"""analysis.compare: side-by-side tables of two models of the same architecture."""

import subprocess
import sys

import numpy as np
import pytest

from analysis.compare import compare_activations, compare_models, main
from sttn_sim.errors import ModelError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.io import save_model
from sttn_sim.quantizers import sttn_ternarize
from sttn_sim.stats import collect_activations
from sttn_sim.synthetic import synthetic_input, synthetic_model


def merged_copy(model: Model) -> Model:
    """The merged ("ter") form: weight = alpha (B1 + B2) = s * t, bias = b1 + b2."""
    layers = []
    for l in model.layers:
        if l.kind == "sttn_linear":
            q = sttn_ternarize(l.params["weight1"], l.params["weight2"])
            w = (q.scale[:, None] * q.codes).astype(np.float32)
            bias = (l.params["bias1"].astype(np.float64) + l.params["bias2"]).astype(np.float32)
            layers.append(Layer(l.name, "ter_linear", list(l.inputs), {}, {"weight": w, "bias": bias}))
        else:
            layers.append(l)
    return Model(model.arch, model.input_shape, layers, "merged")


@pytest.fixture(scope="module")
def mlp():
    return synthetic_model("ternary_mlp", seed=0)


def test_same_model_forms_agree(mlp):
    t = compare_models(mlp, merged_copy(mlp), labels=("latent", "merged"))
    assert list(t["layer"]) == ["fc1", "fc2"]
    assert (t["code_agreement"] == 1.0).all() and (t["sparsity_diff"] == 0.0).all()
    assert t["intervals_latent"].all() and not t["intervals_merged"].any()
    assert t["overlap_merged"].isna().all() and t["overlap_latent"].notna().all()
    assert t["kind_merged"].tolist() == ["ter_linear", "ter_linear"]


def test_two_checkpoints_hand_agreement():
    # two one-layer models differing in one of four codes
    w1 = np.array([[0.5, 0.5, -0.5, 0.5]], np.float32)
    a = Model("t", (4,), [Layer("fc", "sttn_linear", ["input"], {}, {"weight1": w1, "weight2": w1})], "latent")
    w2 = np.array([[0.5, -0.5, -0.5, 0.5]], np.float32)  # codes [1, 0, -1, 1] vs a's [1, 1, -1, 1]
    b = Model("t", (4,), [Layer("fc", "sttn_linear", ["input"], {}, {"weight1": w1, "weight2": w2})], "latent")
    r = compare_models(a, b, labels=("a", "b")).iloc[0]
    assert r["code_agreement"] == 0.75 and r["zero_agreement"] == 0.75
    assert (r["sparsity_a"], r["sparsity_b"], r["sparsity_diff"]) == (0.0, 0.25, 0.25)


def test_architecture_mismatch_and_labels(mlp):
    other = synthetic_model("ternary_mlp", hidden=(64, 32), seed=0)
    with pytest.raises(ModelError, match="kernel shape"):
        compare_models(mlp, other)
    resnet = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    with pytest.raises(ModelError, match="only in a: \\['fc1', 'fc2'\\]"):
        compare_models(mlp, resnet)
    with pytest.raises(ModelError, match="two different"):
        compare_models(mlp, mlp, labels=("x", "x"))


def test_activation_comparison(mlp):
    x = [synthetic_input(mlp, 4, seed=1)]
    ra = collect_activations(mlp, x, progress=False)
    rb = collect_activations(fold(mlp), x, progress=False)
    t = compare_activations(ra, rb, labels=("latent", "folded"))
    assert (t["frac_zero_diff"] == 0).all() and list(t["layer"]) == ["tact0", "tact1", "tact2"]


def test_cli(tmp_path, mlp, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(mlp, a)
    save_model(fold(mlp), b)
    assert main([str(a), str(b), "--labels", "latent", "folded", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "compare.csv").read_text().startswith("layer,order,shape")
    assert main([str(a), str(tmp_path / "missing.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "analysis.compare", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage:" in proc.stdout

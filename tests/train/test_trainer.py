"""The training loop: learning, determinism, exports that sttn_sim evaluates identically,
records, Adam / cosine schedule, bad input and a non-finite loss."""

import numpy as np
import pandas as pd
import pytest

from sttn_sim.builders import sttn_resnet18
from sttn_sim.datasets import DatasetError, digits
from sttn_sim.engine import Engine
from sttn_sim.errors import ModelError
from sttn_sim.fold import fold
from sttn_sim.io import load_checkpoint
from sttn_sim.reference import reference_forward
from sttn_sim.train import Adam, TrainConfig, TrainingError, cosine_lr, train
from sttn_sim.ops import gradients as L
from sttn_sim.train import losses
from sttn_sim.check import verify_model


@pytest.fixture(scope="module")
def small_data():
    x_tr, y_tr, x_te, y_te = digits()
    return x_tr[:400], y_tr[:400], x_te[:120], y_te[:120]


def tiny(seed=0):
    return sttn_resnet18(width=4 / 64, blocks=3, stem="small", input_size=8, in_channels=1, num_classes=10, seed=seed)


FAST = dict(epochs=4, batch_size=32, lr=0.02, progress=False)


@pytest.fixture(scope="module")
def sttn_run(small_data):
    return train(tiny(), small_data, TrainConfig(method="sttn", **FAST), command="pytest")


def _acc(logits, y):
    return float(np.mean(np.asarray(logits).argmax(1) == y))


def test_sttn_learns_and_records(sttn_run, small_data):
    h = sttn_run.history
    assert list(h.columns) == ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]
    assert len(h) == 4 and h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert sttn_run.test_accuracy > 0.25  # 10 classes: chance is 0.1
    lh = sttn_run.layer_history
    n_tern = len(tiny().ternary_layers())
    assert len(lh) == 5 * n_tern and set(lh.epoch) == {0, 1, 2, 3, 4}
    assert lh.sparsity.between(0, 1).all() and lh.overlap.between(0, 1).all()
    row = lh.iloc[-1]
    assert row.frac_neg + row.frac_pos + row.sparsity == pytest.approx(1.0)
    meta = sttn_run.model.metadata
    assert meta["method"] == "sttn" and meta["seed"] == 0 and meta["training_command"] == "pytest"
    assert meta["test_accuracy"] == sttn_run.test_accuracy


def test_sttn_export_folds_verifies_and_keeps_accuracy(sttn_run, small_data):
    model = sttn_run.model
    assert model.form == "latent"
    for layer in model.ternary_layers():
        assert np.abs(layer.params["weight1"]).max() <= 1.0
    folded = fold(model)
    assert verify_model(model, folded, batch=4).passed
    x_te, y_te = small_data[2], small_data[3]
    acc = _acc(reference_forward(folded, x_te.astype(np.float64)), y_te)
    assert acc == sttn_run.test_accuracy


def test_sttn_learned_interval_statistics_are_consistent(sttn_run):
    lh = sttn_run.layer_history
    last = lh[lh.epoch == lh.epoch.max()]
    for _, r in last.iterrows():
        p = sttn_run.model[r.layer].params
        w = (p["weight1"].astype(np.float64) + p["weight2"].astype(np.float64)) / 2
        t = (np.sign(p["weight1"]) + np.sign(p["weight2"])) / 2
        assert r.sparsity == pytest.approx(np.mean(t == 0))
        hard = np.sign(w) * (np.abs(w) > r.delta)
        assert np.mean(hard == 0) == pytest.approx(r.sparsity, abs=2 / w.size)  # same sparsity (ties aside)
        assert r.overlap == pytest.approx(np.mean(hard != t))


@pytest.mark.parametrize("method", ["twn", "ttq", "fixed", "float"])
def test_baselines_train_and_export_evaluably(method, small_data):
    res = train(tiny(1), small_data, TrainConfig(method=method, seed=1, **FAST))
    model = res.model
    x_te, y_te = small_data[2], small_data[3]
    acc_ref = _acc(reference_forward(model, x_te.astype(np.float64)), y_te)
    assert acc_ref == res.test_accuracy
    kinds = {l.kind for l in model.layers}
    if method in ("twn", "fixed"):
        assert model.form == "merged" and "ter_conv" in kinds
        folded = fold(model)
        assert _acc(reference_forward(folded, x_te.astype(np.float64)), y_te) == res.test_accuracy
        # α·{-1,0,1}: one magnitude per output channel
        w = model["features.4.conv1"].params["weight"]
        for o in range(w.shape[0]):
            assert len(np.unique(np.abs(w[o][w[o] != 0]))) <= 1
    elif method == "ttq":
        # merged form with two magnitudes per channel (W_p on +1, W_n on -1): folds into the
        # asymmetric form and runs packed
        assert model.form == "merged" and model["features.4.conv1"].kind == "ter_conv"
        assert model["features.4.conv1"].attrs["ternary_method"] == "ttq"
        w = model["features.4.conv1"].params["weight"]
        for o in range(w.shape[0]):
            assert len(np.unique(w[o][w[o] > 0])) <= 1 and len(np.unique(w[o][w[o] < 0])) <= 1
        folded = fold(model)
        layer = folded["features.4.conv1"]
        assert "scale_neg" in layer.params and layer.params["codes"].dtype == np.int8
        assert _acc(reference_forward(folded, x_te.astype(np.float64)), y_te) == res.test_accuracy
        engine_logits = Engine(folded).run(x_te.astype(np.float32))
        ref_logits = reference_forward(folded, x_te.astype(np.float64))
        # float32 engine against the float64 reference: end-to-end tolerance of docs/design.md §2.6
        # (a near-tie flip could move a logit further; none occurs on this seed and data)
        assert np.max(np.abs(engine_logits - ref_logits)) <= 1e-3 * max(1.0, np.max(np.abs(ref_logits)))
    else:
        assert model.form == "float" and "ternary_act" not in kinds
    assert res.layer_history.empty == (method == "float")


def test_training_is_deterministic(small_data):
    cfg = TrainConfig(method="sttn", epochs=1, batch_size=100, progress=False, record_layers=False)
    a = train(tiny(3), small_data, cfg, seed=3)
    b = train(tiny(3), small_data, cfg, seed=3)
    c = train(tiny(3), small_data, cfg, seed=4)
    pa, pb, pc = (r.model["features.5.conv2"].params["weight1"] for r in (a, b, c))
    assert np.array_equal(pa, pb)
    assert not np.array_equal(pa, pc)  # the seed decides the data order
    pd.testing.assert_frame_equal(a.history.drop(columns="seconds"), b.history.drop(columns="seconds"))


def test_distillation_from_float_teacher(small_data, sttn_run):
    teacher = train(tiny(), small_data, TrainConfig(method="float", **FAST))
    res = train(tiny(), small_data, TrainConfig(method="sttn", distill_weight=0.5, **FAST), teacher=teacher)
    assert np.isfinite(res.history.train_loss).all()
    # same seed and data order as sttn_run: only the distillation term differs
    assert not np.array_equal(res.model["fc"].params["weight"], sttn_run.model["fc"].params["weight"])
    assert res.model.metadata["train_config"]["distill_weight"] == 0.5
    # a saved teacher model (evaluated by the float64 reference) works as well
    res2 = train(tiny(), small_data, TrainConfig(method="sttn", distill_weight=1.0, **FAST), teacher=teacher.model)
    assert np.isfinite(res2.history.train_loss).all()
    with pytest.raises(ModelError, match="needs a teacher"):
        train(tiny(), small_data, TrainConfig(method="sttn", distill_weight=0.5, **FAST))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(small_data, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt.safetensors"
    real = losses.cross_entropy
    calls = {"n": 0}
    steps_per_epoch = 400 // 50

    def poisoned(logits, y):
        calls["n"] += 1
        loss, g = real(logits, y)
        # epoch 1: 8 training batches + 1 test evaluation; then batch 4 of epoch 2 goes bad
        return (float("nan"), g) if calls["n"] > steps_per_epoch + 1 + 3 else (loss, g)

    monkeypatch.setattr(losses, "cross_entropy", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite.*epoch 2, batch 4.*still holds epoch 1") as info:
        train(tiny(), small_data, TrainConfig(method="sttn", epochs=3, batch_size=50, progress=False,
                                              checkpoint=str(ckpt)))
    saved = load_checkpoint(ckpt)
    assert saved.metadata["epochs_completed"] == 1
    good = info.value.last_good
    assert good.metadata["epochs_completed"] == 1
    np.testing.assert_array_equal(good["fc"].params["weight"], saved["fc"].params["weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temporary files left


def test_bad_data_is_refused_with_clear_errors(small_data):
    x_tr, y_tr, x_te, y_te = small_data
    with pytest.raises(DatasetError, match="training data: 399 labels .* for 400 images"):
        train(tiny(), (x_tr, y_tr[:-1], x_te, y_te), TrainConfig(**FAST))
    bad = y_te.copy()
    bad[0] = 10
    with pytest.raises(DatasetError, match=r"test data.*1 label\(s\) out of range .*expected 0..9"):
        train(tiny(), (x_tr, y_tr, x_te, bad), TrainConfig(**FAST))
    with pytest.raises(DatasetError, match=r"training data: images have shape \(400, 1, 6, 6\).*expects \(N, 1, 8, 8\)"):
        train(tiny(), (x_tr[:, :, :6, :6], y_tr, x_te, y_te), TrainConfig(**FAST))
    with pytest.raises(ModelError, match="TrainConfig.method='xnor'"):
        train(tiny(), small_data, TrainConfig(method="xnor"))
    with pytest.raises(ModelError, match="TrainConfig.lr=-1"):
        train(tiny(), small_data, TrainConfig(lr=-1))


def test_cosine_schedule():
    assert cosine_lr(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1, lr_min=0.01) == pytest.approx(0.01)
    assert cosine_lr(0, 100, 0.1, warmup=10) == pytest.approx(0.01)
    assert cosine_lr(10, 100, 0.1, warmup=10) == pytest.approx(0.1)


def test_adam_matches_the_textbook_update():
    w = np.array([1.0, -2.0])
    opt = Adam([(("l", "weight"), w, "weight")], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    g1, g2 = np.array([0.5, -1.0]), np.array([0.1, 0.3])
    opt.step({("l", "weight"): g1})
    # step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + eps) + lr·wd·w
    np.testing.assert_allclose(w, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8) - 0.05, -2.0 + 0.1 / (1 + 1e-8) + 0.1], rtol=1e-12)
    before = w.copy()
    opt.step({("l", "weight"): g2})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.99 * 0.01 * g1 ** 2 + 0.01 * g2 ** 2
    upd = 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.99 ** 2)) + 1e-8) + 0.1 * 0.5 * before
    np.testing.assert_allclose(w, before - upd, rtol=1e-12)


def test_shift_augmentation():
    from sttn_sim.train.trainer import _shift

    x = np.zeros((50, 1, 4, 4), np.float32)
    x[:, 0, 1, 1] = 1.0
    out = _shift(x, np.random.default_rng(0), 1)
    pos = [tuple(np.argwhere(o[0] == 1)[0]) for o in out]
    assert all(p in {(r, c) for r in (0, 1, 2) for c in (0, 1, 2)} for p in pos)
    assert len(set(pos)) > 3 and np.all(out.sum(axis=(1, 2, 3)) == 1)  # moved, nothing lost, zero fill


def test_training_with_shift_augmentation_runs(small_data):
    res = train(tiny(), small_data, TrainConfig(method="sttn", shift_augment=1, epochs=1, progress=False))
    assert np.isfinite(res.history.train_loss).all() and res.model.metadata["train_config"]["shift_augment"] == 1

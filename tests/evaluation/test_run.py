"""sttn_sim.evaluation.run and .parts in one process: the counts are those of the images themselves
(decoded here with Pillow, run through the engine and the reference independently),
the recorded statistics are those of a direct recording, bad images are named or skipped."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sttn_sim import Engine, fold, reference_forward
from sttn_sim.datasets import DatasetError, digits
from sttn_sim.evaluation import ModelSpec, RunOptions, check_sample, evaluate, loaded_model, plan_shards
from sttn_sim.images import image_folder
from sttn_sim.images.writing import write_image_folder
from sttn_sim.stats import ActivationRecorder

N = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    _, _, x, y = digits()
    return write_image_folder(tmp_path_factory.mktemp("digits") / "png", x[:N], y[:N])


@pytest.fixture(scope="module")
def spec():
    return ModelSpec.of(None)


def _decoded(src):
    """The folder's images decoded here: 8-bit grey / 255 in float32, as ToTensor does."""
    return np.stack([np.asarray(Image.open(p), np.uint8)[None].astype(np.float32) / np.float32(255) for p in src.ids])


def test_counts_are_the_images_own(folder, spec):
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    run = evaluate(spec, src, options=RunOptions(batch_size=7), check=6, seed=3)
    folded = fold(loaded_model(spec).model)
    x = _decoded(src)
    logits = Engine(folded).run(x)
    pred = logits.argmax(1)
    y = src.labels
    t = run.tally
    assert t.images.tolist() == np.bincount(y, minlength=10).tolist()
    assert t.top1.tolist() == np.bincount(y[pred == y], minlength=10).tolist()
    top5 = np.array([label in row for label, row in zip(y, np.argsort(-logits, 1, kind="stable")[:, :5])])
    assert t.topk.tolist() == np.bincount(y[top5], minlength=10).tolist()
    assert run.evaluated == N and run.top1 == int((pred == y).sum())
    # the checked sample: the same 6 images whatever the batches, compared with the reference here
    sample = check_sample(N, 6, seed=3)
    ref = reference_forward(folded, x[sample].astype(np.float64))
    assert t.checked == 6 and t.top1_identical == int((ref.argmax(1) == pred[sample]).sum())
    assert 0 <= t.codes_identical <= 6 and t.check_failures == [] and run.passed


def test_check_sample_and_shards():
    a = check_sample(100, 10, seed=1)
    assert np.array_equal(a, check_sample(100, 10, seed=1)) and len(set(a.tolist())) == 10
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 100
    assert check_sample(5, 10).tolist() == [0, 1, 2, 3, 4] and check_sample(5, 0).size == 0
    shards = plan_shards(10, 4)
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 8), (8, 10)] and [s.index for s in shards] == [0, 1, 2]


def test_engine_logits_do_not_depend_on_the_batch(folder, spec):
    """What makes a merged run equal to one process: each image's logits are the same in
    any batch (here one batch, single images, and batches of 7), compared with ==."""
    engine = loaded_model(spec).engine
    x = _decoded(image_folder(folder, input_shape=(1, 8, 8)))
    whole = engine.run(x)
    assert np.array_equal(whole, np.concatenate([engine.run(x[i:i + 1]) for i in range(N)]))
    assert np.array_equal(whole, np.concatenate([engine.run(x[i:i + 7]) for i in range(0, N, 7)]))


def test_recorded_statistics_are_a_direct_recording(folder, spec):
    src = image_folder(folder, input_shape=(1, 8, 8))
    run = evaluate(spec, src, options=RunOptions(batch_size=6, record=True), check=0)
    direct = ActivationRecorder()
    loaded_model(spec).engine.run(_decoded(src), recorder=direct)
    rec = run.recorder
    assert rec.layers == direct.layers and rec.samples == direct.samples == N
    for name in rec.layers:
        a, b = rec.code_counts(name), direct.code_counts(name)
        assert np.array_equal(a, b)
        assert np.array_equal(rec.histogram(name)[1], direct.histogram(name)[1])
    cols = ["n_neg", "n_zero", "n_pos", "dead_channels", "stuck_channels", "exact_ties", "near_ties", "macs",
            "macs_nonzero_act", "macs_nonzero"]
    assert rec.layer_table()[cols].equals(direct.layer_table()[cols])
    # float sums of y over 6 batches against one: float64, another order of addition
    np.testing.assert_allclose(rec.layer_table()["y_mean"], direct.layer_table()["y_mean"], rtol=1e-12, atol=1e-12)


def test_decoding_workers_change_nothing(folder, spec):
    src = image_folder(folder, input_shape=(1, 8, 8))
    a = evaluate(spec, src, options=RunOptions(batch_size=8), check=4, decode_workers=0)
    b = evaluate(spec, src, options=RunOptions(batch_size=8), check=4, decode_workers=2)
    assert a.tally == b.tally


def test_bad_images_are_named_or_skipped(folder, spec, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    good = sorted((bad / "3").iterdir())[0].read_bytes()
    (bad / "3" / "img_00a.png").write_bytes(good[: len(good) // 2])  # truncated
    (bad / "5" / "notes.png").write_text("not an image")             # not an image
    src = image_folder(bad, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(DatasetError, match="img_00a.png"):
        evaluate(spec, src, check=0)
    run = evaluate(spec, src, options=RunOptions(batch_size=5, skip_bad=True), check=0)
    assert sorted(s.id.rsplit("/", 1)[1] for s in run.tally.skipped) == ["img_00a.png", "notes.png"]
    assert [s.index for s in run.tally.skipped] == [src.ids.index(s.id) for s in run.tally.skipped]
    assert run.evaluated == N and "skipped 2 unreadable image(s)" in run.to_text()
    out = run.write(tmp_path / "out")
    assert {p.name for p in out} == {"evaluation.json", "per_class.csv", "skipped.csv"}
    assert len(pd.read_csv(tmp_path / "out" / "skipped.csv")) == 2


def test_limit_and_files(folder, spec, tmp_path):
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    run = evaluate(spec, src, limit=10, check=2)
    assert run.evaluated == 10 and run.requested == 10
    run.write(tmp_path / "o", record_dir=tmp_path / "r")  # no recorder: nothing in r
    table = pd.read_csv(tmp_path / "o" / "per_class.csv")
    assert table["images"].sum() == 10 and table["images"].tolist() == np.bincount(src.labels[:10], minlength=10).tolist()
    assert table["top1_correct"].sum() == run.top1
    doc = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert doc["images_evaluated"] == 10 and doc["top1_correct"] == run.top1 and doc["check"]["images"] == 2
    assert not (tmp_path / "r").exists()

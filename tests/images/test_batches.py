"""sttn_sim.images.batches: streaming in order, identical for every worker count, limit,
skip_bad, and errors that name the file (from a worker process too)."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sttn_sim.datasets import DatasetError
from sttn_sim.images import Batch, decode_image, image_folder, make_jpeg_folder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return make_jpeg_folder(tmp_path_factory.mktemp("jpegs"), 11, classes=3, seed=1)


def _all(stream):
    return list(stream)


def test_batches_in_order_with_labels_and_ids(jpegs):
    src = image_folder(jpegs)
    stream = src.batches(4)
    batches = _all(stream)
    assert [len(b) for b in batches] == [4, 4, 3] and len(stream) == 3 and stream.images_yielded == 11
    assert all(isinstance(b, Batch) and b.images.dtype == np.float32 and b.images.shape[1:] == (3, 224, 224)
               for b in batches)
    assert sum((list(b.ids) for b in batches), []) == list(src.ids)
    assert np.concatenate([b.labels for b in batches]).tolist() == src.labels.tolist()
    assert np.concatenate([b.indices for b in batches]).tolist() == list(range(11))
    # each batch row is the file decoded on its own
    for b in batches:
        for row, path in zip(b.images, b.ids):
            assert np.array_equal(row, decode_image(path, src.preprocess))


def test_identical_for_any_worker_count(jpegs):
    src = image_folder(jpegs)
    base = _all(src.batches(3, workers=0))
    for workers, chunk, prefetch in [(1, None, None), (2, None, None), (2, 1, 1), (2, 5, 3)]:
        other = _all(src.batches(3, workers=workers, chunk=chunk, prefetch=prefetch))
        assert len(other) == len(base)
        for a, b in zip(base, other):
            assert a.ids == b.ids and np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)
            assert np.array_equal(a.images, b.images)  # bit-identical, not close


def test_limit(jpegs):
    src = image_folder(jpegs)
    batches = _all(src.batches(4, limit=6, workers=2))
    assert [len(b) for b in batches] == [4, 2] and batches[-1].ids[-1] == src.ids[5]
    assert sum(len(b) for b in src.batches(4, limit=100)) == 11


def test_stopping_early_stops_the_pool(jpegs):
    src = image_folder(jpegs)
    stream = iter(src.batches(2, workers=2, prefetch=2))
    first = next(stream)
    stream.close()  # the pool shuts down without decoding the rest
    assert len(first) == 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), r"batch_size=0: expected an integer >= 1"),
    (dict(batch_size=2, workers=-1), r"workers=-1: expected an integer >= 0"),
    (dict(batch_size=2, limit=0), r"limit=0: expected an integer >= 1"),
    (dict(batch_size=2.5), r"batch_size=2.5: expected an integer >= 1"),
])
def test_argument_errors(jpegs, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        image_folder(jpegs).batches(**kwargs)


@pytest.fixture
def bad_tree(tmp_path):
    """cls/a.png good, b.jpg truncated, c.jpg text, d.png good, e.png a broken symlink,
    f.jpg grayscale and g.jpg CMYK (converted, not errors)."""
    cls = tmp_path / "tree" / "cls"
    cls.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(cls / "a.png")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (cls / "b.jpg").write_bytes(data[: len(data) // 2])
    (cls / "c.jpg").write_text("this is not a jpeg")
    Image.new("RGB", (30, 40), (0, 0, 250)).save(cls / "d.png")
    os.symlink(tmp_path / "gone.png", cls / "e.png")
    Image.new("L", (50, 20), 99).save(cls / "f.jpg")
    Image.new("CMYK", (20, 50), (0, 255, 255, 0)).save(cls / "g.jpg")
    return tmp_path / "tree"


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_errors_naming_the_file(bad_tree, workers):
    src = image_folder(bad_tree, preprocess="resize=16,crop=16")
    with pytest.raises(DatasetError, match=r"cls/b\.jpg: truncated or unreadable image \(OSError"):
        _all(src.batches(2, workers=workers))
    with pytest.raises(DatasetError, match=r"cls/c\.jpg: not an image file Pillow can identify"):
        src.load(2)
    with pytest.raises(DatasetError, match=r"cls/e\.png: no such file"):
        src.load(4)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_lists_and_counts(bad_tree, workers):
    src = image_folder(bad_tree, preprocess="resize=16,crop=16,normalize=none")
    stream = src.batches(2, workers=workers, skip_bad=True)
    batches = _all(stream)
    names = [Path(i).name for b in batches for i in b.ids]
    assert names == ["a.png", "d.png", "f.jpg", "g.jpg"] and [len(b) for b in batches] == [2, 2]
    assert [(s.index, Path(s.id).name) for s in stream.skipped] == [(1, "b.jpg"), (2, "c.jpg"), (4, "e.png")]
    assert "truncated" in stream.skipped[0].reason and "identify" in stream.skipped[1].reason
    assert stream.images_yielded == 4
    # the grayscale and CMYK files became RGB: grey 99 in all three channels (a flat JPEG
    # decodes flat), pure red for CMYK (0, 255, 255, 0)
    f, g = batches[1].images
    assert f.shape == g.shape == (3, 16, 16)
    assert np.array_equal(f * 255, np.full((3, 16, 16), 99, np.float32))
    assert np.array_equal(np.round(g * 255), np.stack([np.full((16, 16), v, np.float32) for v in (255, 0, 0)]))


def test_none_preset_checks_shapes(tmp_path):
    for name, size in (("a.png", (8, 8)), ("b.png", (8, 9))):
        Image.new("RGB", size).save((tmp_path / "c").mkdir(exist_ok=True) or tmp_path / "c" / name)
    src = image_folder(tmp_path, preprocess="none")
    assert src.image_shape is None
    with pytest.raises(DatasetError, match=r"c/b\.png: preprocessed image has shape \(3, 9, 8\), .*c/a\.png has "
                                           r"\(3, 8, 8\): one batch needs one shape"):
        _all(src.batches(2))
    src = image_folder(tmp_path, preprocess="none", input_shape=(3, 8, 8))
    with pytest.raises(DatasetError, match=r"c/b\.png: preprocessed image has shape \(3, 9, 8\), the model "
                                           r"expects \(3, 8, 8\)"):
        _all(src.batches(1))
    assert _all(src.batches(1, limit=1))[0].images.shape == (1, 3, 8, 8)


def test_fixture_tree_streams_with_workers():
    src = image_folder(FIXTURES / "images", preprocess="resize=36,crop=32")
    a, b = _all(src.batches(4)), _all(src.batches(4, workers=2))
    assert all(np.array_equal(x.images, y.images) for x, y in zip(a, b)) and len(a) == 3

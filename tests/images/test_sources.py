"""sttn_sim.images.sources: ImageFolder order (against torchvision's, stored in the fixture),
flat folders with a labels file, npz/digits sources, open_dataset, and their errors."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sttn_sim.datasets import DatasetError, digits
from sttn_sim.errors import SttnError
from sttn_sim.images import (
    PRESETS,
    ArraySource,
    FileSource,
    Preprocess,
    image_folder,
    labelled_folder,
    npz_source,
    open_dataset,
    read_labels_file,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IMAGES = FIXTURES / "images"


def _png(path: Path, size=(8, 6), colour=(0, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_image_folder_order_is_torchvisions():
    with np.load(FIXTURES / "images_expected.npz", allow_pickle=False) as f:
        ids, labels, classes = list(f["ids"]), f["labels"], list(f["classes"])
    src = image_folder(IMAGES)
    assert isinstance(src, FileSource) and len(src) == 9
    assert list(src.classes) == classes == ["Zebra", "ant"]
    assert list(src.ids) == [os.path.join(str(IMAGES), i) for i in ids]  # notes.txt left out, sub/ last
    assert src.labels.dtype == np.int64 and src.labels.tolist() == labels.tolist()
    assert src.image_shape == (3, 224, 224) and src.preprocess == PRESETS["imagenet"]


def test_image_folder_rules(tmp_path):
    # extensions case-insensitive, non-images ignored, nested folders after the files,
    # names sorted as strings ("b10" < "b2"), class "B" before "a"
    for name in ("a/b2.PNG", "a/b10.png", "a/z/x.png", "a/notes.md", "a/ok.tiff", "B/1.webp", "B/2.Jpeg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".md"):
            path.write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(path, format={"png": "PNG", "tiff": "TIFF", "webp": "WEBP",
                                                       "jpeg": "JPEG"}[path.suffix.lower()[1:]])
    src = image_folder(tmp_path)
    rel = [os.path.relpath(i, tmp_path) for i in src.ids]
    assert src.classes == ("B", "a")
    assert rel == ["B/1.webp", "B/2.Jpeg", "a/b10.png", "a/b2.PNG", "a/ok.tiff", "a/z/x.png"]
    assert src.labels.tolist() == [0, 0, 1, 1, 1, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: no such folder"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no class folders; expected .*empty/<class>/<image>$"):
        image_folder(tmp_path / "empty")
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match=r"flat: no class folders.*holds 1 image file\(s\) directly: for a "
                                           r"flat folder give a labels file"):
        image_folder(tmp_path / "flat")
    _png(tmp_path / "tree" / "cat" / "a.png")
    (tmp_path / "tree" / "dog").mkdir()
    (tmp_path / "tree" / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"tree: no image file \(\.jpg, .*\) in class folder\(s\) dog$"):
        image_folder(tmp_path / "tree")


def test_class_count_must_match(tmp_path):
    for c in ("a", "b", "c"):
        _png(tmp_path / c / "x.png")
    assert image_folder(tmp_path, num_classes=3).num_classes == 3
    with pytest.raises(DatasetError, match=r": 3 class folders, expected 1000 \(the model's class count\)"):
        image_folder(tmp_path, num_classes=1000)


def test_input_shape_channels_must_match_preprocessing():
    with pytest.raises(DatasetError, match=r"the model takes 3 channel\(s\), the preprocessing gives 1"):
        image_folder(IMAGES, preprocess=Preprocess(channels=1), input_shape=(3, 224, 224))
    src = image_folder(IMAGES, preprocess="resize=36,crop=32,normalize=none", input_shape=(1, 32, 32))
    assert src.preprocess.channels == 1 and src.load(0).shape == (1, 32, 32)


def _flat(tmp_path, names=("b.png", "a.png", "c.jpg")) -> Path:
    for n in names:
        _png(tmp_path / "val" / n)
    return tmp_path / "val"


def test_labelled_folder_integer_labels(tmp_path):
    root = _flat(tmp_path)
    (tmp_path / "labels.txt").write_text("# ImageNet style\nc.jpg 2\n\na.png 0\nb.png   5\n")
    src = labelled_folder(root, tmp_path / "labels.txt")
    assert [Path(i).name for i in src.ids] == ["a.png", "b.png", "c.jpg"]  # sorted by name
    assert src.labels.tolist() == [0, 5, 2]
    assert src.classes == tuple(str(i) for i in range(6))
    assert labelled_folder(root, tmp_path / "labels.txt", num_classes=10).num_classes == 10
    with pytest.raises(DatasetError, match=r"labels\.txt: label\(s\) >= 4 \(the model's class count\) for .*b\.png"):
        labelled_folder(root, tmp_path / "labels.txt", num_classes=4)


def test_labelled_folder_csv_and_class_names(tmp_path):
    root = _flat(tmp_path, ("x 1.png", "y.png", "sub/z.png"))
    (tmp_path / "classes.txt").write_text("n001\nn002\nn003\n")
    (tmp_path / "labels.csv").write_text("x 1.png,n003\ny.png, n001\nsub/z.png,1\n")
    src = labelled_folder(root, tmp_path / "labels.csv", classes=tmp_path / "classes.txt")
    assert [os.path.relpath(i, root) for i in src.ids] == ["sub/z.png", "x 1.png", "y.png"]
    assert src.labels.tolist() == [1, 2, 0] and src.classes == ("n001", "n002", "n003")
    src = labelled_folder(root, tmp_path / "labels.csv", classes=["n001", "n002", "n003"], num_classes=3)
    assert src.labels.tolist() == [1, 2, 0]
    with pytest.raises(DatasetError, match=r"labels\.csv: 3 class names, expected 1000"):
        labelled_folder(root, tmp_path / "labels.csv", classes=["n001", "n002", "n003"], num_classes=1000)


def test_labelled_folder_missing_and_extra_entries(tmp_path):
    root = _flat(tmp_path, ("a.png", "b.png", "c.png"))
    (tmp_path / "few.txt").write_text("a.png 0\n")
    with pytest.raises(DatasetError, match=r"few\.txt: no label for 2 image\(s\) in .*val: b\.png, c\.png$"):
        labelled_folder(root, tmp_path / "few.txt")
    (tmp_path / "many.txt").write_text("a.png 0\nb.png 1\nc.png 1\nd.png 0\ne.jpg 1\n")
    with pytest.raises(DatasetError, match=r"many\.txt: 2 entries name files not in .*val: d\.png, e\.jpg$"):
        labelled_folder(root, tmp_path / "many.txt")


@pytest.mark.parametrize("text,classes,message", [
    ("a.png 0\na.png 1\n", None, r"line 2: 'a\.png' is listed again \(first on line 1\)"),
    ("a.png cat\n", None, r"line 1: label 'cat' is not an integer \(give the class names to map names\)"),
    ("a.png cat\n", ["dog"], r"line 1: label 'cat' is not an integer or one of the 1 class names"),
    ("a.png -1\n", None, r"line 1: label -1 out of range"),
    ("a.png 3\n", ["x", "y"], r"line 1: label 3 out of range; expected 0\.\.1"),
    ("lonely\n", None, r"line 1: 'lonely' is not 'name label' or 'name,label'"),
    ("# only a comment\n", None, r"the labels file has no entries"),
])
def test_labels_file_errors(tmp_path, text, classes, message):
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(DatasetError, match=r"l\.txt: " + message):
        read_labels_file(tmp_path / "l.txt", classes)


def test_labelled_folder_other_errors(tmp_path):
    root = _flat(tmp_path, ("a.png",))
    with pytest.raises(DatasetError, match=r"nolabels\.txt: no such labels file"):
        labelled_folder(root, tmp_path / "nolabels.txt")
    (tmp_path / "l.txt").write_text("a.png 0\n")
    (tmp_path / "dup.txt").write_text("x\ny\nx\n")
    with pytest.raises(DatasetError, match=r"dup\.txt: class name\(s\) listed twice: x$"):
        labelled_folder(root, tmp_path / "l.txt", classes=tmp_path / "dup.txt")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"nothing: no image file \(\.jpg"):
        labelled_folder(tmp_path / "nothing", tmp_path / "l.txt")


def test_npz_source_parts_and_ids(tmp_path):
    images = np.arange(10 * 2 * 3, dtype=np.uint8).reshape(10, 1, 2, 3) * 4
    split = np.array([0, 1] * 5, np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(10) % 3, split=split)
    test = npz_source(tmp_path / "d.npz")
    assert isinstance(test, ArraySource) and len(test) == 5 and test.classes == ("0", "1", "2")
    assert test.ids[0] == f"{tmp_path / 'd.npz'}:test[0]"
    np.testing.assert_array_equal(test.load(2), images[5] / np.float32(255))  # row 5 is the third test row
    everything = npz_source(tmp_path / "d.npz", part="all")
    assert len(everything) == 10 and everything.ids[5] == f"{tmp_path / 'd.npz'}:test[0]"
    assert sorted(everything.labels.tolist()) == sorted((np.arange(10) % 3).tolist())
    with pytest.raises(DatasetError, match=r"part='val': expected one of \['test', 'train', 'all'\]"):
        npz_source(tmp_path / "d.npz", part="val")
    with pytest.raises(DatasetError, match=r"d\.npz:test: arrays are used at their stored size \(2x3\); a resize "
                                           r"or crop preprocess applies to image files only"):
        npz_source(tmp_path / "d.npz", preprocess="resize=36,crop=32,normalize=none")
    with pytest.raises(DatasetError, match=r"key 'images' has image shape \(1, 2, 3\), the model expects"):
        npz_source(tmp_path / "d.npz", input_shape=(1, 8, 8))


def test_npz_source_normalisation_only(tmp_path):
    x = np.random.default_rng(0).random((6, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", images=x, labels=np.arange(6) % 2, split=np.array([1] * 3 + [0] * 3))
    src = npz_source(tmp_path / "rgb.npz", preprocess="none,normalize=imagenet")
    mean = np.array((0.485, 0.456, 0.406), np.float32)[:, None, None]
    std = np.array((0.229, 0.224, 0.225), np.float32)[:, None, None]
    # float64 reference of (x - mean) / std; float32 arithmetic: a few ulps of values up to ~2.6
    np.testing.assert_allclose(src.load(0), (x[0].astype(np.float64) - mean) / std, rtol=0, atol=1e-6)


def test_digits_source():
    src = open_dataset("digits")
    x_te = digits()[2]
    assert len(src) == 360 and src.image_shape == (1, 8, 8) and src.num_classes == 10
    batch = next(iter(src.batches(50)))
    assert np.array_equal(batch.images, x_te[:50]) and batch.ids[1] == "digits:test[1]"
    assert len(open_dataset("digits", part="train")) == 1437
    with pytest.raises(DatasetError, match=r"digits: 10 classes, expected 1000"):
        open_dataset("digits", num_classes=1000)


def test_open_dataset_dispatch(tmp_path):
    assert isinstance(open_dataset(IMAGES), FileSource)
    root = _flat(tmp_path, ("a.png",))
    (tmp_path / "l.txt").write_text("a.png 0\n")
    assert open_dataset(root, labels=tmp_path / "l.txt").ids == (os.path.join(str(root), "a.png"),)
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 2, 2)), labels=np.arange(4) % 2, split=np.array([0, 1] * 2))
    assert len(open_dataset(tmp_path / "d.npz")) == 2
    with pytest.raises(DatasetError, match=r"missing: no such file or folder \(expected 'digits', an \.npz file"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DatasetError, match=r"x\.csv: not a folder or an \.npz file"):
        open_dataset(tmp_path / "x.csv")
    with pytest.raises(DatasetError, match=r"classes= applies to a labels file"):
        open_dataset(IMAGES, classes=["a"])
    with pytest.raises(DatasetError, match=r"an \.npz holds its own labels"):
        open_dataset(tmp_path / "d.npz", labels=tmp_path / "l.txt")


def test_dataset_error_is_an_sttn_error():
    assert issubclass(DatasetError, SttnError)

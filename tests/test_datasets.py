"""sttn_sim.datasets: the shipped digits, user .npz files and their error messages."""

import numpy as np
import pytest

from sttn_sim.builders import sttn_resnet18
from sttn_sim.datasets import DatasetError, check_dataset, data_path, digits, load_npz


def test_digits_shapes_split_and_values():
    x_tr, y_tr, x_te, y_te = digits()
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert np.bincount(y_te, minlength=10).tolist() == [36] * 10
    assert set(np.unique(y_tr)) == set(range(10))
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    # grey levels 0..16 divided by 16: exact multiples of 1/16
    assert np.all(x_tr * 16 == np.round(x_tr * 16))
    # the split is fixed: identical on every call, train and test disjoint (as images+labels)
    x2 = digits()[0]
    assert np.array_equal(x_tr, x2)
    raw = np.load(data_path("digits.npz"))
    assert raw["images"].shape == (1797, 8, 8) and int(raw["split"].sum()) == 360
    np.testing.assert_array_equal(x_te[:, 0] * 16, raw["images"][raw["split"] == 1])


def test_digits_look_like_digits():
    """Independent sanity check: the class means are distinct (a nearest-mean classifier
    on the train split beats 80 % on the test split), so images and labels line up."""
    x_tr, y_tr, x_te, y_te = digits()
    means = np.stack([x_tr[y_tr == c].reshape(-1, 64).mean(0) for c in range(10)])
    pred = ((x_te.reshape(-1, 64)[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(pred == y_te) > 0.8


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_user_npz_roundtrip_with_and_without_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 6, 6), dtype=np.uint8)
    labels = np.repeat(np.arange(5), 10)
    x_tr, y_tr, x_te, y_te = load_npz(_write(tmp_path / "a.npz", images=images, labels=labels), seed=1)
    assert x_tr.shape[1:] == (1, 6, 6) and len(x_tr) + len(x_te) == 50
    assert np.bincount(y_te).tolist() == [2] * 5  # stratified 20 %
    assert x_tr.max() <= 1.0 and x_tr.dtype == np.float32
    split = np.zeros(50, np.uint8)
    split[:7] = 1
    x_tr, y_tr, x_te, y_te = load_npz(_write(tmp_path / "b.npz", images=images, labels=labels, split=split))
    assert len(x_te) == 7
    np.testing.assert_allclose(x_te[:, 0], images[:7] / 255.0, rtol=1e-6)


@pytest.mark.parametrize("arrays,kwargs,message", [
    (dict(images=np.zeros((4, 8, 8)), labels=np.zeros(3, int)), {}, r"3 labels \('labels'\) for 4 images"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.array([0, 1, 2, 12])), dict(num_classes=10),
     r"key 'labels': 1 label\(s\) out of range \(max 12\); expected 0..9"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.array([0, -1, 2, 1])), {}, r"key 'labels': labels must be >= 0"),
    (dict(images=np.zeros((4, 8)), labels=np.zeros(4, int)), {}, r"key 'images': expected shape \(N, H, W\)"),
    (dict(images=np.zeros((4, 7, 7)), labels=np.zeros(4, int)), dict(input_shape=(1, 8, 8)),
     r"key 'images' has image shape \(1, 7, 7\), the model expects \(1, 8, 8\)"),
    (dict(images=np.full((4, 8, 8), np.nan), labels=np.zeros(4, int)), {}, r"key 'images': contains 256 NaN"),
    (dict(pictures=np.zeros((4, 8, 8)), labels=np.zeros(4, int)), {}, r"missing key\(s\) \['images'\]"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.zeros(4, int), split=np.array([0, 1, 2, 0])), {}, r"key 'split'"),
])
def test_user_npz_errors_name_file_and_key(tmp_path, arrays, kwargs, message):
    path = _write(tmp_path / "user.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as info:
        load_npz(path, **kwargs)
    assert str(path) in str(info.value)


def test_pickled_arrays_and_non_npz_files_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([object()], dtype=object), labels=np.zeros(1, int))
    with pytest.raises(DatasetError, match="obj.npz: not a readable .npz of plain arrays"):
        load_npz(path)
    bad = tmp_path / "text.npz"
    bad.write_text("hello")
    with pytest.raises(DatasetError, match="text.npz: not a readable"):
        load_npz(bad)
    with pytest.raises(DatasetError, match="missing.npz: no such file"):
        load_npz(tmp_path / "missing.npz")


def test_check_dataset_against_a_model():
    model = sttn_resnet18(width=4 / 64, blocks=3, stem="small", input_size=8, in_channels=1, num_classes=10)
    x = np.zeros((3, 1, 8, 8), np.float32)
    check_dataset(model, x, np.array([0, 9, 3]))
    with pytest.raises(DatasetError, match=r"mine: images have shape \(3, 8, 8\)"):
        check_dataset(model, x[:, 0], np.array([0, 1, 2]), name="mine")
    with pytest.raises(DatasetError, match="mine: 2 labels .* for 3 images"):
        check_dataset(model, x, np.array([0, 1]), name="mine")
    with pytest.raises(DatasetError, match=r"out of range \(max 10\); expected 0..9"):
        check_dataset(model, x, np.array([0, 1, 10]))
    with pytest.raises(DatasetError, match="must be floating point"):
        check_dataset(model, x.astype(np.int32), np.array([0, 1, 2]))

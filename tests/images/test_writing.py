"""sttn_sim.images.writing: arrays to an ImageFolder of PNGs and back."""

import numpy as np
import pytest
from PIL import Image

from sttn_sim.datasets import DatasetError
from sttn_sim.images import image_folder
from sttn_sim.images.writing import write_image_folder


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip(tmp_path, channels):
    rng = np.random.default_rng(channels)
    x = rng.random((12, channels, 5, 7)).astype(np.float32)
    y = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 0, 1])
    root = write_image_folder(tmp_path / "d", x, y, classes=["cat", "dog", "eel"])
    src = image_folder(root, preprocess="none", input_shape=(channels, 5, 7))
    assert src.classes == ("cat", "dog", "eel") and len(src) == 12
    # within a class the files keep the array order; classes come in name order
    order = np.concatenate([np.flatnonzero(y == c) for c in range(3)])
    assert src.labels.tolist() == y[order].tolist()
    assert [p.rsplit("/", 1)[1] for p in src.ids] == [f"img_{i:02d}.png" for i in order]
    for i, path in zip(order, src.ids):
        u8 = np.asarray(Image.open(path))
        assert u8.dtype == np.uint8 and Image.open(path).mode == ("L" if channels == 1 else "RGB")
        want = np.clip(np.rint(x[i] * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(u8.reshape(5, 7, channels).transpose(2, 0, 1), want)
    # read back with the none preprocessing: within half a grey level of the array
    assert np.max(np.abs(np.stack([src.load(k) for k in range(12)]) - x[order])) <= 0.5 / 255 + 1e-7


def test_bad_arrays(tmp_path):
    with pytest.raises(DatasetError, match="float array"):
        write_image_folder(tmp_path, np.zeros((2, 2, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match="labels must be 2"):
        write_image_folder(tmp_path, np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64))
    with pytest.raises(DatasetError, match="no class name"):
        write_image_folder(tmp_path, np.zeros((2, 1, 4, 4), np.float32), np.array([0, 2]), classes=["a", "b"])

"""sttn_sim.images.throughput: the generated folder and the table (no timing assertions)."""

import numpy as np
from PIL import Image

from sttn_sim.images import image_folder, make_jpeg_folder
from sttn_sim.images.throughput import decode_throughput


def test_make_jpeg_folder(tmp_path):
    root = make_jpeg_folder(tmp_path, 5, classes=2, seed=3)
    src = image_folder(root)
    assert len(src) == 5 and src.classes == ("class_0", "class_1") and src.labels.tolist() == [0, 0, 0, 1, 1]
    for path in src.ids:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and 224 <= min(img.size) and max(img.size) <= 330


def test_decode_throughput_table(tmp_path):
    table = decode_throughput(n_images=6, workers=(0, 1), batch_size=4, repeats=1)
    assert list(table.columns) == ["workers", "images", "seconds", "images_per_s", "first_batch_s",
                                   "steady_images_per_s"]
    assert table["workers"].tolist() == [0, 1] and table["images"].tolist() == [6, 6]
    # timings are whatever the machine gives: only their bookkeeping is checked
    assert np.isfinite(table["seconds"]).all() and np.allclose(table["images_per_s"], 6 / table["seconds"])
    assert np.isfinite(table["first_batch_s"]).all() and np.isfinite(table["steady_images_per_s"]).all()

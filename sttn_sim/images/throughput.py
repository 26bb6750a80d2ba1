"""How many images per second the decoding pipeline delivers, per worker count.

:func:`decode_throughput` streams a folder of JPEGs (by default one made by
:func:`make_jpeg_folder`: ImageNet-like sizes around 224-330 pixels) through
``source.batches(...)`` for each worker count and reports images/s, so that a bench can
set it beside the engine's images/s.  The time covers the whole stream, pool start-up
included (``first_batch_s`` is the wait for the first batch); ``steady_images_per_s``
counts only the images after the first batch, the rate a long evaluation sees.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .sources import image_folder

__all__ = ["make_jpeg_folder", "decode_throughput"]


def make_jpeg_folder(root, n_images: int = 64, *, classes: int = 2, seed: int = 0, quality: int = 90) -> Path:
    """Write ``n_images`` JPEGs as ``root/class_k/img_XXXX.jpg`` (an ImageFolder tree).

    Each image is W x H with W, H drawn from 224..330, a smooth colour gradient plus
    noise (so the JPEG decoder has real work), saved at ``quality``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        w, h = (int(v) for v in rng.integers(224, 331, size=2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255.0 / w, yy * 255.0 / h, (xx + yy) * 127.0 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 24, size=(h, w, 3)), 0, 255).astype(np.uint8)
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(folder / f"img_{i:04d}.jpg", quality=quality)
    return root


def _timed_stream(source, batch_size: int, workers: int) -> tuple[int, float, float, int]:
    """(images, seconds, seconds to the first batch, size of the first batch) of one stream."""
    start = time.perf_counter()
    first, first_size, count = None, 0, 0
    for batch in source.batches(batch_size, workers=workers):
        count += len(batch)
        if first is None:
            first, first_size = time.perf_counter() - start, len(batch)
    return count, time.perf_counter() - start, first, first_size


def decode_throughput(folder=None, *, n_images: int = 192, workers: Sequence[int] = (0, 1, 2), batch_size: int = 32,
                      preprocess="imagenet", repeats: int = 3) -> pd.DataFrame:
    """Images/s of ``image_folder(folder).batches(batch_size, workers=w)`` for each ``w``.

    Without ``folder`` a temporary :func:`make_jpeg_folder` of ``n_images`` is used.
    Each worker count streams the folder ``repeats`` times; the medians are reported
    (the machine may be shared).  Columns: ``workers``, ``images``, ``seconds``,
    ``images_per_s``, ``first_batch_s``, ``steady_images_per_s``.
    """
    with tempfile.TemporaryDirectory(prefix="sttn_decode_") as tmp:
        root = Path(folder) if folder is not None else make_jpeg_folder(Path(tmp) / "images", n_images)
        source = image_folder(root, preprocess=preprocess)
        rows = []
        for w in workers:
            runs = [_timed_stream(source, batch_size, int(w)) for _ in range(repeats)]
            count = runs[0][0]
            steady = [(n - k) / (sec - first) if n > k else float("nan") for n, sec, first, k in runs]
            seconds = float(np.median([r[1] for r in runs]))
            rows.append({"workers": int(w), "images": count, "seconds": seconds, "images_per_s": count / seconds,
                         "first_batch_s": float(np.median([r[2] for r in runs])),
                         "steady_images_per_s": float(np.median(steady))})
    return pd.DataFrame(rows)

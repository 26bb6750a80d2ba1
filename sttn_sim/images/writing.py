"""Arrays written out as an ImageFolder tree of PNG files (the other way round from
:func:`~sttn_sim.images.sources.image_folder`).

:func:`write_image_folder` turns (N, C, H, W) images in [0, 1] into
``root/<class>/<prefix><i>.png``: 8-bit grey (C = 1) or RGB (C = 3) pixels
``u8 = round(255·x)`` (clipped to 0..255), the image's position ``i`` zero-padded in
the name so that the folder order (names sorted) is the array order within a class.
Read back with the ``none`` preprocessing, a pixel is ``u8 / 255`` — within 1/510 of
the array value.  Each file is written atomically (:mod:`sttn_sim.io.atomic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets import DatasetError
from ..io.atomic import atomic_path, ensure_output_dir

__all__ = ["write_image_folder"]

_MODES = {1: "L", 3: "RGB"}


def write_image_folder(root, images: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None, *,
                       prefix: str = "img_") -> Path:
    """Write ``images`` (N, C, H, W) floats in [0, 1] with int ``labels`` (N,) as
    ``root/<classes[label]>/<prefix><i>.png``; ``classes`` defaults to ``"0"``,
    ``"1"``, ... (as many as the largest label + 1).  Returns ``root``."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1] not in _MODES or images.dtype.kind != "f":
        raise DatasetError(f"write_image_folder: images must be a float array (N, 1 or 3, H, W), got "
                           f"{images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise DatasetError(f"write_image_folder: labels must be {len(images)} non-negative integers, got "
                           f"{labels.dtype} {tuple(labels.shape)}")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(int(labels.max()) + 1)]
    if len(labels) and labels.max() >= len(names):
        raise DatasetError(f"write_image_folder: label {int(labels.max())} has no class name ({len(names)} given)")
    root = ensure_output_dir(root)
    width = len(str(max(len(images) - 1, 0)))
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    mode = _MODES[images.shape[1]]
    for i, (u8, label) in enumerate(zip(pixels, labels)):
        folder = ensure_output_dir(root / names[label])
        with atomic_path(folder / f"{prefix}{i:0{width}d}.png") as tmp:
            Image.fromarray(u8[:, :, 0] if mode == "L" else u8, mode).save(tmp, format="PNG")
    return root

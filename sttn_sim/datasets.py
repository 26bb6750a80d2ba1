"""Data shipped with the package, user-supplied arrays, and the embedded default model.

* :func:`digits` — scikit-learn's bundled handwritten digits (1797 images of 8x8,
  grey levels 0..16), shipped as ``sttn_sim/data/digits.npz`` (generated once by
  ``scripts/make_digits_npz.py``; no download, no scikit-learn at run time) with a fixed
  stratified split: 1437 train / 360 test (36 per digit).
* :func:`load_npz` — a user ``.npz`` with ``images`` and ``labels`` (and optionally a
  0/1 ``split``), validated with errors that name the file and the key.
* :func:`check_dataset` — arrays against a model's input shape and class count.
* :func:`default_model` — the trained default STTN ResNet shipped as
  ``sttn_sim/data/default_model.safetensors`` (see ``scripts/train_default_model.py``).

Images are returned NCHW float32 in [0, 1] (grey level / ``scale``); labels int64.
Nothing here uses pickle (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ShapeError, SttnError
from .io import load_checkpoint

__all__ = ["digits", "load_npz", "check_dataset", "model_classes", "split_arrays", "default_model", "data_path",
           "DIGITS_CLASSES", "DatasetError"]

DIGITS_CLASSES = 10


class DatasetError(ShapeError):
    """A dataset file or array is unusable (names the file and key)."""


def data_path(name: str) -> Path:
    """Path of a file shipped in ``sttn_sim/data``."""
    return Path(str(resources.files("sttn_sim") / "data" / name))


def _read_npz(path, required=("images", "labels")) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        # ValueError: an object array that would need pickle, or not an npz at all
        raise DatasetError(f"{path}: not a readable .npz of plain arrays ({type(exc).__name__}: {exc})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}; found {sorted(arrays)}; expected 'images' and 'labels'")
    return arrays


def _as_images(path, images: np.ndarray, scale: float | None) -> np.ndarray:
    where = f"{path}: key 'images'"
    if images.dtype.kind not in "uif" or images.dtype == np.bool_:
        raise DatasetError(f"{where}: expected a numeric array, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim != 4:
        raise DatasetError(f"{where}: expected shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0 or min(images.shape[1:]) < 1:
        raise DatasetError(f"{where}: empty array of shape {tuple(images.shape)}")
    x = images.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{where}: contains {int(np.sum(~np.isfinite(x)))} NaN or Inf values")
    if scale is None:
        scale = 255.0 if images.dtype == np.uint8 and x.max() > 16 else (16.0 if images.dtype.kind in "ui" else 1.0)
    return (x / float(scale)).astype(np.float32)


def _as_labels(path, labels: np.ndarray, n_images: int, num_classes: int | None, key="labels") -> np.ndarray:
    where = f"{path}: key {key!r}"
    if labels.ndim != 1:
        raise DatasetError(f"{where}: expected a 1-D array of class indices, got shape {tuple(labels.shape)}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DatasetError(f"{where}: float labels must be whole numbers")
    elif labels.dtype.kind not in "ui":
        raise DatasetError(f"{where}: expected integer class indices, got dtype {labels.dtype}")
    y = labels.astype(np.int64)
    if y.shape[0] != n_images:
        raise DatasetError(f"{path}: {y.shape[0]} labels ({key!r}) for {n_images} images ('images'): counts must match")
    if y.size and y.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {int(y.min())}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        bad = int(np.sum(y >= num_classes))
        raise DatasetError(f"{where}: {bad} label(s) out of range (max {int(y.max())}); expected 0..{num_classes - 1}")
    return y


def split_arrays(n: int, labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded stratified 0/1 split (1 = test) with ``round(test_fraction·count)`` per class."""
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction={test_fraction!r}: expected a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    split = np.zeros(n, np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * idx.size))
        if k:
            split[rng.choice(idx, size=k, replace=False)] = 1
    return split


def load_npz(path, *, num_classes: int | None = None, input_shape: tuple[int, ...] | None = None,
             scale: float | None = None, test_fraction: float = 0.2, seed: int = 0):
    """Load a user ``.npz`` and return ``(x_train, y_train, x_test, y_test)``.

    Keys: ``images`` (N, H, W) or (N, C, H, W), any numeric dtype; ``labels`` (N,)
    integer class indices; optional ``split`` (N,) with 0 = train, 1 = test (otherwise a
    stratified split with ``test_fraction`` and ``seed``).  Images are divided by
    ``scale`` (default: 255 for uint8 data above 16, 16 for other integer data — the
    digits' grey levels — and 1 for floats).  ``num_classes`` and ``input_shape`` (C, H, W)
    are checked when given.  Every problem raises :class:`DatasetError` naming the file
    and the key.
    """
    arrays = _read_npz(path)
    x = _as_images(path, arrays["images"], scale)
    y = _as_labels(path, arrays["labels"], x.shape[0], num_classes)
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise DatasetError(f"{path}: key 'images' has image shape {tuple(x.shape[1:])}, "
                           f"the model expects {tuple(input_shape)}")
    if "split" in arrays:
        split = arrays["split"]
        if split.shape != (x.shape[0],) or split.dtype.kind not in "uib" or not np.all((split == 0) | (split == 1)):
            raise DatasetError(f"{path}: key 'split' must be a ({x.shape[0]},) array of 0 (train) / 1 (test), "
                               f"got shape {tuple(split.shape)} dtype {split.dtype}")
        split = split.astype(np.uint8)
    else:
        split = split_arrays(x.shape[0], y, test_fraction, seed)
    train, test = split == 0, split == 1
    if not train.any() or not test.any():
        raise DatasetError(f"{path}: the split leaves an empty train or test set ({int(train.sum())} / {int(test.sum())})")
    return x[train], y[train], x[test], y[test]


def digits():
    """The shipped digits: ``(x_train, y_train, x_test, y_test)``.

    ``x`` are NCHW float32 (N, 1, 8, 8), grey level / 16 in [0, 1]; ``y`` int64 0..9.
    The split is fixed (stratified, 36 test images per digit): 1437 train, 360 test.
    """
    return load_npz(data_path("digits.npz"), num_classes=DIGITS_CLASSES, input_shape=(1, 8, 8), scale=16.0)


def check_dataset(model, x, y, *, name: str = "dataset") -> None:
    """Check ``x`` (N, *model.input_shape) float and ``y`` (N,) in range for ``model``.

    The class count is the output size of the model's last layer that has a weight.
    Raises :class:`DatasetError` naming ``name``.
    """
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DatasetError(f"{name}: images and labels must be numpy arrays, got "
                           f"{type(x).__name__} and {type(y).__name__}")
    want = tuple(model.input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise DatasetError(f"{name}: images have shape {tuple(x.shape)}, model {model.arch!r} expects "
                           f"(N, {', '.join(map(str, want))})")
    if x.dtype.kind != "f":
        raise DatasetError(f"{name}: images must be floating point, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{name}: images contain {int(np.sum(~np.isfinite(x)))} NaN or Inf values")
    classes = model_classes(model)
    _as_labels(name, np.asarray(y), x.shape[0], classes)


def model_classes(model) -> int | None:
    """The model's class count: the output size of its last conv/linear-like layer when
    that is a linear layer (else None)."""
    for layer in reversed(model.layers):
        if layer.kind in ("batchnorm", "prelu", "threshold"):
            continue
        w = next((layer.params[k] for k in ("weight", "weight1", "codes") if k in layer.params), None)
        if w is not None:
            return int(w.shape[0]) if w.ndim == 2 else None
    return None


def default_model():
    """The embedded default: a small official-style STTN ResNet trained on :func:`digits`.

    Returns the latent-form :class:`~sttn_sim.graph.Model`; ``model.metadata`` holds the
    training method, seed, test accuracy, epochs and the command that produced it.
    """

    path = data_path("default_model.safetensors")
    if not path.is_file():
        raise SttnError(f"{path}: the default model is missing from this installation "
                        f"(regenerate it with scripts/train_default_model.py)")
    return load_checkpoint(path)

"""Where images come from: an ImageFolder tree, a flat folder with a labels file, an
``.npz`` of arrays, or the shipped digits — all as one :class:`ImageSource`.

* :func:`image_folder` — ``root/<class>/<image>`` with torchvision ``ImageFolder``'s
  rules: the classes are the sub-folders of ``root`` (``os.scandir``, following
  symlinks, hidden ones included) sorted by name (Python string order); the samples
  of a class are every file under its folder (``os.walk(followlinks=True)``, nested
  folders included) whose name ends, case-insensitively, with one of
  :data:`IMAGE_EXTENSIONS`, walked folders sorted by path and files sorted by name
  within each; a class folder with no image is an error.  Sample ids are
  ``os.path.join(root, class, ...)``, the strings torchvision's ``samples`` hold.
* :func:`labelled_folder` — every image file under a folder (the ImageNet validation
  layout), sorted by relative path, with labels from a text file of ``name label`` or
  ``name,label`` lines (``#`` comments and blank lines allowed); labels are integers
  or names from ``classes``.  Images without a line and lines without an image are
  errors naming the files.
* :func:`npz_source` / :func:`digits_source` — arrays through
  :func:`sttn_sim.datasets.load_npz` / :func:`~sttn_sim.datasets.digits`, already in
  [0, 1]; only a normalisation (no resize or crop) can be applied to them.
* :func:`open_dataset` — picks one of the above from its argument.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets import DIGITS_CLASSES, DatasetError, digits, load_npz
from .batches import BatchStream
from .preprocess import Preprocess, decode_image, default_preprocess, parse_preprocess

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "FileSource", "ArraySource", "image_folder",
           "labelled_folder", "read_labels_file", "npz_source", "digits_source", "open_dataset"]

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_SHOWN = 5  # names listed in an error message before "... and N more"


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class ImageSource(ABC):
    """A dataset: ``len(src)`` samples with ``labels`` (int64), ``ids`` (file paths or
    ``file[i]`` names), ``classes`` (class names, index = label) and the
    :class:`~sttn_sim.images.preprocess.Preprocess` applied to each sample.

    ``image_shape`` is the (C, H, W) of every sample when it is known without decoding
    (None otherwise); ``load(i)`` gives sample ``i``; ``batches(...)`` streams them;
    ``subset(start, stop)`` is a contiguous part of it (a shard of an evaluation).
    """

    def __init__(self, *, name: str, labels: np.ndarray, ids: Sequence[str], classes: Sequence[str],
                 preprocess: Preprocess, input_shape: tuple[int, ...] | None):
        self.name = name
        self.labels = np.asarray(labels, np.int64)
        self.ids = tuple(ids)
        self.classes = tuple(classes)
        self.preprocess = preprocess
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        if self.input_shape is not None and len(self.input_shape) != 3:
            raise DatasetError(f"input_shape={input_shape!r}: expected (C, H, W)")
        if self.input_shape is not None and self.input_shape[0] != preprocess.channels:
            raise DatasetError(f"{name}: the model takes {self.input_shape[0]} channel(s), the preprocessing "
                               f"gives {preprocess.channels}")
        if len(self.labels) == 0:
            raise DatasetError(f"{name}: no samples")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} samples, {len(self.classes)} classes, "
                f"preprocess {self.preprocess.describe()!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) of every sample when known without decoding, else None."""

    @abstractmethod
    def _payloads_and_decoder(self):
        """(one payload per sample, a picklable ``decode(payload) -> (C, H, W) float32``)."""

    def subset(self, start: int, stop: int) -> "ImageSource":
        """The samples ``start .. stop - 1`` as a source of the same kind, classes and
        preprocessing (ids and labels kept; what a shard of an evaluation holds)."""
        if not 0 <= start < stop <= len(self):
            raise DatasetError(f"{self.name}: samples {start}..{stop - 1} are not within 0..{len(self) - 1}")
        return self._subset(start, stop)

    @abstractmethod
    def _subset(self, start: int, stop: int) -> "ImageSource":
        """:meth:`subset` without the range check."""

    def load(self, index: int) -> np.ndarray:
        """Sample ``index`` as a (C, H, W) float32 array."""
        payloads, decode = self._payloads_and_decoder()
        return decode(payloads[index])

    def batches(self, batch_size: int = 64, *, workers: int = 0, limit: int | None = None,
                skip_bad: bool = False, prefetch: int | None = None, chunk: int | None = None) -> BatchStream:
        """Batches of the first ``limit`` samples in order (see
        :class:`~sttn_sim.images.batches.BatchStream`)."""
        payloads, decode = self._payloads_and_decoder()
        return BatchStream(payloads=payloads, decode=decode, labels=self.labels, ids=self.ids,
                           batch_size=batch_size, workers=workers, limit=limit, skip_bad=skip_bad,
                           prefetch=prefetch, chunk=chunk)


class FileSource(ImageSource):
    """Image files decoded with Pillow (``ids`` are the paths)."""

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        c = self.preprocess.output_size
        return None if c is None else (self.preprocess.channels, c, c)

    def _payloads_and_decoder(self):
        return self.ids, functools.partial(decode_image, preprocess=self.preprocess, input_shape=self.input_shape)

    def _subset(self, start: int, stop: int) -> "FileSource":
        return FileSource(name=self.name, labels=self.labels[start:stop], ids=self.ids[start:stop],
                          classes=self.classes, preprocess=self.preprocess, input_shape=self.input_shape)


def _array_item(images: np.ndarray, preprocess: Preprocess, index: int) -> np.ndarray:
    x = images[index]
    if preprocess.mean is not None:
        mean = np.asarray(preprocess.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(preprocess.std, np.float32).reshape(-1, 1, 1)
        x = (x - mean) / std
    return np.ascontiguousarray(x, np.float32)


class ArraySource(ImageSource):
    """Images already decoded into an (N, C, H, W) float32 array in [0, 1]; only the
    normalisation of the preprocessing applies (``workers`` has nothing to do here and
    is ignored)."""

    def __init__(self, images: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        p = self.preprocess
        if p.resize is not None or p.crop is not None:
            raise DatasetError(f"{self.name}: arrays are used at their stored size ({images.shape[2]}x"
                               f"{images.shape[3]}); a resize or crop preprocess applies to image files only")
        if images.shape[1] != p.channels:
            raise DatasetError(f"{self.name}: images have {images.shape[1]} channel(s), the preprocessing "
                               f"expects {p.channels}")
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            raise DatasetError(f"{self.name}: images have shape {tuple(images.shape[1:])}, the model expects "
                               f"{self.input_shape}")
        self.images = images

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def _payloads_and_decoder(self):
        return range(len(self)), functools.partial(_array_item, self.images, self.preprocess)

    def _subset(self, start: int, stop: int) -> "ArraySource":
        return ArraySource(self.images[start:stop], name=self.name, labels=self.labels[start:stop],
                           ids=self.ids[start:stop], classes=self.classes, preprocess=self.preprocess,
                           input_shape=self.input_shape)

    def batches(self, batch_size: int = 64, *, workers: int = 0, **kwargs) -> BatchStream:
        return super().batches(batch_size, workers=0, **kwargs)


def _resolve_preprocess(preprocess, input_shape) -> Preprocess:
    if preprocess is None:
        return default_preprocess(input_shape)
    return parse_preprocess(preprocess, channels=3 if input_shape is None else int(input_shape[0]))


def _class_names(classes) -> list[str] | None:
    """``classes`` as a list of names: a sequence of str, or a path to a text file with
    one name per line."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read the class list ({type(exc).__name__}: {exc})") from None
        where = str(path)
    else:
        names, where = [str(c) for c in classes], "classes"
    if not names:
        raise DatasetError(f"{where}: the class list is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{where}: class name(s) listed twice: {_listing(dup)}")
    return names


def _check_class_count(where: str, found: int, num_classes: int | None, what: str) -> None:
    if num_classes is not None and found != num_classes:
        raise DatasetError(f"{where}: {found} {what}, expected {num_classes} (the model's class count)")


def image_folder(root, *, num_classes: int | None = None, preprocess=None,
                 input_shape: tuple[int, ...] | None = None) -> FileSource:
    """An ImageFolder tree ``root/<class>/<image>`` (torchvision's order; see the
    module docstring).  ``num_classes`` checks the number of class folders."""
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder")
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        loose = [n for n in sorted(os.listdir(root)) if _is_image_name(n)]
        hint = (f" (it holds {len(loose)} image file(s) directly: for a flat folder give a labels file)"
                if loose else "")
        raise DatasetError(f"{root}: no class folders; expected {root}/<class>/<image>{hint}")
    ids, labels, empty = [], [], []
    for label, name in enumerate(classes):
        found = [os.path.join(folder, f)
                 for folder, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True))
                 for f in sorted(files) if _is_image_name(f)]
        if not found:
            empty.append(name)
        ids += found
        labels += [label] * len(found)
    if empty:
        raise DatasetError(f"{root}: no image file ({', '.join(IMAGE_EXTENSIONS)}) in class folder(s) "
                           f"{_listing(empty)}")
    _check_class_count(root, len(classes), num_classes, "class folders")
    return FileSource(name=root, labels=np.array(labels, np.int64), ids=ids, classes=classes,
                      preprocess=_resolve_preprocess(preprocess, input_shape), input_shape=input_shape)


def read_labels_file(path, classes: Sequence[str] | None = None) -> dict[str, int]:
    """``{name: label}`` from a labels file of ``name label`` or ``name,label`` lines
    (whitespace or the last comma separates; names may contain spaces).  A label is an
    integer, or one of ``classes`` (mapped to its position).  Errors name the file and
    the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the labels file ({type(exc).__name__}: {exc})") from None
    index = None if classes is None else {c: i for i, c in enumerate(classes)}
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [s.strip() for s in (line.rsplit(",", 1) if "," in line else line.rsplit(None, 1))]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise DatasetError(f"{path}: line {number}: {raw!r} is not 'name label' or 'name,label'")
        name, label = parts
        if index is not None and label in index:
            value = index[label]
        else:
            try:
                value = int(label)
            except ValueError:
                expected = ("an integer" if index is None else
                            f"an integer or one of the {len(index)} class names")
                raise DatasetError(f"{path}: line {number}: label {label!r} is not {expected}"
                                   + (" (give the class names to map names)" if index is None else "")) from None
            if value < 0 or (index is not None and value >= len(index)):
                raise DatasetError(f"{path}: line {number}: label {value} out of range; expected "
                                   f"0..{len(index) - 1 if index is not None else 'N'}")
        if name in labels:
            raise DatasetError(f"{path}: line {number}: {name!r} is listed again (first on line {first_line[name]})")
        labels[name], first_line[name] = value, number
    if not labels:
        raise DatasetError(f"{path}: the labels file has no entries")
    return labels


def labelled_folder(images, labels_file, *, classes=None, num_classes: int | None = None, preprocess=None,
                    input_shape: tuple[int, ...] | None = None) -> FileSource:
    """Every image file under ``images`` (sorted by relative path, '/'-separated),
    labelled by ``labels_file`` (see :func:`read_labels_file`).  ``classes`` (names, or
    a text file of one name per line) maps name labels and gives the class names;
    otherwise the classes are ``"0" .. str(num_classes - 1)`` (``num_classes`` default:
    the largest label + 1)."""
    root = os.path.expanduser(str(images))
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder")
    names = _class_names(classes)
    table = read_labels_file(labels_file, names)
    found = sorted(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
                   for folder, _, files in os.walk(root, followlinks=True)
                   for f in files if _is_image_name(f))
    if not found:
        raise DatasetError(f"{root}: no image file ({', '.join(IMAGE_EXTENSIONS)})")
    unlabelled = [n for n in found if n not in table]
    if unlabelled:
        raise DatasetError(f"{labels_file}: no label for {len(unlabelled)} image(s) in {root}: {_listing(unlabelled)}")
    present = set(found)
    extra = [n for n in table if n not in present]
    if extra:
        what = "entry names a file" if len(extra) == 1 else "entries name files"
        raise DatasetError(f"{labels_file}: {len(extra)} {what} not in {root}: {_listing(extra)}")
    labels = np.array([table[n] for n in found], np.int64)
    if names is not None:
        _check_class_count(str(labels_file), len(names), num_classes, "class names")
    else:
        top = int(labels.max()) + 1
        if num_classes is not None and top > num_classes:
            bad = [n for n in found if table[n] >= num_classes]
            raise DatasetError(f"{labels_file}: label(s) >= {num_classes} (the model's class count) for "
                               f"{_listing(bad)}")
        names = [str(i) for i in range(num_classes if num_classes is not None else top)]
    return FileSource(name=root, labels=labels, ids=[os.path.join(root, n) for n in found], classes=names,
                      preprocess=_resolve_preprocess(preprocess, input_shape), input_shape=input_shape)


_PARTS = ("test", "train", "all")


def _array_source(name, parts, part, classes, preprocess, input_shape) -> ArraySource:
    x_tr, y_tr, x_te, y_te = parts
    if part not in _PARTS:
        raise DatasetError(f"part={part!r}: expected one of {list(_PARTS)}")
    chosen = {"test": [("test", x_te, y_te)], "train": [("train", x_tr, y_tr)],
              "all": [("train", x_tr, y_tr), ("test", x_te, y_te)]}[part]
    x = np.concatenate([c[1] for c in chosen])
    y = np.concatenate([c[2] for c in chosen])
    ids = [f"{name}:{tag}[{i}]" for tag, xs, _ in chosen for i in range(len(xs))]
    if preprocess is None:
        p = Preprocess(channels=int(x.shape[1]))
    else:
        p = parse_preprocess(preprocess, channels=int(x.shape[1]))
    return ArraySource(x, name=f"{name}:{part}", labels=y, ids=ids, classes=classes, preprocess=p,
                       input_shape=input_shape)


def npz_source(path, *, part: str = "test", num_classes: int | None = None, preprocess=None,
               input_shape: tuple[int, ...] | None = None) -> ArraySource:
    """A user ``.npz`` (:func:`sttn_sim.datasets.load_npz`: its ``split`` key, or the
    default stratified split): ``part`` = ``test``, ``train`` or ``all`` (train then
    test).  Ids are ``path:part[i]`` (the i-th sample of that part)."""
    parts = load_npz(path, num_classes=num_classes, input_shape=input_shape)
    top = num_classes if num_classes is not None else int(max(parts[1].max(), parts[3].max())) + 1
    return _array_source(str(path), parts, part, [str(i) for i in range(top)], preprocess, input_shape)


def digits_source(*, part: str = "test", preprocess=None, input_shape: tuple[int, ...] | None = None) -> ArraySource:
    """The shipped digits (:func:`sttn_sim.datasets.digits`), (1, 8, 8) in [0, 1]."""
    return _array_source("digits", digits(), part, [str(i) for i in range(DIGITS_CLASSES)], preprocess,
                         input_shape)


def open_dataset(source, *, labels=None, classes=None, num_classes: int | None = None, preprocess=None,
                 input_shape: tuple[int, ...] | None = None, part: str = "test") -> ImageSource:
    """An :class:`ImageSource` from ``source``:

    * ``"digits"`` -> :func:`digits_source`;
    * a ``.npz`` file -> :func:`npz_source` (``part``);
    * a folder with ``labels`` (a labels file) -> :func:`labelled_folder`;
    * a folder -> :func:`image_folder`.

    ``preprocess``: a :class:`Preprocess`, a spec string (``"imagenet"``, ``"none"``,
    ``"resize=36,crop=32"``...) or None for :func:`default_preprocess` of
    ``input_shape`` (files) / the arrays as stored (npz, digits).  ``input_shape``
    (C, H, W) and ``num_classes`` are the model's, checked when given.
    """
    if isinstance(source, str) and source == "digits":
        if labels is not None or classes is not None:
            raise DatasetError("digits: labels and classes are built in; do not pass labels= or classes=")
        src = digits_source(part=part, preprocess=preprocess, input_shape=input_shape)
        _check_class_count("digits", src.num_classes, num_classes, "classes")
        return src
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        if labels is not None:
            return labelled_folder(path, labels, classes=classes, num_classes=num_classes, preprocess=preprocess,
                                   input_shape=input_shape)
        if classes is not None:
            raise DatasetError(f"{path}: classes= applies to a labels file; an ImageFolder tree takes its "
                               f"classes from its folder names")
        return image_folder(path, num_classes=num_classes, preprocess=preprocess, input_shape=input_shape)
    if path.suffix.lower() == ".npz":
        if labels is not None or classes is not None:
            raise DatasetError(f"{path}: an .npz holds its own labels; do not pass labels= or classes=")
        return npz_source(path, part=part, num_classes=num_classes, preprocess=preprocess, input_shape=input_shape)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder (expected 'digits', an .npz file or an image folder)")
    raise DatasetError(f"{path}: not a folder or an .npz file (expected 'digits', an .npz file or an image folder)")

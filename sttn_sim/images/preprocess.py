"""Image preprocessing exactly as torchvision's PIL path computes it.

A :class:`Preprocess` turns one image file into a CHW float32 array in five steps,
each the same Pillow call or float32 operation that torchvision (0.29) performs for
``ImageFolder(root, transform=Compose([Resize(r, BICUBIC), CenterCrop(c), ToTensor(),
Normalize(mean, std)]))``:

1. **Load** (torchvision's ``pil_loader``): ``Image.open(f).convert("RGB")``, so
   grayscale, palette, CMYK and RGBA files become RGB (alpha is dropped, not
   composited; EXIF orientation is not applied).  One-channel models then take
   ``.convert("L")`` (``transforms.Grayscale(1)``: L = (19595 R + 38470 G + 7471 B
   + 2^15) >> 16, Pillow's ITU-R 601-2 luma).
2. **Resize** (``transforms.Resize(r, interpolation=BICUBIC)``, torchvision's
   ``_compute_resized_output_size``): short side -> r, long side ->
   ``int(r * long / short)`` (truncated); nothing happens when the size is already
   right, otherwise ``img.resize((w, h), BICUBIC)`` with Pillow's defaults
   (no ``box``, no ``reducing_gap``; Pillow always antialiases, which is what
   torchvision does on PIL images whatever its ``antialias`` argument says).
3. **Centre crop** (``transforms.CenterCrop(c)``): offsets
   ``top = int(round((h - c) / 2.0))``, ``left = int(round((w - c) / 2.0))`` (Python's
   round: halves go to the even integer); a side shorter than c is zero-padded first
   with ``(c - h) // 2`` before and ``(c - h + 1) // 2`` after, as torchvision pads.
4. **ToTensor**: uint8 HWC -> CHW, ``x = float32(u8) / float32(255)`` (a correctly
   rounded float32 division, as ``tensor.float().div(255)`` is).
5. **Normalize**: ``x = (x - float32(mean_c)) / float32(std_c)``, both steps in float32
   (``tensor.sub_(mean).div_(std)``).

The same operations in the same order give bit-identical arrays (checked against
torchvision's own output in ``tests/images/test_preprocess.py``).

Presets (:data:`PRESETS`): ``imagenet`` = the official STTN evaluation (resize 256,
crop 224, ImageNet mean/std); ``none`` = the image as it is, scaled to [0, 1] (it must
then already have the model's size).  A spec string adds ``key=value`` overrides,
e.g. ``"imagenet,resize=292,crop=256"``, ``"resize=36,crop=32,normalize=none"``
(overrides start from ``imagenet`` when no preset is named).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..datasets import DatasetError

__all__ = ["Preprocess", "PRESETS", "IMAGENET_MEAN", "IMAGENET_STD", "parse_preprocess",
           "default_preprocess", "resized_size", "crop_box", "load_image", "preprocess_image",
           "decode_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# what Pillow raises for a file it cannot identify or decode (truncated data, broken
# chunks, bad headers, absurd sizes)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)


@dataclass(frozen=True)
class Preprocess:
    """What is done to each image (see the module docstring for the exact steps).

    ``resize``: target short side (BICUBIC) or None; ``crop``: square centre crop or
    None; ``mean``/``std``: per-channel normalisation or None (then x stays in [0, 1]);
    ``channels``: 3 (RGB) or 1 (L).
    """

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3

    def __post_init__(self):
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DatasetError(f"preprocess {name}={v!r}: expected a positive integer or None")
        if self.channels not in (1, 3):
            raise DatasetError(f"preprocess channels={self.channels!r}: expected 1 (grayscale) or 3 (RGB)")
        if (self.mean is None) != (self.std is None):
            raise DatasetError("preprocess: give both mean and std, or neither")
        if self.mean is not None:
            if len(self.mean) != self.channels or len(self.std) != self.channels:
                raise DatasetError(f"preprocess: mean {self.mean} and std {self.std} need {self.channels} value(s), "
                                   f"one per channel (use normalize=none for a {self.channels}-channel model "
                                   f"without its own statistics)")
            if any(float(s) == 0.0 for s in self.std):
                raise DatasetError(f"preprocess: std {self.std} contains 0")

    @property
    def output_size(self) -> int | None:
        """The (square) output side when it is fixed by a crop, else None."""
        return self.crop

    def describe(self) -> str:
        """A spec string that :func:`parse_preprocess` turns back into this object
        (when the normalisation is ImageNet's or none)."""
        parts = [f"resize={self.resize or 'none'}", f"crop={self.crop or 'none'}"]
        if self.mean is None:
            parts.append("normalize=none")
        elif (tuple(self.mean), tuple(self.std)) == (IMAGENET_MEAN, IMAGENET_STD):
            parts.append("normalize=imagenet")
        else:
            parts.append(f"mean={self.mean},std={self.std}")
        return ",".join(parts) + ("" if self.channels == 3 else ",channels=1")


PRESETS = {
    "imagenet": Preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "none": Preprocess(),
}


def parse_preprocess(spec: str | Preprocess, *, channels: int = 3) -> Preprocess:
    """A :class:`Preprocess` from a spec string: ``preset[,key=value...]`` (a
    :class:`Preprocess` is returned as it is).

    Presets: ``imagenet``, ``none``.  Keys: ``resize=N|none``, ``crop=N|none``,
    ``normalize=imagenet|none``.  Overrides without a preset start from ``imagenet``.
    ``channels`` (the model's) gives 1 -> grayscale; a 1-channel ``imagenet`` drops the
    3-channel normalisation only when ``normalize=none`` is said, else it is an error.
    """
    if isinstance(spec, Preprocess):
        return spec  # taken as given: a channel mismatch with the model is the caller's to report
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"preprocess {spec!r}: expected a spec string such as 'imagenet', 'none' or "
                           f"'resize=256,crop=224'")
    items = [s.strip() for s in spec.split(",") if s.strip()]
    base = "imagenet"
    if "=" not in items[0]:
        base = items.pop(0).lower()
        if base not in PRESETS:
            raise DatasetError(f"preprocess {spec!r}: unknown preset {base!r}; expected one of {sorted(PRESETS)}")
    p = PRESETS[base]
    fields = {"resize": p.resize, "crop": p.crop, "mean": p.mean, "std": p.std}
    for item in items:
        key, sep, value = (s.strip().lower() for s in item.partition("="))
        if not sep:
            raise DatasetError(f"preprocess {spec!r}: {item!r} is not key=value (the preset comes first)")
        if key in ("resize", "crop"):
            if value == "none":
                fields[key] = None
            elif value.isdigit() and int(value) > 0:
                fields[key] = int(value)
            else:
                raise DatasetError(f"preprocess {spec!r}: {key}={value!r}: expected a positive integer or none")
        elif key == "normalize":
            if value not in ("imagenet", "none"):
                raise DatasetError(f"preprocess {spec!r}: normalize={value!r}: expected imagenet or none")
            fields["mean"], fields["std"] = (IMAGENET_MEAN, IMAGENET_STD) if value == "imagenet" else (None, None)
        else:
            raise DatasetError(f"preprocess {spec!r}: unknown key {key!r}; expected resize, crop or normalize")
    return Preprocess(channels=channels, **fields)


def default_preprocess(input_shape: tuple[int, ...] | None) -> Preprocess:
    """The preset for a model input shape (C, H, W): the official ImageNet evaluation
    for (3, 224, 224) or no shape at all, otherwise ``none`` with the model's channels
    (images must then already have the model's size)."""
    if input_shape is None or tuple(input_shape) == (3, 224, 224):
        return PRESETS["imagenet"]
    return Preprocess(channels=int(input_shape[0]))


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) after ``Resize(short)``: short side -> ``short``, long side ->
    ``int(short * long / short_side)`` (torchvision's ``_compute_resized_output_size``)."""
    small, large = (width, height) if width <= height else (height, width)
    new_small, new_large = short, int(short * large / small)
    return (new_small, new_large) if width <= height else (new_large, new_small)


def _crop_offset(size: int, crop: int) -> int:
    # torchvision: zero-pad (crop - size) // 2 before when too small, else round half-even
    return -((crop - size) // 2) if crop > size else int(round((size - crop) / 2.0))


def crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """Pillow box (left, top, right, bottom) of ``CenterCrop(crop)``; negative or
    too-large coordinates are the zero padding torchvision adds first."""
    left, top = _crop_offset(width, crop), _crop_offset(height, crop)
    return left, top, left + crop, top + crop


def load_image(path, channels: int = 3) -> Image.Image:
    """Open ``path`` as torchvision's ``pil_loader`` does (``convert("RGB")``), then
    ``convert("L")`` for one channel.  A file Pillow cannot read raises
    :class:`DatasetError` naming it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img = img.convert("RGB")  # decodes the whole file
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not an image file Pillow can identify") from None
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{path}: truncated or unreadable image ({type(exc).__name__}: {exc})") from None
    return img.convert("L") if channels == 1 else img


def preprocess_image(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Steps 2-5 of the module docstring on a loaded RGB/L image: CHW float32."""
    if p.resize is not None:
        size = resized_size(img.width, img.height, p.resize)
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC)
    if p.crop is not None and img.size != (p.crop, p.crop):
        img = img.crop(crop_box(img.width, img.height, p.crop))  # Pillow fills outside with 0
    u8 = np.asarray(img, dtype=np.uint8)
    if u8.ndim == 2:
        u8 = u8[:, :, None]
    x = u8.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if p.mean is not None:
        mean = np.asarray(p.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(p.std, np.float32).reshape(-1, 1, 1)
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_image(path, preprocess: Preprocess, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load and preprocess one file: a (C, H, W) float32 array.  With ``input_shape``
    the result must have that shape (an error names the file and both shapes)."""
    x = preprocess_image(load_image(path, preprocess.channels), preprocess)
    if input_shape is not None and tuple(x.shape) != tuple(input_shape):
        how = ("the preset 'none' uses images as they are; give a resize/crop preprocess"
               if preprocess.crop is None else f"preprocess {preprocess.describe()}")
        raise DatasetError(f"{path}: preprocessed image has shape {tuple(x.shape)}, the model expects "
                           f"{tuple(input_shape)} ({how})")
    return x

"""The command-line options that name a dataset, shared by ``sttn evaluate``,
``sttn verify --data`` and ``sttn figures --data``.

:func:`add_data_arguments` adds ``--data`` (an ImageFolder tree, a flat folder with
``--labels``, an ``.npz``, or ``digits``), ``--labels``, ``--classes``,
``--preprocess``, ``--part`` and ``--limit``; :func:`open_data` opens the source for
a model (checked against its input shape and class count) with
:func:`sttn_sim.images.open_dataset`.
"""

from __future__ import annotations

import argparse

from .cli import bounded_int
from .datasets import model_classes
from .graph import Model
from .images import ImageSource, open_dataset

__all__ = ["MAX_IMAGES", "add_data_arguments", "open_data"]

#: largest --limit
MAX_IMAGES = 100_000_000


def add_data_arguments(p: argparse.ArgumentParser, *, required: bool = False, limit_default: int | None = None,
                       limit_help: str = "only the first N images (default: all)") -> argparse.ArgumentParser:
    """Add the dataset options to ``p`` (returned)."""
    p.add_argument("--data", required=required, metavar="DIR|FILE.npz|digits",
                   help="images: an ImageFolder tree DIR/<class>/<image> (classes sorted by name, as torchvision "
                        "does), a flat DIR of images with --labels, an .npz with 'images' and 'labels', or "
                        "'digits' (the shipped digits)")
    p.add_argument("--labels", metavar="FILE",
                   help="labels of a flat image folder: lines 'name label' or 'name,label' (a label is a class "
                        "index, or a name from --classes)")
    p.add_argument("--classes", metavar="FILE", help="class names, one per line, for --labels")
    p.add_argument("--preprocess", metavar="SPEC",
                   help="image preprocessing: 'imagenet' (the official STTN evaluation: RGB, short side to 256 "
                        "bicubic, centre crop 224, ImageNet mean/std; the default for 224-pixel RGB models), "
                        "'none' (images as they are, in [0, 1]; the default for other models), or overrides "
                        "such as 'resize=292,crop=256' or 'imagenet,normalize=none'")
    p.add_argument("--part", choices=("test", "train", "all"), default="test",
                   help="for an .npz or digits: which split (default test)")
    p.add_argument("--limit", type=bounded_int(1, MAX_IMAGES), default=limit_default, metavar="N", help=limit_help)
    return p


def open_data(args: argparse.Namespace, model: Model) -> ImageSource:
    """The source the options of ``args`` name, for ``model``."""
    return open_dataset(args.data, labels=args.labels, classes=args.classes, num_classes=model_classes(model),
                        preprocess=args.preprocess, input_shape=tuple(model.input_shape), part=args.part)

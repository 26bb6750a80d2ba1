"""Real image datasets: folders of image files (and ``.npz`` arrays) as streams of
NCHW float32 batches, preprocessed exactly as torchvision's PIL path does it.

Sources (:mod:`.sources`) — every one an :class:`ImageSource` with ``len``,
``classes``, ``labels`` (int64), ``ids`` (file paths), ``image_shape`` and
``batches(...)``:

* ``image_folder(root)`` — ``root/<class>/<image>``, classes and order as torchvision's
  ``ImageFolder``;
* ``labelled_folder(images, labels_file, classes=...)`` — a flat folder (the ImageNet
  validation layout) with ``name label`` / ``name,label`` lines;
* ``npz_source(path, part=...)``, ``digits_source(part=...)`` — arrays;
* ``open_dataset(source, ...)`` — picks one of them from ``source``
  (``"digits"``, ``FILE.npz``, ``DIR`` [+ ``labels=FILE``]).

Preprocessing (:mod:`.preprocess`): :class:`Preprocess` (resize short side BICUBIC,
centre crop, /255, normalise), presets ``imagenet`` (the official STTN evaluation:
256 / 224 / ImageNet mean and std, the default for 224-pixel RGB models) and ``none``
(the image as is, in [0, 1]); spec strings such as ``"imagenet,crop=192"``,
``"resize=36,crop=32,normalize=none"``; one-channel models get ``convert("L")``.

Streaming (:mod:`.batches`): ``source.batches(batch_size, workers=N, limit=K,
skip_bad=False)`` is a :class:`BatchStream` of :class:`Batch` (``images``, ``labels``,
``ids``, ``indices``); decoding runs in N worker processes (0 = in this process),
results in order and identical for every N.  Bad files raise
:class:`~sttn_sim.datasets.DatasetError` naming the file, or with ``skip_bad=True``
are listed in ``stream.skipped``.

Throughput (:mod:`.throughput`): ``decode_throughput(workers=(0, 1, 2))`` -> a
DataFrame of decode images/s.

Example::

    from sttn_sim.images import open_dataset

    val = open_dataset("/data/imagenet/val", labels="/data/val_labels.txt",
                       classes="/data/synsets.txt", num_classes=1000,
                       input_shape=(3, 224, 224))          # preprocess: imagenet
    stream = val.batches(64, workers=2, limit=5000, skip_bad=True)
    for batch in stream:
        logits = engine.run(batch.images)                  # (64, 1000)
        correct += int((logits.argmax(1) == batch.labels).sum())
    print(len(stream.skipped), "unreadable files skipped")
"""

from .batches import Batch, BatchStream, SkippedImage
from .preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    Preprocess,
    decode_image,
    default_preprocess,
    parse_preprocess,
)
from .sources import (
    IMAGE_EXTENSIONS,
    ArraySource,
    FileSource,
    ImageSource,
    digits_source,
    image_folder,
    labelled_folder,
    npz_source,
    open_dataset,
    read_labels_file,
)
from .throughput import decode_throughput, make_jpeg_folder

__all__ = ["Batch", "BatchStream", "SkippedImage", "IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "Preprocess",
           "decode_image", "default_preprocess", "parse_preprocess", "IMAGE_EXTENSIONS", "ArraySource",
           "FileSource", "ImageSource", "digits_source", "image_folder", "labelled_folder", "npz_source",
           "open_dataset", "read_labels_file", "decode_throughput", "make_jpeg_folder"]

"""The pieces of a run: shards, options, the checked sample, and the work on one part.

:func:`evaluate_part` streams one contiguous part of a source (the whole dataset in
one process, or a shard on a Dask worker) through the packed engine in batches and
returns a :class:`PartResult`: the :class:`~sttn_sim.evaluation.tally.Tally`, the
:class:`~sttn_sim.stats.ActivationRecorder` (with ``record``, filled by the engine's
fused threshold kernels), and the seconds spent in the engine and in the check.

Checked images: :func:`check_sample` picks ``size`` image positions of the run
(seeded, sorted) before anything is decoded, so every way of running checks the same
images; each batch's checked images go through :func:`sttn_sim.check.check_engine`
(at most :attr:`RunOptions.check_group` at a time: the float64 reference keeps every
layer's output).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..check import check_engine
from ..errors import SttnError
from ..images import ImageSource, SkippedImage
from ..stats import ActivationRecorder
from .model import LoadedModel
from .tally import Tally

__all__ = ["EvaluationError", "Shard", "RunOptions", "PartResult", "plan_shards", "default_shard_size",
           "check_sample", "evaluate_part", "DEFAULT_BATCH", "SHARDS_PER_THREAD", "MAX_SHARD_BATCHES"]

DEFAULT_BATCH = 32
#: shards per Dask worker thread at least (smaller shards balance better and lose less
#: to a dead worker), and at most this many batches per shard
SHARDS_PER_THREAD = 4
MAX_SHARD_BATCHES = 8


class EvaluationError(SttnError):
    """An evaluation cannot be run as asked (names the option or address)."""


@dataclass(frozen=True)
class Shard:
    """Images ``start .. stop - 1`` of the run (positions in the source)."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def describe(self, ids) -> str:
        return (f"shard {self.index} (images {self.start}-{self.stop - 1}: "
                f"{ids[self.start]} .. {ids[self.stop - 1]})")


@dataclass(frozen=True)
class RunOptions:
    """What each part of a run does: batch size, activation recording, skipping of
    unreadable images, the k of top-k, the largest group of images checked at once."""

    batch_size: int = DEFAULT_BATCH
    record: bool = False
    skip_bad: bool = False
    k: int = 5
    check_group: int = 4


@dataclass
class PartResult:
    """What one part of a run produced (adds up with ``+``, in order)."""

    tally: Tally
    recorder: ActivationRecorder | None = None
    engine_seconds: float = 0.0
    check_seconds: float = 0.0

    def __add__(self, other: "PartResult") -> "PartResult":
        if (self.recorder is None) != (other.recorder is None):
            raise SttnError("cannot merge a recorded part with an unrecorded one")
        recorder = None if self.recorder is None else self.recorder + other.recorder
        return PartResult(self.tally + other.tally, recorder, self.engine_seconds + other.engine_seconds,
                          self.check_seconds + other.check_seconds)


def plan_shards(n_images: int, shard_size: int) -> list[Shard]:
    """``[0, n_images)`` cut into consecutive shards of ``shard_size`` (the last shorter)."""
    if n_images < 1 or shard_size < 1:
        raise EvaluationError(f"plan_shards: {n_images} images in shards of {shard_size}: expected positive sizes")
    return [Shard(i, start, min(start + shard_size, n_images))
            for i, start in enumerate(range(0, n_images, shard_size))]


def default_shard_size(n_images: int, batch_size: int, threads: int) -> int:
    """Whole batches, at least ``SHARDS_PER_THREAD`` shards per worker thread when the
    run is large enough, at most ``MAX_SHARD_BATCHES`` batches per shard."""
    per_shard = -(-n_images // max(1, SHARDS_PER_THREAD * threads))
    batches = min(MAX_SHARD_BATCHES, max(1, -(-per_shard // batch_size)))
    return batches * batch_size


def check_sample(n_images: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``min(size, n_images)`` images drawn without replacement
    from ``0 .. n_images - 1`` (numpy ``default_rng(seed)``)."""
    size = min(int(size), int(n_images))
    if size <= 0:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(seed).choice(n_images, size=size, replace=False)).astype(np.int64)


def evaluate_part(loaded: LoadedModel, part: ImageSource, offset: int, check: np.ndarray, options: RunOptions, *,
                  decode_workers: int = 0, progress: Callable[[int], None] | None = None) -> PartResult:
    """Evaluate every image of ``part`` (images ``offset ..`` of the run); ``check``:
    positions in the run of the images to check against the reference.  ``progress(n)``
    is called after each batch with the number of images done (or skipped) since."""
    engine, folded = loaded.engine, loaded.folded
    tally = Tally(len(part.classes), options.k)
    recorder = ActivationRecorder() if options.record else None
    check = np.asarray(check, np.int64)
    engine_s = check_s = 0.0
    stream = part.batches(options.batch_size, workers=decode_workers, skip_bad=options.skip_bad)
    done = 0
    for batch in stream:
        start = time.perf_counter()
        logits = engine.run(batch.images, recorder=recorder)
        engine_s += time.perf_counter() - start
        tally.add_logits(logits, batch.labels)
        chosen = np.flatnonzero(np.isin(batch.indices + offset, check))
        start = time.perf_counter()
        for g in range(0, len(chosen), options.check_group):
            group = chosen[g:g + options.check_group]
            report = check_engine(folded, batch.images[group], engine)
            tally.add_check(report, [batch.ids[j] for j in group])
        check_s += time.perf_counter() - start
        if progress is not None:
            now = stream.images_yielded + len(stream.skipped)
            progress(now - done)
            done = now
    tally.skipped = [SkippedImage(s.index + offset, s.id, s.reason) for s in stream.skipped]
    if progress is not None and len(part) > done:
        progress(len(part) - done)  # skipped images after the last batch
    return PartResult(tally, recorder, engine_s, check_s)

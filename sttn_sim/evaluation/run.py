"""Evaluating images: the work on one part of a dataset, and the run over all of it.

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

:func:`evaluate` plans the run and executes it in this process or on Dask
(:mod:`.distributed`): the first ``limit`` images, cut into :class:`Shard` s of whole
batches, merged in shard order.  The engine computes each image on its own (its
logits do not depend on the other images of a batch, which the tests check), so the
counts and every integer statistic of a merged run are ``==`` to those of one process;
only the float sums of the activation moments change with the order of addition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..check import check_engine
from ..errors import SttnError
from ..images import ImageSource, SkippedImage
from ..stats import ActivationRecorder
from .model import LoadedModel, ModelSpec, loaded_model
from .report import Evaluation
from .tally import Tally

__all__ = ["Shard", "RunOptions", "PartResult", "plan_shards", "check_sample", "evaluate_part", "evaluate",
           "DEFAULT_CHECK", "DEFAULT_BATCH"]

#: images checked against the float64 reference by default (about 3 s each at 224 pixels)
DEFAULT_CHECK = 32
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


@dataclass
class _Progress:
    """A tqdm bar over images (with ETA) on stderr, or nothing.  The bar appears at
    :meth:`start` (when the work starts: after a Dask cluster answered), so that an
    error before it is the only line printed."""

    total: int
    enabled: bool
    bar: object = field(default=None, init=False)

    def __enter__(self):
        return self

    def start(self) -> None:
        if self.enabled and self.bar is None:
            from tqdm import tqdm  # noqa: PLC0415  (plain text bar; only when shown)
            self.bar = tqdm(total=self.total, unit="img", desc="evaluate", dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        self.start()
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def evaluate(spec: ModelSpec, source: ImageSource, *, options: RunOptions = RunOptions(), limit: int | None = None,
             check: int = DEFAULT_CHECK, seed: int = 0, decode_workers: int = 0, workers: int | None = None,
             scheduler: str | None = None, shard_size: int | None = None, connect_timeout: float = 10.0,
             progress: bool = False) -> Evaluation:
    """Evaluate the model of ``spec`` on the first ``limit`` images of ``source``.

    In this process (``decode_workers`` processes decode the images), or on Dask:
    ``workers=N`` starts a LocalCluster of N single-threaded worker processes,
    ``scheduler="tcp://host:port"`` uses a running cluster (it must answer within
    ``connect_timeout`` seconds).  ``check`` images (:func:`check_sample` with ``seed``)
    are checked against the float64 reference.  ``progress`` shows a bar on stderr.
    """
    if workers is not None and scheduler is not None:
        raise EvaluationError("give workers (a LocalCluster) or scheduler (a running cluster), not both")
    if workers is not None and workers < 1:
        raise EvaluationError(f"workers={workers}: expected at least 1 worker process")
    loaded = loaded_model(spec)
    n = len(source) if limit is None else min(int(limit), len(source))
    if n < 1:
        raise EvaluationError(f"limit={limit}: expected at least 1 image")
    sample = check_sample(n, check, seed)
    start = time.perf_counter()
    with _Progress(n, progress) as bar:
        if workers is None and scheduler is None:
            part = source if n == len(source) else source.subset(0, n)
            bar.start()
            result = evaluate_part(loaded, part, 0, sample, options, decode_workers=decode_workers, progress=bar)
            failed, mode, threads, setup = [], f"1 process, {decode_workers} decoding worker process(es)", 1, 0.0
        else:
            from .distributed import evaluate_on_dask  # noqa: PLC0415  (dask only when asked for)
            result, failed, mode, threads, setup = evaluate_on_dask(
                spec, source, n, sample, options, workers=workers, scheduler=scheduler, shard_size=shard_size,
                connect_timeout=connect_timeout, progress=bar)
    wall = time.perf_counter() - start
    return Evaluation(spec=spec, source=source, loaded=loaded, requested=n, result=result, failed=failed,
                      mode=mode, threads=threads, wall_seconds=wall, setup_seconds=setup)

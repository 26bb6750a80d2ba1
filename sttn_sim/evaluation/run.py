"""A whole evaluation: :func:`evaluate`.

:func:`evaluate` plans the run and executes it in this process or on Dask
(:mod:`.distributed`): the first ``limit`` images, cut into :class:`Shard` s of whole
batches, merged in shard order.  The engine computes each image on its own (its
logits do not depend on the other images of a batch, which the tests check), so the
counts and every integer statistic of a merged run are ``==`` to those of one process;
only the float sums of the activation moments change with the order of addition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..images import ImageSource
from .model import ModelSpec, loaded_model
from .parts import EvaluationError, RunOptions, check_sample, evaluate_part
from .report import Evaluation

__all__ = ["evaluate", "DEFAULT_CHECK"]

#: images checked against the float64 reference by default (about 3 s each at 224 pixels)
DEFAULT_CHECK = 32


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

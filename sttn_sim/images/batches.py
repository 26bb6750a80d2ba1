"""Streaming batches with decoding in worker processes.

:class:`BatchStream` walks the first ``limit`` samples of a source in order, decodes
them (in this process for ``workers=0``, else in a pool of ``workers`` processes that
each decode ``chunk`` samples per task, with at most ``prefetch`` tasks in flight so
memory stays bounded) and yields :class:`Batch` es of ``batch_size`` samples (the last
may be shorter).  Results come back in sample order, so the batches are identical for
every worker count.

Workers start with the ``forkserver`` method where it exists (else ``spawn``): a
forked copy of a process that runs Numba's thread pool is not safe.  The pool lives as
long as one iteration; starting it costs a fraction of a second (the first pool of a
process also starts the fork server, which imports sttn_sim once).

A sample that cannot be decoded raises :class:`~sttn_sim.datasets.DatasetError` naming
the file; with ``skip_bad=True`` it is left out and recorded in
:attr:`BatchStream.skipped` instead (batches stay full: the next good samples fill
them).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from ..datasets import DatasetError

__all__ = ["Batch", "SkippedImage", "BatchStream"]


@dataclass(frozen=True)
class Batch:
    """``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``ids`` the N sample ids
    (file paths), ``indices`` (N,) int64 positions in the source."""

    images: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class SkippedImage:
    """A sample left out by ``skip_bad=True``: its position, id and the error message."""

    index: int
    id: str
    reason: str


def _decode_chunk(decode: Callable, payloads: Sequence) -> list[tuple[np.ndarray | None, str | None]]:
    """Worker task: ``(array, None)`` or ``(None, message)`` per payload, in order."""
    out = []
    for payload in payloads:
        try:
            out.append((decode(payload), None))
        except DatasetError as exc:
            out.append((None, str(exc)))
    return out


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise DatasetError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _pool_context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # the fork server imports this module (and so sttn_sim) once; every later worker is a
    # fork of it and starts without paying the import again
    context.set_forkserver_preload([__name__])
    return context


class BatchStream:
    """An iterable of :class:`Batch` over a source (see the module docstring).

    ``decode(payload) -> (C, H, W) float32`` must be picklable when ``workers > 0``
    (a module-level function or a ``functools.partial`` of one) and raise
    :class:`DatasetError` for a bad sample.  ``skipped`` lists the samples left out so
    far, ``images_yielded`` counts the samples yielded so far.
    """

    def __init__(self, *, payloads: Sequence, decode: Callable, labels: np.ndarray, ids: Sequence[str],
                 batch_size: int = 64, workers: int = 0, limit: int | None = None, skip_bad: bool = False,
                 prefetch: int | None = None, chunk: int | None = None):
        self.batch_size = _positive_int("batch_size", batch_size)
        self.workers = _positive_int("workers", workers, minimum=0)
        self.limit = len(payloads) if limit is None else min(_positive_int("limit", limit), len(payloads))
        self.chunk = _positive_int("chunk", chunk) if chunk is not None else max(1, min(8, self.batch_size))
        self.prefetch = (_positive_int("prefetch", prefetch) if prefetch is not None
                         else 2 * max(1, self.workers))
        self.skip_bad = bool(skip_bad)
        self._payloads, self._decode = payloads, decode
        self._labels, self._ids = labels, ids
        self.skipped: list[SkippedImage] = []
        self.images_yielded = 0

    def __len__(self) -> int:
        """Number of batches when nothing is skipped."""
        return -(-self.limit // self.batch_size)

    def _decoded_in_process(self) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        for i in range(self.limit):
            (arr, err), = _decode_chunk(self._decode, [self._payloads[i]])
            yield i, arr, err

    def _decoded_in_pool(self) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        starts = iter(range(0, self.limit, self.chunk))
        pending: deque = deque()
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context()) as pool:
            def submit_next() -> None:
                start = next(starts, None)
                if start is not None:
                    idx = range(start, min(start + self.chunk, self.limit))
                    pending.append((idx, pool.submit(_decode_chunk, self._decode, [self._payloads[i] for i in idx])))

            try:
                for _ in range(self.prefetch):
                    submit_next()
                while pending:
                    idx, future = pending.popleft()
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        names = ", ".join(self._ids[i] for i in idx)
                        raise DatasetError(f"a decoding worker process died while reading one of: {names}") from None
                    submit_next()
                    for i, (arr, err) in zip(idx, results):
                        yield i, arr, err
            finally:
                for _, future in pending:
                    future.cancel()

    def _batch(self, indices: list[int], images: list[np.ndarray]) -> Batch:
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            first = images[0].shape
            odd = next(j for j, a in enumerate(images) if a.shape != first)
            raise DatasetError(f"{self._ids[indices[odd]]}: preprocessed image has shape {images[odd].shape}, "
                               f"{self._ids[indices[0]]} has {first}: one batch needs one shape "
                               f"(use a preprocess with a crop)")
        idx = np.asarray(indices, np.int64)
        return Batch(images=np.stack(images), labels=self._labels[idx],
                     ids=tuple(self._ids[i] for i in indices), indices=idx)

    def __iter__(self) -> Iterator[Batch]:
        self.skipped, self.images_yielded = [], 0
        stream = self._decoded_in_pool() if self.workers > 0 else self._decoded_in_process()
        indices: list[int] = []
        images: list[np.ndarray] = []
        try:
            for i, arr, err in stream:
                if err is not None:
                    if not self.skip_bad:
                        raise DatasetError(err)
                    self.skipped.append(SkippedImage(i, self._ids[i], err))
                    continue
                indices.append(i)
                images.append(arr)
                if len(indices) == self.batch_size:
                    self.images_yielded += len(indices)
                    yield self._batch(indices, images)
                    indices, images = [], []
            if indices:
                self.images_yielded += len(indices)
                yield self._batch(indices, images)
        finally:
            stream.close()  # stops the pool at once when the caller stops early

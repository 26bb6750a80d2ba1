"""An evaluation on Dask: shards of images on worker processes, merged in shard order.

:func:`evaluate_on_dask` either starts a ``dask.distributed.LocalCluster`` of
``workers`` single-threaded worker processes (nothing to set up; each worker's
Numba engine gets ``cpu_count // workers`` threads) or connects to the scheduler at
``scheduler`` (``tcp://host:port``; an address that does not answer within
``connect_timeout`` seconds, or a cluster without workers, is an
:class:`~sttn_sim.evaluation.parts.EvaluationError` naming the address).

Each shard is one task, :func:`run_shard`: the worker loads the model once
(:func:`~sttn_sim.evaluation.model.loaded_model`, cached per process; it must see the
checkpoint and image paths the client sees), decodes its images in its own process
and returns a :class:`~sttn_sim.evaluation.parts.PartResult`.  Results are merged in
shard order, whatever order they arrive in.

Failures:

* a worker that dies (killed, out of memory) loses its task; the scheduler runs it
  again elsewhere (up to the scheduler's ``distributed.scheduler.allowed-failures``,
  3 by default; the nanny restarts the worker).  The LocalCluster's scheduler gives a
  worker only the task it runs (``worker-saturation`` 1.0), so a death counts against
  that shard alone; on another cluster the tasks queued on a dying worker are counted
  too (its own ``worker-saturation`` setting);
* an exception inside a task is retried :data:`TASK_RETRIES` times;
* a shard that still fails is reported by name (:class:`~sttn_sim.evaluation.report.FailedShard`)
  with its images listed as not evaluated; the other shards are merged as usual;
* bad input (an unreadable image without ``skip_bad``, a checkpoint a worker cannot
  read) is not retried: the task returns the project's error, the run stops and the
  client raises it, as one process would.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import secrets
import time
from contextlib import contextmanager

import dask
import numpy as np
from distributed import Client, KilledWorker, LocalCluster, as_completed

from ..errors import SttnError
from ..images import ImageSource
from ..stats import ActivationRecorder
from .model import ModelSpec, loaded_model
from .report import FailedShard
from .parts import EvaluationError, PartResult, RunOptions, Shard, default_shard_size, evaluate_part, plan_shards
from .tally import Tally

__all__ = ["TASK_RETRIES", "run_shard", "evaluate_on_dask", "dask_client"]

#: retries of a task that raised (a worker's death is counted by the scheduler instead)
TASK_RETRIES = 2


def run_shard(spec: ModelSpec, part: ImageSource, shard: Shard, check: np.ndarray, options: RunOptions):
    """The task of one shard (runs on a worker): a :class:`PartResult`, or the
    project's error for bad input (returned, not raised, so that Dask does not retry it)."""
    try:
        return evaluate_part(loaded_model(spec), part, shard.start, check, options, decode_workers=0)
    except SttnError as exc:
        return exc


@contextmanager
def dask_client(workers: int | None, scheduler: str | None, connect_timeout: float):
    """A connected :class:`distributed.Client` (and its LocalCluster, closed on exit)."""
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise EvaluationError(f"--scheduler {scheduler}: no Dask scheduler answered within "
                                  f"{connect_timeout:g} s ({type(exc).__name__}: {exc})") from None
        except (ValueError, TypeError) as exc:
            raise EvaluationError(f"--scheduler {scheduler}: not a scheduler address; expected tcp://host:port "
                                  f"({exc})") from None
        try:
            try:
                client.wait_for_workers(1, timeout=connect_timeout)
            except (OSError, TimeoutError):
                raise EvaluationError(f"--scheduler {scheduler}: the scheduler has no worker (waited "
                                      f"{connect_timeout:g} s)") from None
            yield client
        finally:
            client.close()
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": str(threads)})
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KilledWorker):
        return f"its worker died every time it ran it (KilledWorker: {exc})"
    return f"failed after {TASK_RETRIES} retries: {type(exc).__name__}: {exc}"


def evaluate_on_dask(spec: ModelSpec, source: ImageSource, n_images: int, check: np.ndarray, options: RunOptions, *,
                     workers: int | None, scheduler: str | None, shard_size: int | None, connect_timeout: float,
                     progress) -> tuple[PartResult, list[FailedShard], str, int, float]:
    """Run the first ``n_images`` of ``source`` as shards on Dask (see the module
    docstring).  Returns ``(merged result, failed shards, mode, worker threads, seconds
    to start or reach the cluster)``."""
    start = time.perf_counter()
    with dask_client(workers, scheduler, connect_timeout) as client:
        setup = time.perf_counter() - start
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()) or 1
        shards = plan_shards(n_images, shard_size or default_shard_size(n_images, options.batch_size, threads))
        token = secrets.token_hex(4)
        progress.start()
        futures = {}
        for shard in shards:
            mine = check[(check >= shard.start) & (check < shard.stop)]
            future = client.submit(run_shard, spec, source.subset(shard.start, shard.stop), shard, mine, options,
                                   key=f"sttn-shard-{shard.index:05d}-{token}", retries=TASK_RETRIES, pure=False)
            futures[future] = shard
        results: dict[int, PartResult] = {}
        failed: dict[int, FailedShard] = {}
        try:
            for future in as_completed(futures):
                shard = futures[future]
                try:
                    value = future.result()
                except Exception as exc:  # noqa: BLE001 - every failure of a shard is reported by name
                    failed[shard.index] = FailedShard(shard.describe(source.ids), _reason(exc), shard.start,
                                                      shard.stop)
                    progress(len(shard))
                    continue
                if isinstance(value, SttnError):
                    raise value
                results[shard.index] = value
                progress(len(shard))
        finally:
            client.cancel(list(futures))
        mode = (f"LocalCluster of {workers} worker process(es)" if scheduler is None
                else f"Dask scheduler {scheduler} ({threads} worker thread(s))")
    parts = [results[s.index] for s in shards if s.index in results] or \
        [PartResult(Tally(len(source.classes), options.k), ActivationRecorder() if options.record else None)]
    return functools.reduce(operator.add, parts), [failed[i] for i in sorted(failed)], mode, threads, setup

"""sttn_sim.evaluation.distributed on a LocalCluster of two worker processes: merged runs
equal one process (integers ==, float moments within a stated tolerance), a worker
killed mid-run is retried, a shard that kills its worker every time is reported by name
with its images, bad input stops the run, a scheduler that does not answer is named.

The kills come from a Dask worker plugin defined here (nothing test-only lives in the
package): on the first execution of a shard task it creates a marker file and calls
``os._exit``."""

import logging
import os
import sys
import time

import cloudpickle
import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

from sttn_sim.datasets import DatasetError, digits
from sttn_sim.evaluation import EvaluationError, ModelSpec, RunOptions, evaluate
from sttn_sim.images import image_folder
from sttn_sim.images.writing import write_image_folder

pytestmark = pytest.mark.slow  # a cluster start and worker restarts: ~10-60 s on 2 cores

N = 36
SHARD = 6
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the plugin travels by value


class KillShard(WorkerPlugin):
    """Kill the worker (os._exit) when it starts a shard task: the first ``times``
    executions of shard ``shard`` (any shard when None), one marker file per kill."""

    def __init__(self, marker_dir, shard=None, times=1):
        self.marker_dir, self.shard, self.times = str(marker_dir), shard, times

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key)
        if finish != "executing" or not name.startswith("sttn-shard-"):
            return
        if self.shard is not None and int(name.split("-")[2]) != self.shard:
            return
        for n in range(self.times):
            try:
                os.close(os.open(os.path.join(self.marker_dir, f"kill-{n}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            time.sleep(0.5)  # die while running the shard, not while the nanny is still starting this worker
            os._exit(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    _, _, x, y = digits()
    root = write_image_folder(tmp_path_factory.mktemp("digits") / "png", x[:N], y[:N])
    # one unreadable image, skipped with skip_bad (the skipped lists merge too)
    (root / "4" / "img_zz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def _cluster():
    # allowed-failures 1: a shard whose worker dies twice is given up (the default, 3, is slower to test);
    # worker-saturation 1.0, as evaluate's own LocalCluster has: a worker holds only the task it runs, so
    # its death is held against that shard alone
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.CRITICAL, env={"NUMBA_NUM_THREADS": "1"})
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def cluster():
    cluster, client = _cluster()
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture
def fresh_cluster():
    """A cluster of its own for a test that kills workers (a restart takes its time)."""
    cluster, client = _cluster()
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def spec():
    return ModelSpec.of(None)


@pytest.fixture(scope="module")
def single(folder, spec):
    """The reference run: one process, other batch boundaries than the shards'."""
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    return evaluate(spec, src, options=RunOptions(batch_size=7, record=True, skip_bad=True), check=8, seed=1)


def _dask_run(folder, spec, cluster, **kw):
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    return evaluate(spec, src, options=RunOptions(batch_size=4, record=True, skip_bad=True), check=8, seed=1,
                    scheduler=cluster[0].scheduler_address, shard_size=SHARD, **kw)


def _assert_same_statistics(a, b):
    """Integer statistics ==; the float sums of y (mean, std) to 1e-12 relative: float64
    sums of the same values in another order of addition (a few thousand terms of order 1
    give ~1e-13 relative rounding)."""
    assert a.layers == b.layers and a.samples == b.samples
    for name in a.layers:
        assert np.array_equal(a.code_counts(name), b.code_counts(name))
        ea, ha, ua, oa = a.histogram(name)
        eb, hb, ub, ob = b.histogram(name)
        assert np.array_equal(ha, hb) and (ua, oa) == (ub, ob)
    ints = ["images", "n_values", "n_neg", "n_zero", "n_pos", "dead_channels", "stuck_channels", "exact_ties",
            "near_ties", "underflow", "overflow", "y_min", "y_max", "macs", "macs_nonzero_act",
            "macs_nonzero_weight", "macs_nonzero"]
    la, lb = a.layer_table(), b.layer_table()
    assert la[ints].equals(lb[ints])  # y_min / y_max are extremes: exact too
    ca, cb = a.channel_table(), b.channel_table()
    assert ca[["n_neg", "n_zero", "n_pos", "dead", "stuck", "y_min", "y_max"]].equals(
        cb[["n_neg", "n_zero", "n_pos", "dead", "stuck", "y_min", "y_max"]])
    np.testing.assert_allclose(la["y_mean"], lb["y_mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(la["y_std"], lb["y_std"], rtol=1e-12, atol=1e-12)


def test_merged_run_equals_one_process(folder, spec, cluster, single):
    run = _dask_run(folder, spec, cluster)
    assert run.failed == [] and run.passed
    assert run.tally == single.tally  # per-class counts, top-1/top-5, check counts, skipped list: ==
    assert [s.id for s in run.tally.skipped] == [str(folder / "4" / "img_zz.png")]
    assert run.evaluated == N and run.tally.checked == 8
    _assert_same_statistics(run.recorder, single.recorder)
    assert "Dask scheduler" in run.mode


def test_worker_killed_mid_run_is_retried(folder, spec, fresh_cluster, single, tmp_path):
    fresh_cluster[1].register_plugin(KillShard(tmp_path, times=1), name="kill-once")
    run = _dask_run(folder, spec, fresh_cluster)
    assert sorted(os.listdir(tmp_path)) == ["kill-0"]  # a worker did die on a shard
    assert run.failed == [] and run.tally == single.tally
    _assert_same_statistics(run.recorder, single.recorder)


def test_shard_that_always_kills_its_worker_is_reported(folder, spec, fresh_cluster, tmp_path):
    fresh_cluster[1].register_plugin(KillShard(tmp_path, shard=1, times=10), name="kill-shard-1")
    run = _dask_run(folder, spec, fresh_cluster)
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    assert len(os.listdir(tmp_path)) == 2  # allowed-failures 1: given up after the second death
    (failed,) = run.failed
    assert failed.name == f"shard 1 (images {SHARD}-{2 * SHARD - 1}: {src.ids[SHARD]} .. {src.ids[2 * SHARD - 1]})"
    assert "KilledWorker" in failed.reason and not run.passed
    assert [i for i, *_ in run.not_evaluated] == list(range(SHARD, 2 * SHARD))
    assert [r[1] for r in run.not_evaluated] == list(src.ids[SHARD:2 * SHARD])
    # the other shards are counted as one process counts those images
    rest = evaluate(spec, src.subset(0, SHARD), options=RunOptions(batch_size=7, skip_bad=True), check=0).tally + \
        evaluate(spec, src.subset(2 * SHARD, len(src)), options=RunOptions(batch_size=7, skip_bad=True), check=0).tally
    assert run.tally.images.tolist() == rest.images.tolist() and run.tally.top1.tolist() == rest.top1.tolist()
    assert run.evaluated == N - SHARD and f"NOT EVALUATED: {failed.name}" in run.to_text()
    out = run.write(tmp_path / "out")
    assert "not_evaluated.csv" in {p.name for p in out}


def test_bad_image_without_skip_bad_stops_the_run(folder, spec, cluster):
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(DatasetError, match="img_zz.png"):
        evaluate(spec, src, options=RunOptions(batch_size=4), check=0, scheduler=cluster[0].scheduler_address,
                 shard_size=SHARD)


def test_workers_and_scheduler_exclude_each_other(folder, spec):
    src = image_folder(folder, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(EvaluationError, match="not both"):
        evaluate(spec, src, workers=2, scheduler="tcp://127.0.0.1:1")

"""What recording activation statistics costs while the engine runs.

For each batch size, the engine's run time with an
:class:`~sttn_sim.stats.activations.ActivationRecorder` against without, on the
benchmark model (:mod:`~sttn_sim.bench.workload`: full-width ResNet-18 at 224×224),
alternating call by call (:func:`~sttn_sim.bench.timing.interleaved_medians`).
Batch 8 is the statistics-collection case (a dataset in batches); batch 1 shows the
per-layer fixed costs.  The recorder is made once and warmed up, as in use (it
accumulates every batch); the one-off cost of preparing it for a model (MAC maps,
accumulators) is reported apart.  Columns: ``batch``, ``engine_ms``,
``engine_with_recorder_ms``, ``recording_overhead`` (= with / without),
``recorder_setup_ms``.
"""

from __future__ import annotations

import time

import pandas as pd

from ..engine import Engine
from ..stats.activations import ActivationRecorder
from .timing import interleaved_medians
from .workload import Workload, resnet18_workload


def benchmark_recording(repeats: int = 10, batches=(8, 1), *, workload: Workload | None = None) -> pd.DataFrame:
    """Recording overhead on ``workload`` (default: the full-width ResNet-18) per batch size."""
    workload = workload or resnet18_workload()
    folded = workload.folded
    engine = Engine(folded)
    rows = []
    for batch in batches:
        x = workload.batch(batch)
        recorder = ActivationRecorder()
        start = time.perf_counter()
        recorder.on_batch_start(folded, 0)  # prepares the statistics of every quantizer
        setup = time.perf_counter() - start
        engine.run(x)  # warm-up of both paths
        engine.run(x, recorder=recorder)
        medians = interleaved_medians({"plain": lambda: engine.run(x),
                                       "recorded": lambda: engine.run(x, recorder=recorder)},
                                      repeats, rounds=repeats)
        plain_ms, recorded_ms = 1000 * medians["plain"], 1000 * medians["recorded"]
        rows.append({"batch": batch, "engine_ms": plain_ms, "engine_with_recorder_ms": recorded_ms,
                     "recording_overhead": recorded_ms / plain_ms, "recorder_setup_ms": 1000 * setup})
    return pd.DataFrame(rows)


__all__ = ["benchmark_recording"]

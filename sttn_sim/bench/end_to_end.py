"""End-to-end time of the STTN ResNet-18 through the packed engine, against PyTorch.

For each batch size: the median time of :meth:`sttn_sim.engine.Engine.run` on the
folded model (:mod:`~sttn_sim.bench.workload`) and, when PyTorch is installed, of the
same folded model as a TorchScript-frozen float32 module
(:func:`~sttn_sim.bench.torch_baseline.frozen_baseline`), timed in alternating
blocks (:func:`~sttn_sim.bench.timing.interleaved_medians`).  Columns:

* ``batch``, ``engine_ms``, ``engine_ms_per_image``;
* with PyTorch: ``pytorch_ms``, ``engine_vs_pytorch`` (= ``engine_ms / pytorch_ms``)
  and ``top1_agree_with_pytorch`` (images of the batch on which both give the same
  top-1 class).

Without PyTorch the PyTorch columns are left out (:func:`torch_available`).
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import pandas as pd

from ..engine import Engine
from .timing import interleaved_medians
from .workload import Workload, resnet18_workload

#: alternating blocks per measurement (engine, PyTorch, engine, ...)
ROUNDS = 3


def torch_available() -> bool:
    """True when PyTorch can be imported (the baseline's only requirement)."""
    return importlib.util.find_spec("torch") is not None


def benchmark_end_to_end(repeats: int = 20, batches=(1, 8), progress: Callable[[str], None] | None = None, *,
                         workload: Workload | None = None, with_torch: bool | None = None) -> pd.DataFrame:
    """Engine (and PyTorch) time on ``workload`` (default: the full-width ResNet-18 at
    224×224) for each batch size; ``with_torch`` defaults to :func:`torch_available`."""
    workload = workload or resnet18_workload()
    with_torch = torch_available() if with_torch is None else with_torch
    if with_torch:
        from .torch_baseline import frozen_baseline  # noqa: PLC0415  (PyTorch is optional)
    engine = Engine(workload.folded)
    rounds = max(1, min(ROUNDS, repeats))
    rows = []
    for batch in batches:
        x = workload.batch(batch)
        fns = {"engine": lambda: engine.run(x)}
        if with_torch:
            pytorch = frozen_baseline(workload.folded, x)
            fns["pytorch"] = lambda: pytorch(x)
        medians = interleaved_medians(fns, repeats, rounds, warmup=2, settle=0.5)
        row = {"batch": batch, "engine_ms": 1000 * medians["engine"]}
        row["engine_ms_per_image"] = row["engine_ms"] / batch
        if with_torch:
            row["pytorch_ms"] = 1000 * medians["pytorch"]
            row["engine_vs_pytorch"] = row["engine_ms"] / row["pytorch_ms"]
            row["top1_agree_with_pytorch"] = int((engine.run(x).argmax(1) == pytorch(x).argmax(1)).sum())
        rows.append(row)
        if progress:
            progress(f"end-to-end batch {batch} done")
    return pd.DataFrame(rows)


__all__ = ["ROUNDS", "torch_available", "benchmark_end_to_end"]

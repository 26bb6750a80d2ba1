"""End-to-end time of the STTN ResNet-18 through the packed engine, against what a user
would run instead, each runtime in its own process (:mod:`.peers`).

For each batch size, every runtime of ``peers`` (default: the installed ones of
:data:`~sttn_sim.bench.peers.PEERS`) gets ``rounds`` blocks of ``ceil(repeats/rounds)``
timed calls, the blocks alternating between the processes.  One row per (batch,
runtime): ``batch``, ``runtime``, ``ms`` (median per call), ``ms_per_image``,
``min_ms``, ``max_ms``, ``engine_ratio`` (= engine median / this runtime's median: below 1
means the engine is faster) and, for ``pytorch_fp32`` (the same folded model),
``top1_agree_with_engine``.  The engine's kernels are in ``df.attrs["kernels"]``.
"""

from __future__ import annotations

import importlib.util
from typing import Callable

import numpy as np
import pandas as pd

from .peers import PeerProcess, available_peers

#: alternating blocks per measurement
ROUNDS = 3
#: seconds of idle time before each block (OpenMP/BLAS workers stop spinning)
SETTLE = 0.3

COLUMNS = ("batch", "runtime", "ms", "ms_per_image", "min_ms", "max_ms", "engine_ratio", "top1_agree_with_engine")


def torch_available() -> bool:
    """True when PyTorch can be imported (the PyTorch peers' requirement)."""
    return importlib.util.find_spec("torch") is not None


def benchmark_end_to_end(repeats: int = 20, batches=(1, 8), progress: Callable[[str], None] | None = None, *,
                         peers=None, rounds: int = ROUNDS, threads: int | str = "auto", width: float = 1.0,
                         input_size: int = 224, num_classes: int = 1000, env: dict | None = None) -> pd.DataFrame:
    """Median, min and max time per call of each runtime on the ResNet-18 of ``width``,
    ``input_size``, ``num_classes`` (default: the full-width 224×224 ImageNet shape)."""
    peers = list(peers or available_peers())
    if "engine" not in peers:
        peers.insert(0, "engine")
    spec = {"width": width, "input_size": input_size, "num_classes": num_classes, "threads": threads}
    rounds = max(1, min(rounds, repeats))
    per_round = max(1, -(-repeats // rounds))
    processes = [PeerProcess(name, spec, env) for name in peers]
    rows, kernels = [], None
    try:
        for batch in batches:
            times = {p.name: [] for p in processes}
            top1 = {}
            for r in range(rounds):
                for p in processes:
                    answer = p.measure(batch, per_round, warmup=2 if r == 0 else 1, settle=SETTLE)
                    times[p.name] += answer["times"]
                    top1[p.name] = answer["top1"]
                    kernels = answer.get("kernels") or kernels
            engine = float(np.median(times["engine"]))
            for name in peers:
                median = float(np.median(times[name]))
                agree = (int(np.sum(np.array(top1[name]) == np.array(top1["engine"])))
                         if name == "pytorch_fp32" else None)
                rows.append({"batch": batch, "runtime": name, "ms": 1e3 * median, "ms_per_image": 1e3 * median / batch,
                             "min_ms": 1e3 * min(times[name]), "max_ms": 1e3 * max(times[name]),
                             "engine_ratio": engine / median, "top1_agree_with_engine": agree})
            if progress:
                progress(f"end-to-end batch {batch} done")
    finally:
        for p in processes:
            p.close()
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df.attrs["kernels"] = kernels
    return df


def summary(df: pd.DataFrame) -> dict:
    """The issue's end-to-end ratios from one run: per batch, the engine against the
    fastest float32 runtime and PyTorch int8, and batch 8 per image against batch 1."""
    out: dict = {}
    for batch, rows in df.groupby("batch"):
        by = rows.set_index("runtime")["ms"]
        fp32 = [r for r in ("pytorch_fp32", "onnxruntime_fp32") if r in by]
        entry = {}
        if fp32:
            fastest = min(fp32, key=lambda r: by[r])
            entry["engine_vs_fastest_fp32"] = float(by["engine"] / by[fastest])
            entry["fastest_fp32"] = fastest
        if "pytorch_fp32" in by:
            entry["engine_vs_pytorch_fp32"] = float(by["engine"] / by["pytorch_fp32"])
        if "pytorch_int8" in by:
            entry["engine_vs_pytorch_int8"] = float(by["engine"] / by["pytorch_int8"])
        out[f"batch {batch}"] = entry
    per_image = df[df["runtime"] == "engine"].set_index("batch")["ms_per_image"]
    if 1 in per_image and len(per_image) > 1:
        largest = int(per_image.index.max())
        out[f"engine batch {largest} vs batch 1, per image"] = float(per_image[largest] / per_image[1])
    return out


__all__ = ["ROUNDS", "SETTLE", "COLUMNS", "torch_available", "benchmark_end_to_end", "summary"]

"""The speed targets of the CPU-class work (issue 13), checked on one bench run.

Each :class:`Target` reads one number from a ``bench`` result (the dict
:func:`sttn_sim.bench.cli.run` builds: ``gemm``, ``end_to_end_summary``,
``recording``, ``contention``) and compares it with a bound; a target applies to every
CPU class or to the classes it names.  :func:`check_targets` gives one row per target
that applies to the run's class: ``target``, ``bound`` (e.g. ``<= 0.35``),
``measured``, ``met`` (``None`` when the run did not measure it, e.g. without
PyTorch or without ``--contention``).

The measured value is the conservative one of the run: the smallest GEMM ratio of the
four ResNet-18 shapes, and the throughput of ``threads=auto`` against the worse
competitor over the best idle throughput of any thread setting
(:mod:`.contention`'s ``ratio_to_best_idle``).  Every ratio is within one run (each
baseline measured in the same run), so the verdict does not depend on how fast the
machine was that day -- but on a noisy machine two runs can disagree, which is why the
README quotes several per class.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import pandas as pd


_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    """One target: ``measure(result)`` (``None`` = not measured) ``op`` ``bound``."""

    name: str
    bound: float
    op: str  # a key of _OPS: "<=", ">=", "<"
    measure: Callable[[dict], float | None]
    classes: tuple = ()  # empty: every class

    def applies_to(self, cpu_class: str) -> bool:
        return not self.classes or cpu_class in self.classes

    def check(self, result: dict) -> dict:
        value = self.measure(result)
        met = None if value is None else bool(_OPS[self.op](value, self.bound))
        return {"target": self.name, "bound": f"{self.op} {self.bound:g}", "measured": value, "met": met}


def _records(table) -> list[dict]:
    if table is None:
        return []
    return table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else list(table)


def _min_gemm_ratio(result: dict) -> float | None:
    ratios = [row["ratio"] for row in _records(result.get("gemm"))]
    return float(min(ratios)) if ratios else None


def _summary(*keys: str) -> Callable[[dict], float | None]:
    """The value at ``keys`` in the run's ``end_to_end_summary`` (:func:`.end_to_end.summary`)."""
    def measure(result: dict) -> float | None:
        value = result.get("end_to_end_summary") or {}
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return None if isinstance(value, dict) else float(value)
    return measure


def _recording_at_batch8(result: dict) -> float | None:
    rows = [r for r in _records(result.get("recording")) if r["batch"] == 8]
    return float(rows[0]["recording_overhead"]) if rows else None


def _contention_auto(result: dict) -> float | None:
    rows = [r for r in _records(result.get("contention")) if r.get("threads") == "auto"]
    return float(min(r["ratio_to_best_idle"] for r in rows)) if rows else None


#: the targets, in the issue's order
TARGETS = [
    Target("GEMM vs numpy fp32 (smallest of 4 shapes)", 10, ">=", _min_gemm_ratio, ("avx512_vpopcntdq",)),
    Target("GEMM vs numpy fp32 (smallest of 4 shapes)", 6, ">=", _min_gemm_ratio, ("avx2",)),
    Target("engine / fastest fp32 runtime, batch 1", 0.35, "<=", _summary("batch 1", "engine_vs_fastest_fp32")),
    Target("engine / fastest fp32 runtime, batch 8", 0.35, "<=", _summary("batch 8", "engine_vs_fastest_fp32")),
    Target("engine / PyTorch int8, batch 1", 1, "<", _summary("batch 1", "engine_vs_pytorch_int8")),
    Target("engine / PyTorch int8, batch 8", 1, "<", _summary("batch 8", "engine_vs_pytorch_int8")),
    Target("engine / PyTorch fp32, batch 1", 0.20, "<=", _summary("batch 1", "engine_vs_pytorch_fp32"),
           ("avx512_vpopcntdq",)),
    Target("batch 8 / batch 1, per image", 0.85, "<=", _summary("engine batch 8 vs batch 1, per image")),
    Target("recording overhead, batch 8", 1.10, "<=", _recording_at_batch8),
    Target("contended / best idle throughput, threads=auto", 0.4, ">=", _contention_auto),
]


def check_targets(result: dict, cpu_class: str | None = None) -> pd.DataFrame:
    """One row per target that applies to ``cpu_class`` (default: the run's,
    ``result["kernels"]["cpu_class"]``)."""
    cpu_class = cpu_class or result["kernels"]["cpu_class"]
    rows = [t.check(result) for t in TARGETS if t.applies_to(cpu_class)]
    # object columns: an unmeasured value stays None (JSON null), not NaN
    return pd.DataFrame(rows, columns=["target", "bound", "measured", "met"], dtype=object)


__all__ = ["Target", "TARGETS", "check_targets"]

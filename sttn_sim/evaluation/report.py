"""What an evaluation reports: accuracy, agreement with the reference, throughput,
skipped and not-evaluated images; as text, as JSON, and as files.

Files (:meth:`Evaluation.write`, each written atomically):

* ``evaluation.json`` — :meth:`Evaluation.to_dict`;
* ``per_class.csv`` — one row per class: ``class, name, images, top1_correct,
  topk_correct, top1, topk`` (accuracies are NaN for a class with no image);
* ``skipped.csv`` (``index, id, reason``) when unreadable images were skipped;
* ``not_evaluated.csv`` (``index, id, shard, reason``) when shards failed;
* with a recorder, in ``record_dir``: the tables of
  :func:`sttn_sim.stats.recorded_tables` (the files ``sttn figures`` writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..images import ImageSource
from ..io.atomic import atomic_path, atomic_write_text, ensure_output_dir
from ..stats import recorded_tables
from .model import LoadedModel, ModelSpec

__all__ = ["Evaluation", "FailedShard"]


@dataclass(frozen=True)
class FailedShard:
    """A shard that Dask could not complete: its name, the reason, its images."""

    name: str
    reason: str
    start: int
    stop: int


def _percent(num: int, den: int) -> str:
    return f"{100.0 * num / den:.2f} %" if den else "n/a"


@dataclass
class Evaluation:
    """The outcome of :func:`sttn_sim.evaluation.evaluate` (``result`` is the merged
    :class:`~sttn_sim.evaluation.parts.PartResult`)."""

    spec: ModelSpec
    source: ImageSource
    loaded: LoadedModel
    requested: int
    result: object
    failed: list[FailedShard] = field(default_factory=list)
    mode: str = ""
    threads: int = 1
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0  # of wall_seconds: starting (or reaching) the Dask cluster

    # -- numbers --------------------------------------------------------------------
    @property
    def tally(self):
        return self.result.tally

    @property
    def recorder(self):
        return self.result.recorder

    @property
    def evaluated(self) -> int:
        return self.tally.evaluated

    @property
    def top1(self) -> int:
        return int(self.tally.top1.sum())

    @property
    def topk(self) -> int:
        return int(self.tally.topk.sum())

    @property
    def not_evaluated(self) -> list[tuple[int, str, str, str]]:
        """``(index, id, shard, reason)`` of every image of a failed shard."""
        return [(i, self.source.ids[i], f.name, f.reason) for f in self.failed for i in range(f.start, f.stop)]

    @property
    def passed(self) -> bool:
        """Every image evaluated (or skipped on request) and no engine check failed."""
        return not self.failed and not self.tally.check_failures

    @property
    def images_per_second(self) -> float:
        """Images evaluated per second of the whole run."""
        return self.evaluated / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def steady_images_per_second(self) -> float:
        """Images per second once the cluster is up (what a long run approaches)."""
        busy = self.wall_seconds - self.setup_seconds
        return self.evaluated / busy if busy > 0 else float("nan")

    @property
    def outside_engine_share(self) -> float:
        """1 - engine seconds / ((wall - setup seconds) × worker threads): the share of
        the run's capacity spent outside :meth:`Engine.run` (decoding or waiting for it,
        checks, counting, distribution)."""
        capacity = (self.wall_seconds - self.setup_seconds) * max(1, self.threads)
        return 1.0 - self.result.engine_seconds / capacity if capacity > 0 else float("nan")

    def per_class_table(self) -> pd.DataFrame:
        t = self.tally
        with np.errstate(invalid="ignore", divide="ignore"):
            return pd.DataFrame({
                "class": np.arange(t.num_classes), "name": list(self.source.classes), "images": t.images,
                "top1_correct": t.top1, "topk_correct": t.topk,
                "top1": np.where(t.images > 0, t.top1 / np.maximum(t.images, 1), np.nan),
                "topk": np.where(t.images > 0, t.topk / np.maximum(t.images, 1), np.nan)})

    # -- output ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        t, r = self.tally, self.result
        k = min(t.k, t.num_classes)
        return {
            "model": self.spec.checkpoint or "default", "arch": self.loaded.model.arch, "form": self.loaded.model.form,
            "data": self.source.name, "preprocess": self.source.preprocess.describe(),
            "classes": t.num_classes, "images_requested": self.requested, "images_evaluated": self.evaluated,
            "images_skipped": len(t.skipped), "images_not_evaluated": sum(f.stop - f.start for f in self.failed),
            "top1_correct": self.top1, "top1": self.top1 / self.evaluated if self.evaluated else None,
            "k": k, "topk_correct": self.topk, "topk": self.topk / self.evaluated if self.evaluated else None,
            "check": {"images": t.checked, "top1_identical": t.top1_identical,
                      "codes_identical": t.codes_identical, "near_ties": t.near_ties,
                      "failures": t.check_failures},
            "mode": self.mode, "threads": self.threads, "wall_seconds": self.wall_seconds,
            "setup_seconds": self.setup_seconds, "steady_images_per_second": self.steady_images_per_second,
            "engine_seconds": r.engine_seconds, "check_seconds": r.check_seconds,
            "images_per_second": self.images_per_second, "outside_engine_share": self.outside_engine_share,
            "skipped": [{"index": s.index, "id": s.id, "reason": s.reason} for s in t.skipped],
            "failed_shards": [{"shard": f.name, "reason": f.reason, "images": f.stop - f.start} for f in self.failed],
            "passed": self.passed,
        }

    def to_text(self) -> str:
        t, r = self.tally, self.result
        k = min(t.k, t.num_classes)
        lines = [f"{self.spec.name} ({self.loaded.model.arch}, {self.loaded.model.form}) on {self.source.name}: "
                 f"{self.evaluated} of {self.requested} images evaluated, {t.num_classes} classes, preprocess "
                 f"{self.source.preprocess.describe()}",
                 f"top-1 {_percent(self.top1, self.evaluated)} ({self.top1}/{self.evaluated}), "
                 f"top-{k} {_percent(self.topk, self.evaluated)} ({self.topk}/{self.evaluated})"]
        if t.checked:
            lines.append(f"packed engine against the float64 reference on {t.checked} sampled images: top-1 "
                         f"identical {t.top1_identical}/{t.checked}, activation codes identical "
                         f"{t.codes_identical}/{t.checked}, near-tie code flips {t.near_ties} (layer-local), "
                         + ("check PASS" if not t.check_failures else
                            f"check FAIL on {len(t.check_failures)} group(s): {t.check_failures[0]}"))
        else:
            lines.append("no image checked against the float64 reference (check = 0)")
        setup = (f", {self.steady_images_per_second:.2f} images/s after {self.setup_seconds:.1f} s of cluster "
                 f"start-up" if self.setup_seconds else "")
        lines.append(f"{self.images_per_second:.2f} images/s{setup} ({self.wall_seconds:.1f} s; engine "
                     f"{r.engine_seconds:.1f} s, reference check {r.check_seconds:.1f} s; "
                     f"{100 * self.outside_engine_share:.1f} % outside the engine) — {self.mode}")
        if t.skipped:
            shown = "; ".join(f"{s.id}: {s.reason}" for s in t.skipped[:5])
            lines.append(f"skipped {len(t.skipped)} unreadable image(s): {shown}"
                         + (f" ... and {len(t.skipped) - 5} more" if len(t.skipped) > 5 else ""))
        for f in self.failed:
            lines.append(f"NOT EVALUATED: {f.name}, {f.stop - f.start} images: {f.reason}")
        return "\n".join(lines)

    def write(self, out_dir, record_dir=None) -> list[Path]:
        """Write the files of the module docstring; returns their paths."""
        out = ensure_output_dir(out_dir)
        written = []

        def table(df: pd.DataFrame, path: Path) -> None:
            with atomic_path(path) as tmp:
                df.to_csv(tmp, index=False)
            written.append(path)

        atomic_write_text(out / "evaluation.json", json.dumps(self.to_dict(), indent=2, default=float) + "\n")
        written.append(out / "evaluation.json")
        table(self.per_class_table(), out / "per_class.csv")
        if self.tally.skipped:
            table(pd.DataFrame([{"index": s.index, "id": s.id, "reason": s.reason} for s in self.tally.skipped]),
                  out / "skipped.csv")
        if self.failed:
            table(pd.DataFrame(self.not_evaluated, columns=["index", "id", "shard", "reason"]),
                  out / "not_evaluated.csv")
        if record_dir is not None and self.recorder is not None:
            rec_out = ensure_output_dir(record_dir)
            for name, df in recorded_tables(self.loaded.folded, self.recorder).items():
                table(df, rec_out / name)
        return written

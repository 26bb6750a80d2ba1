"""The counts of an evaluation: exact integers that add up across shards.

A :class:`Tally` holds, per class ``c``:

* ``images[c]`` — images of class c evaluated;
* ``top1[c]``, ``topk[c]`` — of those, how many the model ranks first / within the
  first ``k`` (:func:`topk_hits`);

and for the images checked against the float64 reference
(:func:`sttn_sim.check.check_engine` on each checked batch): ``checked``,
``top1_identical`` (engine and reference give the same top-1 class),
``codes_identical`` (every activation code of the image is the same end to end),
``near_ties`` (codes that differ layer-locally where the reference value lies within
float32 rounding of a threshold: the engine's documented, legitimate difference) and
``check_failures`` (any other difference: an engine bug; each names the images).
``skipped`` lists the unreadable images left out with ``skip_bad``.

``a + b`` is the tally of both sets of images: integer arrays and counts add, lists
concatenate in order (``a`` first), so a run merged in a fixed shard order gives the
same tally, ``==`` in every count, as one process that saw every image in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..check import EngineReport
from ..errors import SttnError
from ..images import SkippedImage

__all__ = ["Tally", "topk_hits"]


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean (N,): is ``labels[n]`` among the first ``k`` classes of ``logits[n]``?

    Classes are ranked by logit, descending; equal logits are ranked by class index
    (lower first), which makes the rank-1 class ``argmax`` (numpy's first maximum).  So
    the rank of the label ``y`` is ``#{j : z_j > z_y} + #{j < y : z_j = z_y}`` and the
    image counts when that is below ``k``.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64)
    z_y = logits[np.arange(len(labels)), labels][:, None]
    before = np.arange(logits.shape[1])[None, :] < labels[:, None]
    rank = (logits > z_y).sum(axis=1) + ((logits == z_y) & before).sum(axis=1)
    return rank < k


@dataclass
class Tally:
    """Mergeable counts of an evaluation (see the module docstring)."""

    num_classes: int
    k: int = 5
    images: np.ndarray = None
    top1: np.ndarray = None
    topk: np.ndarray = None
    checked: int = 0
    top1_identical: int = 0
    codes_identical: int = 0
    near_ties: int = 0
    check_failures: list[dict] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)

    def __post_init__(self):
        if self.num_classes < 1 or self.k < 1:
            raise SttnError(f"Tally: num_classes={self.num_classes}, k={self.k}: expected positive integers")
        for name in ("images", "top1", "topk"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, np.int64))

    @property
    def evaluated(self) -> int:
        return int(self.images.sum())

    def add_logits(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Count a batch: ``logits`` (N, classes), ``labels`` (N,) int."""
        labels = np.asarray(labels, np.int64)
        if logits.ndim != 2 or logits.shape != (len(labels), self.num_classes):
            raise SttnError(f"Tally: logits of shape {tuple(logits.shape)} for {len(labels)} labels and "
                            f"{self.num_classes} classes")
        np.add.at(self.images, labels, 1)
        np.add.at(self.top1, labels, topk_hits(logits, labels, 1).astype(np.int64))
        np.add.at(self.topk, labels, topk_hits(logits, labels, min(self.k, self.num_classes)).astype(np.int64))

    def add_check(self, report: EngineReport, ids) -> None:
        """Count the engine check of the images ``ids`` (one :class:`EngineReport`)."""
        ids = list(ids)
        if report.batch != len(ids) or report.image_code_differences is None:
            raise SttnError(f"Tally: an engine report of {report.batch} images for {len(ids)} ids")
        self.checked += len(ids)
        self.top1_identical += int(report.image_top1_agree.sum())
        self.codes_identical += int((report.image_code_differences == 0).sum())
        self.near_ties += int(report.table["near_ties"].fillna(0).sum())
        if not report.passed:
            failed = report.table[report.table["status"] == "FAIL"]
            self.check_failures.append({"images": ids, "layers": [str(s) for s in failed["step"]],
                                        "first_failure": report.first_failure,
                                        "logits_max_abs_diff": report.logits_max_abs_diff,
                                        "logits_tolerance": report.logits_tolerance})

    def __add__(self, other: "Tally") -> "Tally":
        if not isinstance(other, Tally):
            return NotImplemented
        if (self.num_classes, self.k) != (other.num_classes, other.k):
            raise SttnError(f"cannot merge tallies of {self.num_classes} classes (top-{self.k}) and "
                            f"{other.num_classes} classes (top-{other.k})")
        return Tally(self.num_classes, self.k, self.images + other.images, self.top1 + other.top1,
                     self.topk + other.topk, self.checked + other.checked,
                     self.top1_identical + other.top1_identical, self.codes_identical + other.codes_identical,
                     self.near_ties + other.near_ties, self.check_failures + other.check_failures,
                     self.skipped + other.skipped)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Tally):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in ("images", "top1", "topk")) and \
            (self.num_classes, self.k, self.checked, self.top1_identical, self.codes_identical, self.near_ties,
             self.check_failures, self.skipped) == \
            (other.num_classes, other.k, other.checked, other.top1_identical, other.codes_identical,
             other.near_ties, other.check_failures, other.skipped)

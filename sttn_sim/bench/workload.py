"""The model the end-to-end and recording benchmarks run: the STTN ResNet-18.

By default the full-width official variant at 224×224 with 1000 classes (the paper's
ImageNet model), a seeded synthetic one (:func:`sttn_sim.synthetic.synthetic_model`:
random latent kernels, calibrated BN with γ < 0 and γ = 0 channels), folded.  Smaller
``width`` / ``input_size`` give the same graph at test size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fold import fold
from ..graph import Model
from ..synthetic import synthetic_input, synthetic_model


@dataclass(frozen=True)
class Workload:
    """The benchmark model: ``model`` (latent form) and ``folded`` (what is timed)."""

    model: Model
    folded: Model

    def batch(self, size: int) -> np.ndarray:
        """A seeded float32 standard-normal batch of ``size`` images."""
        return synthetic_input(self.model, size, seed=1)


def resnet18_workload(width: float = 1.0, input_size: int = 224, num_classes: int = 1000) -> Workload:
    """The seed-0 synthetic STTN ResNet-18 of this ``width``, ``input_size`` and
    ``num_classes``, and its folded form."""
    model = synthetic_model("sttn_resnet18", seed=0, width=width, input_size=input_size, num_classes=num_classes,
                            calibration_batch=2)
    return Workload(model, fold(model))


__all__ = ["Workload", "resnet18_workload"]

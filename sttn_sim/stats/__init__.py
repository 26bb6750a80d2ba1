"""Statistics as tidy pandas DataFrames (one row per layer or layer×channel, a
``layer`` column in model order).  See docs/design.md §3 for the definitions.

* :mod:`.weights` — ternary code counts, sparsity, scales, sizes (any model form);
* :mod:`.intervals` — learned intervals of STTN layers from the latent W1, W2
  (:class:`StatisticsUnavailable` for merged/folded models);
* :mod:`.activations` — :class:`ActivationRecorder` (the executors' recorder hook) and
  the BN-implied per-channel activation thresholds;
* :mod:`.cost` — MACs, non-zero MACs and packed memory per ternary layer;
* :mod:`.tables` — the tables of a recorded run under their file names.
"""

from .activations import (
    DEFAULT_BINS,
    ActivationRecorder,
    activation_thresholds,
    collect_activations,
    reference_executor,
)
from .cost import layer_costs
from .tables import recorded_tables
from .intervals import (
    IntervalSamples,
    StatisticsUnavailable,
    best_separating_delta,
    equivalent_delta,
    has_latent_weights,
    interval_samples,
    interval_statistics,
    learned_interval_classes,
    learned_intervals,
)
from .weights import channel_weight_statistics, layer_ternary_weights, weight_statistics

__all__ = [
    "weight_statistics", "channel_weight_statistics", "layer_ternary_weights",
    "StatisticsUnavailable", "IntervalSamples", "interval_samples", "learned_intervals", "learned_interval_classes",
    "interval_statistics", "equivalent_delta", "best_separating_delta", "has_latent_weights",
    "ActivationRecorder", "activation_thresholds", "collect_activations", "reference_executor", "DEFAULT_BINS",
    "layer_costs", "recorded_tables",
]

"""The tables of a recorded run, under the file names the reports use.

:func:`recorded_tables` is the one list of what a run of a folded model with an
:class:`~sttn_sim.stats.ActivationRecorder` produces: ``cost.csv`` (MACs, with the
measured non-zero MACs) and, when the model has activation quantizers,
``activation_layers.csv``, ``activation_channels.csv``, ``activation_histograms.csv``
and ``activation_thresholds.csv``.  ``sttn figures`` and ``sttn evaluate --record``
write exactly these.
"""

from __future__ import annotations

import pandas as pd

from ..graph import Model
from .activations import ActivationRecorder, activation_thresholds
from .cost import layer_costs

__all__ = ["recorded_tables"]


def recorded_tables(folded: Model, recorder: ActivationRecorder) -> dict[str, pd.DataFrame]:
    """``{file name: table}`` of a run of ``folded`` recorded by ``recorder``."""
    tables = {"cost.csv": layer_costs(folded, recorder)}
    layers = recorder.layer_table()
    if len(layers):
        tables.update({"activation_layers.csv": layers, "activation_channels.csv": recorder.channel_table(),
                       "activation_histograms.csv": recorder.histogram_table(),
                       "activation_thresholds.csv": activation_thresholds(folded)})
    return tables

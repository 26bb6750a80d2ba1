"""The recorder hook shared by the reference path and the packed engine.

Both executors call ``recorder.on_layer(event)`` once per layer, in model order, with a
:class:`LayerEvent`.  Statistics (``sttn_sim.stats``) implement :class:`Recorder`
and never touch the executors' arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the graph imports the kinds, which build events: no import at run time
    from .graph import Layer


@dataclass
class LayerEvent:
    """What one layer did on one batch.

    * ``output`` — the layer's output (codes for activation quantizers).
    * ``accumulator`` — int accumulators of a ternary layer (``conv(x, t)``), else None
      (also None from the packed engine's fused convolution + epilogue, used unless the
      recorder :attr:`~Recorder.wants_accumulators`).
    * ``pre_activation`` — for an activation quantizer, the value it compared with its
      thresholds: the BN output y for ``ternary_act``; for a folded ``threshold`` its
      input x (pre-BN value or integer accumulator; y = gain·x + offset).
    * ``codes`` — the int8 ternary codes an activation quantizer produced, else None.
    * ``statistics`` — the accumulator the executor's own kernel already added this batch
      to (see :meth:`Recorder.threshold_accumulator`), else None; codes are then not
      materialised.
    """

    layer: Layer
    output: np.ndarray
    accumulator: np.ndarray | None = None
    pre_activation: np.ndarray | None = None
    codes: np.ndarray | None = None
    statistics: object | None = None


class Recorder:
    """Base class: override :meth:`on_layer`.  ``on_batch_start`` is called once per run.

    ``wants_accumulators``: whether events of ternary layers must carry their int
    accumulators.  The packed engine otherwise applies a convolution's float epilogue
    inside the convolution kernel and never materialises them (``event.accumulator``
    is then None); recorders that do not read accumulators set it False."""

    wants_accumulators: bool = True

    def on_batch_start(self, model, batch_size: int) -> None:  # pragma: no cover - default no-op
        pass

    def on_layer(self, event: LayerEvent) -> None:  # pragma: no cover - default no-op
        pass

    def threshold_accumulator(self, layer: Layer):
        """Optional fast path: a :class:`sttn_sim.kernels.quantizer_stats.QuantizerAccumulator`
        for this activation quantizer, or None (the default).  The packed engine then runs
        its threshold kernel with the statistics fused in
        (:func:`~sttn_sim.kernels.quantizer_stats.threshold_pack_accumulate`), never writes
        the codes out, and reports the layer with ``event.statistics`` set to it."""
        return None

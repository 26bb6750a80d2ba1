"""Training small STTN and hard-threshold ternary networks in NumPy.

* the forward/backward of every layer kind lives with the kind
  (:meth:`sttn_sim.kinds.LayerKind.train_forward` / ``train_backward``, on the primitives
  of :mod:`sttn_sim.ops.gradients`: im2col + BLAS convolutions, BN, PReLU, ternary
  activation with the clipped straight-through estimator, pooling, residual add,
  zero-channel pad, linear); :mod:`~sttn_sim.train.losses` — the losses.
* :mod:`~sttn_sim.train.quant` — weight quantizers: STTN (official or exact-scale
  gradient), TWN, TTQ (learned W_p/W_n), fixed Δ.
* :mod:`~sttn_sim.train.network` — :class:`Network` runs a :class:`~sttn_sim.graph.Model`
  forward and backward; :func:`prepare_model` converts a latent model to a baseline's
  training representation; :meth:`Network.export` gives an evaluable model.
* :mod:`~sttn_sim.train.optim` — :class:`Adam` and :func:`cosine_lr`.
* :mod:`~sttn_sim.train.trainer` — :func:`train` with :class:`TrainConfig`, returning a
  :class:`TrainResult` (exported model, per-epoch and per-layer DataFrames).
"""

from .network import TRAINABLE_KINDS, Network, prepare_model
from .optim import Adam, cosine_lr
from .quant import STTN_GRADS, TRAIN_METHODS, HardQuant, SttnQuant, make_quantizer
from .trainer import TrainConfig, TrainingError, TrainResult, layer_records, train

__all__ = [
    "Network", "prepare_model", "TRAINABLE_KINDS", "Adam", "cosine_lr", "SttnQuant", "HardQuant",
    "make_quantizer", "TRAIN_METHODS", "STTN_GRADS", "TrainConfig", "TrainResult", "TrainingError",
    "layer_records", "train",
]

"""Adam (with decoupled weight decay) and the cosine learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np


def cosine_lr(step: int, total_steps: int, lr: float, lr_min: float = 0.0, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then ``lr_min + (lr - lr_min)·(1 + cos(π·p))/2``
    with p = progress in [0, 1] over the remaining steps."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    span = max(total_steps - warmup, 1)
    p = min(max(step - warmup, 0) / span, 1.0)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))


class Adam:
    """Adam (Kingma & Ba) over ``[(key, array, group)]`` from :meth:`Network.parameters`.

    ``weight_decay`` is decoupled (AdamW) and applied only to the groups in
    ``decay_groups`` (default: float conv/linear kernels).  Updates arrays in place;
    deterministic (no randomness, fixed iteration order).  Moments are kept in float64
    for arrays of any dtype.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decay_groups=("weight",)):
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.weight_decay, self.decay_groups = float(weight_decay), tuple(decay_groups)
        self.m = {key: np.zeros(arr.shape) for key, arr, _ in self.params}
        self.v = {key: np.zeros(arr.shape) for key, arr, _ in self.params}
        self.t = 0

    def step(self, grads: dict, lr: float | None = None) -> None:
        lr = self.lr if lr is None else float(lr)
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for key, arr, group in self.params:
            g = grads.get(key)
            if g is None:
                continue
            g = np.asarray(g, np.float64)
            m, v = self.m[key], self.v[key]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            update = lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
            if self.weight_decay and group in self.decay_groups:
                update = update + lr * self.weight_decay * arr
            arr -= update.astype(arr.dtype)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": {k: v.copy() for k, v in self.m.items()}, "v": {k: v.copy() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for k in self.m:
            self.m[k][...] = state["m"][k]
            self.v[k][...] = state["v"][k]

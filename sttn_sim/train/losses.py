"""Training losses: softmax cross-entropy and distillation, each with its gradient."""

from __future__ import annotations

import numpy as np


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    n = logits.shape[0]
    lsm = log_softmax(logits)
    loss = -lsm[np.arange(n), y].mean()
    d = np.exp(lsm)
    d[np.arange(n), y] -= 1.0
    return float(loss), (d / n).astype(logits.dtype)


def distillation(logits, teacher_logits, temperature: float):
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the batch, and its gradient."""
    n, t = logits.shape[0], float(temperature)
    p_t = np.exp(log_softmax(teacher_logits.astype(np.float64) / t))
    lsm = log_softmax(logits.astype(np.float64) / t)
    loss = t * t * float(np.sum(p_t * (np.log(np.clip(p_t, 1e-300, None)) - lsm)) / n)
    grad = t * (np.exp(lsm) - p_t) / n
    return loss, grad.astype(logits.dtype)

r"""Weight quantizers used while training: forward (effective kernel) and backward.

A ternary layer holds latent float weights; each training step builds an *effective*
kernel from them, runs the ordinary convolution / linear map with it, and maps the
gradient ``G = dL/dW_eff`` back onto the latent weights.

STTN (DESIGN §2.1; the official ``util.BinOp``) — two latent kernels W1, W2 kept in
[-1, 1] (clamped after every optimiser step, as the official code clamps before every
forward), per output channel o with n weights per channel:

.. math::

    \alpha_o = \frac{\sum|W_{1,o}| + \sum|W_{2,o}|}{2n},\quad B_k = \operatorname{sign} W_k,\quad
    W_\text{eff} = \alpha (B_1 + B_2),\quad b_\text{eff} = b_1 + b_2.

The two convolutions of the official code are added, so both receive the same
``G = dL/dW_eff``.  Latent gradients:

* ``grad="official"`` (the code, ``updateBinaryGradWeight``):
  :math:`g_k = G\cdot 1\{|W_k| \le 1\} + B_k \cdot \tfrac1n \sum_j B_{k,j} G_j`
  — identity straight-through estimator through ``sign`` (no α factor) plus the scale
  term of the kernel's *own* binary weights divided by n (as if each kernel had its own
  XNOR scale).  (The official mask is ``|W| > 1.96``; after clamping, neither mask ever
  removes anything.)
* ``grad="exact"``: the same straight-through term plus the exact derivative of the
  *shared* scale, :math:`\partial\alpha/\partial W_{k,j} = B_{k,j}/(2n)`:
  :math:`g_k = G\cdot 1\{|W_k|\le 1\} + B_k \cdot \tfrac{1}{2n}\sum_j (B_{1,j} + B_{2,j}) G_j`.
  With the signs held fixed this is the exact gradient of the loss (tested against
  finite differences).

Hard-threshold baselines (DESIGN §2.4; codes ``t = +1 if w > Δ, 0 if |w| <= Δ, -1 if
w < -Δ``), one latent kernel W in [-1, 1], per output channel (``granularity="channel"``)
or per tensor:

* ``twn``: Δ = 0.7·mean|W|, α = mean |w| over the non-zeros, W_eff = α t;
* ``fixed``: a constant Δ (absolute, on the latent kernel), α as TWN;
* ``ttq``: Δ = t·max|W| (t = 0.05), W_eff = W_p on t = +1 and -W_n on t = -1 with
  *learned* W_p, W_n > 0 (initialised to the mean magnitudes of their codes).
  ``dL/dW_p = Σ_{t=+1} G``, ``dL/dW_n = -Σ_{t=-1} G``, latent ``W_p·G`` / ``G`` /
  ``W_n·G`` on the three intervals (Zhu et al., 2017).

TWN and fixed-Δ use the identity straight-through estimator ``g = G·1{|W| <= 1}``
(Δ and α are treated as constants, as in the TWN paper).
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError

TRAIN_METHODS = ("sttn", "twn", "ttq", "fixed", "float")
STTN_GRADS = ("official", "exact")


def _rows(w):
    return w.reshape(w.shape[0], -1)


def _bcast(v, w):
    return v.reshape((-1,) + (1,) * (w.ndim - 1))


class SttnQuant:
    """Two latent kernels ``weight1``/``weight2`` → ``α(B1 + B2)`` (see module doc)."""

    method = "sttn"
    latent_keys = ("weight1", "weight2")

    def __init__(self, grad: str = "official"):
        if grad not in STTN_GRADS:
            raise ModelError(f"sttn_grad={grad!r}: expected one of {STTN_GRADS}")
        self.grad = grad

    @staticmethod
    def alpha(params) -> np.ndarray:
        w1, w2 = params["weight1"], params["weight2"]
        n = _rows(w1).shape[1]
        return (np.abs(_rows(w1)).sum(1) + np.abs(_rows(w2)).sum(1)) / (2.0 * n)

    def forward(self, params, aux):
        w1, w2 = params["weight1"], params["weight2"]
        a = self.alpha(params).astype(w1.dtype)
        w_eff = _bcast(a, w1) * (np.sign(w1) + np.sign(w2))
        b = None
        for key in ("bias1", "bias2"):
            if key in params:
                b = params[key] if b is None else b + params[key]
        return w_eff, b

    def backward(self, params, aux, g_w, g_b):
        w1, w2 = params["weight1"], params["weight2"]
        n = _rows(w1).shape[1]
        s1, s2 = np.sign(w1), np.sign(w2)
        gr = _rows(g_w)
        m1 = (_rows(s1) * gr).sum(1)
        m2 = (_rows(s2) * gr).sum(1)
        if self.grad == "official":
            t1, t2 = m1 / n, m2 / n
        else:
            t1 = t2 = (m1 + m2) / (2.0 * n)
        grads = {
            "weight1": g_w * (np.abs(w1) <= 1) + s1 * _bcast(t1, w1),
            "weight2": g_w * (np.abs(w2) <= 1) + s2 * _bcast(t2, w2),
        }
        for key in ("bias1", "bias2"):
            if key in params:
                grads[key] = g_b
        return grads, {}

    def post_step(self, params, aux):
        for key in self.latent_keys:
            np.clip(params[key], -1.0, 1.0, out=params[key])

    def codes_and_scale(self, params, aux):
        """int8 codes and the per-channel magnitude of the ±1 codes of W_eff (= 2α)."""
        codes = ((np.sign(params["weight1"]) + np.sign(params["weight2"])) / 2).astype(np.int8)
        return codes, 2.0 * self.alpha(params)


class HardQuant:
    """One latent kernel ``weight`` → a hard-threshold ternary kernel (TWN, fixed Δ, TTQ)."""

    latent_keys = ("weight",)

    def __init__(self, method: str, granularity: str = "channel", fixed_delta: float = 0.05, ttq_t: float = 0.05):
        if method not in ("twn", "ttq", "fixed"):
            raise ModelError(f"hard-threshold method {method!r}: expected 'twn', 'ttq' or 'fixed'")
        if granularity not in ("channel", "tensor"):
            raise ModelError(f"granularity={granularity!r}: expected 'channel' or 'tensor'")
        self.method, self.granularity = method, granularity
        self.fixed_delta, self.ttq_t = float(fixed_delta), float(ttq_t)

    def _stat_rows(self, w):
        return _rows(w) if self.granularity == "channel" else w.reshape(1, -1)

    def delta(self, w) -> np.ndarray:
        r = np.abs(self._stat_rows(w))
        if self.method == "twn":
            return 0.7 * r.mean(1)
        if self.method == "ttq":
            return self.ttq_t * r.max(1)
        return np.full(r.shape[0], self.fixed_delta, dtype=w.dtype)

    def _expand(self, v, w):
        return _bcast(v, w) if self.granularity == "channel" else v.reshape(())

    def codes(self, w) -> np.ndarray:
        d = self._expand(self.delta(w).astype(w.dtype), w)
        return ((w > d).astype(np.int8) - (w < -d).astype(np.int8))

    def init_aux(self, params) -> dict:
        """TTQ's learned scales W_p, W_n: the mean magnitude of their codes at the start."""
        if self.method != "ttq":
            return {}
        w = params["weight"]
        t = self.codes(w)
        rows, tr = self._stat_rows(w), self._stat_rows(t)
        pos, neg = tr > 0, tr < 0
        wp = np.where(pos, rows, 0).sum(1) / np.maximum(pos.sum(1), 1)
        wn = np.where(neg, -rows, 0).sum(1) / np.maximum(neg.sum(1), 1)
        wp = np.where(pos.any(1), wp, np.abs(rows).mean(1))
        wn = np.where(neg.any(1), wn, np.abs(rows).mean(1))
        return {"wp": wp.astype(w.dtype), "wn": wn.astype(w.dtype)}

    def scales(self, w, t) -> np.ndarray:
        """TWN / fixed: α = mean |w| over the non-zero codes (0 where there is none)."""
        rows, tr = np.abs(self._stat_rows(w)), self._stat_rows(t) != 0
        cnt = tr.sum(1)
        return np.where(cnt > 0, np.where(tr, rows, 0).sum(1) / np.maximum(cnt, 1), 0.0).astype(w.dtype)

    def forward(self, params, aux):
        w = params["weight"]
        t = self.codes(w)
        if self.method == "ttq":
            w_eff = np.where(t > 0, self._expand(aux["wp"], w), 0) - np.where(t < 0, self._expand(aux["wn"], w), 0)
        else:
            w_eff = self._expand(self.scales(w, t), w) * t
        return w_eff.astype(w.dtype), params.get("bias")

    def backward(self, params, aux, g_w, g_b):
        w = params["weight"]
        inside = np.abs(w) <= 1
        grads = {}
        aux_grads = {}
        if self.method == "ttq":
            t = self.codes(w)
            wp, wn = self._expand(aux["wp"], w), self._expand(aux["wn"], w)
            factor = np.where(t > 0, wp, np.where(t < 0, wn, 1.0))
            grads["weight"] = (g_w * factor * inside).astype(w.dtype)
            gr, tr = self._stat_rows(g_w), self._stat_rows(t)
            aux_grads = {"wp": np.where(tr > 0, gr, 0).sum(1).astype(w.dtype),
                         "wn": (-np.where(tr < 0, gr, 0).sum(1)).astype(w.dtype)}
        else:
            grads["weight"] = g_w * inside
        if "bias" in params:
            grads["bias"] = g_b
        return grads, aux_grads

    def post_step(self, params, aux):
        np.clip(params["weight"], -1.0, 1.0, out=params["weight"])
        for key in ("wp", "wn"):
            if key in aux:
                np.maximum(aux[key], 0.0, out=aux[key])

    def codes_and_scale(self, params, aux):
        w = params["weight"]
        t = self.codes(w)
        if self.method == "ttq":
            return t, np.asarray(aux["wp"], np.float64)
        return t, np.asarray(self.scales(w, t), np.float64)


def make_quantizer(method: str, *, sttn_grad: str = "official", granularity: str = "channel",
                   fixed_delta: float = 0.05, ttq_t: float = 0.05):
    if method == "sttn":
        return SttnQuant(sttn_grad)
    if method in ("twn", "ttq", "fixed"):
        return HardQuant(method, granularity, fixed_delta, ttq_t)
    raise ModelError(f"method {method!r} has no weight quantizer; expected one of {TRAIN_METHODS[:-1]}")

r"""Weight quantizers used while training: forward (effective kernel) and backward.

A ternary layer holds latent float weights; each training step builds an *effective*
kernel from them, runs the ordinary convolution / linear map with it, and maps the
gradient ``G = dL/dW_eff`` back onto the latent weights.

STTN (docs/design.md §2.1; the official ``util.BinOp``) — two latent kernels W1, W2 kept in
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

Hard-threshold baselines (docs/design.md §2.4), one latent kernel W in [-1, 1], per output
channel (``granularity="channel"``) or per tensor: every registered method of
:mod:`sttn_sim.quantizers` with a training rule (:data:`TRAIN_METHODS`). The forward map
IS the method's ternarize function: codes t and scale(s) are computed by it in float64
from the latent kernel and the effective kernel is cast to the training dtype.

* rule ``"hard"`` (``twn`` Δ = 0.7·mean|W|, ``fixed`` a constant Δ on the latent kernel,
  ``optimal``, ``absmean``, ...): W_eff = α t with the method's α (mean |w| over the
  non-zeros), and the identity straight-through estimator ``g = G·1{|W| <= 1}`` (Δ and
  α are treated as constants, as in the TWN paper);
* rule ``"ttq"`` (``ttq``: Δ = t·max|W|, t = 0.05): the method's codes with W_eff = W_p
  on t = +1 and -W_n on t = -1, *learned* W_p, W_n >= 0 (initialised to the method's
  scales, the mean magnitudes of their codes).
  ``dL/dW_p = Σ_{t=+1} G``, ``dL/dW_n = -Σ_{t=-1} G``, latent ``W_p·G`` / ``G`` /
  ``W_n·G`` on the three intervals (Zhu et al., 2017).

Method parameters come from the training configuration by name: ``delta`` =
``fixed_delta``, ``t`` = ``ttq_t``; a method with another required parameter has no
training rule.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, QuantizationError
from ..quantizers import MethodNames, TernaryWeights, get_method
from ..rules import sttn_alpha, sttn_codes, sttn_scale

#: every trainable registered method, then the full-precision baseline (a live view)
TRAIN_METHODS = MethodNames(lambda m: m.train_rule is not None, extra=("float",))
STTN_GRADS = ("official", "exact")


def _rows(w):
    return w.reshape(w.shape[0], -1)


def _bcast(v, w):
    return v.reshape((-1,) + (1,) * (w.ndim - 1))


class SttnQuant:
    """Two latent kernels ``weight1``/``weight2`` → ``α(B1 + B2) = 2α·t`` (see module doc).

    α, the scale 2α and the codes come from :func:`sttn_sim.rules.sttn_alpha` /
    :func:`~sttn_sim.rules.sttn_scale` / :func:`~sttn_sim.rules.sttn_codes`
    in float64 (what :func:`sttn_sim.quantizers.sttn_ternarize` computes); an exactly
    zero latent weight makes an odd sign sum, whose code is 0."""

    method = "sttn"
    latent_keys = ("weight1", "weight2")

    def __init__(self, grad: str = "official"):
        if grad not in STTN_GRADS:
            raise ModelError(f"sttn_grad={grad!r}: expected one of {STTN_GRADS}")
        self.grad = grad

    @staticmethod
    def alpha(params) -> np.ndarray:
        """float64 α per output channel of the latent kernels."""
        return sttn_alpha(*SttnQuant._latent64(params))

    @staticmethod
    def _latent64(params) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(params["weight1"], np.float64), np.asarray(params["weight2"], np.float64)

    def forward(self, params, aux):
        w1 = params["weight1"]
        codes, scale = self.codes_and_scale(params, aux)
        w_eff = (_bcast(scale, w1) * codes).astype(w1.dtype)
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
        """int8 codes and the float64 per-channel magnitude of the ±1 codes of W_eff (= 2α)."""
        codes = sttn_codes(np.sign(params["weight1"]), np.sign(params["weight2"]))
        return codes, sttn_scale(*self._latent64(params))


class HardQuant:
    """One latent kernel ``weight`` → the ternary kernel of a registered hard-threshold
    method (rule ``"hard"``: TWN, fixed Δ, optimal, absmean, ...; rule ``"ttq"``: TTQ)."""

    latent_keys = ("weight",)

    def __init__(self, method: str, granularity: str = "channel", fixed_delta: float = 0.05, ttq_t: float = 0.05):
        spec = _trainable(method)
        if spec.train_rule not in ("hard", "ttq"):
            raise ModelError(f"method {method!r} trains with rule {spec.train_rule!r}, not a hard-threshold rule")
        if granularity not in ("channel", "tensor"):
            raise ModelError(f"granularity={granularity!r}: expected 'channel' or 'tensor'")
        self.method, self.rule, self.granularity = spec.name, spec.train_rule, granularity
        self.fixed_delta, self.ttq_t = float(fixed_delta), float(ttq_t)
        self._ternarize = spec.ternarize
        self.params = _training_params(spec, {"delta": self.fixed_delta, "t": self.ttq_t})

    def ternary(self, w) -> TernaryWeights:
        """The method's :class:`TernaryWeights` of the latent kernel ``w`` (float64)."""
        return self._ternarize(w, granularity=self.granularity, name=f"{self.method} latent kernel", **self.params)

    def codes(self, w) -> np.ndarray:
        """int8 codes of the latent kernel ``w``."""
        return self.ternary(w).codes

    def delta(self, w) -> np.ndarray:
        """The threshold(s) Δ on |w| (float64, one per output channel or one)."""
        tw = self.ternary(w)
        return np.full(1, np.nan) if tw.delta is None else np.atleast_1d(tw.delta)

    def _stat_rows(self, a):
        """Rows over which the statistics are taken: ``[C_out, n]`` or ``[1, n]``."""
        return _rows(a) if self.granularity == "channel" else a.reshape(1, -1)

    def _expand(self, v, w):
        return _bcast(v, w) if self.granularity == "channel" else v.reshape(())

    def init_aux(self, params) -> dict:
        """Rule "ttq": the learned scales W_p, W_n start at the method's scales (the mean
        magnitude of their codes); a row without such codes starts at mean|w|."""
        if self.rule != "ttq":
            return {}
        w = params["weight"]
        tw = self.ternary(w)
        rows, tr = np.abs(self._stat_rows(np.asarray(w, np.float64))), self._stat_rows(tw.codes)
        wp = np.where((tr > 0).any(1), np.atleast_1d(tw.scale), rows.mean(1))
        neg = tw.scale if tw.scale_neg is None else tw.scale_neg  # one scale: W_n starts at it too
        wn = np.where((tr < 0).any(1), np.atleast_1d(neg), rows.mean(1))
        return {"wp": wp.astype(w.dtype), "wn": wn.astype(w.dtype)}

    def forward(self, params, aux):
        w = params["weight"]
        tw = self.ternary(w)
        if self.rule == "ttq":
            t = tw.codes
            w_eff = np.where(t > 0, self._expand(aux["wp"], w), 0) - np.where(t < 0, self._expand(aux["wn"], w), 0)
        else:
            w_eff = tw.dequantize()
        return w_eff.astype(w.dtype), params.get("bias")

    def backward(self, params, aux, g_w, g_b):
        w = params["weight"]
        inside = np.abs(w) <= 1
        grads = {}
        aux_grads = {}
        if self.rule == "ttq":
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
        """int8 codes and the float64 magnitude of the +1 codes (one per row; TTQ: W_p)."""
        w = params["weight"]
        tw = self.ternary(w)
        if self.rule == "ttq":
            return tw.codes, np.asarray(aux["wp"], np.float64)
        return tw.codes, np.atleast_1d(tw.scale)


def _trainable(method: str):
    """The registered method ``method`` if it has a training rule, else a ModelError."""
    try:
        spec = get_method(method)
    except QuantizationError:
        spec = None
    if spec is None or spec.train_rule is None:
        raise ModelError(f"method {method!r} has no weight quantizer; expected one of "
                         f"{', '.join(m for m in TRAIN_METHODS if m != 'float')}")
    return spec


def _training_params(spec, knobs: dict) -> dict:
    """The method's parameters from the training knobs of the same name; a required
    parameter without a knob is a ModelError."""
    out = {}
    for p in spec.params:
        if p.name in knobs:
            out[p.name] = knobs[p.name]
        elif p.required:
            raise ModelError(f"method {spec.name!r} needs parameter {p.name!r}, which training does not supply "
                             f"(training supplies {', '.join(knobs)})")
    return out


def make_quantizer(method: str, *, sttn_grad: str = "official", granularity: str = "channel",
                   fixed_delta: float = 0.05, ttq_t: float = 0.05):
    """The training quantizer of the registered method ``method`` (by its training rule)."""
    spec = _trainable(method)
    if spec.train_rule == "sttn":
        return SttnQuant(sttn_grad)
    return HardQuant(spec.name, granularity, fixed_delta, ttq_t)

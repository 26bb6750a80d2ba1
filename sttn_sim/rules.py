r"""The rules: what sttn_sim computes, written down once (docs/design.md §2).

Every other module calls these functions instead of writing the formulas again; the
activation thresholds ±0.5 appear as literals only here.

Ternary activation (docs/design.md §2.2)
    With thresholds ``lo < hi`` (STTN: ``lo = -0.5``, ``hi = +0.5``) the canonical rule,
    that of the official STTN CUDA kernel, is

    .. math::

        a(x) = \begin{cases} -1 & x < lo \\ 0 & lo \le x < hi \\ +1 & x \ge hi \end{cases}

    (``tie="sttn"``).  QONNX ``Quant`` (2-bit, narrow range, round half to even) puts
    both ties on zero: ``-1`` iff ``x < lo``, ``+1`` iff ``x > hi`` (``tie="half_even"``).
    Both rules are strict on the ``lo`` side; they differ only at ``x == hi``.

    QONNX ``Quant`` of a ternary tensor with scale ``s > 0`` (bit width 2, signed, narrow
    range, zero point 0, rounding ``ROUND``) is ``q = clip(round_half_even(x/s), -1, 1)``:
    ``x/s > 1/2 -> +1``, ``x/s < -1/2 -> -1``, ``|x/s| <= 1/2 -> 0`` (round half to even
    sends ±1/2 to 0), i.e. the ``half_even`` rule with ``lo = -s/2``, ``hi = +s/2``
    (:func:`quant_ternary_bounds`; ``s/2`` is exact in binary floating point).

Folded thresholds (§2.2)
    A BN (or any per-channel affine map ``y = g·x + h``) before the activation becomes
    per-channel thresholds on ``x``: with ``d = sign(g)``, ``z = d·x``:
    ``+1 iff z >= T_hi`` (``z > T_hi`` under ``half_even``), ``-1 iff z < T_lo``
    (``constant`` where ``d = 0``).  For an integer ``x`` the thresholds are exact
    integer ceilings (floors for a strict ``hi``) of the rational values.

Comparison thresholds (what the engine and the exports compare with)
    Every executor compares in the canonical form ``-1 iff z < lo'``, ``+1 iff z >= hi'``
    (the packed kernels, FINN ``MultiThreshold``, ONNX ``Less``/``GreaterOrEqual``).
    :func:`comparison_thresholds` gives ``(lo', hi')`` for either tie rule, exactly, in
    the executor's type (int32 for integer accumulators, float32 otherwise).

BatchNorm (inference)
    ``y = (x - mean) / σ · γ + β`` with ``σ = sqrt(var + eps)`` (:func:`batchnorm_std`):
    written out in float64 by :func:`batchnorm_inference` (the reference), and as the
    affine map ``y = g·x + h`` by :func:`batchnorm_affine` (what folding and the engine use).

STTN weights (§2.1)
    ``α_o = (Σ|W1_o| + Σ|W2_o|) / (2n)`` after clamping to [-1, 1], ``B_k = sign W_k``,
    codes ``t = (B1 + B2) / 2``, scale ``s_o = 2α_o``.

Sizes
    A convolution or pooling window of ``k`` with stride ``s`` and padding ``p`` over
    ``n`` positions gives ``(n + 2p - k) // s + 1`` outputs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .errors import FoldError

#: The STTN activation thresholds (the defaults of every ternary activation).
ACTIVATION_LO = -0.5
ACTIVATION_HI = 0.5
#: Tie rules of a ternary activation (see the module note).
TIE_RULES = ("sttn", "half_even")
#: Default BatchNorm epsilon (PyTorch's).
BN_EPS = 1e-5
#: float32 relative rounding: a float32 value is within this factor of the real value.
FLOAT32_REL_ROUNDING = 2.0**-23
#: Integer thresholds are clipped here: beyond any reachable accumulator, inside int64.
INTEGER_THRESHOLD_LIMIT = 2**62


# --------------------------------------------------------------------------------------
# the activation rule


def activation_bounds(attrs: dict) -> tuple[float, float]:
    """``(lo, hi)`` of a ternary activation layer's attributes, with the STTN defaults."""
    return float(attrs.get("lo", ACTIVATION_LO)), float(attrs.get("hi", ACTIVATION_HI))


def folded_activation_bounds(attrs: dict) -> tuple[float, float]:
    """``(lo, hi)`` that a folded ``threshold`` layer's activation compared with
    (attributes ``activation_lo``/``activation_hi``), with the STTN defaults."""
    return (float(attrs.get("activation_lo", ACTIVATION_LO)),
            float(attrs.get("activation_hi", ACTIVATION_HI)))


def ternary_activation(x: np.ndarray, lo: float = ACTIVATION_LO, hi: float = ACTIVATION_HI,
                       tie: str = "sttn") -> np.ndarray:
    """int8 codes of the ternary activation: ``-1 if x < lo``; ``+1 if x >= hi``
    (``tie="sttn"``) or ``x > hi`` (``tie="half_even"``); else 0."""
    plus = (x > hi) if tie == "half_even" else (x >= hi)
    return (plus.astype(np.int8) - (x < lo).astype(np.int8)).astype(np.int8)


def _per_channel(v, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim`` array."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def check_tie(tie: str, where: str = "tie") -> str:
    """``tie`` if it is one of :data:`TIE_RULES`, else a ValueError naming ``where``."""
    if tie not in TIE_RULES:
        raise ValueError(f"{where}: tie rule {tie!r} is not one of {list(TIE_RULES)}")
    return tie


def apply_threshold(x: np.ndarray, direction, lo, hi, constant, tie: str = "sttn") -> np.ndarray:
    """Folded per-channel thresholds (channel axis 1): ``z = direction·x``;
    +1 if ``z >= hi`` (``tie="sttn"``) or ``z > hi`` (``tie="half_even"``), -1 if
    ``z < lo``, 0 otherwise; ``constant`` where direction == 0.

    Integer ``x`` is compared as integers, anything else in float64."""
    check_tie(tie)
    d = _per_channel(direction, x.ndim)
    z = x * d if x.dtype.kind in "iu" else np.asarray(x, np.float64) * d
    t_hi = _per_channel(hi, x.ndim)
    plus = (z > t_hi) if tie == "half_even" else (z >= t_hi)
    codes = plus.astype(np.int8) - (z < _per_channel(lo, x.ndim)).astype(np.int8)
    return np.where(d == 0, _per_channel(np.asarray(constant, np.int8), x.ndim), codes).astype(np.int8)


def quant_ternary_bounds(scale) -> tuple:
    """``(lo, hi) = (-s/2, +s/2)``: the thresholds of a QONNX ternary ``Quant`` with scale
    ``s`` under the ``half_even`` rule (see the module note); float64, exact."""
    s = np.asarray(scale, np.float64)
    return s * ACTIVATION_LO, s * ACTIVATION_HI


def near_threshold(value: np.ndarray, lo, hi, eps: float) -> np.ndarray:
    """Mask of values within ``eps`` (inclusive) of either threshold: the near-ties."""
    return (np.abs(value - lo) <= eps) | (np.abs(value - hi) <= eps)


def float32_near_threshold(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mask of float64 values ``z`` whose float32 rounding may fall on the other side of
    threshold ``t``: ``|z - t| <= 2⁻²³·max(|z|, |t|)``."""
    return np.abs(z - t) <= FLOAT32_REL_ROUNDING * np.maximum(np.abs(z), np.abs(t))


# --------------------------------------------------------------------------------------
# BatchNorm as an affine map, and thresholds through it


def batchnorm_std(var, eps: float = BN_EPS):
    """``σ = sqrt(var + eps)``, the BatchNorm standard deviation, in the dtype numpy gives
    ``var + eps`` (float32 stays float32: training keeps its dtype)."""
    return np.sqrt(var + eps)


def batchnorm_inference(x: np.ndarray, mean, var, gamma, beta, eps: float = BN_EPS) -> np.ndarray:
    """Inference BatchNorm as written, in float64 (channel axis 1):
    ``y = (x - mean) / sqrt(var + eps) · γ + β``, in that order of operations (the
    ground truth; :func:`batchnorm_affine` is the same map rearranged as ``g·x + h``)."""
    f = lambda v: _per_channel(np.asarray(v, np.float64), x.ndim)
    return (np.asarray(x, np.float64) - f(mean)) / batchnorm_std(f(var), eps) * f(gamma) + f(beta)


def batchnorm_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """BN layer ``bn`` as ``y = g·x + h`` (float64): ``g = γ / sqrt(var + eps)``,
    ``h = β - g·mean``.  Raises :class:`FoldError` naming the layer for a negative
    variance or ``var + eps <= 0``."""
    p = {k: np.asarray(v, np.float64) for k, v in bn.params.items()}
    var = p["running_var"]
    if np.any(var < 0):
        bad = np.flatnonzero(var < 0)
        raise FoldError(
            f"layer {bn.name!r}: running_var is negative in {bad.size} channel(s) (first: channel {bad[0]}, "
            f"value {var[bad[0]]:.6g}); a variance must be >= 0")
    eps = float(bn.attrs.get("eps", BN_EPS))
    if not np.all(var + eps > 0):
        raise FoldError(f"layer {bn.name!r}: running_var + eps must be > 0 (eps={eps})")
    g = p["weight"] / batchnorm_std(var, eps)
    h = p["bias"] - g * p["running_mean"]
    return g, h


def thresholds_from_affine(gain, offset, lo: float = ACTIVATION_LO, hi: float = ACTIVATION_HI, *,
                           integer: bool = False, tie: str = "sttn"):
    """Per-channel thresholds on x for the ternary activation of ``y = gain·x + offset``.

    The activation is ``+1 iff y >= hi``, ``-1 iff y < lo``.  With ``d = sign(gain)`` and
    ``z = d·x`` we have ``y = |gain|·z + offset``, so for gain ≠ 0

        y >= hi  ⟺  |gain|·z >= hi - offset  ⟺  z >= (hi - offset) / |gain|
        y <  lo  ⟺  |gain|·z <  lo - offset  ⟺  z <  (lo - offset) / |gain|

    (dividing by a positive number keeps both the direction and the strictness; for
    gain < 0 the comparisons on x itself reverse: ``+1 iff x <= -(hi-offset)/|gain|``,
    which ``z = -x`` expresses without a second rule).  For gain == 0, y = offset is a
    constant and the code is the activation of ``offset``.

    ``integer=True`` is for an integer x (an accumulator): for integer z and real t,
    ``z >= t ⟺ z >= ceil(t)`` and ``z < t ⟺ z < ceil(t)``, so both thresholds become
    ``ceil`` of the real ones (computed exactly, :func:`exact_ceil`) and the strict /
    non-strict forms are kept.

    ``tie="half_even"`` (``+1 iff y > hi``): the same division gives
    ``y > hi ⟺ z > (hi - offset)/|gain|`` (strictness kept); for an integer z,
    ``z > t ⟺ z > floor(t)``, so ``hi`` becomes the exact floor (:func:`exact_floor`)
    and is compared strictly (:func:`comparison_thresholds` turns it into
    ``z >= floor(t) + 1``).  ``lo`` is strict under both rules.  ``lo``/``hi`` may be
    per-channel arrays.

    All arithmetic is float64.  Returns ``(direction int8, lo_t, hi_t, constant int8)``
    with ``lo_t``/``hi_t`` float64, or int64 when ``integer``.
    """
    gain = np.asarray(gain, np.float64)
    offset = np.broadcast_to(np.asarray(offset, np.float64), gain.shape)
    direction = np.sign(gain).astype(np.int8)
    magnitude = np.where(gain == 0, 1.0, np.abs(gain))  # placeholder 1 where unused
    constant = ternary_activation(offset, lo, hi, tie=check_tie(tie))
    if integer:
        hi_int = exact_floor if tie == "half_even" else exact_ceil
        return direction, exact_ceil(lo, offset, magnitude, direction), \
            hi_int(hi, offset, magnitude, direction), constant
    with np.errstate(over="ignore"):  # a tiny |gain| may give ±inf: a threshold no value reaches
        t_hi = (hi - offset) / magnitude
        t_lo = (lo - offset) / magnitude
    t_hi = np.where(direction == 0, 0.0, t_hi)
    t_lo = np.where(direction == 0, 0.0, t_lo)
    return direction, t_lo, t_hi, constant


def exact_ceil(bound, offset, magnitude, direction) -> np.ndarray:
    """``ceil((bound - offset) / magnitude)`` of the exact rational values of the float64
    inputs, clipped to ±2**62 (beyond any reachable accumulator); 0 where
    ``direction == 0``.

    The float64 quotient is rounded twice, so when the real quotient lies within an ulp
    of an integer, ``ceil`` of the float can be off by one and flip the code of that
    integer accumulator.  Non-finite inputs (``fold`` refuses them) fall back to the
    clipped float quotient.
    """
    return _exact_integer(bound, offset, magnitude, direction, math.ceil)


def exact_floor(bound, offset, magnitude, direction) -> np.ndarray:
    """``floor((bound - offset) / magnitude)``, exactly, like :func:`exact_ceil` (the
    integer threshold of a strict comparison: ``z > t ⟺ z > floor(t)`` for integer z)."""
    return _exact_integer(bound, offset, magnitude, direction, math.floor)


def _exact_integer(bound, offset, magnitude, direction, rounding) -> np.ndarray:
    limit = INTEGER_THRESHOLD_LIMIT
    bound, offset, magnitude, direction = np.broadcast_arrays(
        np.asarray(bound, np.float64), offset, magnitude, direction)
    out = np.zeros(direction.shape, np.int64)
    for i in np.ndindex(out.shape):
        if direction[i] == 0:
            continue
        if np.isfinite(bound[i]) and np.isfinite(offset[i]) and np.isfinite(magnitude[i]):
            q = rounding((Fraction(float(bound[i])) - Fraction(float(offset[i]))) / Fraction(float(magnitude[i])))
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                f = (bound[i] - offset[i]) / magnitude[i]
            q = 0 if np.isnan(f) else (limit if f > 0 else -limit) if np.isinf(f) else rounding(f)
        out[i] = min(max(q, -limit), limit)
    return out


def float32_thresholds(t64, *, strict: bool = False) -> np.ndarray:
    """Round float64 thresholds UP to the smallest float32 >= t (``strict=True``: the
    smallest float32 > t).

    For a float32 z and a real t, ``z >= t ⟺ z >= ⌈t⌉₃₂`` and ``z < t ⟺ z < ⌈t⌉₃₂``,
    so a float32 comparison with ``⌈t⌉₃₂`` is exactly the float64 rule applied to the
    float32 value.  A strict ``z > t`` becomes ``z >= t⁺`` with ``t⁺`` the smallest
    float32 strictly above t: if ``z > t`` then z, a float32 above t, is ``>= t⁺``;
    conversely ``z >= t⁺ > t``.  (±inf stay ±inf: no value reaches them.)"""
    t64 = np.asarray(t64, np.float64)
    shape = t64.shape
    t64 = t64.reshape(-1)
    with np.errstate(over="ignore"):
        t32 = t64.astype(np.float32)
    below = (t32.astype(np.float64) <= t64) if strict else (t32.astype(np.float64) < t64)
    below &= np.isfinite(t64)
    t32[below] = np.nextafter(t32[below], np.float32(np.inf))
    return t32.reshape(shape)


def int32_thresholds(t) -> np.ndarray:
    """Integer thresholds clipped to the int32 range (no int32 accumulator lies beyond)."""
    return np.clip(np.asarray(t, np.int64), -(2**31), 2**31 - 1).astype(np.int32)


def comparison_thresholds(lo, hi, *, integer: bool, tie: str = "sttn") -> tuple[np.ndarray, np.ndarray]:
    """``(lo', hi')`` for the canonical comparison ``-1 iff z < lo'``, ``+1 iff z >= hi'``
    that reproduces a ``threshold`` layer's rule exactly on the executor's values:

    * integer z (int32 accumulators): ``lo' = lo``; ``hi' = hi`` (``sttn``) or
      ``hi + 1`` (``half_even``: ``z > h ⟺ z >= h + 1`` for integers, ``h`` being the
      exact floor of the real threshold), clipped to int32;
    * float32 z: ``lo' = ⌈lo⌉₃₂``; ``hi' = ⌈hi⌉₃₂`` (``sttn``) or the smallest float32
      strictly above ``hi`` (``half_even``), see :func:`float32_thresholds`.
    """
    strict = check_tie(tie) == "half_even"
    if integer:
        hi64 = np.asarray(hi, np.int64)
        return int32_thresholds(lo), int32_thresholds(hi64 + 1 if strict else hi64)
    return float32_thresholds(lo), float32_thresholds(hi, strict=strict)


def constant_thresholds(constant) -> tuple[np.ndarray, np.ndarray]:
    """Canonical thresholds ``(lo', hi')`` that give the code ``constant`` (per channel)
    at ``z = 0``: ``(0, 0) -> +1`` (0 >= 0), ``(0, 1) -> 0``, ``(1, 1) -> -1`` (0 < 1).
    The exports use them for the channels whose direction is 0 (``z = 0·x``)."""
    c = np.asarray(constant, np.int64)
    return (c < 0).astype(np.float64), (c <= 0).astype(np.float64)


def midpoint_thresholds(t_int, scale, offset) -> np.ndarray:
    """Float thresholds on ``y = scale·z + offset`` equivalent to the canonical integer
    thresholds ``t_int`` on an integer ``z`` (``scale > 0``), at the midpoints:

        z >= t  ⟺  z >= t - 1/2  ⟺  y >= scale·(t - 1/2) + offset,
        z <  t  ⟺  z <  t - 1/2  ⟺  y <  scale·(t - 1/2) + offset,

    so a value of y computed with any error below ``scale/2`` still gives the exact code
    (see :func:`float32_sum_error_bound`).  float64."""
    s = np.asarray(scale, np.float64)
    return s * (np.asarray(t_int, np.float64) + ACTIVATION_LO) + np.asarray(offset, np.float64)


def float32_sum_error_bound(n_terms, abs_sum) -> np.ndarray:
    """A bound on ``|fl32(Σ a_i) - Σ a_i|`` for a float32 sum of ``n`` terms (any order,
    FMA or not) with ``Σ|a_i| = abs_sum``: ``γ_n·abs_sum``, ``γ_n = n·u/(1 - n·u)``,
    ``u = 2⁻²⁴`` (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2)."""
    nu = np.asarray(n_terms, np.float64) * 2.0**-24
    return nu / (1.0 - nu) * np.asarray(abs_sum, np.float64)


# --------------------------------------------------------------------------------------
# STTN weights


def sttn_alpha(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The shared per-output-channel scale ``α_o = (Σ|W1_o| + Σ|W2_o|) / (2n)`` of two
    (already clamped) latent kernels, axis 0 = output channel, in their dtype."""
    r1, r2 = w1.reshape(w1.shape[0], -1), w2.reshape(w2.shape[0], -1)
    return (np.abs(r1).sum(axis=1) + np.abs(r2).sum(axis=1)) / (2.0 * r1.shape[1])


def sttn_scale(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The per-output-channel magnitude ``s_o = 2α_o`` of the codes ``t`` in the effective
    kernel ``α_o (B1 + B2) = s_o t`` (:func:`sttn_alpha`; the doubling is exact)."""
    return 2.0 * sttn_alpha(w1, w2)


def sttn_codes(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """int8 codes ``t = (B1 + B2) / 2`` of two sign kernels in {-1, +1}; a sum of ±1
    (an exactly-zero latent weight with ``sign(0) = 0``) becomes 0."""
    total = np.asarray(b1, np.int64) + np.asarray(b2, np.int64)
    return np.where(np.abs(total) == 2, total // 2, 0).astype(np.int8)


# --------------------------------------------------------------------------------------
# sizes


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Outputs of a window ``kernel`` with ``stride`` and ``padding``: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


__all__ = [
    "ACTIVATION_LO", "ACTIVATION_HI", "TIE_RULES", "BN_EPS", "FLOAT32_REL_ROUNDING", "INTEGER_THRESHOLD_LIMIT",
    "activation_bounds", "folded_activation_bounds", "ternary_activation", "apply_threshold", "near_threshold",
    "float32_near_threshold", "batchnorm_std", "batchnorm_inference", "batchnorm_affine", "thresholds_from_affine", "exact_ceil", "exact_floor",
    "float32_thresholds", "int32_thresholds", "comparison_thresholds", "constant_thresholds", "midpoint_thresholds",
    "float32_sum_error_bound", "quant_ternary_bounds", "check_tie", "sttn_alpha", "sttn_scale", "sttn_codes", "conv_output_size",
]

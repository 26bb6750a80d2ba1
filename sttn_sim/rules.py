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

Folded thresholds (§2.2)
    A BN (or any per-channel affine map ``y = g·x + h``) before the activation becomes
    per-channel thresholds on ``x``: with ``d = sign(g)``, ``z = d·x``:
    ``+1 iff z >= T_hi``, ``-1 iff z < T_lo`` (``constant`` where ``d = 0``).  For an
    integer ``x`` the thresholds are exact integer ceilings of the rational values.

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


def apply_threshold(x: np.ndarray, direction, lo, hi, constant) -> np.ndarray:
    """Folded per-channel thresholds (channel axis 1): ``z = direction·x``;
    +1 if ``z >= hi``, -1 if ``z < lo``, 0 otherwise; ``constant`` where direction == 0.

    Integer ``x`` is compared as integers, anything else in float64."""
    d = _per_channel(direction, x.ndim)
    z = x * d if x.dtype.kind in "iu" else np.asarray(x, np.float64) * d
    codes = (z >= _per_channel(hi, x.ndim)).astype(np.int8) - (z < _per_channel(lo, x.ndim)).astype(np.int8)
    return np.where(d == 0, _per_channel(np.asarray(constant, np.int8), x.ndim), codes).astype(np.int8)


def near_threshold(value: np.ndarray, lo, hi, eps: float) -> np.ndarray:
    """Mask of values within ``eps`` (inclusive) of either threshold: the near-ties."""
    return (np.abs(value - lo) <= eps) | (np.abs(value - hi) <= eps)


def float32_near_threshold(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mask of float64 values ``z`` whose float32 rounding may fall on the other side of
    threshold ``t``: ``|z - t| <= 2⁻²³·max(|z|, |t|)``."""
    return np.abs(z - t) <= FLOAT32_REL_ROUNDING * np.maximum(np.abs(z), np.abs(t))


# --------------------------------------------------------------------------------------
# BatchNorm as an affine map, and thresholds through it


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
    g = p["weight"] / np.sqrt(var + eps)
    h = p["bias"] - g * p["running_mean"]
    return g, h


def thresholds_from_affine(gain, offset, lo: float = ACTIVATION_LO, hi: float = ACTIVATION_HI, *,
                           integer: bool = False):
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

    All arithmetic is float64.  Returns ``(direction int8, lo_t, hi_t, constant int8)``
    with ``lo_t``/``hi_t`` float64, or int64 when ``integer``.
    """
    gain = np.asarray(gain, np.float64)
    offset = np.broadcast_to(np.asarray(offset, np.float64), gain.shape)
    direction = np.sign(gain).astype(np.int8)
    magnitude = np.where(gain == 0, 1.0, np.abs(gain))  # placeholder 1 where unused
    constant = ternary_activation(offset, lo, hi)
    if integer:
        return direction, exact_ceil(lo, offset, magnitude, direction), \
            exact_ceil(hi, offset, magnitude, direction), constant
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
    limit = INTEGER_THRESHOLD_LIMIT
    bound, offset, magnitude, direction = np.broadcast_arrays(
        np.asarray(bound, np.float64), offset, magnitude, direction)
    out = np.zeros(direction.shape, np.int64)
    for i in np.ndindex(out.shape):
        if direction[i] == 0:
            continue
        if np.isfinite(bound[i]) and np.isfinite(offset[i]) and np.isfinite(magnitude[i]):
            q = math.ceil((Fraction(float(bound[i])) - Fraction(float(offset[i]))) / Fraction(float(magnitude[i])))
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                f = (bound[i] - offset[i]) / magnitude[i]
            q = 0 if np.isnan(f) else (limit if f > 0 else -limit) if np.isinf(f) else math.ceil(f)
        out[i] = min(max(q, -limit), limit)
    return out


def float32_thresholds(t64) -> np.ndarray:
    """Round float64 thresholds UP to the smallest float32 >= t.

    For a float32 z and a real t, ``z >= t ⟺ z >= ⌈t⌉₃₂`` and ``z < t ⟺ z < ⌈t⌉₃₂``,
    so a float32 comparison with ``⌈t⌉₃₂`` is exactly the float64 rule applied to the
    float32 value."""
    t64 = np.asarray(t64, np.float64)
    t32 = t64.astype(np.float32)
    below = t32.astype(np.float64) < t64
    t32[below] = np.nextafter(t32[below], np.float32(np.inf))
    return t32


def int32_thresholds(t) -> np.ndarray:
    """Integer thresholds clipped to the int32 range (no int32 accumulator lies beyond)."""
    return np.clip(np.asarray(t, np.int64), -(2**31), 2**31 - 1).astype(np.int32)


# --------------------------------------------------------------------------------------
# STTN weights


def sttn_alpha(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The shared per-output-channel scale ``α_o = (Σ|W1_o| + Σ|W2_o|) / (2n)`` of two
    (already clamped) latent kernels, axis 0 = output channel, in their dtype."""
    r1, r2 = w1.reshape(w1.shape[0], -1), w2.reshape(w2.shape[0], -1)
    return (np.abs(r1).sum(axis=1) + np.abs(r2).sum(axis=1)) / (2.0 * r1.shape[1])


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
    "float32_near_threshold", "batchnorm_affine", "thresholds_from_affine", "exact_ceil", "float32_thresholds",
    "int32_thresholds", "sttn_alpha", "sttn_codes", "conv_output_size",
]

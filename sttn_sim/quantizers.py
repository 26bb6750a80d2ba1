r"""Weight and activation ternarizers: STTN and the hard-threshold baselines.

Every weight quantizer is one documented function that takes a float tensor and returns
the common result type :class:`TernaryWeights` (int8 codes in {-1, 0, +1}, a positive
scale per tensor or per output channel, the threshold that was used, and a method tag),
so analysis code can treat STTN and every baseline the same way::

    tw = twn_ternarize(w, granularity="channel", name="features.4.conv1")
    w_hat = tw.dequantize()
    quantization_error(w, tw)          # {"l2": ..., "cosine": ...}

Every method is also an entry of ONE registry (:class:`Method`: name, label, short
label, colour, marker, the function, its parameters, whether it is a hard-threshold
baseline and which training rule trains it; :func:`get_method`, :func:`all_methods`,
:func:`register_method`, :func:`registered_method` for a temporary one). Training
(``sttn_sim.train.quant``), the baseline table, the figures and the soft-vs-hard study
read their method lists, labels and colours from it, so a new hard-threshold baseline is
one function and one :func:`register_method` call in this file::

    register_method(Method("half", "Δ = 0.5·max|w|", "half", "#17becf", "p", half_ternarize))

:data:`METHODS` and :data:`HARD_THRESHOLD_METHODS` are live views of the registry.

Conventions shared by all functions (docs/design.md §2.1, §2.2, §2.4, §3):

* Axis 0 is the output channel, for conv weights ``[C_out, C_in, kh, kw]`` and linear
  weights ``[C_out, C_in]``. ``granularity="channel"`` computes every statistic over all
  other axes, separately for each index of axis 0 (the input needs ``ndim >= 2``);
  ``granularity="tensor"`` computes one statistic for the whole tensor.
* All arithmetic is done in float64 whatever the input dtype (float16/32 inputs are
  converted exactly).
* Inputs must be floating-point, finite, non-empty and have ``ndim >= 1``. Every user
  mistake raises :class:`~sttn_sim.errors.QuantizationError` (a ``ValueError``) whose
  message starts with the ``name`` keyword (the layer or tensor name) and says what was
  expected.

The hard-threshold rule (docs/design.md §2.4) shared by every baseline is

.. math::

    t(w) = \begin{cases} +1 & w > \Delta \\ 0 & |w| \le \Delta \\ -1 & w < -\Delta \end{cases}
    \qquad
    \alpha = \operatorname{mean}\{ |w| : t(w) \ne 0 \} \quad (0 \text{ if there is none}),

i.e. a magnitude exactly equal to Δ becomes 0. For fixed codes, this α is the L2-optimal
scale, so the baselines are compared at their best scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sttn_sim.errors import QuantizationError
from sttn_sim.rules import (
    ACTIVATION_HI,
    ACTIVATION_LO,
    near_threshold,
    sttn_codes,
    sttn_scale,
    ternary_activation,
)

__all__ = [
    "TernaryWeights",
    "TernaryActivations",
    "Method",
    "MethodParam",
    "MethodNames",
    "TRAIN_RULES",
    "get_method",
    "all_methods",
    "register_method",
    "unregister_method",
    "registered_method",
    "METHODS",
    "TWN_DELTA_RATIO",
    "ABSMEAN_DELTA_RATIO",
    "GRANULARITIES",
    "ZERO_POLICIES",
    "sttn_ternarize",
    "sttn_equivalent_weight",
    "recover_merged_ternary",
    "hard_threshold",
    "twn_ternarize",
    "ttq_ternarize",
    "optimal_ternarize",
    "fixed_ternarize",
    "sparsity_ternarize",
    "absmean_ternarize",
    "HARD_THRESHOLD_METHODS",
    "ternarize_activations",
    "quantization_error",
]

#: TWN's threshold: Δ = 0.7·mean|w| (Li et al., 2016).
TWN_DELTA_RATIO = 0.7
#: BitNet b1.58's absmean threshold: Δ = 0.5·mean|w|.
ABSMEAN_DELTA_RATIO = 0.5
#: Accepted values of the ``granularity`` keyword.
GRANULARITIES = ("tensor", "channel")
#: Accepted values of :func:`sttn_ternarize`'s ``zero_policy`` keyword.
ZERO_POLICIES = ("error", "positive", "round_to_zero")


# --------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TernaryWeights:
    """A ternary weight tensor: int8 codes, scale(s) and how they were obtained.

    Attributes:
        codes: int8 array with the shape of the quantized tensor, values in {-1, 0, +1}.
        scale: float64 array, shape ``(C_out,)`` for ``granularity="channel"`` and shape
            ``()`` for ``"tensor"``. The (non-negative) magnitude of the +1 codes; for TTQ
            this is ``W_p``.
        method: the name of a registered method (one of :data:`METHODS`).
        granularity: ``"tensor"`` or ``"channel"``.
        delta: threshold(s) on ``|w|`` that produced the codes, same shape as ``scale``;
            ``None`` for STTN, where no threshold exists.
        scale_neg: TTQ only: ``W_n``, the magnitude used for the -1 codes (same shape as
            ``scale``); ``None`` for every other method.

    The constructor checks the invariants above and converts ``codes`` to int8 and
    ``scale``/``delta``/``scale_neg`` to float64 arrays; a violation raises
    :class:`~sttn_sim.errors.QuantizationError`.
    """

    codes: np.ndarray
    scale: np.ndarray
    method: str
    granularity: str
    delta: np.ndarray | None
    scale_neg: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = "TernaryWeights"
        if self.method not in METHODS:
            raise QuantizationError(f"{where}: method must be one of {METHODS}, got {self.method!r}")
        if self.granularity not in GRANULARITIES:
            raise QuantizationError(
                f"{where}: granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        codes = np.asarray(self.codes)
        if codes.dtype == np.bool_ or not np.issubdtype(codes.dtype, np.integer):
            raise QuantizationError(f"{where}: codes must be an integer array, got dtype {codes.dtype}")
        if codes.ndim < 1 or codes.size == 0:
            raise QuantizationError(f"{where}: codes must be a non-empty array with ndim >= 1, got shape {codes.shape}")
        if np.any((codes < -1) | (codes > 1)):
            bad = np.unique(codes[(codes < -1) | (codes > 1)])[:5].tolist()
            raise QuantizationError(f"{where}: codes must be in {{-1, 0, +1}}, found {bad}")
        if self.granularity == "channel":
            if codes.ndim < 2:
                raise QuantizationError(
                    f"{where}: granularity='channel' needs codes with ndim >= 2, got shape {codes.shape}"
                )
            scale_shape: tuple[int, ...] = (codes.shape[0],)
        else:
            scale_shape = ()
        object.__setattr__(self, "codes", codes.astype(np.int8, copy=False))

        for field in ("scale", "delta", "scale_neg"):
            value = getattr(self, field)
            if value is None:
                if field == "scale":
                    raise QuantizationError(f"{where}: scale must not be None")
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != scale_shape:
                raise QuantizationError(
                    f"{where}: {field} must have shape {scale_shape} for granularity="
                    f"{self.granularity!r} and codes of shape {codes.shape}, got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise QuantizationError(f"{where}: {field} must be finite and >= 0, got {arr}")
            object.__setattr__(self, field, arr)
        if (self.method == "ttq") != (self.scale_neg is not None):
            raise QuantizationError(
                f"{where}: scale_neg must be given exactly for method 'ttq' "
                f"(method={self.method!r}, scale_neg is {'set' if self.scale_neg is not None else 'None'})"
            )

    def _broadcast(self, values: np.ndarray) -> np.ndarray:
        """Reshape a scale-shaped array so it broadcasts along axis 0 of ``codes``."""
        if self.granularity == "channel":
            return values.reshape((-1,) + (1,) * (self.codes.ndim - 1))
        return values

    def dequantize(self) -> np.ndarray:
        r"""The float64 tensor the codes stand for.

        .. math::

            \hat W_o = s_o \, t_o \quad\text{(per channel; one } s \text{ for "tensor")}, \qquad
            \hat W^{\mathrm{TTQ}} = W_p [t = +1] - W_n [t = -1].
        """
        codes = self.codes.astype(np.float64)
        scale = self._broadcast(self.scale)
        if self.scale_neg is None:
            return scale * codes
        scale_neg = self._broadcast(self.scale_neg)
        return np.where(codes > 0, scale, 0.0) - np.where(codes < 0, scale_neg, 0.0)

    @property
    def sparsity(self) -> float:
        """Fraction of codes equal to 0."""
        return float(np.count_nonzero(self.codes == 0)) / float(self.codes.size)


@dataclass(frozen=True)
class TernaryActivations:
    """Result of :func:`ternarize_activations`.

    Attributes:
        codes: int8 array with the shape of the input, values in {-1, 0, +1}.
        lo, hi: the thresholds used (float64 values).
        exact_ties: number of elements exactly equal to ``lo`` or ``hi`` (where the
            official pure-PyTorch variant returns ±0.5 instead of a ternary value).
        near_ties: number of elements with ``|x - lo| <= tie_eps`` or
            ``|x - hi| <= tie_eps`` (equals ``exact_ties`` when ``tie_eps == 0``).
    """

    codes: np.ndarray
    lo: float
    hi: float
    exact_ties: int
    near_ties: int


# --------------------------------------------------------------------------------------
# Validation helpers (every user mistake becomes a QuantizationError naming `name`)
# --------------------------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise QuantizationError(f"name must be a str (the layer or tensor name), got {type(name).__name__}")
    return name


def _as_float64(x: object, name: str, *, min_ndim: int = 1, what: str = "") -> np.ndarray:
    """Validate a float tensor and return a float64 copy.

    ``what`` qualifies the tensor in messages (e.g. ``" (W1)"``).
    """
    label = f"{name}{what}"
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise QuantizationError(
            f"{label}: expected a floating-point array, could not convert {type(x).__name__} ({exc})"
        ) from None
    if not np.issubdtype(arr.dtype, np.floating):
        raise QuantizationError(f"{label}: expected a floating-point array, got dtype {arr.dtype}")
    if arr.ndim < min_ndim:
        raise QuantizationError(
            f"{label}: expected an array with ndim >= {min_ndim}"
            f"{' (axis 0 = output channel)' if min_ndim >= 2 else ''}, got ndim {arr.ndim} (shape {arr.shape})"
        )
    if arr.size == 0:
        raise QuantizationError(f"{label}: expected a non-empty array, got shape {arr.shape}")
    out = arr.astype(np.float64, copy=True)
    finite = np.isfinite(out)
    if not finite.all():
        n_nan = int(np.count_nonzero(np.isnan(out)))
        n_pinf = int(np.count_nonzero(out == np.inf))
        n_ninf = int(np.count_nonzero(out == -np.inf))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise QuantizationError(
            f"{label}: expected finite values, found {n_nan} NaN, {n_pinf} +Inf and {n_ninf} -Inf "
            f"(first at index {first})"
        )
    return out


def _check_granularity(granularity: object, name: str) -> str:
    if granularity not in GRANULARITIES:
        raise QuantizationError(f"{name}: granularity must be 'tensor' or 'channel', got {granularity!r}")
    return granularity  # type: ignore[return-value]


def _weights_rows(w: object, granularity: object, name: str) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """Validate ``w``; return float64 rows ``[R, n]`` (R = C_out or 1), granularity, shape."""
    name = _check_name(name)
    granularity = _check_granularity(granularity, name)
    w64 = _as_float64(w, name, min_ndim=1)
    if granularity == "channel":
        if w64.ndim < 2:
            raise QuantizationError(
                f"{name}: granularity='channel' needs ndim >= 2 (axis 0 = output channel), "
                f"got shape {w64.shape}; use granularity='tensor' for a 1-D tensor"
            )
        return w64.reshape(w64.shape[0], -1), granularity, w64.shape
    return w64.reshape(1, -1), granularity, w64.shape


def _real_scalar(value: object, what: str, name: str) -> float:
    """A finite real scalar (int or float, not bool), as a Python float."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = np.asarray(None, dtype=object)
    if (
        arr.ndim != 0
        or arr.dtype == np.bool_
        or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating))
    ):
        raise QuantizationError(f"{name}: {what} must be a real scalar, got {value!r}")
    v = float(arr)
    if not np.isfinite(v):
        raise QuantizationError(f"{name}: {what} must be finite, got {v}")
    return v


def _per_row(values: np.ndarray, granularity: str) -> np.ndarray:
    """Row statistics ``[R]`` -> result shape: ``(C_out,)`` or ``()``."""
    values = np.asarray(values, dtype=np.float64)
    if granularity == "channel":
        return values.copy()
    return values.reshape(()).copy()


# --------------------------------------------------------------------------------------
# The shared hard-threshold core
# --------------------------------------------------------------------------------------


def _threshold_rows(rows: np.ndarray, delta_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hard threshold on float64 rows ``[R, n]`` with per-row ``delta_rows >= 0``.

    Returns int8 codes ``[R, n]`` and ``alpha [R]`` = mean |w| over the non-zero codes
    (0 for a row without non-zeros).
    """
    mag = np.abs(rows)
    keep = mag > delta_rows[:, None]
    codes = (np.sign(rows) * keep).astype(np.int8)
    count = np.count_nonzero(keep, axis=1)
    total = np.where(keep, mag, 0.0).sum(axis=1)
    alpha = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return codes, alpha


def _delta_rows(delta: object, n_rows: int, granularity: str, name: str) -> np.ndarray:
    """Validate a user Δ (scalar, or ``(C_out,)`` for channel granularity) -> ``[R]``."""
    try:
        arr = np.asarray(delta)
    except (ValueError, TypeError):
        arr = np.asarray(None, dtype=object)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise QuantizationError(f"{name}: delta must be a real number or array of real numbers, got {delta!r}")
    if arr.ndim == 0:
        arr = np.full(n_rows, float(arr), dtype=np.float64)
    elif granularity == "channel" and arr.shape == (n_rows,):
        arr = arr.astype(np.float64)
    else:
        expected = "a scalar" if granularity == "tensor" else f"a scalar or an array of shape ({n_rows},) (one per output channel)"
        raise QuantizationError(
            f"{name}: delta must be {expected} for granularity={granularity!r}, got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        idx = int(np.argmax(bad))
        where = "" if granularity == "tensor" else f" (channel {idx})"
        raise QuantizationError(f"{name}: delta must be finite and >= 0, got {arr[idx]}{where}")
    return arr


def _hard_result(
    w_shape: tuple[int, ...],
    codes_rows: np.ndarray,
    alpha: np.ndarray,
    delta: np.ndarray,
    method: str,
    granularity: str,
) -> TernaryWeights:
    return TernaryWeights(
        codes=codes_rows.reshape(w_shape),
        scale=_per_row(alpha, granularity),
        method=method,
        granularity=granularity,
        delta=_per_row(delta, granularity),
    )


def hard_threshold(
    w: np.ndarray, delta: float | np.ndarray, *, granularity: str = "tensor", name: str = "weights"
) -> TernaryWeights:
    r"""Hard-threshold ternarization at a given Δ (the rule every baseline shares).

    .. math::

        t = \begin{cases} +1 & w > \Delta \\ 0 & |w| \le \Delta \\ -1 & w < -\Delta \end{cases},
        \qquad \alpha = \frac{\sum_{t \ne 0} |w|}{\#\{t \ne 0\}} \ (0 \text{ if no non-zero}).

    Args:
        w: float weights, axis 0 = output channel.
        delta: Δ >= 0, finite. A scalar; with ``granularity="channel"`` also an array of
            shape ``(C_out,)`` (one Δ per output channel).
        granularity: ``"tensor"`` (one α) or ``"channel"`` (one α per output channel).
        name: tensor name used in error messages.

    Returns:
        :class:`TernaryWeights` with ``method="fixed"`` and ``delta`` broadcast to the
        shape of ``scale``.
    """
    rows, granularity, shape = _weights_rows(w, granularity, name)
    d = _delta_rows(delta, rows.shape[0], granularity, name)
    codes, alpha = _threshold_rows(rows, d)
    return _hard_result(shape, codes, alpha, d, "fixed", granularity)


def fixed_ternarize(
    w: np.ndarray, delta: float | np.ndarray, *, granularity: str = "tensor", name: str = "weights"
) -> TernaryWeights:
    r"""Fixed-Δ baseline: :func:`hard_threshold` with a user-chosen Δ.

    Same math and arguments as :func:`hard_threshold` (``delta`` finite and >= 0, scalar
    or per-channel array); ``method="fixed"``.
    """
    return hard_threshold(w, delta, granularity=granularity, name=name)


def twn_ternarize(w: np.ndarray, *, granularity: str = "tensor", name: str = "weights") -> TernaryWeights:
    r"""Ternary Weight Networks (Li et al., 2016) approximate L2 threshold.

    .. math::

        \Delta = 0.7 \cdot \frac{1}{n} \sum_i |w_i|, \qquad
        t = \text{hard threshold at } \Delta, \qquad
        \alpha = \operatorname{mean}_{t_i \ne 0} |w_i|,

    with the mean over the whole tensor (``"tensor"``) or over each output channel
    (``"channel"``). ``method="twn"``.
    """
    rows, granularity, shape = _weights_rows(w, granularity, name)
    d = TWN_DELTA_RATIO * np.abs(rows).mean(axis=1)
    codes, alpha = _threshold_rows(rows, d)
    return _hard_result(shape, codes, alpha, d, "twn", granularity)


def absmean_ternarize(w: np.ndarray, *, granularity: str = "tensor", name: str = "weights") -> TernaryWeights:
    r"""BitNet b1.58-style absmean threshold.

    .. math::

        \Delta = 0.5 \cdot \frac{1}{n} \sum_i |w_i|, \qquad
        t = \text{hard threshold at } \Delta, \qquad
        \alpha = \operatorname{mean}_{t_i \ne 0} |w_i|.

    (BitNet rounds ``w / mean|W|`` to the nearest integer and clips to [-1, 1], which is
    this threshold; here a magnitude exactly at Δ becomes 0 like every other baseline, and
    the scale is the L2-optimal α for the codes instead of ``mean|W|``.) ``method="absmean"``.
    """
    rows, granularity, shape = _weights_rows(w, granularity, name)
    d = ABSMEAN_DELTA_RATIO * np.abs(rows).mean(axis=1)
    codes, alpha = _threshold_rows(rows, d)
    return _hard_result(shape, codes, alpha, d, "absmean", granularity)


def ttq_ternarize(
    w: np.ndarray, t: float = 0.05, *, granularity: str = "tensor", name: str = "weights"
) -> TernaryWeights:
    r"""Trained Ternary Quantization (Zhu et al., 2017) threshold with two scales.

    .. math::

        \Delta = t \cdot \max_i |w_i|, \qquad
        q = \begin{cases} W_p & w > \Delta \\ 0 & |w| \le \Delta \\ -W_n & w < -\Delta \end{cases},
        \qquad W_p = \operatorname{mean}_{q_i = +1} w_i, \quad W_n = \operatorname{mean}_{q_i = -1} |w_i|,

    each 0 when there is no such code. TTQ *learns* W_p and W_n; without training they
    are set to these means, which are the L2-optimal values for the codes.

    Args:
        t: threshold factor, finite, ``0 <= t <= 1`` (TTQ uses 0.05).

    Returns:
        :class:`TernaryWeights` with ``method="ttq"``, ``scale = W_p`` and
        ``scale_neg = W_n``.
    """
    name = _check_name(name)
    tv = _real_scalar(t, "t", name)
    if not 0.0 <= tv <= 1.0:
        raise QuantizationError(f"{name}: t must be in [0, 1] (Δ = t * max|W|), got {tv}")
    rows, granularity, shape = _weights_rows(w, granularity, name)
    d = tv * np.abs(rows).max(axis=1)
    codes, _ = _threshold_rows(rows, d)
    pos = codes > 0
    neg = codes < 0
    n_pos = np.count_nonzero(pos, axis=1)
    n_neg = np.count_nonzero(neg, axis=1)
    sum_pos = np.where(pos, rows, 0.0).sum(axis=1)
    sum_neg = np.where(neg, -rows, 0.0).sum(axis=1)
    w_p = np.divide(sum_pos, n_pos, out=np.zeros_like(sum_pos), where=n_pos > 0)
    w_n = np.divide(sum_neg, n_neg, out=np.zeros_like(sum_neg), where=n_neg > 0)
    return TernaryWeights(
        codes=codes.reshape(shape),
        scale=_per_row(w_p, granularity),
        method="ttq",
        granularity=granularity,
        delta=_per_row(d, granularity),
        scale_neg=_per_row(w_n, granularity),
    )


def optimal_ternarize(w: np.ndarray, *, granularity: str = "tensor", name: str = "weights") -> TernaryWeights:
    r"""Exact L2-optimal ternarization :math:`\min_{\alpha, t} \lVert W - \alpha t \rVert^2`.

    For codes with k non-zeros the best choice is the k largest magnitudes with
    :math:`\alpha = S_k / k`, leaving error :math:`\lVert W \rVert^2 - S_k^2 / k`, where
    :math:`m_1 \ge m_2 \ge \dots \ge m_n` are the sorted magnitudes and
    :math:`S_k = \sum_{i \le k} m_i`. Hence

    .. math::

        k^* = \operatorname*{arg\,max}_{1 \le k \le n} \frac{S_k^2}{k}, \qquad
        \alpha = \frac{S_{k^*}}{k^*}, \qquad \Delta = \frac{\alpha}{2},

    and the codes are the hard threshold at Δ (``k* = 0``, α = Δ = 0 for an all-zero
    tensor/channel). Every optimum satisfies Δ = α/2: the codes must be optimal for α,
    i.e. :math:`m_{k} \ge \alpha/2 \ge m_{k+1}`.

    Ties. In exact arithmetic the maximiser separates *strictly*,
    :math:`m_{k^*} > \alpha/2 > m_{k^*+1}` (if :math:`m_{k^*} = \alpha/2`, then
    :math:`S_{k-1}^2/(k-1) > S_k^2/k`; if :math:`m_{k^*+1} = \alpha/2`, then
    :math:`S_{k+1}^2/(k+1) > S_k^2/k`), so a run of equal magnitudes is never split:
    equal magnitudes always get the same code and the codes are exactly the top-k*
    magnitudes. The implementation enforces this: k* is chosen only among the k whose
    :math:`\Delta_k = S_k / (2k)` satisfies :math:`m_k > \Delta_k \ge m_{k+1}` (which
    excludes any k inside a run of equal magnitudes; the exact maximiser always
    qualifies, so the restriction only guards against float64 rounding at near-ties).
    When several k reach the same maximum of :math:`S_k^2/k` (several L2 optima, e.g.
    magnitudes (3, 1, 1, 1): k = 1 and k = 4 both give error 3), the **smallest** k, i.e.
    the sparsest codes, is chosen.

    Per-channel work is vectorised: one sort of the ``[C_out, n]`` magnitudes along
    axis 1. ``method="optimal"``.
    """
    rows, granularity, shape = _weights_rows(w, granularity, name)
    n_rows, n = rows.shape
    desc = -np.sort(-np.abs(rows), axis=1)  # m_1 >= m_2 >= ... >= m_n per row
    prefix = np.cumsum(desc, axis=1)  # S_k, k = 1..n
    k = np.arange(1, n + 1, dtype=np.float64)
    objective = prefix * prefix / k  # S_k^2 / k
    delta_k = 0.5 * (prefix / k)  # Δ_k = α_k / 2
    next_mag = np.concatenate([desc[:, 1:], np.zeros((n_rows, 1))], axis=1)  # m_{k+1}, m_{n+1} = 0
    separates = (desc > delta_k) & (delta_k >= next_mag)
    any_sep = separates.any(axis=1)
    masked = np.where(separates, objective, -np.inf)
    # argmax returns the first maximum: the smallest k among equal objectives.
    best = np.where(any_sep, np.argmax(masked, axis=1), np.argmax(objective, axis=1))
    row_idx = np.arange(n_rows)
    alpha = prefix[row_idx, best] / (best + 1.0)
    all_zero = prefix[:, -1] == 0.0
    alpha = np.where(all_zero, 0.0, alpha)
    d = 0.5 * alpha
    codes, _ = _threshold_rows(rows, d)
    return _hard_result(shape, codes, alpha, d, "optimal", granularity)


def sparsity_ternarize(
    w: np.ndarray, sparsity: float, *, granularity: str = "tensor", name: str = "weights"
) -> TernaryWeights:
    r"""Sparsity-targeted Δ: keep the top ``(1 - sparsity)`` fraction of magnitudes.

    With n weights per tensor/channel and magnitudes sorted
    :math:`m_1 \ge \dots \ge m_n` (and :math:`m_{n+1} := 0`):

    .. math::

        k = \left\lfloor (1 - p)\, n + \tfrac12 \right\rfloor, \qquad
        \Delta = m_{k+1}, \qquad t = \text{hard threshold at } \Delta, \qquad
        \alpha = \operatorname{mean}_{t_i \ne 0} |w_i|.

    Rounding: the kept count k is ``(1 - p) * n`` rounded half up (e.g. p = 0.5, n = 5
    keeps 3). Ties: the threshold rule gives equal magnitudes the same code, so when the
    k-th and (k+1)-th magnitudes are equal the whole tied run is zeroed and fewer than k
    weights are kept: the achieved sparsity is never below the target count's (exact
    zeros are always code 0 as well). ``method="sparsity"``.

    Args:
        sparsity: target fraction of zero codes, finite, ``0 <= sparsity <= 1``.
    """
    name = _check_name(name)
    p = _real_scalar(sparsity, "sparsity", name)
    if not 0.0 <= p <= 1.0:
        raise QuantizationError(f"{name}: sparsity must be in [0, 1], got {p}")
    rows, granularity, shape = _weights_rows(w, granularity, name)
    n_rows, n = rows.shape
    keep = int(np.floor((1.0 - p) * n + 0.5))
    keep = min(max(keep, 0), n)
    desc = -np.sort(-np.abs(rows), axis=1)
    padded = np.concatenate([desc, np.zeros((n_rows, 1))], axis=1)
    d = padded[:, keep].copy()
    codes, alpha = _threshold_rows(rows, d)
    return _hard_result(shape, codes, alpha, d, "sparsity", granularity)


# --------------------------------------------------------------------------------------
# STTN
# --------------------------------------------------------------------------------------


def _sttn_pair(w1: object, w2: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate the two latent kernels (float, finite, equal shapes) -> float64 copies."""
    name = _check_name(name)
    a = _as_float64(w1, name, min_ndim=1, what=" (W1)")
    b = _as_float64(w2, name, min_ndim=1, what=" (W2)")
    if a.shape != b.shape:
        raise QuantizationError(
            f"{name}: W1 and W2 must have identical shapes, got W1 {a.shape} and W2 {b.shape}"
        )
    return a, b


def sttn_equivalent_weight(w1: np.ndarray, w2: np.ndarray, *, name: str = "weights") -> np.ndarray:
    r"""The "equivalent" float weight of an STTN layer (docs/design.md §3).

    .. math::

        w = \frac{\operatorname{clamp}(W_1, -1, 1) + \operatorname{clamp}(W_2, -1, 1)}{2}
        \quad \text{(float64)}.
    """
    a, b = _sttn_pair(w1, w2, name)
    return (np.clip(a, -1.0, 1.0) + np.clip(b, -1.0, 1.0)) / 2.0


def sttn_ternarize(
    w1: np.ndarray, w2: np.ndarray, *, zero_policy: str = "error", name: str = "weights"
) -> TernaryWeights:
    r"""Soft Threshold Ternary Networks: two binary kernels -> one ternary kernel (docs/design.md §2.1).

    Always per output channel o, with n weights per channel:

    .. math::

        \tilde W_k = \operatorname{clamp}(W_k, -1, 1), \qquad
        \alpha_o = \frac{\sum |\tilde W_{1,o}| + \sum |\tilde W_{2,o}|}{2n}, \qquad
        B_k = \operatorname{sign}(\tilde W_k),

    .. math::

        t = \frac{B_1 + B_2}{2} \in \{-1, 0, +1\}, \qquad s_o = 2 \alpha_o,

    so the effective kernel :math:`\alpha_o (B_1 + B_2) = s_o t`. A code is 0 exactly where
    the two signs disagree; there is no threshold (``delta=None``).

    ``sign(0) = 0`` in the reference framework, so an exactly-zero latent weight (``-0.0``
    included) makes :math:`B_1 + B_2` odd (±1: a fifth level). ``zero_policy`` says what
    to do:

    * ``"error"`` (default): raise :class:`QuantizationError` naming ``name`` and the
      number of zero latent weights.
    * ``"positive"``: treat ``sign(0)`` as +1.
    * ``"round_to_zero"``: keep ``sign(0) = 0`` and map an odd sum ±1 to code 0.

    The zeros contribute 0 to α under every policy.

    Args:
        w1, w2: latent float kernels of identical shape ``[C_out, ...]`` (ndim >= 2).

    Returns:
        :class:`TernaryWeights` with ``method="sttn"``, ``granularity="channel"``,
        ``scale = 2 alpha`` of shape ``(C_out,)`` and ``delta=None``.
    """
    name = _check_name(name)
    if zero_policy not in ZERO_POLICIES:
        raise QuantizationError(f"{name}: zero_policy must be one of {ZERO_POLICIES}, got {zero_policy!r}")
    a, b = _sttn_pair(w1, w2, name)
    if a.ndim < 2:
        raise QuantizationError(
            f"{name}: STTN kernels need ndim >= 2 (axis 0 = output channel), got shape {a.shape}"
        )
    shape = a.shape
    a = np.clip(a, -1.0, 1.0).reshape(a.shape[0], -1)
    b = np.clip(b, -1.0, 1.0).reshape(b.shape[0], -1)
    scale = sttn_scale(a, b)

    z1 = int(np.count_nonzero(a == 0.0))
    z2 = int(np.count_nonzero(b == 0.0))
    if zero_policy == "error" and z1 + z2 > 0:
        raise QuantizationError(
            f"{name}: {z1 + z2} latent weight(s) are exactly 0 (W1: {z1}, W2: {z2}); "
            f"sign(0) = 0 makes B1 + B2 odd (not ternary). Pass zero_policy='positive' "
            f"(sign(0) = +1) or 'round_to_zero' (odd sums become 0)"
        )
    if zero_policy == "positive":
        b1 = np.where(a >= 0.0, 1, -1)
        b2 = np.where(b >= 0.0, 1, -1)
    else:
        b1 = np.sign(a).astype(np.int64)
        b2 = np.sign(b).astype(np.int64)
    codes = sttn_codes(b1, b2)  # an odd sum (sign(0) = 0) becomes 0
    return TernaryWeights(
        codes=codes.reshape(shape),
        scale=scale,
        method="sttn",
        granularity="channel",
        delta=None,
    )


def recover_merged_ternary(
    weight: np.ndarray, *, rtol: float = 1e-5, atol: float = 0.0, name: str = "weights", asymmetric: bool = False
) -> TernaryWeights:
    r"""Recover codes and scales from a merged ("ter") STTN checkpoint tensor.

    A merged checkpoint stores :math:`\alpha_o (B_1 + B_2)`, i.e. per output channel o
    values in :math:`\{-s_o, 0, +s_o\}` with :math:`s_o = 2\alpha_o`. Then

    .. math::

        t = \operatorname{sign}(w), \qquad
        s_o = \operatorname{mean}\{ |w| : w \in \text{channel } o,\ w \ne 0 \}
        \quad (0 \text{ for an all-zero channel}).

    Zeros are exact zeros (the checkpoint computes ``alpha * 0``). Every non-zero
    magnitude m of channel o must satisfy ``|m - s_o| <= atol + rtol * s_o``; otherwise the
    channel holds more than one non-zero magnitude (not ternary, e.g. the 5-level kernel
    of an exactly-zero latent weight) and :class:`QuantizationError` names ``name``, the
    channel index and its distinct magnitudes.

    ``asymmetric=True`` recovers a TTQ kernel :math:`W_p [t = +1] - W_n [t = -1]`
    instead: the positive and the negative entries of a channel each hold one magnitude,
    :math:`W_{p,o}` = the mean of the positive entries and :math:`W_{n,o}` = the mean
    magnitude of the negative ones (0 where there are none), each checked as above.

    Args:
        weight: merged float kernel ``[C_out, ...]`` (ndim >= 2).
        rtol, atol: float tolerance on the magnitudes, finite and >= 0.
        asymmetric: one magnitude per sign (TTQ) instead of one per channel.

    Returns:
        :class:`TernaryWeights` with ``method="sttn"`` (``"ttq"`` with ``scale = W_p``,
        ``scale_neg = W_n`` when ``asymmetric``), ``granularity="channel"``,
        ``delta=None``.
    """
    name = _check_name(name)
    rt = _real_scalar(rtol, "rtol", name)
    at = _real_scalar(atol, "atol", name)
    if rt < 0 or at < 0:
        raise QuantizationError(f"{name}: rtol and atol must be >= 0, got rtol={rt}, atol={at}")
    w64 = _as_float64(weight, name, min_ndim=2)
    rows = w64.reshape(w64.shape[0], -1)
    codes = np.sign(rows).astype(np.int8)
    if asymmetric:
        w_p = _one_magnitude(rows, rows > 0, rt, at, name, "positive ")
        w_n = _one_magnitude(rows, rows < 0, rt, at, name, "negative ")
        return TernaryWeights(codes=codes.reshape(w64.shape), scale=w_p, method="ttq", granularity="channel",
                              delta=None, scale_neg=w_n)
    scale = _one_magnitude(rows, rows != 0.0, rt, at, name, "")
    return TernaryWeights(
        codes=codes.reshape(w64.shape),
        scale=scale,
        method="sttn",
        granularity="channel",
        delta=None,
    )


def _one_magnitude(rows: np.ndarray, selected: np.ndarray, rt: float, at: float, name: str, which: str) -> np.ndarray:
    """Per row, the mean magnitude of the ``selected`` entries (0 where none), checked to
    be their only magnitude within ``at + rt·mean`` (QuantizationError naming the row)."""
    mag = np.abs(rows)
    count = np.count_nonzero(selected, axis=1)
    total = np.where(selected, mag, 0.0).sum(axis=1)
    scale = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    hi = np.where(selected, mag, -np.inf).max(axis=1)
    lo = np.where(selected, mag, np.inf).min(axis=1)
    tol = at + rt * scale
    bad = (count > 0) & ((hi - scale > tol) | (scale - lo > tol))
    if bad.any():
        bad_idx = np.flatnonzero(bad)
        o = int(bad_idx[0])
        distinct = np.unique(mag[o][selected[o]])
        shown = ", ".join(f"{v:.9g}" for v in distinct[:6]) + (", ..." if distinct.size > 6 else "")
        more = f" ({bad_idx.size} channels in total)" if bad_idx.size > 1 else ""
        raise QuantizationError(
            f"{name}: channel {o} is not ternary: expected one {which}non-zero magnitude per output "
            f"channel (within rtol={rt}, atol={at}), found {distinct.size} distinct: [{shown}]{more}"
        )
    return scale


# --------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------


def ternarize_activations(
    x: np.ndarray,
    lo: float = ACTIVATION_LO,
    hi: float = ACTIVATION_HI,
    *,
    tie_eps: float = 0.0,
    name: str = "activations",
) -> TernaryActivations:
    r"""Ternary activation with fixed thresholds (docs/design.md §2.2, the CUDA kernel's rule).

    .. math::

        a(x) = \begin{cases} -1 & x < lo \\ 0 & lo \le x < hi \\ +1 & x \ge hi \end{cases}

    No scale. The official pure-PyTorch variant returns ±0.5 exactly at
    ``x == ±0.5``; such ties are counted (``exact_ties``) rather than hidden, and
    ``near_ties`` counts values within ``tie_eps`` (inclusive) of either threshold.
    Comparisons are done in float64 (float16/32 inputs convert exactly).

    Args:
        x: float pre-quantizer values (finite, ndim >= 1, non-empty).
        lo, hi: thresholds, finite, ``lo <= hi`` (may be asymmetric; ``lo == hi`` gives
            a binary output).
        tie_eps: finite, >= 0.
        name: tensor name for error messages (default ``"activations"``).
    """
    name = _check_name(name)
    lo_v = _real_scalar(lo, "lo", name)
    hi_v = _real_scalar(hi, "hi", name)
    if lo_v > hi_v:
        raise QuantizationError(f"{name}: expected lo <= hi, got lo={lo_v} > hi={hi_v}")
    eps = _real_scalar(tie_eps, "tie_eps", name)
    if eps < 0:
        raise QuantizationError(f"{name}: tie_eps must be >= 0, got {eps}")
    x64 = _as_float64(x, name, min_ndim=1)
    codes = ternary_activation(x64, lo_v, hi_v)
    exact = int(np.count_nonzero((x64 == lo_v) | (x64 == hi_v)))
    near = int(np.count_nonzero(near_threshold(x64, lo_v, hi_v, eps)))
    return TernaryActivations(codes=codes, lo=lo_v, hi=hi_v, exact_ties=exact, near_ties=near)


# --------------------------------------------------------------------------------------
# Error metrics
# --------------------------------------------------------------------------------------


def quantization_error(w: np.ndarray, tw: TernaryWeights, *, name: str = "weights") -> dict[str, float]:
    r"""L2 error and cosine similarity between ``w`` and ``tw.dequantize()`` (float64).

    .. math::

        \mathrm{l2} = \lVert W - \hat W \rVert_2^2 = \sum_i (w_i - \hat w_i)^2, \qquad
        \mathrm{cosine} = \frac{\langle W, \hat W \rangle}{\lVert W \rVert \, \lVert \hat W \rVert},

    where ``cosine`` is defined as 0 when either norm is 0 (an all-zero tensor or
    quantization carries no direction) and is clipped to [-1, 1] against rounding.

    Returns:
        ``{"l2": float, "cosine": float}``.
    """
    name = _check_name(name)
    if not isinstance(tw, TernaryWeights):
        raise QuantizationError(f"{name}: tw must be a TernaryWeights, got {type(tw).__name__}")
    w64 = _as_float64(w, name, min_ndim=1)
    if w64.shape != tw.codes.shape:
        raise QuantizationError(
            f"{name}: weights shape {w64.shape} does not match the ternary codes shape {tw.codes.shape}"
        )
    w_hat = tw.dequantize()
    diff = w64 - w_hat
    l2 = float(np.sum(diff * diff))
    # elementwise sums, not BLAS dot/norm: OpenBLAS's float64 dot is slow on this class
    # of machine when OPENBLAS_CORETYPE forces an old kernel, and these are small tensors
    nw = float(np.sqrt(np.sum(w64 * w64)))
    nq = float(np.sqrt(np.sum(w_hat * w_hat)))
    if nw == 0.0 or nq == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.clip(np.sum(w64 * w_hat) / (nw * nq), -1.0, 1.0))
    return {"l2": l2, "cosine": cosine}


# --------------------------------------------------------------------------------------
# The method registry
# --------------------------------------------------------------------------------------

#: Training rules a method can name (:attr:`Method.train_rule`); ``sttn_sim.train.quant``
#: implements them: ``"sttn"`` two latent kernels (:class:`~sttn_sim.train.quant.SttnQuant`),
#: ``"hard"`` one latent kernel with the method's codes and scale and the identity
#: straight-through estimator, ``"ttq"`` the method's codes with learned W_p / W_n.
TRAIN_RULES = ("sttn", "hard", "ttq")


@dataclass(frozen=True)
class MethodParam:
    """A parameter of a method's ternarize function beyond the weights.

    Attributes:
        name: the keyword the function takes (``delta``, ``t``, ``sparsity``, ...).
        doc: one line saying what it is.
        default: the function's default, or ``None`` when the caller must supply it.
    """

    name: str
    doc: str
    default: float | None = None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Method:
    """One weight-ternarization method: its function and how it is shown and trained.

    Attributes:
        name: the tag of its :class:`TernaryWeights` (``TernaryWeights.method``).
        label: long label for figure legends and tables.
        short: short label for tick labels and column headers.
        color: ``#rrggbb`` colour of the method in every figure.
        marker: matplotlib marker of the method in every figure.
        ternarize: the function, called as ``ternarize(w, *, granularity=..., name=...,
            **params)`` for a hard-threshold method, ``ternarize(w1, w2, name=...)`` for
            STTN; returns a :class:`TernaryWeights` tagged ``name``.
        params: the parameters ``ternarize`` takes beyond the weights.
        hard_threshold: a baseline with a threshold Δ on |w| (docs/design.md §2.4); STTN is not.
        train_rule: how ``sttn_sim.train`` trains it, one of :data:`TRAIN_RULES`, or
            ``None`` when it is not trained (e.g. it needs a parameter training does not
            supply).
        delta_rel: Δ as a fixed multiple of mean|w| (TWN 0.7, absmean 0.5), else ``None``
            (a point on the Δ / mean|w| axis of the Δ sweeps).
    """

    name: str
    label: str
    short: str
    color: str
    marker: str
    ternarize: Callable[..., TernaryWeights]
    params: tuple[MethodParam, ...] = ()
    hard_threshold: bool = True
    train_rule: str | None = "hard"
    delta_rel: float | None = None

    def __post_init__(self) -> None:
        where = f"method {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise QuantizationError(f"method name must be an identifier string, got {self.name!r}")
        for field in ("label", "short", "marker"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise QuantizationError(f"{where}: {field} must be a non-empty string, got {getattr(self, field)!r}")
        c = self.color
        if not (isinstance(c, str) and len(c) == 7 and c[0] == "#"
                and all(ch in "0123456789abcdefABCDEF" for ch in c[1:])):
            raise QuantizationError(f"{where}: color must be '#rrggbb', got {c!r}")
        if not callable(self.ternarize):
            raise QuantizationError(f"{where}: ternarize must be callable, got {type(self.ternarize).__name__}")
        if not all(isinstance(p, MethodParam) for p in self.params):
            raise QuantizationError(f"{where}: params must be MethodParam entries, got {self.params!r}")
        if self.train_rule is not None and self.train_rule not in TRAIN_RULES:
            raise QuantizationError(f"{where}: train_rule must be one of {TRAIN_RULES} or None, got {self.train_rule!r}")
        if (self.train_rule == "sttn") == self.hard_threshold:
            raise QuantizationError(f"{where}: the 'sttn' training rule is for the method without a hard threshold")

    @property
    def required_params(self) -> tuple[str, ...]:
        """Names of the parameters a caller must supply."""
        return tuple(p.name for p in self.params if p.required)


_REGISTRY: dict[str, Method] = {}


def all_methods() -> tuple[Method, ...]:
    """Every registered method, in registration order (the order of tables and legends)."""
    return tuple(_REGISTRY.values())


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``; an unknown name raises
    :class:`QuantizationError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise QuantizationError(
            f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}") from None


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (at the end of the order) and return it.

    Every consumer reads the registry when it runs, so a registered hard-threshold
    method appears in training (``TrainConfig(method=name)`` when it has a training
    rule), in ``analysis.baselines.baseline_table``, the figures and
    ``analysis.soft_vs_hard``. ``replace=True`` overwrites a method of the same name
    (keeping its place); otherwise a taken name raises :class:`QuantizationError`.
    """
    if not isinstance(method, Method):
        raise QuantizationError(f"register_method() expects a Method, got {type(method).__name__}")
    if method.name in _REGISTRY and not replace:
        raise QuantizationError(f"method {method.name!r} is already registered (pass replace=True to overwrite it)")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> Method:
    """Remove the method ``name`` from the registry and return it."""
    method = get_method(name)
    del _REGISTRY[name]
    return method


@contextmanager
def registered_method(method: Method) -> Iterator[Method]:
    """Register ``method`` for the duration of a ``with`` block (a test's toy method),
    then restore the registry exactly as it was (order included)."""
    saved = dict(_REGISTRY)
    register_method(method, replace=True)
    try:
        yield method
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


class MethodNames(Sequence):
    """A live, read-only tuple of registered method names: those for which ``keep(method)``
    is true, in registration order, followed by ``extra`` names.

    It reads the registry each time it is used, so ``name in view`` and iteration see
    methods registered later. ``view + (...)`` gives a plain tuple.
    """

    def __init__(self, keep: Callable[[Method], bool] = lambda m: True, extra: tuple[str, ...] = ()):
        self._keep = keep
        self._extra = tuple(extra)

    def _names(self) -> tuple[str, ...]:
        return tuple(m.name for m in _REGISTRY.values() if self._keep(m)) + self._extra

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __add__(self, other) -> tuple:
        return self._names() + tuple(other)

    def __radd__(self, other) -> tuple:
        return tuple(other) + self._names()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, MethodNames)) else NotImplemented

    __hash__ = None  # mutable view

    def __repr__(self) -> str:
        return repr(self._names())


class _HardThresholdFunctions(Mapping):
    """Live ``{name: ternarize}`` of the hard-threshold methods without a required parameter."""

    def _items(self) -> dict[str, Callable[..., TernaryWeights]]:
        return {m.name: m.ternarize for m in _REGISTRY.values() if m.hard_threshold and not m.required_params}

    def __getitem__(self, name):
        return self._items()[name]

    def __iter__(self):
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


#: Names a :class:`TernaryWeights` can carry: every registered method (a live view).
METHODS = MethodNames()
#: The hard-threshold baselines that need no parameter, ``{name: function}``, each called
#: as ``f(w, granularity=..., name=...)`` (a live view of the registry).
HARD_THRESHOLD_METHODS: Mapping[str, Callable[..., TernaryWeights]] = _HardThresholdFunctions()

_DELTA = MethodParam("delta", "the threshold Δ >= 0 on |w| (scalar, or one per output channel)")

for _method in (
    Method("sttn", "STTN", "STTN", "#000000", "o", sttn_ternarize, hard_threshold=False, train_rule="sttn"),
    Method("twn", "TWN (0.7·mean|w|)", "TWN", "#ff7f0e", "s", twn_ternarize, delta_rel=TWN_DELTA_RATIO),
    Method("ttq", "TTQ (0.05·max|w|)", "TTQ", "#9467bd", "v", ttq_ternarize,
           params=(MethodParam("t", "threshold factor: Δ = t·max|w|", 0.05),), train_rule="ttq"),
    Method("optimal", "optimal Δ (L2)", "optimal", "#8c564b", "D", optimal_ternarize),
    Method("absmean", "absmean (0.5·mean|w|)", "absmean", "#e377c2", "^", absmean_ternarize,
           delta_rel=ABSMEAN_DELTA_RATIO),
    # not trained: training has no knob for the target sparsity
    Method("sparsity", "Δ matched to STTN sparsity", "sparsity", "#bcbd22", "x", sparsity_ternarize,
           params=(MethodParam("sparsity", "target fraction of zero codes in [0, 1]"),), train_rule=None),
    Method("fixed", "fixed Δ", "fixed Δ", "#7f7f7f", "+", fixed_ternarize, params=(_DELTA,)),
):
    register_method(_method)
del _method

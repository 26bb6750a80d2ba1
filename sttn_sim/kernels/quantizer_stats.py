r"""Running statistics of one activation quantizer, and three ways to add a batch to them.

:class:`QuantizerAccumulator` holds, for one activation quantizer with C channels and S
positions per channel, everything :class:`sttn_sim.stats.ActivationRecorder` reports:

* ``hist`` — int64 ``[underflow, bin 0, ..., bin B-1, overflow]`` of the pre-quantizer
  value ``y = gain_c·x + offset_c`` (computed in float64 as ``float64(x)·gain + offset``)
  on fixed ``edges``, bins ``[e_i, e_{i+1})`` (= ``searchsorted(edges, y, "right")``);
* ``counts`` — int64 ``[C, 3]``: the number of codes -1, 0, +1 per channel;
* ``ch_min``, ``ch_max``, ``ch_sum``, ``ch_sumsq`` — float64 per-channel moments of y;
* ``tie_counts`` — int64 ``[exact, near]``: #(y == lo or y == hi) and
  #(|y - lo| <= eps or |y - hi| <= eps) (0 unless ``ties``);
* ``macs`` — int64 ``[J, 2]``: for each of J ternary layers consuming the codes,
  ``Σ [k ≠ 0]·K_j[c, s]`` and ``Σ [k ≠ 0]·V_j[s]`` over every value, where the static
  ``mac_weights`` K_j and ``mac_positions`` V_j (built by :mod:`sttn_sim.stats`) count
  the non-zero weights and the (output position, tap) pairs that meet position s;
* ``n_images``.

Three functions add a batch (x ``[N, C, ...]``) and give identical integer results (tested):

* :func:`accumulate_reference` — plain numpy, the definition;
* :func:`accumulate` — Numba, from x and the int8 codes an executor produced (the
  recorder hook of the float64 reference path and of layers the engine does not pack);
* :func:`threshold_pack_accumulate` — the engine's threshold + pack
  (:func:`.fused.threshold_pack`) with the statistics computed in the same pass, segment
  by segment while x is in cache: the codes are never written out.  This is what keeps
  recording cheap (``python -m sttn_sim.bench`` quotes the cost).

Cost: the fused kernel's extra work per value is the slot computation (~0.09 ns on two Zen 5
threads) and the histogram increment (a scalar scatter into 4 sub-histograms, ~0.11 ns);
everything else rides in the same 16-lane vector loop as the thresholding, whose plane
words are built as 32-bit halves so that no 64-bit lane halves the vector width.  On the
full-width ResNet-18 at batch 8 recording cost 7-10 % of an engine run on an AMD Zen 5
machine, and 5-26 % across the CPU classes of the 2-vCPU Xeon in the README, where the
histogram scatter and the bin arithmetic are half of the kernel's time.

Binning: the slot is found arithmetically, ``floor((y - e_0)/w) + 1`` (in float64 in
:func:`accumulate`, in float32 in the fused kernel), which can differ from
``searchsorted`` only for a value whose position ``(y - e_0)/w`` is within rounding of an
integer; such values (a fraction ~1e-6 to 1e-3 of them) are re-binned with
``searchsorted`` in float64, so every histogram is exactly the reference's.  Float sums
differ between the three only in summation order (the fused kernel sums float32 over a
segment of at most a few hundred values, then float64).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from ..rules import ACTIVATION_HI, ACTIVATION_LO
from ._llvm import key32_value, order_key32
from .packing import PackedTernary, words_for

#: in :func:`accumulate`, a slot position whose fraction is within this of an integer
#: is re-binned with ``searchsorted`` (float64 rounding is ~1e-14 for sane edges)
NEAR_EDGE = 1e-6
#: the largest image count a recorder accepts (int64 sums of int32 weights stay exact)
MAX_IMAGES = 2**31 - 1


def _map_dtype(values) -> type:
    """int16 for MAC maps whose entries fit, else int32 (negative entries are refused)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > 2**31 - 1):
        raise ValueError(f"MAC map entries must lie in [0, 2^31), got [{values.min()}, {values.max()}]")
    return np.int16 if values.size == 0 or values.max() <= np.iinfo(np.int16).max else np.int32


def _uniform_edges(edges: np.ndarray) -> tuple[bool, float]:
    """Whether every edge is within 2^-30 bin widths of ``e_0 + i·w`` (linspace/arange
    edges are); and ``1/w``."""
    width = (edges[-1] - edges[0]) / (edges.size - 1)
    ideal = edges[0] + width * np.arange(edges.size)
    return bool(np.all(np.abs(edges - ideal) <= 2.0**-30 * width)), 1.0 / width


@dataclass(eq=False)
class QuantizerAccumulator:
    """Running statistics of one activation quantizer (see the module note).

    ``mac_weights`` ``[J, C, S]`` and ``mac_positions`` ``[J, S]`` (non-negative integers,
    stored as int16 where they fit, else int32) are the static MAC maps of its J consuming
    ternary layers (J may be 0)."""

    gain: np.ndarray  # float64 [C]
    offset: np.ndarray  # float64 [C]
    edges: np.ndarray  # float64 [B + 1], strictly increasing
    positions: int  # S
    act_lo: float = ACTIVATION_LO
    act_hi: float = ACTIVATION_HI
    tie_eps: float = 1e-6
    ties: bool = True
    mac_weights: np.ndarray | None = None
    mac_positions: np.ndarray | None = None
    hist: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    moments: np.ndarray = field(init=False)
    tie_counts: np.ndarray = field(init=False)
    macs: np.ndarray = field(init=False)
    n_images: int = field(init=False, default=0)

    def __post_init__(self):
        self.gain = np.ascontiguousarray(self.gain, np.float64).reshape(-1)
        self.offset = np.ascontiguousarray(self.offset, np.float64).reshape(-1)
        self.edges = np.ascontiguousarray(self.edges, np.float64)
        self.positions = int(self.positions)
        c, s = self.gain.size, self.positions
        if self.offset.size != c:
            raise ValueError(f"gain has {c} channels, offset {self.offset.size}")
        if self.mac_weights is None:
            self.mac_weights = np.zeros((0, c, s), np.int16)
            self.mac_positions = np.zeros((0, s), np.int16)
        # int16 where the values fit (they do for any ResNet: at most C_out·kh·kw): the
        # fused kernel streams the maps once per image, so their width is memory traffic
        self.mac_weights = np.ascontiguousarray(self.mac_weights, _map_dtype(self.mac_weights))
        self.mac_positions = np.ascontiguousarray(self.mac_positions, _map_dtype(self.mac_positions))
        j = self.mac_weights.shape[0]
        if self.mac_weights.shape != (j, c, s) or self.mac_positions.shape != (j, s):
            raise ValueError(f"MAC maps of shapes {self.mac_weights.shape} and {self.mac_positions.shape}; "
                             f"expected ({j}, {c}, {s}) and ({j}, {s})")
        self._reset()
        self.uniform, self.inv_width = _uniform_edges(self.edges)
        # the fused kernel's per-segment MAC sums are int32 (a segment is at most a plane)
        largest = max(int(self.mac_weights.max(initial=0)), int(self.mac_positions.max(initial=0)))
        self._fusable = self.uniform and self.edges.size + 1 < 255 and largest * max(s, 1) < 2**31 and \
            (not self.ties or (self.act_lo in self.edges and self.act_hi in self.edges))

    def _reset(self) -> None:
        """No batches seen: zero counts, empty extremes."""
        c = self.gain.size
        self.hist = np.zeros(self.edges.size + 1, np.int64)
        self.counts = np.zeros((c, 3), np.int64)
        # per-channel min, max, sum and sum of squares of y, one array for the kernels
        self.moments = np.zeros((4, c))
        self.moments[0] = np.inf
        self.moments[1] = -np.inf
        self.tie_counts = np.zeros(2, np.int64)
        self.macs = np.zeros((self.mac_weights.shape[0], 2), np.int64)
        self.n_images = 0

    @property
    def channels(self) -> int:
        return self.gain.size

    # views of the per-channel moments of y
    ch_min = property(lambda self: self.moments[0])
    ch_max = property(lambda self: self.moments[1])
    ch_sum = property(lambda self: self.moments[2])
    ch_sumsq = property(lambda self: self.moments[3])

    def same_quantizer(self, other: "QuantizerAccumulator") -> bool:
        """Whether ``other`` describes the same quantizer with the same arrays (as the
        accumulators of :meth:`empty_like` do): the fused kernel's prepared constants
        then serve both."""
        return all(getattr(self, a) is getattr(other, a) for a in ("gain", "offset", "edges", "mac_weights")) and \
            (self.act_lo, self.act_hi, self.tie_eps, self.ties) == (other.act_lo, other.act_hi, other.tie_eps, other.ties)

    def fusable(self) -> bool:
        """Whether :func:`threshold_pack_accumulate` can add batches: uniform edges, at
        most 253 bins (one-byte slots), MAC maps whose per-plane sums fit int32, and —
        when ties are audited — ``act_lo`` and ``act_hi`` on edges (then the values near
        a tie are those near an edge)."""
        return self._fusable

    def empty_like(self) -> "QuantizerAccumulator":
        """The same quantizer with no batches (the static description and MAC maps shared)."""
        out = copy.copy(self)
        out._reset()
        return out

    def add(self, other: "QuantizerAccumulator") -> None:
        """Add the statistics of ``other``'s batches to these, in place (counts add,
        extremes combine, sums add)."""
        if (self.channels, self.positions, self.macs.shape) != (other.channels, other.positions, other.macs.shape) \
                or not np.array_equal(self.edges, other.edges):
            raise ValueError(f"cannot add statistics of {self.channels}x{self.positions} values on "
                             f"{self.edges.size - 1} bins to {other.channels}x{other.positions} on "
                             f"{other.edges.size - 1} bins")
        _check_image_budget(self.n_images, other.n_images)
        for name in ("hist", "counts", "tie_counts", "macs"):
            getattr(self, name).__iadd__(getattr(other, name))
        np.fmin(self.ch_min, other.ch_min, out=self.moments[0])
        np.fmax(self.ch_max, other.ch_max, out=self.moments[1])
        self.moments[2:] += other.moments[2:]
        self.n_images += other.n_images

    def __add__(self, other: "QuantizerAccumulator") -> "QuantizerAccumulator":
        """The statistics of both sets of batches (a new accumulator; see :meth:`add`)."""
        out = self.empty_like()
        out.add(self)
        out.add(other)
        return out


def _check_image_budget(have: int, more: int) -> None:
    if have + more > MAX_IMAGES:
        raise OverflowError(f"activation statistics: {have} + {more} images exceed {MAX_IMAGES}; "
                            f"use several recorders and add them")


def _check_batch(acc: QuantizerAccumulator, x: np.ndarray, what: str) -> None:
    if x.ndim < 2 or x.shape[1] != acc.channels or math.prod(x.shape[2:]) != acc.positions:
        raise ValueError(f"{what} of shape {x.shape} does not match statistics of {acc.channels} channels x "
                         f"{acc.positions} positions")
    _check_image_budget(acc.n_images, x.shape[0])


# --------------------------------------------------------------------------------------
# the definition, in plain numpy


def accumulate_reference(acc: QuantizerAccumulator, x: np.ndarray, codes: np.ndarray) -> None:
    """Add one batch (x and its int8 codes, ``[N, C, ...]``) to ``acc``, in plain numpy."""
    _check_batch(acc, x, "x")
    n, c = x.shape[:2]
    x3 = x.reshape(n, c, -1)
    k3 = np.asarray(codes).reshape(n, c, -1).astype(np.int64)
    y = x3.astype(np.float64) * acc.gain[None, :, None] + acc.offset[None, :, None]
    acc.hist += np.bincount(np.searchsorted(acc.edges, y.reshape(-1), side="right"), minlength=acc.hist.size)
    for j, code in enumerate((-1, 0, 1)):
        acc.counts[:, j] += (k3 == code).sum(axis=(0, 2))
    active = (k3 != 0).sum(axis=0)  # [C, S]
    acc.macs[:, 0] += (active[None] * acc.mac_weights).sum(axis=(1, 2))
    acc.macs[:, 1] += (active.sum(axis=0)[None] * acc.mac_positions).sum(axis=1)
    acc.ch_min[:] = np.fmin(acc.ch_min, y.min(axis=(0, 2)))
    acc.ch_max[:] = np.fmax(acc.ch_max, y.max(axis=(0, 2)))
    acc.ch_sum[:] += y.sum(axis=(0, 2))
    acc.ch_sumsq[:] += (y * y).sum(axis=(0, 2))
    if acc.ties:
        lo, hi, eps = acc.act_lo, acc.act_hi, acc.tie_eps
        acc.tie_counts[0] += np.count_nonzero((y == lo) | (y == hi))
        acc.tie_counts[1] += np.count_nonzero((np.abs(y - lo) <= eps) | (np.abs(y - hi) <= eps))
    acc.n_images += n


# --------------------------------------------------------------------------------------
# from x and the codes (the recorder hook)

# reassoc lets the sums vectorise (their order changes, as documented); nnan/nsz let
# min/max vectorise where they can: executors give finite values (inputs are checked).
# No "contract": y = x·g + o must round twice, like the numpy definition.
_FASTMATH = {"reassoc", "nsz", "nnan"}


@numba.njit(inline="always", fastmath=_FASTMATH)
def _row_values(xrow, g, o, edges, uniform, inv_width, mid, half, window, y, slot):
    """y = float64(x)·g + o for one row, its histogram slot (0 = underflow, B + 1 =
    overflow) and moments: returns ``(min, max, sum, sumsq, tie candidates)``."""
    n = xrow.shape[0]
    nbins = edges.shape[0] - 1
    e0 = edges[0]
    top = np.float64(nbins)
    mn = np.inf
    mx = -np.inf
    sm = 0.0
    sq = 0.0
    near = 0
    cand = 0
    for p in range(n):
        v = np.float64(xrow[p]) * g + o
        y[p] = v
        mn = min(mn, v)
        mx = max(mx, v)
        sm += v
        sq += v * v
        t = (v - e0) * inv_width
        f = np.floor(t)
        r = t - f
        near += np.int64(r < NEAR_EDGE) | np.int64(r > 1.0 - NEAR_EDGE)
        slot[p] = np.int64(min(max(f, -1.0), top)) + 1
        cand += np.int64(abs(abs(v - mid) - half) <= window)
    if near > 0 or not uniform:  # rare: redo the row exactly
        for p in range(n):
            slot[p] = np.searchsorted(edges, y[p], side="right")
    return mn, mx, sm, sq, cand


@numba.njit(inline="always")
def _scatter(slot, n, sub):
    """Histogram increments, spread over 4 sub-histograms so that runs of equal slots do
    not wait on each other's stores."""
    p = 0
    while p + 4 <= n:
        sub[0, slot[p]] += 1
        sub[1, slot[p + 1]] += 1
        sub[2, slot[p + 2]] += 1
        sub[3, slot[p + 3]] += 1
        p += 4
    while p < n:
        sub[0, slot[p]] += 1
        p += 1


@numba.njit(inline="always")
def _add_sub_histograms(sub, hist_row):
    for b in range(hist_row.shape[0]):
        hist_row[b] += sub[0, b] + sub[1, b] + sub[2, b] + sub[3, b]


@numba.njit(inline="always")
def _add_task_partials(hist_p, ties_p, macs_p, n_cons, hist, tie_counts, macs):
    """Add the per-task histograms, tie counts and MAC sums (leading axis = task) to the
    running totals (the first ``n_cons`` consumers' MAC sums are real)."""
    for t in range(hist_p.shape[0]):
        for b in range(hist.shape[0]):
            hist[b] += hist_p[t, b]
        tie_counts[0] += ties_p[t, 0]
        tie_counts[1] += ties_p[t, 1]
        for j in range(n_cons):
            macs[j, 0] += macs_p[t, j, 0]
            macs[j, 1] += macs_p[t, j, 1]


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _accumulate_kernel(x, codes, gain, offset, edges, uniform, inv_width, ties, lo, hi, eps, mid, half, window,
                       mac_weights, mac_positions, hist, counts, moments, tie_counts, macs):
    # One task per channel: its counts and moments are its own; the histogram, tie and
    # MAC counts go to per-task partials added up at the end.
    n_img, n_ch, n_pos = x.shape
    n_cons = mac_weights.shape[0]
    slots = edges.shape[0] + 1
    hist_p = np.zeros((n_ch, slots), np.int64)
    ties_p = np.zeros((n_ch, 2), np.int64)
    macs_p = np.zeros((n_ch, n_cons, 2), np.int64)
    for c in numba.prange(n_ch):
        y = np.empty(n_pos)
        slot = np.empty(n_pos, np.int64)
        sub = np.zeros((4, slots), np.int64)
        active = np.zeros(n_pos, np.int64)
        g = gain[c]
        o = offset[c]
        mn = np.inf
        mx = -np.inf
        sm = 0.0
        sq = 0.0
        nonzero = 0
        signed = 0
        for n in range(n_img):
            a, b, s1, s2, cand = _row_values(x[n, c], g, o, edges, uniform, inv_width, mid, half, window, y, slot)
            mn = min(mn, a)
            mx = max(mx, b)
            sm += s1
            sq += s2
            _scatter(slot, n_pos, sub)
            if ties and cand > 0:
                for p in range(n_pos):
                    v = y[p]
                    if v == lo or v == hi:
                        ties_p[c, 0] += 1
                    if abs(v - lo) <= eps or abs(v - hi) <= eps:
                        ties_p[c, 1] += 1
            kr = codes[n, c]
            for p in range(n_pos):
                k = np.int64(kr[p])
                active[p] += abs(k)
                nonzero += abs(k)
                signed += k
        # (the totals are written through ``moments`` itself: writes through row views
        # made before the prange were lost, numba 0.68)
        for j in range(n_cons):
            for p in range(n_pos):
                macs_p[c, j, 0] += active[p] * mac_weights[j, c, p]
                macs_p[c, j, 1] += active[p] * mac_positions[j, p]
        _add_sub_histograms(sub, hist_p[c])
        # with a = Σ|k| (non-zeros) and b = Σk: #(+1) = (a + b)/2, #(-1) = (a - b)/2
        counts[c, 0] += (nonzero - signed) // 2
        counts[c, 1] += n_img * n_pos - nonzero
        counts[c, 2] += (nonzero + signed) // 2
        moments[0, c] = min(moments[0, c], mn)
        moments[1, c] = max(moments[1, c], mx)
        moments[2, c] += sm
        moments[3, c] += sq
    _add_task_partials(hist_p, ties_p, macs_p, n_cons, hist, tie_counts, macs)


def accumulate(acc: QuantizerAccumulator, x: np.ndarray, codes: np.ndarray) -> None:
    """Add one batch (x of any real dtype and its int8 codes, ``[N, C, ...]``) to ``acc``."""
    _check_batch(acc, x, "x")
    n, c = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(n, c, -1)
    k3 = np.ascontiguousarray(codes, np.int8).reshape(n, c, -1)
    mid, half = 0.5 * (acc.act_lo + acc.act_hi), 0.5 * (acc.act_hi - acc.act_lo)
    # tie candidates: ||y - mid| - half| <= window covers both tie tests, with slack for
    # the rounding of mid and half
    window = acc.tie_eps + 1e-12 * (1.0 + abs(acc.act_lo) + abs(acc.act_hi))
    _accumulate_kernel(x3, k3, acc.gain, acc.offset, acc.edges, acc.uniform, acc.inv_width, acc.ties,
                       float(acc.act_lo), float(acc.act_hi), float(acc.tie_eps), mid, half, window,
                       acc.mac_weights, acc.mac_positions, acc.hist, acc.counts, acc.moments,
                       acc.tie_counts, acc.macs)
    acc.n_images += n


# --------------------------------------------------------------------------------------
# fused into the engine's threshold + pack pass

#: the fused kernel works on segments of whole rows of one channel plane of at least
#: this many values (or the whole plane): long enough for its reductions to vectorise
SEGMENT_VALUES = 256


@numba.njit(inline="always", fastmath=_FASTMATH)
def _segment_pack_stats(xs, d, hc, lc, scale, shift, near, top, kb, va, m, sg, bit_mask, slot):
    """One segment of one channel: threshold into bit ``bit_mask`` of the 32-bit plane
    words m / sg,
    count codes and MAC weights, and find each value's histogram slot (float32, see
    :func:`_fused_constants`).  Returns ``(Σ|k|, #(-1), Σ|k|·K, Σ|k|·V,
    min key, max key, Σx, Σx², #near an edge)``; the values near an edge are re-binned by
    :func:`_rebin_near_edges`."""
    # Everything is 32 bits wide so that the loop runs 16 lanes per zmm register: numba
    # widens int32 arithmetic to int64 unless the result is cast back (LLVM then narrows
    # it), and the plane words are built as 32-bit halves (``m``/``sg`` hold the half
    # of bit ``bit``; ``bit_mask = 1 << bit``).  The segment is short enough that the
    # 32-bit sums cannot overflow (checked by the caller).
    i32 = np.int32
    nonzero = i32(0)
    negative = i32(0)
    both = i32(0)
    act = i32(0)
    kmin = i32(2**31 - 1)
    kmax = i32(-(2**31))
    sm = np.float32(0.0)
    sq = np.float32(0.0)
    n_special = i32(0)
    low = np.float32(0.0)
    none = np.uint32(0)
    for p in range(xs.shape[0]):  # branch-free: one vector loop
        xv = xs[p]
        z = xv * d
        plus = z >= hc
        minus = z < lc
        nz = plus | minus
        m[p] = m[p] | (bit_mask if nz else none)
        sg[p] = sg[p] | (bit_mask if minus else none)
        nonzero = i32(nonzero + i32(nz))
        negative = i32(negative + i32(minus))
        both = i32(both + i32(nz) * kb[p])
        act = i32(act + i32(nz) * va[p])
        key = order_key32(xv)  # min/max of floats do not vectorise here; of ints they do
        kmin = min(kmin, key)
        kmax = max(kmax, key)
        xf = np.float32(xv)
        sm += xf
        sq += xf * xf
        t = xf * scale + shift  # the slot is floor(t) (see _fused_constants)
        f = np.floor(t)
        n_special = i32(n_special + i32(t - f < near))
        slot[p] = np.uint8(min(max(f, low), top))
    return nonzero, negative, both, act, kmin, kmax, sm, sq, n_special


@numba.njit(inline="always")
def _count_at_or_below(edges, y):
    """``searchsorted(edges, y, "right")``: the number of edges <= y (a binary search)."""
    lo = 0
    hi = edges.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] <= y:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(inline="always")
def _exact_slot(v, g, o, edges, ties, lo, hi, eps):
    """The reference's slot and tie tests of one value: ``(slot, exact tie, near tie)``."""
    y = np.float64(v) * g + o
    s = _count_at_or_below(edges, y)
    exact = 0
    near = 0
    if ties:
        if y == lo or y == hi:
            exact = 1
        if abs(y - lo) <= eps or abs(y - hi) <= eps:
            near = 1
    return s, exact, near


@numba.njit(inline="always", fastmath=_FASTMATH)
def _rebin_near_edges(xs, slot, scale, shift, near, g, o, edges, ties, lo, hi, eps, hist):
    """Redo, in float64, the values :func:`_segment_pack_stats` found near an edge (the
    same float32 test): move each from its float32 slot to the reference's, and audit
    its ties; returns ``(exact ties, near ties)``."""
    exact_ties = 0
    near_ties = 0
    for p in range(xs.shape[0]):
        xf = np.float32(xs[p])
        t = xf * scale + shift
        if t - np.floor(t) < near:
            e, exact_tie, near_tie = _exact_slot(xs[p], g, o, edges, ties, lo, hi, eps)
            hist[slot[p]] -= 1
            hist[e] += 1
            exact_ties += exact_tie
            near_ties += near_tie
    return exact_ties, near_ties


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _threshold_pack_accumulate_kernel(x, d_eff, lo_t, hi_t, planes, rows_per_item, width, tasks,
                                      gain, offset, scale, shift, near, edges, ties, lo, hi, eps,
                                      mac_weights, mac_positions, n_cons,
                                      hist, counts, moments, tie_counts, macs):
    # x: [N, C, S] (float32 or int32); planes: [2, N, S, words]; moments: per-channel
    # min, max, sum and sum of squares of y.  Work items are (image, block of rows, word
    # of 64 channels); each task takes a contiguous run of items and keeps its own
    # partial sums, added up at the end.
    n_img, c_count, n_pos = x.shape
    n_words = planes.shape[3]
    slots = edges.shape[0] + 1
    top = np.float32(slots - 1)
    height = n_pos // width
    blocks = (height + rows_per_item - 1) // rows_per_item
    items = n_img * blocks * n_words
    hist_p = np.zeros((tasks, slots), np.int64)
    ties_p = np.zeros((tasks, 2), np.int64)
    count_p = np.zeros((tasks, c_count, 2), np.int64)
    key_p = np.empty((tasks, c_count, 2), np.int32)
    sum_p = np.zeros((tasks, c_count, 2))
    macs_p = np.zeros((tasks, mac_weights.shape[0], 2), np.int64)
    # every task's scratch in one allocation each (a call is a few microseconds at batch 1)
    seg = rows_per_item * width
    m_all = np.empty((tasks, 2, seg), np.uint32)  # the low and high 32 bits of the plane words
    sg_all = np.empty((tasks, 2, seg), np.uint32)
    slot_all = np.empty((tasks, seg), np.uint8)
    sub_all = np.zeros((tasks, 4, slots), np.int64)
    for t in numba.prange(tasks):
        m, sg, slot, sub = m_all[t], sg_all[t], slot_all[t], sub_all[t]
        # task-local totals in registers (neighbouring tasks' partials share cache lines)
        exact_ties = 0
        near_ties = 0
        mac_both = 0
        mac_act = 0
        for c in range(c_count):
            key_p[t, c, 0] = 2**31 - 1
            key_p[t, c, 1] = -(2**31)
        for item in range(t * items // tasks, (t + 1) * items // tasks):
            n = item // (blocks * n_words)
            rest = item - n * blocks * n_words
            block = rest // n_words
            k = rest - block * n_words
            s0 = block * rows_per_item * width
            s1 = min(n_pos, s0 + seg)
            length = s1 - s0
            m[:, :length] = 0
            sg[:, :length] = 0
            for c in range(k * 64, min(c_count, (k + 1) * 64)):
                xs = x[n, c, s0:s1]
                half = (c - k * 64) >> 5
                r = _segment_pack_stats(xs, d_eff[c], hi_t[c], lo_t[c], scale[c],
                                        shift[c], near[c], top, mac_weights[0, c, s0:s1],
                                        mac_positions[0, s0:s1], m[half], sg[half],
                                        np.uint32(1 << ((c - k * 64) & 31)), slot)
                count_p[t, c, 0] += r[0]
                count_p[t, c, 1] += r[1]
                mac_both += r[2]
                mac_act += r[3]
                key_p[t, c, 0] = min(key_p[t, c, 0], r[4])
                key_p[t, c, 1] = max(key_p[t, c, 1], r[5])
                sum_p[t, c, 0] += r[6]
                sum_p[t, c, 1] += r[7]
                _scatter(slot, length, sub)
                if r[8] > 0:  # rare: values near a bin edge (and so every tie)
                    e, n_near = _rebin_near_edges(xs, slot, scale[c], shift[c], near[c], gain[c], offset[c], edges,
                                                  ties, lo, hi, eps, sub[0])
                    exact_ties += e
                    near_ties += n_near
                for j in range(1, n_cons):  # further consumers of the codes (rare)
                    for p in range(length):
                        z = xs[p] * d_eff[c]
                        nz = np.int64((z >= hi_t[c]) | (z < lo_t[c]))
                        macs_p[t, j, 0] += nz * mac_weights[j, c, s0 + p]
                        macs_p[t, j, 1] += nz * mac_positions[j, s0 + p]
            for p in range(length):
                planes[0, n, s0 + p, k] = np.uint64(m[0, p]) | (np.uint64(m[1, p]) << np.uint64(32))
                planes[1, n, s0 + p, k] = np.uint64(sg[0, p]) | (np.uint64(sg[1, p]) << np.uint64(32))
        _add_sub_histograms(sub, hist_p[t])
        ties_p[t, 0] = exact_ties
        ties_p[t, 1] = near_ties
        macs_p[t, 0, 0] = mac_both
        macs_p[t, 0, 1] = mac_act
    # fold the partials into the running totals
    _add_task_partials(hist_p, ties_p, macs_p, n_cons, hist, tie_counts, macs)
    values = n_img * n_pos
    for c in range(c_count):
        nonzero = 0
        negative = 0
        kmin = np.int32(2**31 - 1)
        kmax = np.int32(-(2**31))
        sx = 0.0
        sxx = 0.0
        for t in range(tasks):
            nonzero += count_p[t, c, 0]
            negative += count_p[t, c, 1]
            kmin = min(kmin, key_p[t, c, 0])
            kmax = max(kmax, key_p[t, c, 1])
            sx += sum_p[t, c, 0]
            sxx += sum_p[t, c, 1]
        counts[c, 0] += negative
        counts[c, 1] += values - nonzero
        counts[c, 2] += nonzero - negative
        # y = g·x + o rounds monotonically in x, so y's extremes are those of x mapped
        # (exactly the reference's values); the sums expand Σ(g·x + o) and Σ(g·x + o)²
        x_lo = np.float64(key32_value(kmin, x[0, 0, 0]))
        x_hi = np.float64(key32_value(kmax, x[0, 0, 0]))
        g = gain[c]
        o = offset[c]
        y_a = np.float64(x_lo) * g + o
        y_b = np.float64(x_hi) * g + o
        moments[0, c] = min(moments[0, c], min(y_a, y_b))
        moments[1, c] = max(moments[1, c], max(y_a, y_b))
        moments[2, c] += g * sx + values * o
        moments[3, c] += g * g * sxx + 2.0 * g * o * sx + values * o * o


def _fused_constants(acc: QuantizerAccumulator, x_dtype, direction, lo, hi, constant):
    """Per-channel float32 constants of the fused kernel.

    Slot: with the exact bin position ``P = (y - e_0)/w + 1`` of ``y = float64(x)·g + o``
    (the reference's slot is ``floor(P)`` clipped to [0, B + 1]), the kernel computes in
    float32 ``t = x·S_c + T_c`` with ``S_c = g_c/w`` and ``T_c = (o_c - e_0)/w + 1 + err_c``
    — P shifted up by ``err_c`` — and takes ``floor(t)``.  If ``|t - (P + err_c)| <= err_c``
    then ``floor(t)`` can differ from ``floor(P)`` only when t lies in ``[k, k + 2·err_c)``
    above an integer k, so values with ``frac(t) < 2·err_c`` (``near``) are re-binned
    exactly; one comparison per value.  The float32 error of t is at most about
    ``2^-24·(3·|x·S| + |T| + |t|)`` (rounding of x (int32 x), S, the product, T and the
    sum) plus the edges' distance from ``e_0 + i·w`` (checked below 2^-30·w); for a value
    whose bin matters, ``|t| <= B + 2`` and ``|x·S| <= |t| + |T|``, so the error is below
    ``2^-22·(B + 2 + |T_c|) + 2^-30``, and ``err_c = 2^-21·(B + 2 + |T_c|) + 2^-28`` bounds
    it with a 2x margin.  Ties: a value within ``eps`` of ``lo`` or ``hi`` has P within
    ``eps/w`` of an integer when both are edges (the default ±0.5); ``err_c`` is widened by
    ``eps/w`` so that those values are re-binned (and their ties audited) too; with ties
    off the edges the fused kernel is not used (:meth:`QuantizerAccumulator.fusable`).

    Codes: constant channels (direction 0) get ``d = 0`` and thresholds that make
    ``0 >= hi``, ``0 < lo`` give the constant."""
    nbins = acc.edges.size - 1
    scale = (acc.gain * acc.inv_width).astype(np.float32)
    position = (acc.offset - acc.edges[0]) * acc.inv_width + 1.0
    widen = acc.tie_eps * acc.inv_width if acc.ties else 0.0
    err = 2.0**-21 * (nbins + 2 + np.abs(position)) + 2.0**-28 + widen
    if np.any(err >= 0.2):
        return None
    shift = (position + err).astype(np.float32)
    near = (2.0 * err).astype(np.float32)
    direction = np.asarray(direction)
    integer = np.dtype(x_dtype).kind in "iu"
    big = np.iinfo(np.int32).max if integer else np.inf
    low = np.iinfo(np.int32).min if integer else -np.inf
    const = np.asarray(constant)
    hi_eff = np.where(direction == 0, np.where(const > 0, low, big), hi)
    lo_eff = np.where(direction == 0, np.where(const < 0, big, low), lo)
    dtype = np.int32 if integer else np.float32
    return (direction.astype(dtype), lo_eff.astype(dtype), hi_eff.astype(dtype), scale, shift, near)


class FusedThresholdStatistics:
    """:func:`threshold_pack_accumulate` for one threshold layer and one accumulator, with
    the per-channel constants prepared once (the engine keeps one per recorder)."""

    def __init__(self, acc: QuantizerAccumulator, integer: bool, direction, lo, hi, constant):
        if not acc.fusable():
            raise ValueError("threshold_pack_accumulate: these statistics cannot be fused (non-uniform edges, more "
                             "than 253 bins, MAC maps too large for int32 sums, or ties audited off the edges); use "
                             "threshold_pack(..., with_codes=True) and accumulate()")
        constants = _fused_constants(acc, np.int32 if integer else np.float32, direction, lo, hi, constant)
        if constants is None:
            raise ValueError("threshold_pack_accumulate: the float32 bin positions are too coarse for these edges")
        self.acc = acc
        self.integer = integer
        self.constants = constants
        c, s = acc.channels, acc.positions
        if acc.mac_weights.shape[0]:
            self.maps = acc.mac_weights, acc.mac_positions
        else:  # the kernel reads consumer 0's maps: give it zeros
            self.maps = np.zeros((1, c, s), np.int16), np.zeros((1, s), np.int16)
        self.tie_args = (acc.ties, float(acc.act_lo), float(acc.act_hi), float(acc.tie_eps))

    def __call__(self, x: np.ndarray, threads: int | None = None, acc: QuantizerAccumulator | None = None) \
            -> PackedTernary:
        """Threshold and pack ``x``, adding its statistics to ``acc`` (default: the
        accumulator this was prepared for; another must be :meth:`~QuantizerAccumulator.same_quantizer`)."""
        if acc is None:
            acc = self.acc
        elif acc is not self.acc and not self.acc.same_quantizer(acc):
            raise ValueError("threshold_pack_accumulate: the accumulator describes another quantizer than the "
                             "one these constants were prepared for")
        _check_batch(acc, x, "x")
        n, c, h, w = x.shape
        x = np.ascontiguousarray(x, np.int32 if self.integer else np.float32)
        x3 = x.reshape(n, c, h * w)
        rows = h if h * w <= SEGMENT_VALUES else min(h, -(-SEGMENT_VALUES // w))
        for r in range(rows, min(h, 2 * rows) + 1):  # whole vectors of 16 values if possible
            if r * w % 16 == 0:
                rows = r
                break
        items = n * (-(-h // rows)) * words_for(c)
        tasks = max(1, min(items, 4 * (threads or numba.get_num_threads())))
        planes = np.empty((2, n, h, w, words_for(c)), np.uint64)
        _threshold_pack_accumulate_kernel(
            x3, *self.constants[:3], planes.reshape(2, n, h * w, -1), rows, w, tasks,
            acc.gain, acc.offset, *self.constants[3:], acc.edges, *self.tie_args, *self.maps,
            acc.mac_weights.shape[0], acc.hist, acc.counts, acc.moments, acc.tie_counts, acc.macs)
        acc.n_images += n
        return PackedTernary(planes, c)


def threshold_pack_accumulate(x: np.ndarray, direction, lo, hi, constant, acc: QuantizerAccumulator,
                              threads: int | None = None) -> PackedTernary:
    """:func:`.fused.threshold_pack` of NCHW ``x`` (float32, or int32 accumulators) that
    also adds the batch to ``acc``, in one pass while each segment of x is in cache.

    ``lo``/``hi`` have x's comparison type (as for ``threshold_pack``).  Requires
    ``acc.fusable()``; per value it does the threshold, the code and MAC counts, the
    extremes (as order-preserving int32 keys) and float32 partial sums (over at most a
    segment of rows, then float64), and the histogram slot in float32 — re-binned exactly
    in float64 where float32 could be wrong (see :func:`_fused_constants`).  Repeated
    calls for one layer should reuse a :class:`FusedThresholdStatistics`."""
    return FusedThresholdStatistics(acc, np.asarray(x).dtype.kind in "iu", direction, lo, hi, constant)(x, threads)

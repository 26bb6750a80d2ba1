"""One batch of one activation quantizer → the recorder's integer counts (two backends).

Both backends take the quantizer input as ``x[N, C, S]`` (S = the flattened spatial
positions, 1 for a linear layer), per-channel ``gain``/``offset`` (``y = gain·x + offset``
in float64, the value the activation compares with ``lo``/``hi``) and the int8 codes
``[N, C, S]``, and return a :class:`BatchStats`:

* ``hist`` — int64 ``[underflow, bin 0, ..., bin B-1, overflow]`` on the fixed edges,
  bins ``[e_i, e_{i+1})``;
* ``counts`` — int64 ``[C, 3]``: codes -1, 0, +1 per channel;
* ``active`` — int64 ``[C, S]``: the number of images with a non-zero code at each
  position (for the non-zero MAC count of the consuming layer);
* ``ch_min``, ``ch_max``, ``ch_sum``, ``ch_sumsq`` — per-channel float64 moments of y;
* ``exact_ties`` / ``near_ties`` — #(y == lo or y == hi) and #(|y - lo| <= eps or
  |y - hi| <= eps) (0 when ``ties`` is False).

``numpy`` is the readable reference; ``numba`` (the default) does everything in one
pass over memory (one task per channel, in parallel for large batches). Their integer results are identical
(tested); the float sums differ only in summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


class BinIndexer:
    """Bin index of values on fixed edges, bins ``[e_i, e_{i+1})``: -1 below, ``nbins``
    at or above the last edge. Uniform edges use arithmetic plus one exact correction
    step against the edges (the arithmetic is off by at most one bin near an edge);
    other edges use ``searchsorted``. Both equal ``searchsorted(edges, v, 'right') - 1``."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.ascontiguousarray(edges, np.float64)
        self.nbins = self.edges.size - 1
        width = (self.edges[-1] - self.edges[0]) / self.nbins
        self.uniform = bool(np.allclose(np.diff(self.edges), width, rtol=1e-9, atol=0.0))
        self.inv_width = 1.0 / width

    def counts(self, values: np.ndarray) -> np.ndarray:
        """int64 ``[underflow, bin 0, ..., bin nbins-1, overflow]`` of float64 ``values``."""
        if self.uniform:
            t = (values - self.edges[0]) * self.inv_width
            np.clip(t, 0, self.nbins - 1, out=t)  # clip in float: no integer overflow far out
            idx = t.astype(np.int64)
            idx -= values < self.edges[idx]
            idx += values >= self.edges[idx + 1]
        else:
            idx = np.searchsorted(self.edges, values, side="right") - 1
        idx += 1
        return np.bincount(idx, minlength=self.nbins + 2).astype(np.int64)


@dataclass
class BatchStats:
    hist: np.ndarray
    counts: np.ndarray
    active: np.ndarray
    ch_min: np.ndarray
    ch_max: np.ndarray
    ch_sum: np.ndarray
    ch_sumsq: np.ndarray
    exact_ties: int
    near_ties: int


def accumulate_numpy(x, gain, offset, codes, bins: BinIndexer, lo: float, hi: float, eps: float,
                     ties: bool) -> BatchStats:
    """The readable backend (several vectorised passes)."""
    n, c, s = x.shape
    y = np.multiply(x, gain.reshape(1, c, 1), dtype=np.float64)
    y += offset.reshape(1, c, 1)
    flat = y.reshape(-1)
    hist = bins.counts(flat)
    # with a = Σ|t| (non-zeros) and b = Σ t per channel: #(+1) = (a+b)/2, #(-1) = (a-b)/2
    active = np.abs(codes).sum(axis=0, dtype=np.int64)  # [C, S]
    nonzero = active.sum(axis=1)
    signed = codes.sum(axis=(0, 2), dtype=np.int64)
    counts = np.stack([(nonzero - signed) // 2, n * s - nonzero, (nonzero + signed) // 2], axis=1)
    exact = near = 0
    if ties:
        exact = int(np.count_nonzero((flat == lo) | (flat == hi)))
        near = int(np.count_nonzero((np.abs(flat - lo) <= eps) | (np.abs(flat - hi) <= eps)))
    return BatchStats(hist, counts, active, y.min(axis=(0, 2)), y.max(axis=(0, 2)), y.sum(axis=(0, 2)),
                      np.einsum("ncs,ncs->c", y, y), exact, near)


def _accumulate_py(x, gain, offset, codes, edges, uniform, inv_width, lo, hi, eps, ties,
                   hist_c, counts, active, ch_min, ch_max, ch_sum, ch_sumsq, exact_c, near_c):
    # One task per channel; everything a channel touches (its histogram row, counts,
    # activity row, moments, tie counts) is its own, so the parallel version has no races.
    # Codes are counted branch-free: Σ|k| counts the non-zeros and Σk their sign balance.
    n_img, n_ch, n_pos = x.shape
    nbins = edges.size - 1
    e0 = edges[0]
    top = np.float64(nbins - 1)
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    window = eps + 1e-12 * (1.0 + abs(lo) + abs(hi))  # candidates for the exact tie tests
    for c in numba.prange(n_ch):
        g = gain[c]
        o = offset[c]
        mn = np.inf
        mx = -np.inf
        sm = 0.0
        sq = 0.0
        ex = 0
        nr = 0
        nonzero = 0
        signed = 0
        act = active[c]
        hist = hist_c[c]
        y = np.empty(n_pos, np.float64)
        idx = np.empty(n_pos, np.int64)
        sub = np.zeros((4, nbins + 2), np.int64)
        for n in range(n_img):
            xr = x[n, c]
            kr = codes[n, c]
            # pass 1, branch-free (vectorised): y, moments, code counts, activity
            for p in range(n_pos):
                v = np.float64(xr[p]) * g + o
                y[p] = v
                mn = min(mn, v)
                mx = max(mx, v)
                sm += v
                sq += v * v
                k = np.int64(kr[p])
                a = abs(k)
                act[p] += a
                nonzero += a
                signed += k
            # pass 2: histogram (a scatter); the arithmetic bin index is off by at most
            # one bin at an edge, corrected against the edges (the two tests exclude
            # each other since edges[i] <= edges[i+1])
            if uniform:
                for p in range(n_pos):  # bin indices first (vectorisable) ...
                    v = y[p]
                    i = np.int64(min(max((v - e0) * inv_width, 0.0), top))
                    idx[p] = i + 1 + np.int64(v >= edges[i + 1]) - np.int64(v < edges[i])
                # ... then the increments, spread over 4 sub-histograms so that runs of
                # equal bins do not wait on each other's stores
                p = 0
                while p + 4 <= n_pos:
                    sub[0, idx[p]] += 1
                    sub[1, idx[p + 1]] += 1
                    sub[2, idx[p + 2]] += 1
                    sub[3, idx[p + 3]] += 1
                    p += 4
                while p < n_pos:
                    sub[0, idx[p]] += 1
                    p += 1
            else:
                for p in range(n_pos):
                    hist[np.searchsorted(edges, y[p], side="right")] += 1
            if ties:
                for p in range(n_pos):
                    v = y[p]
                    if abs(abs(v - mid) - half) <= window:
                        if v == lo or v == hi:
                            ex += 1
                        if abs(v - lo) <= eps or abs(v - hi) <= eps:
                            nr += 1
        for b in range(nbins + 2):
            hist[b] += sub[0, b] + sub[1, b] + sub[2, b] + sub[3, b]
        counts[c, 0] = (nonzero - signed) // 2
        counts[c, 2] = (nonzero + signed) // 2
        counts[c, 1] = n_img * n_pos - nonzero
        ch_min[c] = mn
        ch_max[c] = mx
        ch_sum[c] = sm
        ch_sumsq[c] = sq
        exact_c[c] = ex
        near_c[c] = nr


# reassoc lets the moment sums vectorise (their order changes, as documented); nnan/nsz
# let min/max reductions vectorise: executors give finite values (inputs are checked)
_FASTMATH = {"reassoc", "nsz", "nnan"}
_kernel_serial = numba.njit(cache=True, fastmath=_FASTMATH)(_accumulate_py)
_kernel_parallel = numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)(_accumulate_py)
#: batches with at least this many values use the parallel kernel (below it the thread
#: hand-off costs more than it saves)
PARALLEL_MIN_VALUES = 1 << 18


def accumulate_numba(x, gain, offset, codes, bins: BinIndexer, lo: float, hi: float, eps: float,
                     ties: bool) -> BatchStats:
    """The fast backend: one pass over memory, parallel over channels for large batches."""
    n, c, s = x.shape
    hist_c = np.zeros((c, bins.nbins + 2), np.int64)
    counts = np.zeros((c, 3), np.int64)
    active = np.zeros((c, s), np.int64)
    ch = [np.empty(c, np.float64) for _ in range(4)]
    exact_c, near_c = np.zeros(c, np.int64), np.zeros(c, np.int64)
    kernel = _kernel_parallel if x.size >= PARALLEL_MIN_VALUES and c > 1 else _kernel_serial
    kernel(x, np.ascontiguousarray(gain, np.float64), np.ascontiguousarray(offset, np.float64), codes,
           bins.edges, bins.uniform, bins.inv_width, float(lo), float(hi), float(eps), bool(ties),
           hist_c, counts, active, *ch, exact_c, near_c)
    return BatchStats(hist_c.sum(axis=0), counts, active, ch[0], ch[1], ch[2], ch[3],
                      int(exact_c.sum()), int(near_c.sum()))


@numba.njit(cache=True)
def tap_sums(active, kh, kw, stride, pad, out_h, out_w):
    """``taps[c, p, q] = Σ_{i<out_h, j<out_w} A[c, s·i + p - pad, s·j + q - pad]`` (zero
    outside the map): the activity each kernel tap meets over all output positions.

    Exact int64 in O(C·H·W): a stride-s summed-area table
    ``P[r, w] = Σ_{k,l >= 0} A[r - k·s, w - l·s]`` turns each tap's strided rectangle
    ``rows r0, r0+s, ..., r1`` × ``cols c0, ..., c1`` into four look-ups
    ``P[r1,c1] - P[r0-s,c1] - P[r1,c0-s] + P[r0-s,c0-s]`` (P = 0 at negative indices).
    """
    n_ch, height, width = active.shape
    taps = np.zeros((n_ch, kh, kw), np.int64)
    table = np.zeros((height, width), np.int64)
    for c in range(n_ch):
        for r in range(height):
            for w in range(width):
                v = active[c, r, w]
                if r >= stride:
                    v += table[r - stride, w]
                if w >= stride:
                    v += table[r, w - stride]
                if r >= stride and w >= stride:
                    v -= table[r - stride, w - stride]
                table[r, w] = v
        for p in range(kh):
            # output rows i whose input row s*i + p - pad lies inside the map
            i0 = max(0, -((p - pad) // stride))
            i1 = min(out_h - 1, (height - 1 - (p - pad)) // stride)
            if i1 < i0:
                continue
            r0 = stride * i0 + p - pad
            r1 = stride * i1 + p - pad
            for q in range(kw):
                j0 = max(0, -((q - pad) // stride))
                j1 = min(out_w - 1, (width - 1 - (q - pad)) // stride)
                if j1 < j0:
                    continue
                c0 = stride * j0 + q - pad
                c1 = stride * j1 + q - pad
                total = table[r1, c1]
                if r0 - stride >= 0:
                    total -= table[r0 - stride, c1]
                if c0 - stride >= 0:
                    total -= table[r1, c0 - stride]
                if r0 - stride >= 0 and c0 - stride >= 0:
                    total += table[r0 - stride, c0 - stride]
                taps[c, p, q] = total
    return taps


BACKENDS = {"numpy": accumulate_numpy, "numba": accumulate_numba}

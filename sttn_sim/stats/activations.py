r"""Activation statistics: a recorder for the executors' layer hook, and BN-implied thresholds.

:class:`ActivationRecorder` implements :class:`sttn_sim.recording.Recorder`. Attach it to
any executor (the float64 reference ``run_reference(model, x, record=False,
recorder=rec)``, or the packed engine, which calls the same hook) and run as many
batches as you like; it keeps only integer counts and a few float moments, so memory is
flat. Two recorders with the same bins add up (``a + b``, or ``sum([...])``): the counts of
``a + b`` equal those of one recorder that saw both sets of batches, exactly.

Per activation quantizer (``ternary_act`` or a folded ``threshold``) it records:

* the **pre-quantizer value** y on FIXED bins (default: 160 bins of width 0.05 on
  [-4, 4), edges exact in binary so ±0.5 are edges). y is the value the ternary
  activation compares with its thresholds (±0.5 by default): for ``ternary_act`` the BN
  output it receives; for a folded ``threshold`` ``y = gain·x + offset`` recomputed in
  float64 from its input x (the pre-BN value or the integer accumulator) — the same
  axis for every form, so histograms of a latent and a folded model line up. A bin is
  ``[e_i, e_{i+1})`` like the quantizer's ``>=`` rule; values below the first edge are
  ``underflow``, at or above the last ``overflow``. A folded threshold without
  ``gain``/``offset`` is histogrammed on x instead (``domain = "x"``).
* **code counts** of -1 / 0 / +1 per channel (channel = axis 1; a feature for linear
  layers), from the codes the executor produced;
* **dead** channels (never a non-zero code) and **stuck** channels (only one code ever
  seen; dead channels are stuck too, ``stuck_code`` says which), and constant channels
  (BN γ = 0: the folded direction is 0);
* a **tie audit** in the y domain: ``exact_ties`` = #(y == lo or y == hi), where the
  official pure-PyTorch activation returns ±0.5 instead of a ternary value, and
  ``near_ties`` = #(|y - lo| <= tie_eps or |y - hi| <= tie_eps), the values a float32
  engine might quantize differently from the float64 reference;
* for every **ternary layer that consumes the codes** (directly, or through a flatten):
  its dense MACs, the MACs whose activation is non-zero, whose weight is non-zero, and
  whose weight AND activation are both non-zero — the work a sparsity-aware engine must
  do. Padding positions are zero activations. Counted exactly as integers through
  static maps (:func:`mac_maps`): ``both = Σ_{n,c,s} [x_{n,c,s} ≠ 0]·K[c,s]`` where
  ``K[c,s]`` is the number of non-zero weights meeting input position s over all output
  positions — linear in the codes, so it adds over batches and merges.

The work per batch is one pass over the quantizer's input and codes
(:mod:`sttn_sim.kernels.quantizer_stats`; ``backend="numpy"`` is the readable reference
with identical counts). Inside the packed engine the pass is fused into the threshold
kernel itself (the recorder hands its accumulators to the engine through
:meth:`ActivationRecorder.threshold_accumulator`), so no codes are written out;
``python -m sttn_sim.bench`` measures what recording costs.

The static **BN-implied per-channel thresholds** on the residual stream come from
:func:`activation_thresholds` (also merged into :meth:`ActivationRecorder.channel_table`).

Tables are tidy DataFrames with a ``layer`` column ordered as in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import ModelError, SttnError
from ..graph import Layer, Model
from ..kernels.quantizer_stats import QuantizerAccumulator, accumulate, accumulate_reference
from ..recording import LayerEvent, Recorder
from ..reference import run_reference
from ..rules import (
    activation_bounds,
    batchnorm_affine,
    conv_output_size,
    folded_activation_bounds,
    thresholds_from_affine,
)
from ..shapes import infer_shapes
from .weights import layer_ternary_weights

#: 160 bins of width 1/20 on [-4, 4): every edge k/20 is exact enough that ±0.5 are edges.
DEFAULT_BINS = np.arange(-80, 81) / 20.0
#: default tie window in the y domain (values are O(1); float32 rounding is ~6e-8 at 0.5)
DEFAULT_TIE_EPS = 1e-6


def _check_edges(bins) -> np.ndarray:
    if bins is None:
        return DEFAULT_BINS.copy()
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise SttnError(f"bins={bins}: expected a positive number of bins")
        return np.linspace(-4.0, 4.0, int(bins) + 1)
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
        raise SttnError("bins: expected an int or a 1-D array of at least 2 finite, strictly increasing edges")
    return edges.copy()


# --------------------------------------------------------------------------------------
# static: BN-implied thresholds


def _channels_of(model: Model, layer: Layer, shapes=None) -> int:
    if layer.kind == "threshold":
        return int(np.asarray(layer.params["direction"]).size)
    shapes = shapes or infer_shapes(model)
    src = layer.inputs[0]
    return int((model.input_shape if src == "input" else shapes[src])[0])


def quantizer_affine(model: Model, layer: Layer, shapes=None) -> dict:
    """Static description of one activation quantizer (per channel, float64).

    Returns ``{"gain", "offset", "direction", "lo", "hi", "constant", "act_lo", "act_hi",
    "domain", "integer", "tie"}``: the quantizer sees ``y = gain·x + offset`` and emits
    ``+1 iff y >= act_hi`` (``y > act_hi`` when ``tie == "half_even"``), ``-1 iff
    y < act_lo``; on x that is ``z = direction·x``, ``+1 iff z >= hi`` (``z > hi``),
    ``-1 iff z < lo``, ``constant`` where direction is 0.
    ``domain`` names x: ``"pre_bn"`` (the residual stream / the BN input), ``"accumulator"``
    (an integer ternary accumulator), ``"input"`` (a bare activation).
    """
    if layer.kind == "threshold":
        p = layer.params
        c = np.asarray(p["direction"]).size
        act_lo, act_hi = folded_activation_bounds(layer.attrs)
        integer = bool(layer.attrs.get("integer", False))
        folded_from = layer.attrs.get("folded_from") or []
        domain = "accumulator" if integer else ("pre_bn" if len(folded_from) >= 2 else "input")
        gain = np.asarray(p["gain"], np.float64) if "gain" in p else None
        offset = np.asarray(p["offset"], np.float64) if "offset" in p else None
        return {"gain": gain, "offset": offset, "direction": np.asarray(p["direction"], np.int8).reshape(c),
                "lo": np.asarray(p["lo"], np.float64).reshape(c), "hi": np.asarray(p["hi"], np.float64).reshape(c),
                "constant": np.asarray(p["constant"], np.int8).reshape(c), "act_lo": act_lo, "act_hi": act_hi,
                "domain": domain, "integer": integer, "tie": layer.attrs.get("tie", "sttn")}
    if layer.kind != "ternary_act":
        raise ModelError(f"layer {layer.name!r} ({layer.kind}) is not an activation quantizer")
    act_lo, act_hi = activation_bounds(layer.attrs)
    src = layer.inputs[0]
    bn = model[src] if src != "input" else None
    if bn is not None and bn.kind == "batchnorm":
        gain, offset = batchnorm_affine(bn)
        domain = "pre_bn"
    else:
        c = _channels_of(model, layer, shapes)
        gain, offset = np.ones(c), np.zeros(c)
        domain = "input"
    tie = layer.attrs.get("tie", "sttn")
    direction, lo, hi, constant = thresholds_from_affine(gain, offset, act_lo, act_hi, tie=tie)
    return {"gain": gain, "offset": offset, "direction": direction, "lo": lo, "hi": hi, "constant": constant,
            "act_lo": act_lo, "act_hi": act_hi, "domain": domain, "integer": False, "tie": tie}


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _threshold_rows(name: str, order: int, info: dict) -> dict:
    d, lo, hi, const = info["direction"], info["lo"], info["hi"], info["constant"]
    c = d.size
    x_plus = np.where(d > 0, hi, np.where(d < 0, -hi, np.nan)).astype(np.float64)
    x_minus = np.where(d > 0, lo, np.where(d < 0, -lo, np.nan)).astype(np.float64)
    strict = info["tie"] == "half_even"  # +1 iff z > hi instead of z >= hi
    up, down = (">", "<") if strict else (">=", "<=")
    rules = []
    for o in range(c):
        if d[o] > 0:
            rules.append(f"+1 if x {up} {_fmt(hi[o])}; -1 if x < {_fmt(lo[o])}")
        elif d[o] < 0:
            rules.append(f"+1 if x {down} {_fmt(-hi[o])}; -1 if x > {_fmt(-lo[o])}")
        else:
            rules.append(f"constant {int(const[o]):+d}")
    nan = np.full(c, np.nan)
    return {
        "layer": name, "order": order, "channel": np.arange(c), "domain": info["domain"], "integer": info["integer"],
        "direction": d.astype(int), "lo": np.asarray(lo, np.float64), "hi": np.asarray(hi, np.float64),
        "constant": const.astype(int),
        "gain": info["gain"] if info["gain"] is not None else nan,
        "offset": info["offset"] if info["offset"] is not None else nan,
        "x_plus": x_plus, "x_minus": x_minus,
        "zero_band_low": np.fmin(x_plus, x_minus), "zero_band_high": np.fmax(x_plus, x_minus),
        "zero_band_width": np.abs(x_plus - x_minus), "rule": rules,
    }


def activation_thresholds(model: Model) -> pd.DataFrame:
    """BN-implied per-channel thresholds of every activation quantizer (one row per
    layer × channel, model order).

    On the quantizer's input x (the residual stream before BN for the official ResNet):

    * direction +1 (γ > 0): ``+1 iff x >= hi``, ``-1 iff x < lo``;
    * direction -1 (γ < 0): ``+1 iff x <= -hi``, ``-1 iff x > -lo``;
    * direction 0 (γ = 0): the constant code ``constant``.

    ``x_plus`` / ``x_minus`` are the boundaries where +1 / -1 begin (``hi``/``lo`` for
    direction +1, ``-hi``/``-lo`` for -1, NaN for constant channels); the zero band is
    between them (``zero_band_low``, ``zero_band_high``, ``zero_band_width``); ``rule``
    spells the comparison out. For a latent model the thresholds are derived from the
    BN in float64 exactly as the fold does; for a folded model they are read from it.
    """
    shapes = infer_shapes(model)
    frames = []
    quantizers = model.activation_quantizers()
    for i, layer in enumerate(quantizers):
        frames.append(pd.DataFrame(_threshold_rows(layer.name, i, quantizer_affine(model, layer, shapes))))
    if not frames:
        return pd.DataFrame(columns=["layer", "order", "channel"])
    df = pd.concat(frames, ignore_index=True)
    df["layer"] = pd.Categorical(df["layer"], categories=[l.name for l in quantizers], ordered=True)
    return df


# --------------------------------------------------------------------------------------
# consumers: ternary layers reading the codes


@dataclass
class _Consumer:
    """A ternary layer reading a quantizer's codes, with its static MAC maps.

    For input position s = (c, h, w) of the codes: ``weights[c, s]`` = the number of
    non-zero weights that meet s over all output positions and channels, and
    ``positions[s]`` = the number of (output position, tap) pairs that meet s.  Then, per
    image, MACs with a non-zero activation = ``c_out · Σ_s [x_s ≠ 0]·positions[s]`` and
    MACs with both non-zero = ``Σ_s [x_s ≠ 0]·weights[c, s]`` — exact integers, linear in
    the codes, so they add over batches (docs/design.md §3)."""

    name: str
    c_out: int
    dense_per_image: int  # MACs of one image
    nonzero_weight_per_image: int  # MACs with a non-zero weight, one image
    weights: np.ndarray  # int32 [C, S]
    positions: np.ndarray  # int32 [S]


def _valid_taps(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """``R[p, i] = 1`` if input index i meets kernel tap p for some output index."""
    out = conv_output_size(size, kernel, stride, pad)
    r = np.zeros((kernel, size), np.int64)
    for p in range(kernel):
        for o in range(out):
            i = stride * o + p - pad
            if 0 <= i < size:
                r[p, i] = 1
    return r


def mac_maps(nonzero: np.ndarray, input_shape: tuple, stride: int = 1, padding: int = 0,
             flatten: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Static MAC maps of a ternary layer with non-zero weight mask ``nonzero``
    (``[O, C, kh, kw]`` for a convolution, ``[O, F]`` for a linear layer) reading codes of
    ``input_shape`` (``(C, H, W)`` or ``(F,)``; ``flatten``: a linear layer reading a
    flattened ``(C, H, W)``).  Returns ``(weights [C, S], positions [S], output positions)``
    as defined in :class:`_Consumer`.

    Convolution: with ``M[c,p,q] = Σ_o nonzero[o,c,p,q]`` and ``R[p,h]`` = 1 if row h meets
    tap row p for some output row (likewise ``Q[q,w]``),
    ``weights[c,h,w] = Σ_{p,q} M[c,p,q]·R[p,h]·Q[q,w]`` and
    ``positions[h,w] = (Σ_p R[p,h])·(Σ_q Q[q,w])``."""
    m = nonzero.sum(axis=0).astype(np.int64)
    if nonzero.ndim == 4:
        c, h, w = input_shape
        kh, kw = nonzero.shape[2:]
        rows, cols = _valid_taps(h, kh, stride, padding), _valid_taps(w, kw, stride, padding)
        weights = np.einsum("cpq,ph,qw->chw", m, rows, cols).reshape(c, h * w)
        positions = np.outer(rows.sum(axis=0), cols.sum(axis=0)).reshape(h * w)
        out_positions = conv_output_size(h, kh, stride, padding) * conv_output_size(w, kw, stride, padding)
    else:
        c = input_shape[0]
        s = int(np.prod(input_shape[1:])) if flatten else 1
        weights = m.reshape(c, s)
        positions = np.ones(s, np.int64)
        out_positions = 1
    return weights.astype(np.int32), positions.astype(np.int32), out_positions


def _consumers(model: Model, quantizer: Layer, shape: tuple) -> list[_Consumer]:

    found = []
    for layer in model.consumers(quantizer.name):
        flatten = False
        if layer.kind == "flatten":
            nxt = model.consumers(layer.name)
            if len(nxt) != 1 or not nxt[0].is_ternary:
                continue
            layer, flatten = nxt[0], True
        if not layer.is_ternary:
            continue
        nz = layer_ternary_weights(layer).codes != 0
        weights, positions, out_positions = mac_maps(nz, shape, int(layer.attrs.get("stride", 1)),
                                                     int(layer.attrs.get("padding", 0)), flatten)
        found.append(_Consumer(layer.name, int(nz.shape[0]), out_positions * int(nz.size),
                               out_positions * int(nz.sum()), weights, positions))
    return found


# --------------------------------------------------------------------------------------
# the recorder


@dataclass
class _LayerStats:
    """One quantizer's running statistics (the kernels' accumulator) and what they mean."""

    name: str
    kind: str
    domain: str  # "y" (the activation's own axis) or "x" (a threshold without gain/offset)
    acc: QuantizerAccumulator
    constant: np.ndarray  # per channel: True where direction == 0
    thresholds: dict  # the static quantizer description (quantizer_affine)
    consumers: list = field(default_factory=list)  # [_Consumer]

    @property
    def channels(self) -> int:
        return self.acc.channels

    # the accumulator's totals under the names the tables use
    hist = property(lambda self: self.acc.hist[1:-1])
    underflow = property(lambda self: int(self.acc.hist[0]))
    overflow = property(lambda self: int(self.acc.hist[-1]))
    codes = property(lambda self: self.acc.counts)
    exact_ties = property(lambda self: int(self.acc.tie_counts[0]))
    near_ties = property(lambda self: int(self.acc.tie_counts[1]))
    n_images = property(lambda self: self.acc.n_images)
    act_lo = property(lambda self: self.acc.act_lo)
    act_hi = property(lambda self: self.acc.act_hi)
    ch_min = property(lambda self: self.acc.ch_min)
    ch_max = property(lambda self: self.acc.ch_max)
    y_sum = property(lambda self: float(self.acc.ch_sum.sum()))
    y_sumsq = property(lambda self: float(self.acc.ch_sumsq.sum()))
    y_min = property(lambda self: float(self.acc.ch_min.min()))
    y_max = property(lambda self: float(self.acc.ch_max.max()))

    @property
    def macs(self) -> dict[str, np.ndarray]:
        """Per consumer: int64 [dense, non-zero activation, non-zero weight, both non-zero]."""
        n = self.acc.n_images
        return {k.name: np.array([n * k.dense_per_image, k.c_out * int(self.acc.macs[j, 1]),
                                  n * k.nonzero_weight_per_image, int(self.acc.macs[j, 0])], np.int64)
                for j, k in enumerate(self.consumers)}

    def copied(self) -> "_LayerStats":
        return _LayerStats(self.name, self.kind, self.domain, self.acc + self.acc.empty_like(), self.constant,
                           self.thresholds, self.consumers)

    def merged(self, other: "_LayerStats") -> "_LayerStats":
        if (self.channels, self.kind, self.domain) != (other.channels, other.kind, other.domain) or \
                [c.name for c in self.consumers] != [c.name for c in other.consumers]:
            raise SttnError(f"cannot merge activation statistics of layer {self.name!r}: {self.kind}/{self.channels} "
                            f"channels/domain {self.domain} against {other.kind}/{other.channels}/{other.domain}")
        try:
            acc = self.acc + other.acc
        except (ValueError, OverflowError) as e:
            raise SttnError(f"cannot merge activation statistics of layer {self.name!r}: {e}") from None
        return _LayerStats(self.name, self.kind, self.domain, acc, self.constant, self.thresholds, self.consumers)


class ActivationRecorder(Recorder):
    """Accumulate activation statistics over batches (see the module note).

    Args:
        bins: histogram edges of the pre-quantizer value y: ``None`` (160 bins of 0.05 on
            [-4, 4)), an int (that many equal bins on [-4, 4]), or a strictly increasing
            array of edges. Recorders merge only with identical edges.
        tie_eps: the near-tie window around the activation thresholds, in y units.
        macs: also count the non-zero MACs of the ternary layers consuming the codes.
        backend: ``"numba"`` (the default: one parallel pass per layer, and inside the
            packed engine's threshold kernel) or ``"numpy"`` (the readable reference);
            their counts are identical.

    Use ``rec + other`` to merge; :meth:`layer_table`, :meth:`channel_table`,
    :meth:`histogram_table` and :meth:`histogram` read the results.
    """

    wants_accumulators = False  # quantizer inputs only: the engine may fuse its epilogues

    def __init__(self, bins=None, *, tie_eps: float = DEFAULT_TIE_EPS, macs: bool = True, backend: str = "numba"):
        self.edges = _check_edges(bins)
        if backend not in ("numba", "numpy"):
            raise SttnError(f"backend={backend!r}: expected 'numba' or 'numpy'")
        self.backend = backend
        if not (np.isfinite(tie_eps) and tie_eps >= 0):
            raise SttnError(f"tie_eps={tie_eps}: expected a finite number >= 0")
        self.tie_eps = float(tie_eps)
        self.count_macs = bool(macs)
        self.batches = 0
        self.samples = 0
        self._stats: dict[str, _LayerStats] = {}
        self._order: list[str] = []
        self._model_key = None

    # -- the hook --------------------------------------------------------------------
    def on_batch_start(self, model, batch_size: int) -> None:
        self.batches += 1
        self.samples += int(batch_size)
        if self._model_key is not model:
            self._prepare(model)

    def _prepare(self, model: Model) -> None:
        """Create (or check) the statistics of every activation quantizer of ``model``."""
        self._model_key = model
        shapes = infer_shapes(model)
        for layer in model.activation_quantizers():
            src = layer.inputs[0]
            shape = tuple(model.input_shape if src == "input" else shapes[src])
            info = quantizer_affine(model, layer, shapes)
            c = int(np.asarray(info["direction"]).size)
            # y is the activation's own axis, except for a folded threshold without the
            # affine to recover it: then its input x itself is histogrammed
            domain = "x" if layer.kind == "threshold" and (info["gain"] is None or info["offset"] is None) else "y"
            if layer.kind == "threshold" and domain == "y":
                gain, offset = info["gain"], info["offset"]
            else:
                gain, offset = np.ones(c), np.zeros(c)
            consumers = _consumers(model, layer, shape) if self.count_macs else []
            acc = QuantizerAccumulator(
                gain, offset, self.edges, int(np.prod(shape[1:])), info["act_lo"], info["act_hi"], self.tie_eps,
                domain == "y", np.stack([k.weights for k in consumers]) if consumers else None,
                np.stack([k.positions for k in consumers]) if consumers else None)
            fresh = _LayerStats(layer.name, layer.kind, domain, acc, np.asarray(info["direction"]) == 0, info,
                                consumers)
            old = self._stats.get(layer.name)
            if old is None:
                self._stats[layer.name] = fresh
                self._order.append(layer.name)
            else:  # a second model with this layer: its statistics must be compatible
                self._stats[layer.name] = old.merged(fresh)

    def _layer_stats(self, layer: Layer) -> _LayerStats:
        stats = self._stats.get(layer.name)
        if stats is None or self._model_key is None:
            raise SttnError(f"ActivationRecorder: layer {layer.name!r} was not announced by "
                            f"on_batch_start(model, ...); "
                            f"executors must call on_batch_start before on_layer")
        return stats

    def threshold_accumulator(self, layer: Layer) -> QuantizerAccumulator | None:
        """The engine's fused threshold kernel adds its batches here directly (see
        :meth:`sttn_sim.recording.Recorder.threshold_accumulator`)."""
        if self.backend != "numba" or not layer.is_quantizer:
            return None
        acc = self._layer_stats(layer).acc
        return acc if acc.fusable() else None

    def on_layer(self, event: LayerEvent) -> None:
        layer = event.layer
        if not layer.is_quantizer:
            return
        stats = self._layer_stats(layer)
        if event.statistics is not None:
            if event.statistics is not stats.acc:
                raise SttnError(f"ActivationRecorder: layer {layer.name!r}: the executor filled statistics this "
                                f"recorder did not hand out")
            return  # the executor's kernel already added the batch
        codes = event.codes if event.codes is not None else event.output
        codes = np.asarray(codes)
        if codes.ndim < 2:
            raise SttnError(f"ActivationRecorder: layer {layer.name!r} produced codes of shape {codes.shape}; "
                            f"expected (N, C, ...)")
        x = event.pre_activation
        if x is None:
            raise SttnError(f"ActivationRecorder: the executor gave no pre_activation for layer {layer.name!r}")
        x = np.asarray(x)
        if x.shape != codes.shape:
            raise SttnError(f"ActivationRecorder: layer {layer.name!r}: pre_activation shape {x.shape} differs from "
                            f"the codes' {codes.shape}")
        if x.dtype.kind not in "fiu":
            raise SttnError(f"ActivationRecorder: layer {layer.name!r}: pre_activation dtype {x.dtype} is not numeric")
        add = accumulate if self.backend == "numba" else accumulate_reference
        try:
            add(stats.acc, x, codes)
        except (ValueError, OverflowError) as e:
            raise SttnError(f"ActivationRecorder: layer {layer.name!r}: {e}") from None

    # -- merging ---------------------------------------------------------------------
    def __getstate__(self) -> dict:
        """Pickled (e.g. sent back by a Dask worker) without the model it last saw: the
        statistics stand on their own, and a further batch prepares the layers again."""
        return {**self.__dict__, "_model_key": None}

    def __add__(self, other: "ActivationRecorder") -> "ActivationRecorder":
        if not isinstance(other, ActivationRecorder):
            return NotImplemented
        if not np.array_equal(self.edges, other.edges):
            raise SttnError("cannot merge ActivationRecorders with different histogram bins")
        if self.tie_eps != other.tie_eps:
            raise SttnError(f"cannot merge ActivationRecorders with different tie_eps ({self.tie_eps} vs {other.tie_eps})")
        if self.count_macs != other.count_macs:
            raise SttnError("cannot merge an ActivationRecorder counting MACs with one that does not")
        out = ActivationRecorder(self.edges, tie_eps=self.tie_eps, macs=self.count_macs, backend=self.backend)
        out.batches = self.batches + other.batches
        out.samples = self.samples + other.samples
        out._order = list(self._order) + [n for n in other._order if n not in self._order]
        for name in out._order:
            a, b = self._stats.get(name), other._stats.get(name)
            out._stats[name] = a.merged(b) if a is not None and b is not None else (a if a is not None else b).copied()
        return out

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum([...])
            return self
        return NotImplemented

    # -- results ---------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """The recorded activation quantizers, in model order."""
        return [n for n in self._order if n in self._stats and self._stats[n].n_images > 0]

    def _get(self, layer: str) -> _LayerStats:
        if layer not in self._stats:
            raise ModelError(f"no activation statistics for layer {layer!r}; recorded layers: {', '.join(self.layers)}")
        return self._stats[layer]

    def histogram(self, layer: str) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(edges, counts, underflow, overflow)`` of one layer (int64 counts)."""
        s = self._get(layer)
        return self.edges.copy(), s.hist.copy(), s.underflow, s.overflow

    def code_counts(self, layer: str) -> np.ndarray:
        """int64 ``[C, 3]``: per channel, the number of -1, 0, +1 codes."""
        return self._get(layer).codes.copy()

    def consumer_macs(self) -> dict[str, dict]:
        """Per ternary layer fed by a recorded quantizer: ``{"quantizer", "images",
        "macs", "macs_nonzero_act", "macs_nonzero_weight", "macs_nonzero"}`` (exact int
        totals over every recorded image)."""
        out = {}
        for name in self.layers:
            s = self._stats[name]
            for consumer, counts in s.macs.items():
                out[consumer] = {"quantizer": name, "images": s.n_images, "macs": int(counts[0]),
                                 "macs_nonzero_act": int(counts[1]), "macs_nonzero_weight": int(counts[2]),
                                 "macs_nonzero": int(counts[3])}
        return out

    def _categorical(self, df: pd.DataFrame) -> pd.DataFrame:
        if len(df):
            df["layer"] = pd.Categorical(df["layer"], categories=self.layers, ordered=True)
        return df

    def layer_table(self) -> pd.DataFrame:
        """One row per activation quantizer: code counts and fractions, channel health,
        ties, histogram overflow, y moments, and MACs of the consuming ternary layer(s)
        (summed over consumers; ``consumers`` names them)."""
        rows = []
        for order, name in enumerate(self.layers):
            s = self._stats[name]
            counts = s.codes.sum(axis=0)
            total = int(counts.sum())
            dead = s.codes[:, 0] + s.codes[:, 2] == 0
            stuck = (s.codes > 0).sum(axis=1) == 1
            n = s.hist.sum() + s.underflow + s.overflow
            mean = s.y_sum / n if n else np.nan
            macs = np.sum(list(s.macs.values()), axis=0) if s.macs else np.full(4, -1, np.int64)
            row = {
                "layer": name, "order": order, "kind": s.kind, "domain": s.domain, "channels": s.channels,
                "images": s.n_images, "n_values": total,
                "n_neg": int(counts[0]), "n_zero": int(counts[1]), "n_pos": int(counts[2]),
                "frac_neg": counts[0] / total, "frac_zero": counts[1] / total, "frac_pos": counts[2] / total,
                "dead_channels": int(dead.sum()), "stuck_channels": int(stuck.sum()),
                "constant_channels": int(s.constant.sum()),
                "exact_ties": s.exact_ties if s.domain == "y" else np.nan,
                "near_ties": s.near_ties if s.domain == "y" else np.nan, "tie_eps": self.tie_eps,
                "act_lo": s.act_lo, "act_hi": s.act_hi, "underflow": s.underflow, "overflow": s.overflow,
                "y_mean": mean, "y_std": float(np.sqrt(max(s.y_sumsq / n - mean * mean, 0.0))) if n else np.nan,
                "y_min": s.y_min, "y_max": s.y_max, "consumers": ",".join(s.macs),
            }
            if s.macs:
                row.update({"macs": int(macs[0]), "macs_nonzero_act": int(macs[1]), "macs_nonzero_weight": int(macs[2]),
                            "macs_nonzero": int(macs[3]), "nonzero_mac_fraction": macs[3] / macs[0] if macs[0] else np.nan})
            else:
                row.update({"macs": np.nan, "macs_nonzero_act": np.nan, "macs_nonzero_weight": np.nan,
                            "macs_nonzero": np.nan, "nonzero_mac_fraction": np.nan})
            rows.append(row)
        return self._categorical(pd.DataFrame(rows))

    def channel_table(self) -> pd.DataFrame:
        """One row per activation quantizer × channel: code counts and fractions,
        ``dead`` / ``stuck`` / ``stuck_code``, y range, and the BN-implied thresholds of
        :func:`activation_thresholds` (``direction, lo, hi, constant, x_plus, x_minus,
        zero_band_*, rule``)."""
        frames = []
        for order, name in enumerate(self.layers):
            s = self._stats[name]
            total = s.codes.sum(axis=1)
            safe = np.where(total > 0, total, 1)
            present = s.codes > 0
            stuck = present.sum(axis=1) == 1
            stuck_code = np.where(stuck, np.argmax(present, axis=1) - 1, 0)
            df = pd.DataFrame({
                "layer": name, "order": order, "channel": np.arange(s.channels), "n_values": total,
                "n_neg": s.codes[:, 0], "n_zero": s.codes[:, 1], "n_pos": s.codes[:, 2],
                "frac_neg": s.codes[:, 0] / safe, "frac_zero": s.codes[:, 1] / safe, "frac_pos": s.codes[:, 2] / safe,
                "dead": s.codes[:, 0] + s.codes[:, 2] == 0, "stuck": stuck,
                "stuck_code": pd.Series(stuck_code, dtype="Int64").where(stuck),
                "y_min": s.ch_min, "y_max": s.ch_max,
            })
            static = pd.DataFrame(_threshold_rows(name, order, s.thresholds)).drop(columns=["layer", "order", "channel"])
            frames.append(pd.concat([df, static.reset_index(drop=True)], axis=1))
        if not frames:
            return pd.DataFrame(columns=["layer", "order", "channel"])
        return self._categorical(pd.concat(frames, ignore_index=True))

    def histogram_table(self) -> pd.DataFrame:
        """Long form of the histograms: ``layer, order, bin, left, right, count, density``
        (density = count / (all values of the layer · bin width), underflow/overflow
        included in the normaliser)."""
        frames = []
        widths = np.diff(self.edges)
        for order, name in enumerate(self.layers):
            s = self._stats[name]
            n = s.hist.sum() + s.underflow + s.overflow
            frames.append(pd.DataFrame({
                "layer": name, "order": order, "bin": np.arange(s.hist.size), "left": self.edges[:-1],
                "right": self.edges[1:], "count": s.hist, "density": s.hist / (n * widths) if n else 0.0,
            }))
        if not frames:
            return pd.DataFrame(columns=["layer", "order", "bin", "left", "right", "count", "density"])
        return self._categorical(pd.concat(frames, ignore_index=True))

    def __repr__(self) -> str:
        return (f"ActivationRecorder({len(self.layers)} layers, {self.batches} batches, {self.samples} samples, "
                f"{self.edges.size - 1} bins)")


# --------------------------------------------------------------------------------------
# running


def reference_executor(model: Model, x: np.ndarray, recorder: Recorder) -> None:
    """The default executor: the float64 reference path with a recorder and no full record."""

    run_reference(model, x, record=False, recorder=recorder)


def collect_activations(model: Model, batches, *, recorder: ActivationRecorder | None = None, executor=None,
                        bins=None, tie_eps: float = DEFAULT_TIE_EPS, progress: bool = True,
                        desc: str = "activations") -> ActivationRecorder:
    """Run ``model`` on each batch of ``batches`` (an iterable of NCHW float arrays) and
    return the recorder holding the statistics of all of them.

    ``executor(model, x, recorder)`` runs one batch and calls the recorder hook; the
    default is :func:`reference_executor`. The packed engine plugs in as
    ``executor=lambda m, x, rec: Engine(m).run(x, recorder=rec)``. A tqdm progress bar
    is shown unless ``progress=False``.
    """

    rec = recorder if recorder is not None else ActivationRecorder(bins, tie_eps=tie_eps)
    run = executor or reference_executor
    try:
        total = len(batches)
    except TypeError:
        total = None
    for x in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress):
        run(model, x, rec)
    return rec


__all__ = [
    "ActivationRecorder", "activation_thresholds", "collect_activations", "reference_executor", "quantizer_affine",
    "DEFAULT_BINS", "DEFAULT_TIE_EPS",
]

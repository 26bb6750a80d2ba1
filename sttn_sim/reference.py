"""Float64 / int64 reference execution of any model form.

This is the ground truth every faster path is compared against.  It is written for
clarity, not speed: convolutions are window views contracted with ``np.tensordot``.

Semantics per form:

* latent (training-time) ternary layer: clamp W1, W2 to [-1, 1],
  α_o = (Σ|W1_o| + Σ|W2_o|) / (2n), B_k = sign(W_k), and the output is the sum of the
  two convolutions ``conv(x, α B1) + b1 + conv(x, α B2) + b2`` — computed as
  ``α·acc1 + b1 + α·acc2 + b2`` with the integer accumulators ``acc_k = conv(x, B_k)``
  when x is ternary (it always is after a ternary activation);
* merged ternary layer: a float convolution with the stored α(B1+B2);
* folded ternary layer: ``acc = conv(x_codes, t)`` in int64, then ``scale·acc + bias``
  (epilogue ``"affine"``) or the bare accumulator (epilogue ``"none"``, when the next
  layer is a threshold on integers);
* ternary activation: ``x < lo → -1``, ``lo <= x < hi → 0``, ``x >= hi → +1``;
* threshold (folded BN + activation): ``z = direction·x``; ``+1 if z >= hi``,
  ``-1 if z < lo``, else 0; ``constant`` where direction is 0.

Integer accumulators are computed as float64 BLAS products of {-1,0,1} values and
converted to int64: every partial sum is an integer of magnitude <= K < 2**53, so
float64 represents it exactly and the conversion is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ModelError, ShapeError
from .graph import Layer, Model
from .rules import activation_bounds, apply_threshold, ternary_activation

# --------------------------------------------------------------------------------------
# input checks


def check_input(model: Model, x) -> np.ndarray:
    """Validate a batch for ``model``: a finite float array of shape (N, *input_shape)."""
    if not isinstance(x, np.ndarray):
        raise ShapeError(f"input: expected a numpy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise ShapeError(f"input: expected a float array, got dtype {x.dtype}")
    want = tuple(model.input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise ShapeError(
            f"input: expected shape (N, {', '.join(map(str, want))}) for model {model.arch!r}, got {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ShapeError("input: the batch is empty (N = 0); expected at least one sample")
    if not np.all(np.isfinite(x)):
        raise ShapeError(f"input: contains {int(np.sum(~np.isfinite(x)))} NaN or Inf values; expected finite values")
    return x


def is_ternary(a: np.ndarray) -> bool:
    """True when every element of ``a`` is -1, 0 or +1."""
    return bool(np.all((a == 0) | (a == 1) | (a == -1)))


# --------------------------------------------------------------------------------------
# primitive operations


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation in float64: ``out[n,o,i,j] = Σ_{c,p,q} w[o,c,p,q] · x_pad[n,c,i·s+p,j·s+q]``."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw = w.shape[2], w.shape[3]
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.tensordot(windows, np.asarray(w, dtype=np.float64), axes=([1, 4, 5], [1, 2, 3]))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def integer_conv2d(x_codes: np.ndarray, w_codes: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Exact int64 convolution of ternary codes (see the module note on exactness)."""
    return conv2d(x_codes, w_codes, stride, padding).astype(np.int64)


def integer_linear(x_codes: np.ndarray, w_codes: np.ndarray) -> np.ndarray:
    """Exact int64 ``x @ wᵀ`` of ternary codes."""
    return (np.asarray(x_codes, np.float64) @ np.asarray(w_codes, np.float64).T).astype(np.int64)


def batchnorm(x: np.ndarray, p: dict, eps: float) -> np.ndarray:
    """Inference BatchNorm: ``(x - mean) / sqrt(var + eps) · γ + β`` (channel axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    f = lambda k: np.asarray(p[k], np.float64).reshape(shape)  # noqa: E731
    return (np.asarray(x, np.float64) - f("running_mean")) / np.sqrt(f("running_var") + eps) * f("weight") + f("bias")


def maxpool2d(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """Max pooling with -inf padding (float64 result)."""
    x = np.asarray(x, np.float64)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


def avgpool2d(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Average pooling without padding (float64 result)."""
    x = np.asarray(x, np.float64)
    return sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride].mean(axis=(4, 5))


# --------------------------------------------------------------------------------------
# recording


@dataclass
class ReferenceRun:
    """Everything a reference run produced.

    ``outputs[name]`` is each layer's output (int8 codes for activation quantizers,
    int64 for bare accumulators, float64 otherwise).  ``accumulators[name]`` holds the
    int64 accumulators of ternary layers: for folded layers ``{"acc": ...}``, for latent
    layers ``{"acc1": ..., "acc2": ...}`` (the two binary branches).
    ``pre_activations[name]`` is the value an activation quantizer compared with its
    thresholds (the BN output for ``ternary_act``, the pre-BN value for ``threshold``).
    """

    logits: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    accumulators: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pre_activations: dict[str, np.ndarray] = field(default_factory=dict)


def _require_ternary_input(layer: Layer, x: np.ndarray) -> None:
    if not is_ternary(x):
        raise ModelError(
            f"layer {layer.name!r} ({layer.kind}) must receive ternary codes from an activation quantizer, "
            f"got values outside {{-1, 0, 1}} from {layer.inputs[0]!r}"
        )


def _check_in_channels(layer: Layer, x: np.ndarray, weight: np.ndarray) -> None:
    expected = weight.shape[1]
    if x.ndim < 2 or x.shape[1] != expected:
        raise ShapeError(
            f"layer {layer.name!r}: expected {expected} input channels/features, got shape {tuple(x.shape)} "
            f"from {layer.inputs[0]!r}"
        )


def _latent_alpha_and_signs(layer: Layer):
    """Training-time forward of the two binary kernels (DESIGN §2.1), float64."""
    w1 = np.clip(np.asarray(layer.params["weight1"], np.float64), -1.0, 1.0)
    w2 = np.clip(np.asarray(layer.params["weight2"], np.float64), -1.0, 1.0)
    axes = tuple(range(1, w1.ndim))
    n = int(np.prod(w1.shape[1:]))
    alpha = (np.abs(w1).sum(axis=axes) + np.abs(w2).sum(axis=axes)) / (2.0 * n)
    return alpha, np.sign(w1), np.sign(w2)


def _bias(layer: Layer, key: str, channels: int) -> np.ndarray:
    b = layer.params.get(key)
    return np.zeros(channels) if b is None else np.asarray(b, np.float64)


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def run_layer(layer: Layer, inputs: list[np.ndarray], run: ReferenceRun | None = None) -> np.ndarray:
    """Execute one layer in float64/int64, recording accumulators into ``run``."""
    kind, a = layer.kind, layer.attrs
    x = inputs[0]
    if kind in ("conv", "ter_conv"):
        _check_in_channels(layer, x, layer.params["weight"])
        y = conv2d(x, layer.params["weight"], a["stride"], a["padding"])
        return y + _channel(_bias(layer, "bias", y.shape[1]), 4)
    if kind in ("linear", "ter_linear"):
        _check_in_channels(layer, x, layer.params["weight"])
        w = np.asarray(layer.params["weight"], np.float64)
        return np.asarray(x, np.float64) @ w.T + _bias(layer, "bias", w.shape[0])
    if kind in ("sttn_conv", "sttn_linear"):
        _check_in_channels(layer, x, layer.params["weight1"])
        alpha, s1, s2 = _latent_alpha_and_signs(layer)
        if kind == "sttn_conv":
            conv = lambda w: conv2d(x, w, a["stride"], a["padding"])  # noqa: E731
        else:
            conv = lambda w: np.asarray(x, np.float64) @ w.reshape(w.shape[0], -1).T  # noqa: E731
        if is_ternary(x):
            acc1, acc2 = conv(s1).astype(np.int64), conv(s2).astype(np.int64)
            if run is not None:
                run.accumulators[layer.name] = {"acc1": acc1, "acc2": acc2}
            y1, y2 = acc1 * _channel(alpha, acc1.ndim), acc2 * _channel(alpha, acc2.ndim)
        else:  # a latent layer fed by floats: two float convolutions with α·B_k
            y1 = conv(s1 * alpha.reshape((-1,) + (1,) * (s1.ndim - 1)))
            y2 = conv(s2 * alpha.reshape((-1,) + (1,) * (s2.ndim - 1)))
        c = y1.shape[1]
        return (y1 + _channel(_bias(layer, "bias1", c), y1.ndim)) + (y2 + _channel(_bias(layer, "bias2", c), y2.ndim))
    if kind in ("ternary_conv", "ternary_linear"):
        codes = layer.params["codes"]
        _check_in_channels(layer, x, codes)
        _require_ternary_input(layer, x)
        if kind == "ternary_conv":
            acc = integer_conv2d(x, codes, a["stride"], a["padding"])
        else:
            acc = integer_linear(x, codes)
        if run is not None:
            run.accumulators[layer.name] = {"acc": acc}
        if a.get("epilogue", "affine") == "none":
            return acc
        scale = np.asarray(layer.params["scale"], np.float64)
        return acc * _channel(scale, acc.ndim) + _channel(np.asarray(layer.params["bias"], np.float64), acc.ndim)
    if kind == "batchnorm":
        return batchnorm(x, layer.params, a.get("eps", 1e-5))
    if kind == "prelu":
        slope = np.asarray(layer.params["weight"], np.float64)
        slope = _channel(slope, x.ndim) if slope.size > 1 else slope.reshape(())
        x = np.asarray(x, np.float64)
        return np.where(x >= 0, x, slope * x)
    if kind == "relu":
        return np.maximum(np.asarray(x, np.float64), 0.0)
    if kind == "ternary_act":
        x = np.asarray(x, np.float64)
        if run is not None:
            run.pre_activations[layer.name] = x
        return ternary_activation(x, *activation_bounds(a))
    if kind == "threshold":
        if run is not None:
            run.pre_activations[layer.name] = x
        p = layer.params
        return apply_threshold(x, p["direction"], p["lo"], p["hi"], p["constant"])
    if kind == "maxpool":
        return maxpool2d(x, a["kernel"], a["stride"], a.get("padding", 0))
    if kind == "avgpool":
        return avgpool2d(x, a["kernel"], a["stride"])
    if kind == "add":
        x2 = inputs[1]
        if x.shape != x2.shape:
            raise ShapeError(f"layer {layer.name!r}: cannot add shapes {x.shape} and {x2.shape} ({layer.inputs})")
        return np.asarray(x, np.float64) + np.asarray(x2, np.float64)
    if kind == "channel_pad":
        extra = a["out_channels"] - x.shape[1]
        if extra < 0:
            raise ShapeError(f"layer {layer.name!r}: input has {x.shape[1]} channels, more than out_channels={a['out_channels']}")
        zeros = np.zeros((x.shape[0], extra) + x.shape[2:], np.float64)
        return np.concatenate([np.asarray(x, np.float64), zeros], axis=1)
    if kind == "flatten":
        return np.asarray(x).reshape(x.shape[0], -1)
    raise ModelError(f"layer {layer.name!r}: the reference has no rule for kind {kind!r}")


def run_reference(model: Model, x: np.ndarray, *, record: bool = True, recorder=None) -> ReferenceRun:
    """Run ``model`` on the batch ``x`` in float64/int64.

    With ``record=True`` every layer output, accumulator and pre-activation is kept.
    ``recorder`` (a :class:`sttn_sim.recording.Recorder`) receives one
    :class:`~sttn_sim.recording.LayerEvent` per layer.
    """
    from .recording import LayerEvent

    x = check_input(model, x)
    run = ReferenceRun(logits=np.empty(0))
    if recorder is not None:
        recorder.on_batch_start(model, len(x))
    # a recorder needs accumulators and pre-activations even without full recording
    scratch = run if (record or recorder is not None) else None
    values: dict[str, np.ndarray] = {"input": np.asarray(x, np.float64)}
    remaining_uses = {name: 0 for name in values}
    for layer in model.layers:
        for src in layer.inputs:
            remaining_uses[src] = remaining_uses.get(src, 0) + 1
    for layer in model.layers:
        inputs = [values[src] for src in layer.inputs]
        out = run_layer(layer, inputs, scratch)
        if recorder is not None:
            acc = run.accumulators.get(layer.name, {}).get("acc") if layer.kind in ("ternary_conv", "ternary_linear") else None
            quantizer = layer.kind in ("ternary_act", "threshold")
            recorder.on_layer(LayerEvent(layer, out, accumulator=acc,
                                         pre_activation=run.pre_activations.get(layer.name) if quantizer else None,
                                         codes=out if quantizer else None))
            if not record:  # keep memory flat: drop what was only kept for the recorder
                run.accumulators.pop(layer.name, None)
                run.pre_activations.pop(layer.name, None)
        values[layer.name] = out
        if record:
            run.outputs[layer.name] = out
        else:  # free what no later layer reads
            for src in layer.inputs:
                remaining_uses[src] -= 1
                if remaining_uses[src] == 0 and src != model.output:
                    values.pop(src, None)
    run.logits = np.asarray(values[model.output], np.float64)
    return run


def reference_forward(model: Model, x: np.ndarray) -> np.ndarray:
    """Float64 logits of ``model`` (any form) for an NCHW (or N×features) batch ``x``."""
    return run_reference(model, x, record=False).logits

"""Static shape inference over a model graph (per-sample shapes, batch axis omitted)."""

from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .graph import Model


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


_WEIGHTED = ("conv", "sttn_conv", "ter_conv", "ternary_conv", "linear", "sttn_linear", "ter_linear", "ternary_linear")
#: parameters that hold one value per channel (output channel for weighted kinds)
_PER_CHANNEL = ("bias", "bias1", "bias2", "scale", "running_mean", "running_var", "lo", "hi", "constant")


def _check_channel_params(layer, where: str, channels: int) -> None:
    """Every per-channel parameter has shape (channels,); ``weight2`` matches ``weight1``."""
    p = layer.params
    if "weight2" in p and p["weight2"].shape != p["weight1"].shape:
        raise ShapeError(f"{where}: weight2 {list(p['weight2'].shape)} differs from weight1 {list(p['weight1'].shape)}")
    for key in _PER_CHANNEL:
        if key in p and p[key].shape != (channels,):
            raise ShapeError(f"{where}: parameter {key!r} has shape {list(p[key].shape)}, expected [{channels}]")


def infer_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Output shape of every layer for one sample; raises ShapeError naming the layer
    when a parameter does not fit the tensor it receives."""
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(model.input_shape)}
    for layer in model.layers:
        x = shapes[layer.inputs[0]]
        kind, a, p = layer.kind, layer.attrs, layer.params
        where = f"model {model.arch!r}, layer {layer.name!r} ({kind})"
        weight = next((p[k] for k in ("weight", "weight1", "codes") if k in p), None)
        if kind in ("conv", "sttn_conv", "ter_conv", "ternary_conv"):
            if len(x) != 3 or weight.ndim != 4 or weight.shape[1] != x[0]:
                raise ShapeError(f"{where}: weight {list(weight.shape)} does not fit input {list(x)} (expected [O, {x[0] if x else '?'}, kh, kw])")
            out = (weight.shape[0], _pool_out(x[1], weight.shape[2], a["stride"], a["padding"]),
                   _pool_out(x[2], weight.shape[3], a["stride"], a["padding"]))
        elif kind in ("linear", "sttn_linear", "ter_linear", "ternary_linear"):
            if len(x) != 1 or weight.ndim != 2 or weight.shape[1] != x[0]:
                raise ShapeError(f"{where}: weight {list(weight.shape)} does not fit input {list(x)} (expected [O, {x[0] if x else '?'}])")
            out = (weight.shape[0],)
        elif kind in ("batchnorm", "prelu", "threshold"):
            key = "weight" if kind != "threshold" else "direction"
            n = p[key].size
            if not (n == x[0] or (kind == "prelu" and n == 1)):
                raise ShapeError(f"{where}: parameter {key!r} has {n} entries, input has {x[0]} channels")
            out = x
        elif kind in ("maxpool", "avgpool"):
            if len(x) != 3:
                raise ShapeError(f"{where}: expected a (C, H, W) input, got {list(x)}")
            if a.get("padding", 0) > a["kernel"] // 2:
                raise ShapeError(f"{where}: padding {a.get('padding', 0)} exceeds kernel//2 = {a['kernel'] // 2} "
                                 f"(a window would hold only padding)")
            out = (x[0], _pool_out(x[1], a["kernel"], a["stride"], a.get("padding", 0)),
                   _pool_out(x[2], a["kernel"], a["stride"], a.get("padding", 0)))
        elif kind == "add":
            other = shapes[layer.inputs[1]]
            if other != x:
                raise ShapeError(f"{where}: cannot add {list(x)} ({layer.inputs[0]}) and {list(other)} ({layer.inputs[1]})")
            out = x
        elif kind == "channel_pad":
            if a["out_channels"] < x[0]:
                raise ShapeError(f"{where}: out_channels={a['out_channels']} is below the input's {x[0]} channels")
            out = (a["out_channels"],) + x[1:]
        elif kind == "flatten":
            out = (int(np.prod(x)),)
        else:  # relu, ternary_act
            out = x
        _check_channel_params(layer, where, out[0] if kind in _WEIGHTED else x[0] if x else 0)
        if any(d < 1 for d in out):
            raise ShapeError(f"{where}: output shape {list(out)} is empty for input {list(x)}")
        shapes[layer.name] = tuple(int(d) for d in out)
    return shapes

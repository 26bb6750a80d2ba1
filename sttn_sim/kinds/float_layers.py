"""Float layer kinds: convolution, linear, BatchNorm, PReLU, ReLU, pooling, add, concat, channel pad, flatten.

Each class is one kind (see :mod:`sttn_sim.kinds.base`): declaration, shape rule,
float64 reference, float32 engine operation and training forward/backward.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..kernels.fused import (
    bias_prelu_to_nchw,
    direct_conv2d,
    global_avgpool,
    im2col_f32,
    linear_f32,
    maxpool2d as maxpool2d_f32,
    prepack_direct_conv_weights,
)
from ..ops import gradients as G
from ..ops.reference import avgpool2d, batchnorm, conv2d, maxpool2d
from ..recording import LayerEvent
from ..rules import BN_EPS, batchnorm_affine, conv_output_size
from .base import Attr, LayerKind, Param, check_channel_params, per_channel, register_kind

#: float convolutions with at most this many input channels run as a direct convolution
#: (vectorised over output channels); wider ones as im2col + BLAS sgemm
DIRECT_CONV_MAX_CHANNELS = 8

CONV_ATTRS = (Attr("stride", int, minimum=1), Attr("padding", int, minimum=0))
#: the optional PReLU an engine rewrite fuses into a layer (sttn_sim.fusions.FusePReLU)
FUSED_SLOPE = Param("slope", "real", "channel_or_one", optional=True,
                    doc="PReLU slope applied to the output (set by the engine's FusePReLU rewrite)")


def f32(a) -> np.ndarray:
    """A C-contiguous float32 copy/view."""
    return np.ascontiguousarray(a, dtype=np.float32)


def prelu64(y: np.ndarray, slope) -> np.ndarray:
    """float64 PReLU ``y if y >= 0 else slope·y`` (slope per channel or shared)."""
    slope = np.asarray(slope, np.float64)
    s = per_channel(slope, y.ndim) if slope.size > 1 else slope.reshape(())
    return np.where(y >= 0, y, s * y)


def bias_of(layer, key: str, channels: int) -> np.ndarray:
    """A float64 bias vector, zeros when the optional parameter is absent."""
    b = layer.params.get(key)
    return np.zeros(channels) if b is None else np.asarray(b, np.float64)


def check_in_channels(layer, x: np.ndarray, weight: np.ndarray) -> None:
    """The input's axis 1 must match the weight's input channels (axis 1)."""
    expected = weight.shape[1]
    if x.ndim < 2 or x.shape[1] != expected:
        raise ShapeError(f"layer {layer.name!r}: expected {expected} input channels/features, got shape "
                         f"{tuple(x.shape)} from {layer.inputs[0]!r}")


def conv_output_shape(kind, layer, x: tuple, weight: np.ndarray, where: str) -> tuple[int, ...]:
    """(O, H', W') of a convolution with ``weight`` [O, C, kh, kw] over a (C, H, W) input."""
    if len(x) != 3 or weight.ndim != 4 or weight.shape[1] != x[0]:
        raise ShapeError(f"{where}: weight {list(weight.shape)} does not fit input {list(x)} "
                         f"(expected [O, {x[0] if x else '?'}, kh, kw])")
    stride, padding = kind.attr(layer, "stride"), kind.attr(layer, "padding")
    check_window(x, weight.shape[2:], stride, padding, where, max_padding=max(weight.shape[2:]) - 1)
    return (weight.shape[0], conv_output_size(x[1], weight.shape[2], stride, padding),
            conv_output_size(x[2], weight.shape[3], stride, padding))


def check_window(x: tuple, kernel, stride: int, padding: int, where: str, *, max_padding: int) -> None:
    """A window fits its (C, H, W) input: padding at most ``max_padding`` (beyond it a
    window would hold only padding), a stride no longer than the padded input."""
    if padding > max_padding:
        raise ShapeError(f"{where}: padding {padding} exceeds {max_padding} for a {'x'.join(map(str, kernel))} "
                         f"window (a window would hold only padding)")
    longest = max(x[1], x[2]) + 2 * padding
    if stride > longest:
        raise ShapeError(f"{where}: stride {stride} is longer than the padded input ({longest})")


def linear_output_shape(x: tuple, weight: np.ndarray, where: str) -> tuple[int, ...]:
    """(O,) of a linear map with ``weight`` [O, I] over an (I,) input."""
    if len(x) != 1 or weight.ndim != 2 or weight.shape[1] != x[0]:
        raise ShapeError(f"{where}: weight {list(weight.shape)} does not fit input {list(x)} "
                         f"(expected [O, {x[0] if x else '?'}])")
    return (weight.shape[0],)


class WeightedTraining:
    """Training of a convolution or linear layer whose (effective) weights the network
    supplies: float kernels as they are, ternary latent kernels through their quantizer
    (:meth:`sttn_sim.train.Network.effective_weights`)."""

    conv: bool = True

    def train_forward(self, layer, inputs, net):
        x = inputs[0]
        w, b = net.effective_weights(layer)
        if w.shape[1] != x.shape[1]:
            raise ShapeError(f"layer {layer.name!r}: expected {w.shape[1]} input channels/features, "
                             f"got shape {tuple(x.shape)} from {layer.inputs[0]!r}")
        if self.conv:
            return G.conv2d_forward(x, w, b, self.attr(layer, "stride"), self.attr(layer, "padding"))
        return G.linear_forward(x, w, b)

    def train_backward(self, layer, dy, cache, net, grads):
        need_dx = layer.inputs[0] != "input"
        if self.conv:
            dx, dw, db = G.conv2d_backward(dy, cache, need_dx)
        else:
            dx, dw, db = G.linear_backward(dy, cache, need_dx)
        net.add_weight_grads(layer, dw, db, grads)
        return [dx]


# --------------------------------------------------------------------------------------
# weighted float layers


@register_kind
class Conv(WeightedTraining, LayerKind):
    """``y = conv(x, W) + b`` (cross-correlation, zero padding), then the optional fused PReLU."""

    name = "conv"
    summary = "float 2-D convolution"
    family = "conv"
    params = (Param("weight", "real", "weight"), Param("bias", "real", "channel", optional=True), FUSED_SLOPE)
    attrs = CONV_ATTRS + (Attr("train_quant", str, default=None, doc="training: the hard-threshold method"),
                          Attr("ternary_method", str, default=None, doc="a trained TTQ layer kept as float"),
                          Attr("pool", list, default=None,
                               doc="[kernel, stride, padding] of a max pooling applied last (set by the engine's "
                                   "FuseConvMaxPool rewrite)"))
    trainable = True
    conv = True

    def output_shape(self, layer, in_shapes, where):
        out = conv_output_shape(self, layer, in_shapes[0], layer.params["weight"], where)
        check_channel_params(self, layer, where, out[0])
        pool = self.attr(layer, "pool")
        return out if pool is None else pool_output_shape(out, *pool, where)

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        check_in_channels(layer, x, layer.params["weight"])
        y = conv2d(x, layer.params["weight"], self.attr(layer, "stride"), self.attr(layer, "padding"))
        y = y + per_channel(bias_of(layer, "bias", y.shape[1]), 4)
        y = prelu64(y, layer.params["slope"]) if "slope" in layer.params else y
        pool = self.attr(layer, "pool")
        return y if pool is None else maxpool2d(y, *pool)

    def engine_step(self, layer, ctx):
        """Few input channels (the stem): a direct convolution with bias and PReLU in its
        output pass (and a fused max pooling from each row while it is in cache);
        otherwise im2col + sgemm, bias and PReLU in the pass that transposes to NCHW,
        then the pooling.  Weights are rounded once to float32."""
        p = layer.params
        w32 = f32(p["weight"])
        b32 = f32(p["bias"]) if "bias" in p else np.zeros(w32.shape[0], np.float32)
        slope = f32(p["slope"]).reshape(-1) if "slope" in p else None
        stride, padding = self.attr(layer, "stride"), self.attr(layer, "padding")
        kh, kw = w32.shape[2], w32.shape[3]
        direct = (prepack_direct_conv_weights(w32, ctx.kernels.stem) if w32.shape[1] <= DIRECT_CONV_MAX_CHANNELS
                  else None)
        w_mat = None if direct is not None else np.ascontiguousarray(w32.reshape(w32.shape[0], -1).T)
        first = ctx.first_layer(layer)
        pool = self.attr(layer, "pool")

        def run(args, recorder=None):
            x = args[0]
            if direct is not None:
                out = direct_conv2d(x, direct, b32, slope, stride, padding, pool)
            else:
                cols, n, oh, ow = im2col_f32(x, kh, kw, stride, padding)
                out = bias_prelu_to_nchw(cols @ w_mat, b32, slope, n, oh, ow)
                out = out if pool is None else maxpool2d_f32(out, *pool)
            return out, LayerEvent(first, out)
        return run


@register_kind
class Linear(WeightedTraining, LayerKind):
    """``y = x Wᵀ + b``."""

    name = "linear"
    summary = "float fully connected layer"
    family = "linear"
    params = (Param("weight", "real", "weight"), Param("bias", "real", "channel", optional=True))
    attrs = (Attr("train_quant", str, default=None), Attr("ternary_method", str, default=None))
    trainable = True
    conv = False

    def output_shape(self, layer, in_shapes, where):
        out = linear_output_shape(in_shapes[0], layer.params["weight"], where)
        check_channel_params(self, layer, where, out[0])
        return out

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        check_in_channels(layer, x, layer.params["weight"])
        w = np.asarray(layer.params["weight"], np.float64)
        return np.asarray(x, np.float64) @ w.T + bias_of(layer, "bias", w.shape[0])

    def engine_forward(self, layer):
        w = f32(layer.params["weight"])
        bias = f32(layer.params["bias"]) if "bias" in layer.params else np.zeros(w.shape[0], np.float32)
        return lambda x: linear_f32(x, w, bias)


# --------------------------------------------------------------------------------------
# per-channel float layers


@register_kind
class BatchNorm(LayerKind):
    """Inference BatchNorm ``(x - mean) / sqrt(var + eps) · γ + β`` (channel axis 1)."""

    name = "batchnorm"
    summary = "batch normalisation"
    params = (Param("weight"), Param("bias"), Param("running_mean"), Param("running_var"))
    attrs = (Attr("eps", float, default=BN_EPS, minimum=0.0),)
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        x = in_shapes[0]
        n = layer.params["weight"].size
        if n != x[0]:
            raise ShapeError(f"{where}: parameter 'weight' has {n} entries, input has {x[0]} channels")
        check_channel_params(self, layer, where, x[0])
        return x

    def reference(self, layer, inputs, run=None):
        return batchnorm(inputs[0], layer.params, self.attr(layer, "eps"))

    def engine_forward(self, layer):
        g, h = batchnorm_affine(layer)
        g32, h32 = f32(g), f32(h)
        return lambda x: f32(x) * per_channel(g32, x.ndim) + per_channel(h32, x.ndim)

    def train_forward(self, layer, inputs, net):
        return G.batchnorm_forward(inputs[0], layer.params, float(self.attr(layer, "eps")), net.training,
                                   net.bn_momentum)

    def train_backward(self, layer, dy, cache, net, grads):
        dx, dg, dbeta = G.batchnorm_backward(dy, cache)
        grads[(layer.name, "weight")], grads[(layer.name, "bias")] = dg, dbeta
        return [dx]


@register_kind
class PReLU(LayerKind):
    """``x if x >= 0 else a·x`` (one slope per channel, or one shared slope)."""

    name = "prelu"
    summary = "parametric ReLU"
    params = (Param("weight", "real", "channel_or_one"),)
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        x = in_shapes[0]
        n = layer.params["weight"].size
        if n not in (x[0], 1):
            raise ShapeError(f"{where}: parameter 'weight' has {n} entries, input has {x[0]} channels")
        check_channel_params(self, layer, where, x[0])
        return x

    def reference(self, layer, inputs, run=None):
        return prelu64(np.asarray(inputs[0], np.float64), layer.params["weight"])

    def engine_forward(self, layer):
        slope = f32(layer.params["weight"]).reshape(-1)

        def op(x):
            x = f32(x)
            s = per_channel(slope, x.ndim) if slope.size > 1 else slope[0]
            return np.where(x >= 0, x, x * s)
        return op

    def train_forward(self, layer, inputs, net):
        return G.prelu_forward(inputs[0], layer.params["weight"])

    def train_backward(self, layer, dy, cache, net, grads):
        dx, da = G.prelu_backward(dy, cache)
        grads[(layer.name, "weight")] = da
        return [dx]


@register_kind
class ReLU(LayerKind):
    """``max(x, 0)``."""

    name = "relu"
    summary = "rectified linear unit"
    trainable = True

    def reference(self, layer, inputs, run=None):
        return np.maximum(np.asarray(inputs[0], np.float64), 0.0)

    def engine_forward(self, layer):
        return lambda x: np.maximum(f32(x), np.float32(0))

    def train_forward(self, layer, inputs, net):
        return G.relu_forward(inputs[0])

    def train_backward(self, layer, dy, cache, net, grads):
        return [G.relu_backward(dy, cache)]


# --------------------------------------------------------------------------------------
# pooling and shape operations


def pool_output_shape(x: tuple, kernel: int, stride: int, padding: int, where: str) -> tuple[int, ...]:
    """(C, H', W') of a pooling window over a (C, H, W) input; padding <= kernel // 2."""
    if len(x) != 3:
        raise ShapeError(f"{where}: expected a (C, H, W) input, got {list(x)}")
    if padding > kernel // 2:
        raise ShapeError(f"{where}: padding {padding} exceeds kernel//2 = {kernel // 2} "
                         f"(a window would hold only padding)")
    check_window(x, (kernel, kernel), stride, padding, where, max_padding=kernel // 2)
    return (x[0], conv_output_size(x[1], kernel, stride, padding), conv_output_size(x[2], kernel, stride, padding))


@register_kind
class MaxPool(LayerKind):
    """Max over ``kernel × kernel`` windows with ``-inf`` padding."""

    name = "maxpool"
    summary = "max pooling"
    attrs = (Attr("kernel", int, minimum=1), Attr("stride", int, minimum=1), Attr("padding", int, default=0, minimum=0))
    trainable = True

    def _window(self, layer):
        return self.attr(layer, "kernel"), self.attr(layer, "stride"), self.attr(layer, "padding")

    def output_shape(self, layer, in_shapes, where):
        return pool_output_shape(in_shapes[0], *self._window(layer), where)

    def reference(self, layer, inputs, run=None):
        return maxpool2d(inputs[0], *self._window(layer))

    def engine_forward(self, layer):
        k, s, p = self._window(layer)
        return lambda x: maxpool2d_f32(f32(x), k, s, p)

    def train_forward(self, layer, inputs, net):
        return G.maxpool_forward(inputs[0], *self._window(layer))

    def train_backward(self, layer, dy, cache, net, grads):
        return [G.maxpool_backward(dy, cache)]


@register_kind
class AvgPool(LayerKind):
    """Mean over ``kernel × kernel`` windows (no padding)."""

    name = "avgpool"
    summary = "average pooling"
    attrs = (Attr("kernel", int, minimum=1), Attr("stride", int, minimum=1))
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        return pool_output_shape(in_shapes[0], self.attr(layer, "kernel"), self.attr(layer, "stride"), 0, where)

    def reference(self, layer, inputs, run=None):
        return avgpool2d(inputs[0], self.attr(layer, "kernel"), self.attr(layer, "stride"))

    def engine_forward(self, layer):
        k, s = self.attr(layer, "kernel"), self.attr(layer, "stride")

        def op(x):
            x = f32(x)
            if k == x.shape[2] == x.shape[3] and s == k:  # global pooling
                return global_avgpool(x)
            return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].mean(axis=(4, 5), dtype=np.float32)
        return op

    def train_forward(self, layer, inputs, net):
        return G.avgpool_forward(inputs[0], self.attr(layer, "kernel"), self.attr(layer, "stride"))

    def train_backward(self, layer, dy, cache, net, grads):
        return [G.avgpool_backward(dy, cache)]


@register_kind
class Add(LayerKind):
    """``x1 + x2`` (same shapes)."""

    name = "add"
    summary = "elementwise sum of two inputs"
    inputs = (2, 2)
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        x, other = in_shapes
        if other != x:
            raise ShapeError(f"{where}: cannot add {list(x)} ({layer.inputs[0]}) and {list(other)} ({layer.inputs[1]})")
        return x

    @staticmethod
    def _same_shapes(layer, x, x2) -> None:
        if x.shape != x2.shape:
            raise ShapeError(f"layer {layer.name!r}: cannot add shapes {x.shape} and {x2.shape} ({layer.inputs})")

    def reference(self, layer, inputs, run=None):
        x, x2 = inputs
        self._same_shapes(layer, x, x2)
        return np.asarray(x, np.float64) + np.asarray(x2, np.float64)

    def engine_forward(self, layer):
        return lambda x, y: f32(x) + f32(y)

    def train_forward(self, layer, inputs, net):
        x, x2 = inputs
        self._same_shapes(layer, x, x2)
        return x + x2, None

    def train_backward(self, layer, dy, cache, net, grads):
        return [dy, dy]


@register_kind
class Concat(LayerKind):
    """Inputs concatenated along the channel axis (axis 1); integer codes stay codes."""

    name = "concat"
    summary = "concatenation of channels"
    inputs = (2, 64)
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        first = in_shapes[0]
        for src, shape in zip(layer.inputs, in_shapes):
            if len(shape) != len(first) or tuple(shape[1:]) != tuple(first[1:]):
                raise ShapeError(f"{where}: cannot concatenate {list(shape)} ({src}) with {list(first)} "
                                 f"({layer.inputs[0]}) along the channels")
        return (sum(s[0] for s in in_shapes),) + tuple(first[1:])

    def reference(self, layer, inputs, run=None):
        if all(np.asarray(x).dtype.kind in "iu" for x in inputs):
            return np.concatenate(inputs, axis=1)
        return np.concatenate([np.asarray(x, np.float64) for x in inputs], axis=1)

    def engine_forward(self, layer):
        def op(*xs):
            if all(x.dtype.kind in "iu" for x in xs):
                return np.ascontiguousarray(np.concatenate(xs, axis=1))
            return np.concatenate([f32(x) for x in xs], axis=1)
        return op

    def train_forward(self, layer, inputs, net):
        return np.concatenate(inputs, axis=1), [x.shape[1] for x in inputs]

    def train_backward(self, layer, dy, cache, net, grads):
        return np.split(dy, np.cumsum(cache)[:-1], axis=1)


@register_kind
class ChannelPad(LayerKind):
    """Zero channels appended up to ``out_channels`` (the downsampling shortcut)."""

    name = "channel_pad"
    summary = "zero channels appended"
    attrs = (Attr("out_channels", int, minimum=1),)
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        x = in_shapes[0]
        out_c = self.attr(layer, "out_channels")
        if out_c < x[0]:
            raise ShapeError(f"{where}: out_channels={out_c} is below the input's {x[0]} channels")
        return (out_c,) + tuple(x[1:])

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        extra = self.attr(layer, "out_channels") - x.shape[1]
        if extra < 0:
            raise ShapeError(f"layer {layer.name!r}: input has {x.shape[1]} channels, more than "
                             f"out_channels={self.attr(layer, 'out_channels')}")
        zeros = np.zeros((x.shape[0], extra) + x.shape[2:], np.float64)
        return np.concatenate([np.asarray(x, np.float64), zeros], axis=1)

    def engine_forward(self, layer):
        out_c = self.attr(layer, "out_channels")

        def op(x):
            x = f32(x)
            out = np.zeros((x.shape[0], out_c) + x.shape[2:], np.float32)
            out[:, : x.shape[1]] = x
            return out
        return op

    def train_forward(self, layer, inputs, net):
        return G.channel_pad_forward(inputs[0], self.attr(layer, "out_channels"))

    def train_backward(self, layer, dy, cache, net, grads):
        return [G.channel_pad_backward(dy, cache)]


@register_kind
class Flatten(LayerKind):
    """All axes after the batch axis into one (keeps the dtype: codes stay codes)."""

    name = "flatten"
    summary = "flatten to features"
    trainable = True

    def output_shape(self, layer, in_shapes, where):
        return (int(np.prod(in_shapes[0])),)

    def reference(self, layer, inputs, run=None):
        x = inputs[0]
        return np.asarray(x).reshape(x.shape[0], -1)

    def engine_forward(self, layer):
        return lambda x: np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def train_forward(self, layer, inputs, net):
        x = inputs[0]
        return x.reshape(x.shape[0], -1), x.shape

    def train_backward(self, layer, dy, cache, net, grads):
        return [dy.reshape(cache)]

r"""The PyTorch float32 baseline of the benchmark: a folded model as a torch module.

It is not an executor with rules of its own.  The graph is walked by
:func:`sttn_sim.walk.walk` (the walk of the reference, the engine and training), and
each layer becomes one torch operation, made by the builder :data:`TORCH_OPERATIONS`
holds for its kind; the operation's parameters are the layer's, put through the
project's rules (:mod:`sttn_sim.rules`) where a rule applies:

=============================  ==========================================================
kind                           torch operation
=============================  ==========================================================
``conv``, ``linear``           ``conv2d(x, W) + b`` / ``x Wᵀ + b`` [→ PReLU ``slope``]
                               [→ ``F.max_pool2d`` of the conv's ``pool`` window]
``ternary_conv``,              epilogue ``"affine"``: the same with the float weights
``ternary_linear``             ``s·t`` and bias ``b`` [+ residual, zero-extended over
                               channels] [→ PReLU ``slope``]; epilogue ``"none"``: the
                               bare accumulator ``conv2d(x_codes, t)``
``batchnorm``                  ``g·x + h``, ``(g, h) =`` :func:`~sttn_sim.rules.batchnorm_affine`
``threshold``                  :func:`~sttn_sim.rules.apply_threshold`: ``z = d·x``;
                               ``+1 if z >= hi``, ``-1 if z < lo``, else 0; ``constant``
                               where ``d == 0``
``prelu``, ``relu``,           ``F.prelu``, ``F.relu``, ``F.max_pool2d`` (``-inf``
``maxpool``, ``avgpool``,      padding), ``F.avg_pool2d``, ``+``, ``F.pad`` with zero
``add``, ``channel_pad``,      channels, ``flatten(1)``
``flatten``
=============================  ==========================================================

(the ``slope``, ``pool`` and residual input are the declared extensions that the engine's
rewrites, :mod:`sttn_sim.fusions`, give a layer; a folded model from
:func:`sttn_sim.fold` has neither.)  Any other kind raises
:class:`~sttn_sim.errors.ModelError` naming the layer.

Exactness.  Codes are float32 ±1/0, so a ``ternary_*`` accumulator computed in float32
is exact (every partial sum is an integer of magnitude at most K, below 2²⁴).  The
threshold's ``lo``/``hi`` are rounded *up* to float32 by
:func:`~sttn_sim.rules.float32_thresholds`: for a float32 ``z`` and a real ``t``,
``z >= t ⟺ z >= ⌈t⌉₃₂`` and ``z < t ⟺ z < ⌈t⌉₃₂``, so every threshold layer applies
the float64 rule to the float32 value it is given — exactly, for the integer
thresholds on accumulators.  The other float steps round to float32 as any float32
network does.

PyTorch is a benchmark baseline only, not a dependency of sttn_sim: it is imported here
and nowhere else in the package, and importing this module without it raises an
ImportError that says so.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:
    raise ImportError(
        "sttn_sim.bench.torch_baseline needs PyTorch, which sttn_sim does not depend on; "
        "install the CPU build with `pip install torch==2.13.0` (or the `test` extra) "
        "for the PyTorch column of the benchmark") from exc

from ..errors import ModelError
from ..graph import Layer, Model
from ..rules import batchnorm_affine, comparison_thresholds
from ..walk import walk

#: a torch operation of one layer: its input tensors -> its output tensor
TorchOperation = Callable[..., "torch.Tensor"]

__all__ = ["TORCH_OPERATIONS", "TorchBaseline", "TorchOperation", "frozen_baseline", "torch_operation"]


def _tensor(a) -> torch.Tensor:
    """A float32 torch tensor holding a copy of ``a`` rounded to float32."""
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim``-d tensor."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _zero_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` with zero channels appended along axis 1 up to ``channels``."""
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, channels - x.shape[1]))


def _then_slope(layer: Layer, op: TorchOperation) -> TorchOperation:
    """``op`` followed by the layer's fused PReLU ``slope`` when it has one."""
    if "slope" not in layer.params:
        return op
    slope = _tensor(layer.params["slope"]).reshape(-1)
    return lambda *xs: F.prelu(op(*xs), slope)


def _weighted(layer: Layer, weight: np.ndarray, bias) -> Callable[[torch.Tensor], torch.Tensor]:
    """``conv2d(x, weight) + bias`` (stride and padding from the layer) or ``x weightᵀ + bias``."""
    w = _tensor(weight)
    b = None if bias is None else _tensor(bias)
    kind = layer.spec
    if kind.family == "conv":
        stride, padding = kind.attr(layer, "stride"), kind.attr(layer, "padding")
        return lambda x: F.conv2d(x, w, b, stride=stride, padding=padding)
    return lambda x: F.linear(x, w, b)


def _then_pool(layer: Layer, op: TorchOperation) -> TorchOperation:
    """``op`` followed by the conv's fused max pooling ``pool = [kernel, stride, padding]``
    when it has one."""
    pool = layer.attrs.get("pool")
    if pool is None:
        return op
    k, s, pad = (int(v) for v in pool)
    return lambda *xs: F.max_pool2d(op(*xs), k, s, pad)


def _float_weighted(layer: Layer) -> TorchOperation:
    return _then_pool(layer, _then_slope(layer, _weighted(layer, layer.params["weight"], layer.params.get("bias"))))


def _folded_ternary(layer: Layer) -> TorchOperation:
    p = layer.params
    codes = np.asarray(p["codes"], np.float32)
    if layer.spec.attr(layer, "epilogue") == "none":
        return _weighted(layer, codes, None)  # the exact integer accumulator
    shape = (-1,) + (1,) * (codes.ndim - 1)
    scale = np.asarray(p["scale"], np.float32).reshape(shape)
    if "scale_neg" in p:  # TTQ: W_p on the +1 codes, W_n on the -1 codes
        scale_neg = np.asarray(p["scale_neg"], np.float32).reshape(shape)
        kernel = np.where(codes > 0, scale, np.float32(0)) - np.where(codes < 0, scale_neg, np.float32(0))
    else:
        kernel = codes * scale
    weighted = _weighted(layer, kernel, p["bias"])

    def op(x, residual=None):
        y = weighted(x)
        return y if residual is None else y + _zero_channels(residual, y.shape[1])
    return _then_slope(layer, op)


def _batchnorm(layer: Layer) -> TorchOperation:
    g, h = (_tensor(v) for v in batchnorm_affine(layer))
    return lambda x: x * _per_channel(g, x.dim()) + _per_channel(h, x.dim())


def _threshold(layer: Layer) -> TorchOperation:
    """:func:`sttn_sim.rules.apply_threshold` in torch, with the canonical comparison
    thresholds of :func:`sttn_sim.rules.comparison_thresholds` (either tie rule; float
    thresholds rounded to float32 so the float32 comparison is the exact rule)."""
    p = layer.params
    direction, constant = _tensor(p["direction"]), _tensor(p["constant"])
    lo, hi = comparison_thresholds(p["lo"], p["hi"], integer=bool(layer.spec.attr(layer, "integer")),
                                   tie=layer.spec.attr(layer, "tie"))
    lo, hi = torch.from_numpy(np.asarray(lo, np.float32)), torch.from_numpy(np.asarray(hi, np.float32))

    def op(x):
        d = _per_channel(direction, x.dim())
        z = x * d
        codes = (z >= _per_channel(hi, x.dim())).to(x.dtype) - (z < _per_channel(lo, x.dim())).to(x.dtype)
        return torch.where(d == 0, _per_channel(constant, x.dim()), codes)
    return op


def _prelu(layer: Layer) -> TorchOperation:
    slope = _tensor(layer.params["weight"]).reshape(-1)
    return lambda x: F.prelu(x, slope)


def _maxpool(layer: Layer) -> TorchOperation:
    kind = layer.spec
    k, s, pad = kind.attr(layer, "kernel"), kind.attr(layer, "stride"), kind.attr(layer, "padding")
    return lambda x: F.max_pool2d(x, k, s, pad)


def _avgpool(layer: Layer) -> TorchOperation:
    kind = layer.spec
    k, s = kind.attr(layer, "kernel"), kind.attr(layer, "stride")
    return lambda x: F.avg_pool2d(x, k, s)


def _channel_pad(layer: Layer) -> TorchOperation:
    channels = layer.spec.attr(layer, "out_channels")
    return lambda x: _zero_channels(x, channels)


#: kind -> builder of the layer's torch operation (see the module docstring)
TORCH_OPERATIONS: dict[str, Callable[[Layer], TorchOperation]] = {
    "conv": _float_weighted,
    "linear": _float_weighted,
    "ternary_conv": _folded_ternary,
    "ternary_linear": _folded_ternary,
    "batchnorm": _batchnorm,
    "threshold": _threshold,
    "prelu": _prelu,
    "relu": lambda layer: F.relu,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "add": lambda layer: torch.add,
    "channel_pad": _channel_pad,
    "flatten": lambda layer: lambda x: x.flatten(1),
}


def torch_operation(layer: Layer) -> TorchOperation:
    """The torch operation of ``layer``; ModelError naming the layer for a kind the
    baseline has no operation for."""
    build = TORCH_OPERATIONS.get(layer.kind)
    if build is None:
        raise ModelError(
            f"layer {layer.name!r}: the PyTorch baseline has no operation for kind {layer.kind!r} "
            f"(it runs folded models, see sttn_sim.fold; kinds it runs: {', '.join(TORCH_OPERATIONS)})")
    return build(layer)


class TorchBaseline(torch.nn.Module):
    """A folded model as a float32 torch module (see the module docstring).

    ``forward(x)`` maps a float32 NCHW (or N×features) tensor to the logits;
    :meth:`values` returns every layer's output; ``operations[name]`` is one layer's
    operation, to be fed any inputs (layer-local checks).  ``torch.jit.trace`` records
    the walk as a flat graph.
    """

    def __init__(self, model: Model):
        super().__init__()
        self.layers = list(model.layers)
        self.output = model.output
        self.operations = {layer.name: torch_operation(layer) for layer in self.layers}

    def values(self, x: torch.Tensor, *, keep: bool = False) -> dict[str, torch.Tensor]:
        """The walk's values: every layer's output with ``keep``, else the output only."""
        return walk(self.layers, {"input": x}, lambda layer, xs: self.operations[layer.name](*xs),
                    output=self.output, keep=keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values(x)[self.output]


def frozen_baseline(model: Model, example: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """:class:`TorchBaseline` of ``model`` traced on the float32 batch ``example`` and
    frozen (TorchScript, constants folded): a function from a float32 numpy batch of
    that shape to float32 numpy logits, run without autograd (the numpy/torch
    conversions share memory)."""
    module = TorchBaseline(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in PyTorch 2.13
        frozen = torch.jit.freeze(torch.jit.trace(module, torch.from_numpy(example)))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return frozen(torch.from_numpy(x)).numpy()
    return run

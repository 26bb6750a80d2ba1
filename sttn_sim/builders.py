"""Builders of training-time (latent-form) models.

* :func:`sttn_resnet18` — the official STTN ResNet-18 variant (docs/design.md §2.3), with a
  width multiplier, number of classes, input size and (for small inputs) a small stem.
* :func:`plain_ternary_cnn` — conv → BN → ternary activation chains, where every
  ternary convolution feeds a BN and a ternary activation directly (so folding gives
  integer thresholds on integer accumulators).
* :func:`ternary_mlp` — the same idea with fully connected layers.

Parameters are initialised from ``seed`` (latent weights ~ N(0, 0.5²) clipped to
[-1, 1], float32 like PyTorch checkpoints; BN at identity).  Use
:func:`sttn_sim.synthetic.synthetic_model` for models with non-trivial BN statistics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import ModelError
from .graph import Layer, Model
from .rules import ACTIVATION_HI, ACTIVATION_LO, BN_EPS, conv_output_size


class _Builder:
    """Accumulates layers and tracks the shape of the most recent output."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.layers: list[Layer] = []

    def add(self, name, kind, inputs, attrs=None, params=None) -> str:
        self.layers.append(Layer(name, kind, list(inputs), dict(attrs or {}), dict(params or {})))
        return name

    # parameter initialisers -----------------------------------------------------------
    def latent(self, shape) -> np.ndarray:
        w = self.rng.normal(0.0, 0.5, size=shape).clip(-1.0, 1.0)
        w[w == 0] = 0.5  # an exact zero latent weight would be a 5-level kernel (docs/design.md §2.1)
        return w.astype(np.float32)

    def float_weight(self, shape) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)

    def small(self, n) -> np.ndarray:
        return self.rng.normal(0.0, 0.05, size=n).astype(np.float32)

    def batchnorm(self, name, src, channels) -> str:
        params = {
            "weight": np.ones(channels, np.float32),
            "bias": np.zeros(channels, np.float32),
            "running_mean": np.zeros(channels, np.float32),
            "running_var": np.ones(channels, np.float32),
        }
        return self.add(name, "batchnorm", [src], {"eps": BN_EPS}, params)

    def sttn_conv(self, name, src, c_in, c_out, stride, padding=1, kernel=3) -> str:
        shape = (c_out, c_in, kernel, kernel)
        params = {
            "weight1": self.latent(shape),
            "bias1": self.small(c_out),
            "weight2": self.latent(shape),
            "bias2": self.small(c_out),
        }
        return self.add(name, "sttn_conv", [src], {"stride": stride, "padding": padding}, params)

    def sttn_linear(self, name, src, c_in, c_out) -> str:
        params = {
            "weight1": self.latent((c_out, c_in)),
            "bias1": self.small(c_out),
            "weight2": self.latent((c_out, c_in)),
            "bias2": self.small(c_out),
        }
        return self.add(name, "sttn_linear", [src], {}, params)

    def linear(self, name, src, c_in, c_out) -> str:
        params = {"weight": self.float_weight((c_out, c_in)), "bias": self.small(c_out)}
        return self.add(name, "linear", [src], {}, params)


def _check_positive(name: str, value, minimum=1):
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ModelError(f"argument {name}={value!r}: expected an integer >= {minimum}")


def sttn_resnet18(
    width: float = 1.0,
    num_classes: int = 1000,
    input_size: int = 224,
    in_channels: int = 3,
    *,
    stem: str = "imagenet",
    blocks: int = 8,
    seed: int = 0,
) -> Model:
    """The official STTN ResNet-18 variant (docs/design.md §2.3).

    Stem (float): ``features.0`` conv7x7/2 (no bias) → ``features.1`` BN →
    ``features.2`` PReLU → ``features.3`` maxpool3x3/2 pad 1.  ``stem="small"`` uses a
    conv3x3/1 and no maxpool (for inputs such as 8x8 digits).  Then ``blocks``
    BasicBlocks ``features.4`` … (channels base·(1,1,2,2,4,4,8,8), base = round(64·width),
    a stride-2 block whenever the channel count doubles).  Block with input x::

        shortcut = x   or   cat([maxpool2x2(x), zeros]) on a downsampling block
        a   = PReLU1(BN_add1(conv1(tact1(BN1(x)))) + shortcut)
        out = PReLU2(BN_add2(conv2(tact2(BN2(a)))) + a)

    Head (float): ``avgpool`` over the whole final map → ``flatten`` → ``fc``.
    """
    if not (isinstance(width, (int, float)) and width > 0):
        raise ModelError(f"argument width={width!r}: expected a positive number")
    for arg, value in (("num_classes", num_classes), ("input_size", input_size), ("in_channels", in_channels)):
        _check_positive(arg, value)
    if stem not in ("imagenet", "small"):
        raise ModelError(f"argument stem={stem!r}: expected 'imagenet' or 'small'")
    if not 1 <= blocks <= 8:
        raise ModelError(f"argument blocks={blocks!r}: expected 1..8 BasicBlocks")
    base = max(1, int(round(64 * width)))
    plan = [(base, base, 1), (base, base, 1), (base, 2 * base, 2), (2 * base, 2 * base, 1),
            (2 * base, 4 * base, 2), (4 * base, 4 * base, 1), (4 * base, 8 * base, 2), (8 * base, 8 * base, 1)]
    plan = plan[:blocks]

    b = _Builder(np.random.default_rng(seed))
    if stem == "imagenet":
        x = b.add("features.0", "conv", ["input"], {"stride": 2, "padding": 3},
                  {"weight": b.float_weight((base, in_channels, 7, 7))})
        size = conv_output_size(input_size, 7, 2, 3)
    else:
        x = b.add("features.0", "conv", ["input"], {"stride": 1, "padding": 1},
                  {"weight": b.float_weight((base, in_channels, 3, 3))})
        size = input_size
    x = b.batchnorm("features.1", x, base)
    x = b.add("features.2", "prelu", [x], {}, {"weight": np.full(base, 0.25, np.float32)})
    if stem == "imagenet":
        x = b.add("features.3", "maxpool", [x], {"kernel": 3, "stride": 2, "padding": 1})
        size = conv_output_size(size, 3, 2, 1)

    for i, (c_in, c_out, stride) in enumerate(plan):
        p = f"features.{4 + i}"
        if stride == 2:
            if size % 2 or size < 2:
                raise ModelError(
                    f"sttn_resnet18(input_size={input_size}, stem={stem!r}): block {p} downsamples a "
                    f"{size}x{size} map; the maxpool2x2 shortcut needs an even size (use a multiple of 32)"
                )
            shortcut = b.add(f"{p}.shortcut_pool", "maxpool", [x], {"kernel": 2, "stride": 2, "padding": 0})
            shortcut = b.add(f"{p}.shortcut_pad", "channel_pad", [shortcut], {"out_channels": c_out})
        else:
            shortcut = x
        h = b.batchnorm(f"{p}.bn1", x, c_in)
        h = b.add(f"{p}.tact1", "ternary_act", [h], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
        h = b.sttn_conv(f"{p}.conv1", h, c_in, c_out, stride)
        h = b.batchnorm(f"{p}.bn_add1", h, c_out)
        h = b.add(f"{p}.add1", "add", [h, shortcut])
        a = b.add(f"{p}.prelu1", "prelu", [h], {}, {"weight": np.full(c_out, 0.25, np.float32)})
        size = conv_output_size(size, 3, stride, 1)
        h = b.batchnorm(f"{p}.bn2", a, c_out)
        h = b.add(f"{p}.tact2", "ternary_act", [h], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
        h = b.sttn_conv(f"{p}.conv2", h, c_out, c_out, 1)
        h = b.batchnorm(f"{p}.bn_add2", h, c_out)
        h = b.add(f"{p}.add2", "add", [h, a])
        x = b.add(f"{p}.prelu2", "prelu", [h], {}, {"weight": np.full(c_out, 0.25, np.float32)})

    if size < 1:
        raise ModelError(f"sttn_resnet18: input_size={input_size} is too small for this stem and depth")
    c_last = plan[-1][1]
    x = b.add("avgpool", "avgpool", [x], {"kernel": size, "stride": size})
    x = b.add("flatten", "flatten", [x])
    b.linear("fc", x, c_last, num_classes)
    return Model(
        arch="sttn_resnet18",
        input_shape=(in_channels, input_size, input_size),
        layers=b.layers,
        form="latent",
        metadata={"builder": "sttn_resnet18", "width": width, "num_classes": num_classes,
                  "input_size": input_size, "in_channels": in_channels, "stem": stem,
                  "blocks": blocks, "seed": seed},
    )


def plain_ternary_cnn(
    channels: tuple[int, ...] = (16, 32, 32),
    num_classes: int = 10,
    input_size: int = 8,
    in_channels: int = 1,
    *,
    seed: int = 0,
) -> Model:
    """A plain ternary CNN: float stem conv3x3 → BN → tact, then per entry of
    ``channels`` a ternary conv3x3 (stride 2 from the second on) → BN → tact,
    then global average pool → flatten → float ``fc``.  Every ternary convolution
    feeds a BN and a ternary activation directly, so folding makes its thresholds
    integers on the integer accumulator."""
    for arg, value in (("num_classes", num_classes), ("input_size", input_size), ("in_channels", in_channels)):
        _check_positive(arg, value)
    if not channels or any(not isinstance(c, (int, np.integer)) or c < 1 for c in channels):
        raise ModelError(f"argument channels={channels!r}: expected a non-empty tuple of positive integers")
    b = _Builder(np.random.default_rng(seed))
    x = b.add("features.0", "conv", ["input"], {"stride": 1, "padding": 1},
              {"weight": b.float_weight((channels[0], in_channels, 3, 3)), "bias": b.small(channels[0])})
    x = b.batchnorm("features.1", x, channels[0])
    x = b.add("features.2", "ternary_act", [x], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
    size, c_prev, index = input_size, channels[0], 3
    for j, c in enumerate(channels):
        stride = 1 if j == 0 else 2
        x = b.sttn_conv(f"features.{index}", x, c_prev, c, stride)
        x = b.batchnorm(f"features.{index + 1}", x, c)
        x = b.add(f"features.{index + 2}", "ternary_act", [x], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
        size, c_prev, index = conv_output_size(size, 3, stride, 1), c, index + 3
    x = b.add("avgpool", "avgpool", [x], {"kernel": size, "stride": size})
    x = b.add("flatten", "flatten", [x])
    b.linear("fc", x, c_prev, num_classes)
    return Model("plain_ternary_cnn", (in_channels, input_size, input_size), b.layers, "latent",
                 {"builder": "plain_ternary_cnn", "channels": list(channels), "num_classes": num_classes,
                  "input_size": input_size, "in_channels": in_channels, "seed": seed})


def ternary_mlp(
    hidden: tuple[int, ...] = (64, 64),
    num_classes: int = 10,
    input_shape: tuple[int, ...] = (1, 8, 8),
    *,
    seed: int = 0,
) -> Model:
    """A ternary MLP: flatten → BN → tact, then per entry of ``hidden`` a ternary
    linear layer → BN → tact, then a float ``fc``."""
    _check_positive("num_classes", num_classes)
    if not hidden or any(not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
        raise ModelError(f"argument hidden={hidden!r}: expected a non-empty tuple of positive integers")
    features = int(np.prod(input_shape))
    b = _Builder(np.random.default_rng(seed))
    x = b.add("input_flatten", "flatten", ["input"])
    x = b.batchnorm("bn0", x, features)
    x = b.add("tact0", "ternary_act", [x], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
    prev = features
    for j, h in enumerate(hidden, start=1):
        x = b.sttn_linear(f"fc{j}", x, prev, h)
        x = b.batchnorm(f"bn{j}", x, h)
        x = b.add(f"tact{j}", "ternary_act", [x], {"lo": ACTIVATION_LO, "hi": ACTIVATION_HI})
        prev = h
    b.linear("fc", x, prev, num_classes)
    return Model("ternary_mlp", tuple(input_shape), b.layers, "latent",
                 {"builder": "ternary_mlp", "hidden": list(hidden), "num_classes": num_classes,
                  "input_shape": list(input_shape), "seed": seed})


MODEL_BUILDERS: dict[str, Callable[..., Model]] = {
    "sttn_resnet18": sttn_resnet18,
    "plain_ternary_cnn": plain_ternary_cnn,
    "ternary_mlp": ternary_mlp,
}


def build_model(name: str, **kwargs) -> Model:
    """Build a model by name (see :data:`MODEL_BUILDERS`)."""
    if name not in MODEL_BUILDERS:
        raise ModelError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_BUILDERS)}")
    try:
        return MODEL_BUILDERS[name](**kwargs)
    except TypeError as exc:  # an unknown keyword argument
        raise ModelError(f"build_model({name!r}): {exc}") from None

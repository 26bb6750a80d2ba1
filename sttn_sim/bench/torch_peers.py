"""What a user would run instead of the engine: a plain ResNet-18 of the same shape in
PyTorch int8 and in onnxruntime float32 / int8.

* :class:`PlainResNet18` -- torchvision's ResNet-18 layout (7×7/2 stem, BN, ReLU, 3×3/2
  max-pool, four stages of two basic blocks of 64/128/256/512 channels with 1×1/2
  projection shortcuts, global average pool, a fully connected head), written here so
  that torchvision is not needed; seeded random weights (the speed does not depend on
  their values) and BN statistics.
* :func:`pytorch_int8` -- FX graph-mode static quantization (``prepare_fx`` with the
  default ``x86`` qconfig mapping, calibration on a few batches, ``convert_fx``), traced
  and frozen.
* :func:`onnxruntime_session` -- the float32 module exported to ONNX (opset 17), and
  for ``int8`` quantized by onnxruntime's ``quantize_static`` in QDQ format (int8
  weights and activations, calibrated on a few batches); an ``InferenceSession`` with
  ``threads`` intra-op threads and every graph optimisation.

PyTorch, onnx and onnxruntime are benchmark peers only (imported here and in
:mod:`.torch_baseline`, nowhere else in the package).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def onnxruntime_available() -> bool:
    """True when onnx and onnxruntime can be imported (the onnxruntime peers' needs)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))


class PlainResNet18(nn.Module):
    """ResNet-18 (see the module docstring) for ``num_classes`` and ``width`` × the
    channels."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        c = [max(1, round(64 * width * m)) for m in (1, 2, 4, 8)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], c[0]
        for i, c_out in enumerate(c):
            blocks += [BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _numpy_function(module) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


def pytorch_fp32(example: np.ndarray, **model_args) -> Callable[[np.ndarray], np.ndarray]:
    """The plain ResNet-18 in float32, traced and frozen."""
    model = PlainResNet18(**model_args)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, torch.from_numpy(example)))
    return _numpy_function(frozen)


def _calibration(example: np.ndarray, batches: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(example.shape).astype(np.float32) for _ in range(batches)]


def pytorch_int8(example: np.ndarray, **model_args) -> Callable[[np.ndarray], np.ndarray]:
    """The plain ResNet-18 after FX static quantization (``x86`` backend), traced and
    frozen."""
    from torch.ao.quantization import get_default_qconfig_mapping  # noqa: PLC0415
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # noqa: PLC0415

    torch.backends.quantized.engine = "x86"
    model = PlainResNet18(**model_args)
    inputs = (torch.from_numpy(example),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization and TorchScript deprecation notices
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), inputs)
        with torch.no_grad():
            for batch in _calibration(example):
                prepared(torch.from_numpy(batch))
        quantized = convert_fx(prepared)
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(quantized, inputs))
    return _numpy_function(frozen)


def onnxruntime_session(example: np.ndarray, *, int8: bool, threads: int,
                        **model_args) -> Callable[[np.ndarray], np.ndarray]:
    """The plain ResNet-18 exported to ONNX (QDQ int8 with ``int8``), run by onnxruntime."""
    import onnxruntime as ort  # noqa: PLC0415  (optional peer)

    model = PlainResNet18(**model_args)
    # the exported files are needed only until the session has read them (46 MB each)
    with tempfile.TemporaryDirectory(prefix="sttn_bench_onnx_") as name:
        folder = Path(name)
        fp32 = folder / "resnet18.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(example),), str(fp32), input_names=["x"], output_names=["y"],
                              opset_version=17, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        path = fp32
        if int8:
            from onnxruntime.quantization import (  # noqa: PLC0415
                CalibrationDataReader,
                QuantFormat,
                QuantType,
                quantize_static,
            )

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter(_calibration(example))

                def get_next(self):
                    batch = next(self.batches, None)
                    return None if batch is None else {"x": batch}

            path = folder / "resnet18_int8.onnx"
            logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, on the root logger
            quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x})[0]
    return run


__all__ = ["onnxruntime_available", "PlainResNet18", "pytorch_fp32", "pytorch_int8", "onnxruntime_session"]

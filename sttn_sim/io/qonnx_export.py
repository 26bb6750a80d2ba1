r"""Export a folded model to QONNX in the FINN dialect (``sttn export --qonnx OUT.onnx``).

The graph is that of :mod:`sttn_sim.io.onnx_export` with two changes, both QONNX custom
operators in the domain ``qonnx.custom_op.general``:

* ternary weights through ``Quant``: the float32 codes ``t`` (an initializer), a
  per-output-channel scale ``s`` (shape ``[C_out, 1, 1, 1]`` or ``[C_out, 1]``), zero
  point 0, bit width 2, ``signed=1``, ``narrow=1``, ``rounding_mode="ROUND"``:
  ``Quant(t) = s·clip(round(t), -1, 1) = s·t``, the kernel the convolution uses.  A
  negative scale is written as ``|s|`` with negated codes; a zero scale as scale 1 with
  zero codes (the same zero kernel, and no division by zero in ``Quant``);
* ternary activations through ``MultiThreshold``: ``z = Mul(x, d)`` (when a direction
  is not +1), then ``MultiThreshold(z, T)`` with the two canonical thresholds per
  channel ``T = [lo', hi']`` (``[C, 2]``), ``out_scale = 1``, ``out_bias = -1`` and
  ``out_dtype = "TERNARY"``: ``#{i: z >= T_i} - 1`` is ``-1`` for ``z < lo'``, ``0``
  for ``lo' <= z < hi'`` and ``+1`` for ``z >= hi'`` — FINN's non-strict rule.  A
  strict side (the ``half_even`` rule, QONNX ``Quant``'s own) is kept by the
  thresholds themselves (:func:`sttn_sim.rules.comparison_thresholds`: the smallest
  float32 above, or the next integer), and integer thresholds sit at the midpoints of
  the float32 ``s·acc + b`` (see :mod:`sttn_sim.io.onnx_export`).

The batch axis is fixed (default 1): FINN and qonnx's executor work on static shapes.
TTQ layers (two scales per channel) have no single per-channel ``Quant`` scale and are
refused with a message naming the layer (export them with ``--onnx``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..graph import Model
from .onnx_common import QONNX_DOMAIN
from .onnx_export import OnnxGraph, write_proto

#: the QONNX ``Quant`` attributes of a ternary tensor (bit width 2, narrow: {-1, 0, +1})
TERNARY_QUANT_ATTRS = {"signed": 1, "narrow": 1, "rounding_mode": "ROUND"}
#: FINN and qonnx's executor work on static shapes: the batch axis is fixed (FINN's 1)
DEFAULT_BATCH = 1
#: MultiThreshold output: #{z >= T_i}·1 - 1 in {-1, 0, +1}
TERNARY_OUT_BIAS = -1.0


class QonnxGraph(OnnxGraph):
    """The QONNX graph of a folded model (see the module docstring)."""

    format_name = "QONNX"

    def __init__(self, model: Model, extra_outputs=(), batch: int | None = DEFAULT_BATCH):
        super().__init__(model, extra_outputs, batch)
        self.opset_imports.append(self.helper.make_opsetid(QONNX_DOMAIN, 1))

    def ternary_weight(self, layer) -> str:
        p = layer.params
        if "scale_neg" in p:
            raise CheckpointError(f"QONNX export: layer {layer.name!r} has two scales per channel (TTQ: W_p, W_n); a "
                                  f"QONNX Quant has one per channel. Export it with standard ONNX (--onnx) instead")
        codes = np.asarray(p["codes"], np.float32)
        scale = np.asarray(p["scale"], np.float64)
        sign = np.where(scale < 0, -1.0, 1.0).astype(np.float32)
        zero = scale == 0
        magnitude = np.where(zero, 1.0, np.abs(scale)).astype(np.float32)
        per = (-1,) + (1,) * (codes.ndim - 1)
        codes = np.where(zero.reshape(per), 0.0, codes * sign.reshape(per)).astype(np.float32)
        inputs = [self.const(f"{layer.name}.codes", codes),
                  self.const(f"{layer.name}.scale", magnitude.reshape(per)),
                  self.const(f"{layer.name}.zeropt", np.float32(0)),
                  self.const(f"{layer.name}.bitwidth", np.float32(2))]
        return self.node("Quant", inputs, f"{layer.name}.weight_q", f"{layer.name}.weight_quant", domain=QONNX_DOMAIN,
                         **TERNARY_QUANT_ATTRS)

    def emit_threshold(self, layer, ins, out):
        d, lo, hi = self.threshold_values(layer)
        z = self.direction(layer, ins[0], d)
        table = self.const(f"{layer.name}.thresholds", np.stack([lo, hi], axis=1))
        self.node("MultiThreshold", [z, table], out, layer.name, domain=QONNX_DOMAIN, out_dtype="TERNARY",
                  out_scale=1.0, out_bias=TERNARY_OUT_BIAS, data_layout="NCHW" if len(self.input_shape(layer)) == 3
                  else "NC")

    def check(self, proto) -> None:
        # the ONNX checker knows no QONNX operator schemas: check the standard parts only
        try:
            self.onnx.checker.check_model(proto)
        except Exception as exc:
            raise CheckpointError(f"QONNX export of {self.model.arch!r} fails the ONNX checker: {exc}") from None


def qonnx_model(folded: Model, extra_outputs=(), batch: int | None = DEFAULT_BATCH):
    """The QONNX ``ModelProto`` of a folded model (FINN dialect), batch axis ``batch``."""
    return QonnxGraph(folded, extra_outputs, batch).build()


def export_qonnx(folded: Model, path, *, extra_outputs=(), batch: int | None = DEFAULT_BATCH) -> Path:
    """Write ``folded`` to ``path`` as QONNX (see the module docstring), atomically.  The
    batch axis is fixed (``batch``, default 1: FINN and qonnx's executor need static
    shapes; ``None`` makes it dynamic)."""
    return write_proto(qonnx_model(folded, extra_outputs, batch), path)


__all__ = ["QonnxGraph", "qonnx_model", "export_qonnx", "TERNARY_QUANT_ATTRS"]

"""What the ONNX readers and writers share: the optional dependency and the graph's conventions.

The ``onnx`` package (and, for the QONNX checks, ``qonnx`` and ``onnxruntime``) come
with the ``interop`` extra (``pip install 'sttn_sim[interop]'``); sttn_sim itself
imports and runs without them.  :func:`require_onnx` imports ``onnx`` on first use and
raises a :class:`~sttn_sim.errors.CheckpointError` saying how to install it otherwise.

Conventions of the exported graphs (and what the importer expects of its own files):

* opset :data:`OPSET` of the default domain, IR version :data:`IR_VERSION` (what
  onnxruntime and qonnx read), one input ``input`` of shape ``[batch, *input_shape]``
  (a dynamic batch axis), one output ``logits``;
* every value a layer produces is named after the layer; initializers are
  ``<layer>.<what>``;
* QONNX custom operators (``Quant``, ``MultiThreshold``) in the domain
  :data:`QONNX_DOMAIN` (``qonnx.custom_op.general``), opset version 1.
"""

from __future__ import annotations

import importlib

from ..errors import CheckpointError

#: opset of the default ONNX domain in the exported graphs
OPSET = 17
#: IR version of the exported files (opset 17 needs >= 8)
IR_VERSION = 8
#: the domain of QONNX's custom operators (qonnx.custom_op.general)
QONNX_DOMAIN = "qonnx.custom_op.general"
#: the name of the graph input and output
INPUT_NAME, OUTPUT_NAME = "input", "logits"

INSTALL_HINT = "install the interop extra: pip install 'sttn_sim[interop]'"


def require(module: str, purpose: str):
    """Import ``module`` (e.g. ``"onnx"``) or raise a CheckpointError naming ``purpose``
    and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed; "
                              f"{INSTALL_HINT}") from None


def require_onnx(purpose: str = "ONNX export and import"):
    """The ``onnx`` package (see :func:`require`)."""
    return require("onnx", purpose)


__all__ = ["OPSET", "IR_VERSION", "QONNX_DOMAIN", "INPUT_NAME", "OUTPUT_NAME", "INSTALL_HINT", "require",
           "require_onnx"]

"""Float64 / int64 reference execution of any model form: the ground truth.

Every layer runs its kind's float64 rule (:meth:`sttn_sim.kinds.LayerKind.reference`,
on the primitives of :mod:`sttn_sim.ops.reference`), walked in model order by
:func:`sttn_sim.walk.walk`.  Semantics per form (docs/design.md §2):

* latent ternary layer: ``α·acc1 + b1 + α·acc2 + b2`` with the exact integer
  accumulators ``acc_k = conv(x, sign W_k)`` when x is ternary;
* merged ternary layer: a float convolution with the stored α(B1+B2);
* folded ternary layer: ``acc = conv(x_codes, t)`` in int64, then ``scale·acc + bias``
  (epilogue ``"affine"``) or the bare accumulator (epilogue ``"none"``);
* ternary activation and folded threshold: the rules of :mod:`sttn_sim.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ShapeError
from .graph import Layer, Model
from .recording import LayerEvent
from .validation import validate_model
from .walk import walk


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


def run_layer(layer: Layer, inputs: list[np.ndarray], run: ReferenceRun | None = None) -> np.ndarray:
    """Execute one layer in float64/int64, recording accumulators into ``run``."""
    return layer.spec.reference(layer, inputs, run)


def run_reference(model: Model, x: np.ndarray, *, record: bool = True, recorder=None) -> ReferenceRun:
    """Run ``model`` on the batch ``x`` in float64/int64.

    With ``record=True`` every layer output, accumulator and pre-activation is kept.
    ``recorder`` (a :class:`sttn_sim.recording.Recorder`) receives one
    :class:`~sttn_sim.recording.LayerEvent` per layer.
    """
    validate_model(model)
    x = check_input(model, x)
    run = ReferenceRun(logits=np.empty(0))
    if recorder is not None:
        recorder.on_batch_start(model, len(x))
    # a recorder needs accumulators and pre-activations even without full recording
    scratch = run if (record or recorder is not None) else None

    def execute(layer: Layer, inputs: list[np.ndarray]) -> np.ndarray:
        out = run_layer(layer, inputs, scratch)
        if recorder is not None:
            acc = run.accumulators.get(layer.name, {}).get("acc") if layer.ternary_form == "folded" else None
            quantizer = layer.is_quantizer
            recorder.on_layer(LayerEvent(layer, out, accumulator=acc,
                                         pre_activation=run.pre_activations.get(layer.name) if quantizer else None,
                                         codes=out if quantizer else None))
            if not record:  # keep memory flat: drop what was only kept for the recorder
                run.accumulators.pop(layer.name, None)
                run.pre_activations.pop(layer.name, None)
        return out

    values = walk(model.layers, {"input": np.asarray(x, np.float64)}, execute, output=model.output, keep=record)
    if record:
        run.outputs = {name: value for name, value in values.items() if name != "input"}
    run.logits = np.asarray(values[model.output], np.float64)
    return run


def reference_forward(model: Model, x: np.ndarray) -> np.ndarray:
    """Float64 logits of ``model`` (any form) for an NCHW (or N×features) batch ``x``."""
    return run_reference(model, x, record=False).logits

"""The one validation of a model, run by ``fold()``, ``reference_forward()`` and ``Engine()``.

:func:`validate_model` checks, for a model of any form, loaded from disk or built in
memory:

1. structure (:meth:`sttn_sim.graph.Model.validate`): names, kinds, inputs, parameters
   present, attribute types and bounds;
2. shapes (:func:`sttn_sim.shapes.infer_shapes`): every parameter fits the tensor it
   meets, per-channel parameters have one entry per channel, windows (kernel, stride,
   padding) fit their inputs;
3. values (:meth:`sttn_sim.kinds.LayerKind.check_values`): real floating parameters
   finite, codes / directions / constants int8 in {-1, 0, +1}, thresholds not NaN (±inf
   allowed), ordered ``lo <= hi``.

Every failure is a :class:`~sttn_sim.errors.ModelError` or
:class:`~sttn_sim.errors.ShapeError` naming the model and the layer.
"""

from __future__ import annotations

from .graph import Model
from .shapes import infer_shapes


def validate_model(model: Model) -> dict[str, tuple[int, ...]]:
    """Check ``model`` (see the module docstring); returns its per-sample shapes."""
    model.validate()
    shapes = infer_shapes(model)
    for layer in model.layers:
        layer.spec.check_values(layer, f"model {model.arch!r}, layer {layer.name!r}")
    return shapes

"""Static shape inference over a model graph (per-sample shapes, batch axis omitted).

Each layer's kind gives its shape rule (:meth:`sttn_sim.kinds.LayerKind.output_shape`),
which also checks that the layer's parameters fit the tensors it receives.
"""

from __future__ import annotations

from .errors import ShapeError
from .graph import Model


def infer_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Output shape of every layer for one sample (and ``"input"``); raises ShapeError
    naming the layer when a parameter does not fit the tensor it receives."""
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(model.input_shape)}
    for layer in model.layers:
        where = f"model {model.arch!r}, layer {layer.name!r} ({layer.kind})"
        out = layer.spec.output_shape(layer, [shapes[src] for src in layer.inputs], where)
        if any(d < 1 for d in out):
            raise ShapeError(f"{where}: output shape {list(out)} is empty for input {list(shapes[layer.inputs[0]])}")
        shapes[layer.name] = tuple(int(d) for d in out)
    return shapes

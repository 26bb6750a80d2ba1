"""The project's own model format, and ``load_checkpoint`` dispatching on file content.

Own format: ONE safetensors file (never pickle).  Tensors are named
``<layer name>.<param name>`` (e.g. ``features.4.conv1.weight1``); the safetensors
metadata holds

* ``format``: ``"sttn_sim"``;
* ``schema_version``: ``"1"``;
* ``graph``: JSON ``{"arch", "form", "input_shape", "metadata",
  "layers": [{"name", "kind", "inputs", "attrs", "params": [param names]}]}``.

``metadata`` inside the graph is free-form (training method, dataset, accuracy, seed).
Saving is atomic (temporary file + rename).  Loading validates the graph and every
tensor against it and raises :class:`CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import CheckpointError, ModelError, ShapeError
from .graph import Layer, Model
from .safetensors_format import load_tensors, save_tensors
from .shapes import infer_shapes

FORMAT_NAME = "sttn_sim"
SCHEMA_VERSION = 1


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def save_model(model: Model, path, metadata: dict | None = None) -> Path:
    """Save ``model`` (any form) to ``path`` as one safetensors file; atomic.

    ``metadata`` (optional) is merged into ``model.metadata`` in the file.
    """
    if not isinstance(model, Model):
        raise ModelError(f"save_model() expects a sttn_sim Model, got {type(model).__name__}")
    model.validate()
    tensors, layers = {}, []
    for layer in model.layers:
        for pname, value in layer.params.items():
            tensors[f"{layer.name}.{pname}"] = value
        layers.append({"name": layer.name, "kind": layer.kind, "inputs": layer.inputs,
                       "attrs": layer.attrs, "params": list(layer.params)})
    graph = {"arch": model.arch, "form": model.form, "input_shape": list(model.input_shape),
             "metadata": {**model.metadata, **(metadata or {})}, "layers": layers}
    try:
        graph_json = json.dumps(graph, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model metadata or attributes are not JSON-serialisable: {exc}") from None
    save_tensors(path, tensors, {"format": FORMAT_NAME, "schema_version": str(SCHEMA_VERSION), "graph": graph_json})
    return Path(path)


def _graph_from_json(path, text: str) -> dict:
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata key 'graph' is not valid JSON ({exc})") from None
    if not isinstance(graph, dict):
        raise CheckpointError(f"{path}: metadata key 'graph' must be a JSON object")
    for key, kind in (("arch", str), ("form", str), ("input_shape", list), ("layers", list)):
        if not isinstance(graph.get(key), kind):
            raise CheckpointError(f"{path}: graph key {key!r} missing or not a {kind.__name__}")
    return graph


def load_own_format(path) -> Model:
    """Load a model saved by :func:`save_model`."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: a safetensors file without sttn_sim metadata (format={meta.get('format')!r}); "
            f"expected a file written by sttn_sim.save_model")
    version = meta.get("schema_version")
    if version != str(SCHEMA_VERSION):
        raise CheckpointError(f"{path}: schema_version {version!r} is not supported (this sttn_sim reads {SCHEMA_VERSION})")
    graph = _graph_from_json(path, meta.get("graph", ""))
    used, layers = set(), []
    for i, entry in enumerate(graph["layers"]):
        if not isinstance(entry, dict) or not all(k in entry for k in ("name", "kind", "inputs", "attrs", "params")):
            raise CheckpointError(f"{path}: graph layer #{i} must have name, kind, inputs, attrs and params")
        if not (isinstance(entry["name"], str) and isinstance(entry["kind"], str) and isinstance(entry["attrs"], dict)
                and isinstance(entry["inputs"], list) and all(isinstance(s, str) for s in entry["inputs"])
                and isinstance(entry["params"], list) and all(isinstance(s, str) for s in entry["params"])):
            raise CheckpointError(
                f"{path}: graph layer #{i} ({entry.get('name')!r}): name and kind must be strings, attrs an object, "
                f"inputs and params lists of strings")
        params = {}
        for pname in entry["params"]:
            key = f"{entry['name']}.{pname}"
            if key not in tensors:
                raise CheckpointError(f"{path}: tensor {key!r} (layer {entry['name']!r}) is missing")
            params[pname] = tensors[key]
            used.add(key)
        layers.append(Layer(str(entry["name"]), str(entry["kind"]), list(entry["inputs"]), dict(entry["attrs"]), params))
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors not described by the graph: {', '.join(unexpected[:10])}")
    try:
        model = Model(graph["arch"], tuple(graph["input_shape"]), layers, graph["form"], dict(graph.get("metadata") or {}))
        infer_shapes(model)
    except (ModelError, ShapeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:  # e.g. a conv layer without its 'stride' attribute
        raise CheckpointError(
            f"{path}: graph is malformed (a layer attribute, the input_shape or the metadata is missing or "
            f"of the wrong type: {type(exc).__name__} {exc})") from None
    return model


def sniff_format(path) -> str:
    """Identify a checkpoint by its first bytes (never by its name): ``"safetensors"``,
    ``"pytorch-zip"``, ``"pytorch-legacy"`` (a pickle stream, protocol 2-5),
    ``"pytorch-tar"`` (the very old tar-based PyTorch format) or ``"unknown"``."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head.startswith(b"PK\x03\x04"):
        return "pytorch-zip"
    # safetensors before pickle: an 8-byte header length may itself start with 0x80 0x02
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pytorch-legacy"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "pytorch-tar"
    return "unknown"


def load_checkpoint(path, *, input_size: int | None = None) -> Model:
    """Load a model from ``path``, choosing the reader by the file's content (not its name).

    * the project's own safetensors format (:func:`load_own_format`);
    * official STTN PyTorch checkpoints, zip archive or legacy pickle stream, in the
      training form (``resnet18_bwx2`` → a latent model) or the merged form
      (``resnet18_ter`` → a merged model), read by the restricted reader of
      :mod:`sttn_sim.torch_pickle` (nothing in the file is ever executed) and mapped
      by :func:`sttn_sim.official.load_official`.  ``input_size`` (official files
      only; default 224) sets the model's input resolution, which the checkpoint does
      not record.
    """
    kind = sniff_format(path)
    if kind == "safetensors":
        return load_own_format(path)
    if kind in ("pytorch-zip", "pytorch-legacy"):
        from .official import load_official

        return load_official(path, input_size=input_size)
    if kind == "pytorch-tar":
        raise CheckpointError(
            f"{path}: PyTorch checkpoint (pytorch-tar): the very old tar-based PyTorch format is not supported; "
            f"re-save it with a current PyTorch (torch.save) first. Nothing was unpickled.")
    raise CheckpointError(f"{path}: not a recognised checkpoint (neither safetensors nor a PyTorch archive)")

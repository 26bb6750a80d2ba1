"""The project's own model format: ONE safetensors file (never pickle).

Tensors are named ``<layer name>.<param name>`` (e.g. ``features.4.conv1.weight1``);
the safetensors metadata (``__metadata__``, str -> str) holds

* ``format``: ``"sttn_sim"``;
* ``schema_version``: ``"1"``;
* ``graph``: JSON ``{"arch", "form", "input_shape", "metadata",
  "layers": [{"name", "kind", "inputs", "attrs", "params": [param names]}]}``.

``metadata`` inside the graph is free-form (training method, dataset, accuracy, seed).

The file layout itself is the maintained ``safetensors`` package's (``safetensors.numpy``
writes, ``safe_open(..., framework="numpy")`` reads), so any safetensors tool reads our
files and we read theirs.  This module adds what a model file needs on top:

* saving checks every tensor's dtype before anything touches the disk (bool, int8-64,
  uint8-64, float16/32/64: the dtypes sttn_sim uses) and writes atomically through
  :func:`sttn_sim.io.atomic.atomic_path` (temporary file, fsync, rename);
* loading treats the file as untrusted: the package validates the header (size, JSON,
  dtypes, shapes, offsets covering the data section exactly) against the file's real
  length before any tensor is read; then the graph is checked, only the tensors the
  graph names are read (one ``pread`` each: memory and time proportional to the file),
  tensors the graph does not describe are refused without being read, and the model is
  validated (kinds, inputs, shapes).  Every problem, the package's included, is a
  :class:`~sttn_sim.errors.CheckpointError` naming the file and, when known, the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..errors import CheckpointError, ModelError, ShapeError
from ..graph import Layer, Model
from ..shapes import infer_shapes
from .atomic import atomic_path, file_name

__all__ = ["FORMAT_NAME", "SCHEMA_VERSION", "TENSOR_DTYPES", "load_own_format", "save_model", "write_tensors"]

FORMAT_NAME = "sttn_sim"
SCHEMA_VERSION = 1

#: safetensors dtype code -> NumPy dtype, for every dtype sttn_sim writes and reads.
TENSOR_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16), "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32), "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64), "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16), "F32": np.dtype(np.float32), "F64": np.dtype(np.float64),
}
_SUPPORTED = "bool, int8/16/32/64, uint8/16/32/64, float16/32/64"
_GRAPH_KEYS = (("arch", str), ("form", str), ("input_shape", list), ("layers", list))
_LAYER_KEYS = ("name", "kind", "inputs", "attrs", "params")
#: Deepest JSON nesting accepted in the graph (a graph nests 4 levels; metadata a few more).
MAX_GRAPH_DEPTH = 32


# --------------------------------------------------------------------------------------
# writing


def _dtype_code(dtype: np.dtype) -> str | None:
    """The safetensors code of a plain NumPy bool/int/float dtype (any byte order), or None."""
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        return None
    # kind + size, not identity: aliases (np.longlong, '>i8') match; user dtypes (ml_dtypes) do not
    if not issubclass(dtype.type, (np.bool_, np.integer, np.floating)):
        return None
    return next((code for code, dt in TENSOR_DTYPES.items()
                 if (dt.kind, dt.itemsize) == (dtype.kind, dtype.itemsize)), None)


def _storable(name: str, key: str, value) -> np.ndarray:
    """``value`` as a C-contiguous little-endian array of a supported dtype."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"{name}: tensor {key!r} must be a numpy array, got {type(value).__name__}")
    if _dtype_code(value.dtype) is None:
        raise CheckpointError(f"{name}: tensor {key!r} has unsupported dtype {value.dtype} (supported: {_SUPPORTED})")
    return np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d


def write_tensors(path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` and the str -> str ``metadata`` as one safetensors file; atomic.

    Invalid input raises :class:`CheckpointError` before anything touches the disk; a
    failed write (an OS error, or the package's) leaves an existing file untouched and
    no temporary file behind, and raises :class:`CheckpointError` naming the file.
    """
    name = file_name(path, error=CheckpointError)
    arrays = {}
    for key, value in tensors.items():
        if not isinstance(key, str) or not key or key == "__metadata__":
            raise CheckpointError(f"{name}: tensor names must be non-empty strings other than '__metadata__', "
                                  f"got {key!r}")
        arrays[key] = _storable(name, key, value)
    bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise CheckpointError(f"{name}: metadata must map str to str (key {bad[0]!r})")
    for text in [*arrays, *metadata, *metadata.values()]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CheckpointError(f"{name}: the tensor name or metadata string {text!r} is not valid UTF-8 "
                                  f"({exc.reason})") from None
    with atomic_path(name, error=CheckpointError) as tmp:
        try:
            save_file(arrays, tmp, metadata=dict(metadata))
        except SafetensorError as exc:
            raise CheckpointError(f"{name}: cannot write safetensors file ({exc})") from None
    return Path(path)


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

    ``metadata`` (optional) is merged into ``model.metadata`` in the file (the model
    itself is not changed).
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
    return write_tensors(path, tensors, {"format": FORMAT_NAME, "schema_version": str(SCHEMA_VERSION),
                                         "graph": graph_json})


# --------------------------------------------------------------------------------------
# reading


@contextmanager
def _opened(name: str) -> Iterator:
    """``safe_open`` (numpy, pread) with the package's and the OS's errors as CheckpointError."""
    try:
        handle = safe_open(name, framework="numpy", backend="pread")
    except SafetensorError as exc:
        raise CheckpointError(f"{name}: not a valid safetensors file ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    with handle as f:
        yield f


def _read_tensor(f, name: str, key: str, layer: str) -> np.ndarray:
    """The tensor ``key`` as a writable, C-contiguous, native-order array of its own;
    its dtype and (for BOOL) its bytes checked."""
    where = f"{name}: tensor {key!r} (layer {layer!r})"
    try:
        code = f.get_slice(key).get_dtype()
        if code not in TENSOR_DTYPES:
            raise CheckpointError(f"{where} has dtype {code}, which sttn_sim does not read (supported: {_SUPPORTED})")
        array = np.asarray(f.get_tensor(key), dtype=TENSOR_DTYPES[code])  # pread: a fresh array per tensor
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"{where} cannot be read ({type(exc).__name__}: {exc})") from None
    if code == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise CheckpointError(f"{where}: BOOL data holds byte values other than 0 and 1")
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array, copy=True)


def _json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            todo.extend((x, depth + 1) for x in (item.values() if isinstance(item, dict) else item))
    return deepest


def _graph_from_json(name: str, text: str) -> dict:
    try:
        graph = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise CheckpointError(f"{name}: metadata key 'graph' is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{name}: metadata key 'graph' nests too deeply (JSON arrays or objects more than "
                              f"{MAX_GRAPH_DEPTH} levels deep)") from None
    if _json_depth(graph) > MAX_GRAPH_DEPTH:
        raise CheckpointError(f"{name}: metadata key 'graph' nests JSON arrays or objects more than "
                              f"{MAX_GRAPH_DEPTH} levels deep")
    if not isinstance(graph, dict):
        raise CheckpointError(f"{name}: metadata key 'graph' must be a JSON object")
    for key, kind in _GRAPH_KEYS:
        if not isinstance(graph.get(key), kind):
            raise CheckpointError(f"{name}: graph key {key!r} missing or not a {kind.__name__}")
    return graph


def _check_layer_entry(name: str, i: int, entry) -> None:
    if not isinstance(entry, dict) or not all(k in entry for k in _LAYER_KEYS):
        raise CheckpointError(f"{name}: graph layer #{i} must have name, kind, inputs, attrs and params")
    if not (isinstance(entry["name"], str) and isinstance(entry["kind"], str) and isinstance(entry["attrs"], dict)
            and isinstance(entry["inputs"], list) and all(isinstance(s, str) for s in entry["inputs"])
            and isinstance(entry["params"], list) and all(isinstance(s, str) for s in entry["params"])):
        raise CheckpointError(
            f"{name}: graph layer #{i} ({entry.get('name')!r}): name and kind must be strings, attrs an object, "
            f"inputs and params lists of strings")


def _tensor_names(name: str, graph: dict, available: set[str]) -> list[tuple[dict, dict[str, str]]]:
    """Per graph layer: (its entry, param name -> tensor name).  Every named tensor must be
    in the file, and named once (no amplification by repeated names); every tensor of the
    file must be named (the others are refused without being read)."""
    wanted: list[tuple[dict, dict[str, str]]] = []
    used: set[str] = set()
    for i, entry in enumerate(graph["layers"]):
        _check_layer_entry(name, i, entry)
        keys = {}
        for pname in entry["params"]:
            key = f"{entry['name']}.{pname}"
            if key not in available:
                raise CheckpointError(f"{name}: tensor {key!r} (layer {entry['name']!r}) is missing")
            if key in used:
                raise CheckpointError(f"{name}: tensor {key!r} is named twice by the graph")
            used.add(key)
            keys[pname] = key
        wanted.append((entry, keys))
    unexpected = sorted(available - used)
    if unexpected:
        raise CheckpointError(f"{name}: unexpected tensors not described by the graph: "
                              f"{', '.join(unexpected[:10])}")
    return wanted


def _short(exc: Exception, limit: int = 200) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a message that cannot be made is not worth a traceback
        text = ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_from_graph(name: str, graph: dict, layers: list[tuple[dict, dict[str, np.ndarray]]]) -> Model:
    """The Model of ``graph`` with the tensors read for each layer entry; what the graph code
    raises on the file's values (a ModelError, or a KeyError/TypeError/... from a value of
    the wrong kind) is a CheckpointError naming the file."""
    try:
        model = Model(graph["arch"], tuple(graph["input_shape"]),
                      [Layer(entry["name"], entry["kind"], list(entry["inputs"]), dict(entry["attrs"]), params)
                       for entry, params in layers],
                      graph["form"], dict(graph.get("metadata") or {}))
        infer_shapes(model)
    except (ModelError, ShapeError) as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError, RecursionError) as exc:
        # the file's values reach the graph code: e.g. a conv layer without its 'stride' attribute
        raise CheckpointError(
            f"{name}: graph is malformed (a layer attribute, the input_shape or the metadata is missing or "
            f"of the wrong type: {type(exc).__name__} {_short(exc)})") from None
    return model


def load_own_format(path) -> Model:
    """Load a model saved by :func:`save_model` (see the module docstring for the checks)."""
    name = file_name(path, error=CheckpointError)
    with _opened(name) as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{name}: a safetensors file without sttn_sim metadata (format={meta.get('format')!r}); "
                f"expected a file written by sttn_sim.save_model")
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise CheckpointError(f"{name}: schema_version {version!r} is not supported "
                                  f"(this sttn_sim reads {SCHEMA_VERSION})")
        graph = _graph_from_json(name, meta.get("graph", ""))
        wanted = _tensor_names(name, graph, set(f.keys()))
        layers = [(entry, {pname: _read_tensor(f, name, key, entry["name"]) for pname, key in keys.items()})
                  for entry, keys in wanted]
    return _model_from_graph(name, graph, layers)

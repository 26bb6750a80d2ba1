"""A pure-NumPy reader and writer of the safetensors file format.

No dependency on the ``safetensors`` package, and no pickle anywhere: a safetensors file
is plain data.  The layout (https://github.com/huggingface/safetensors) is

* 8 bytes: ``N``, the header size, an unsigned 64-bit little-endian integer;
* ``N`` bytes: a UTF-8 JSON object, optionally padded at the end with spaces::

      {"__metadata__": {"key": "value", ...},
       "<tensor name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
       ...}

  ``data_offsets`` are byte offsets into the data section, which starts right after the
  header;
* the data section: the tensors' elements, little-endian, in C (row-major) order.

:func:`save_tensors` writes tensors in sorted-name order, with no gaps, and pads the
header with spaces to a multiple of 8 bytes, so that the data section is 8-byte aligned.
The file is written atomically: to a temporary file in the same directory, flushed and
fsynced, then moved over ``path`` with :func:`os.replace`.

:func:`load_tensors` treats the file as untrusted.  Every number in the header is checked
against the real length of the file before anything is allocated, and every problem is
reported as a :class:`~sttn_sim.errors.CheckpointError` naming the file (and the tensor).
Gaps between tensors are tolerated (other writers may align their data); overlapping
tensors are not.

Supported dtypes: ``BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 F32 F64`` in both directions,
and ``BF16`` for reading only: NumPy has no bfloat16, so a BF16 tensor is returned as
float32, which is exact (the bfloat16 bits are the upper 16 bits of a float32).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from sttn_sim.errors import CheckpointError
from sttn_sim.fileio import atomic_write_binary

__all__ = [
    "DTYPES",
    "MAX_HEADER_SIZE",
    "load_tensors",
    "read_header",
    "save_tensors",
]

#: The largest header accepted, in bytes (the reference implementation's limit).
MAX_HEADER_SIZE = 100 * 1000 * 1000

_METADATA_KEY = "__metadata__"
_PREFIX = struct.Struct("<Q")
_ALIGNMENT = 8
_MAX_NBYTES = np.iinfo(np.intp).max

#: safetensors dtype code -> little-endian NumPy dtype of the stored elements.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on load
}

# Writable dtypes: (numpy kind, itemsize) -> code.
_WRITABLE = {(DTYPES[c].kind, DTYPES[c].itemsize): c for c in DTYPES if c != "BF16"}


# --------------------------------------------------------------------------- helpers


def _filename(path: Any) -> str:
    try:
        name = os.fspath(path)
    except TypeError:
        raise CheckpointError(
            f"expected a file path (str or os.PathLike), got {type(path).__name__}"
        ) from None
    return os.fsdecode(name)


def _dtype_code(dtype: np.dtype) -> str | None:
    """The safetensors code of a NumPy dtype, or None if it has none."""
    if dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject:
        return None
    # Kind + size rather than dtype identity, so that aliases of the same C type (e.g.
    # np.longlong and np.int64) both match; the type check excludes user-defined dtypes
    # (such as ml_dtypes' bfloat16), which are not NumPy integers or floats.
    if dtype.kind not in "biuf" or not issubclass(
        dtype.type, (np.bool_, np.integer, np.floating)
    ):
        return None
    return _WRITABLE.get((dtype.kind, dtype.itemsize))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# --------------------------------------------------------------------------- header


def _parse_header(raw: bytes, data_len: int, filename: str) -> tuple[dict, dict[str, str]]:
    """Decode and validate a header against a data section of ``data_len`` bytes.

    Returns ``(infos, metadata)`` with ``infos[name] = {"dtype": str, "shape": tuple,
    "data_offsets": (begin, end)}`` in header order.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{filename}: header is not valid UTF-8 ({exc})") from None
    try:
        header = json.loads(
            text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{filename}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{filename}: header must be a JSON object, got {type(header).__name__}"
        )

    metadata: dict[str, str] = {}
    if _METADATA_KEY in header:
        raw_meta = header[_METADATA_KEY]
        if not isinstance(raw_meta, dict):
            raise CheckpointError(
                f"{filename}: '{_METADATA_KEY}' must be a JSON object of strings, "
                f"got {type(raw_meta).__name__}"
            )
        for key, value in raw_meta.items():
            if not isinstance(value, str):
                raise CheckpointError(
                    f"{filename}: metadata value of key {key!r} must be a string, "
                    f"got {type(value).__name__}"
                )
            metadata[key] = value

    infos: dict[str, dict[str, Any]] = {}
    for name, info in header.items():
        if name == _METADATA_KEY:
            continue
        where = f"{filename}: tensor {name!r}"
        if not name:
            raise CheckpointError(f"{filename}: empty tensor name in header")
        if not isinstance(info, dict):
            raise CheckpointError(
                f"{where}: entry must be a JSON object, got {type(info).__name__}"
            )
        for field in ("dtype", "shape", "data_offsets"):
            if field not in info:
                raise CheckpointError(f"{where}: missing field {field!r}")

        code = info["dtype"]
        if not isinstance(code, str) or code not in DTYPES:
            raise CheckpointError(
                f"{where}: unknown dtype {code!r} (supported: {', '.join(DTYPES)})"
            )
        itemsize = DTYPES[code].itemsize

        shape = info["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(
                f"{where}: shape must be a list of non-negative integers, got {shape!r}"
            )
        if len(shape) > 64:
            raise CheckpointError(f"{where}: shape has {len(shape)} dimensions (max 64)")
        if math.prod(max(d, 1) for d in shape) * itemsize > _MAX_NBYTES:
            raise CheckpointError(f"{where}: shape {shape} is too large")

        offsets = info["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
        ):
            raise CheckpointError(
                f"{where}: data_offsets must be a list [begin, end] of two integers, "
                f"got {offsets!r}"
            )
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise CheckpointError(
                f"{where}: data_offsets [{begin}, {end}] are not within the data section "
                f"of {data_len} bytes (file truncated or header corrupt)"
            )
        expected = math.prod(shape) * itemsize
        if end - begin != expected:
            raise CheckpointError(
                f"{where}: data_offsets [{begin}, {end}] span {end - begin} bytes but "
                f"dtype {code} and shape {shape} need {expected}"
            )
        infos[name] = {"dtype": code, "shape": tuple(shape), "data_offsets": (begin, end)}

    spans = sorted(
        (info["data_offsets"][0], info["data_offsets"][1], name)
        for name, info in infos.items()
        if info["data_offsets"][1] > info["data_offsets"][0]
    )
    for (_, prev_end, prev_name), (begin, _, name) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise CheckpointError(
                f"{filename}: tensors {prev_name!r} and {name!r} overlap in the data section"
            )
    return infos, metadata


def _read_prefix(f: Any, filename: str) -> tuple[int, int]:
    """Read the 8-byte prefix; return ``(header_size, file_size)``."""
    file_size = os.fstat(f.fileno()).st_size
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CheckpointError(
            f"{filename}: file is {len(prefix)} bytes long, too short for a safetensors "
            f"file (at least 8 bytes)"
        )
    (header_size,) = _PREFIX.unpack(prefix)
    if header_size > MAX_HEADER_SIZE:
        raise CheckpointError(
            f"{filename}: declared header size {header_size} exceeds the limit of "
            f"{MAX_HEADER_SIZE} bytes (not a safetensors file?)"
        )
    if _PREFIX.size + header_size > file_size:
        raise CheckpointError(
            f"{filename}: declared header size {header_size} is larger than the file "
            f"({file_size} bytes; truncated or not a safetensors file?)"
        )
    return header_size, file_size


def _read_exact(f: Any, n: int, filename: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CheckpointError(
            f"{filename}: file ended while reading the {what} "
            f"({len(data)} of {n} bytes; was it changed while being read?)"
        )
    return data


def read_header(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Read and validate the header of a safetensors file, without reading tensor data.

    Returns ``(infos, metadata)``: ``infos`` maps each tensor name (in header order) to
    ``{"dtype": "F32", "shape": (2, 3), "data_offsets": (begin, end)}``, with offsets
    relative to the start of the data section; ``metadata`` is the ``__metadata__``
    mapping (empty if absent).  Raises :class:`CheckpointError` naming the file.
    """
    filename = _filename(path)
    try:
        with open(filename, "rb") as f:
            header_size, file_size = _read_prefix(f, filename)
            raw = _read_exact(f, header_size, filename, "header")
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot read file ({exc})") from exc
    return _parse_header(raw, file_size - _PREFIX.size - header_size, filename)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Load every tensor of a safetensors file.

    Returns ``(tensors, metadata)``.  ``tensors`` maps names (in header order) to
    writable arrays that own their data, in native byte order, with the declared shape;
    BF16 tensors are widened exactly to float32.  Raises :class:`CheckpointError` naming
    the file (and the tensor) if the file is missing, truncated or malformed.
    """
    filename = _filename(path)
    try:
        with open(filename, "rb") as f:
            header_size, file_size = _read_prefix(f, filename)
            raw = _read_exact(f, header_size, filename, "header")
            data_len = file_size - _PREFIX.size - header_size
            infos, metadata = _parse_header(raw, data_len, filename)
            # Every size was checked against the file's real length: this read is bounded.
            data = _read_exact(f, data_len, filename, "data section")
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot read file ({exc})") from exc

    view = memoryview(data)
    tensors: dict[str, np.ndarray] = {}
    for name, info in infos.items():
        code, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        stored = DTYPES[code]
        try:
            flat = np.frombuffer(view[begin:end], dtype=stored)
            if code == "BOOL":
                bad = flat.view(np.uint8) > 1
                if bad.any():
                    raise CheckpointError(
                        f"{filename}: tensor {name!r}: BOOL data holds byte value "
                        f"{int(flat.view(np.uint8)[bad][0])} (only 0 and 1 are valid)"
                    )
            if code == "BF16":
                array = (flat.astype(np.uint32) << 16).view(np.float32).reshape(shape)
            else:
                # astype always copies: owned, writable, aligned, native byte order.
                array = flat.astype(stored.newbyteorder("="), copy=True).reshape(shape)
        except (ValueError, TypeError, MemoryError) as exc:
            raise CheckpointError(
                f"{filename}: tensor {name!r}: cannot build an array of dtype {code} "
                f"and shape {list(shape)} ({exc})"
            ) from None
        tensors[name] = array
    return tensors, metadata


# --------------------------------------------------------------------------- writing


def _encode_header(header: dict[str, Any], filename: str) -> bytes:
    try:
        raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(
            f"{filename}: a tensor name or metadata string cannot be encoded as UTF-8 "
            f"({exc})"
        ) from None
    return raw + b" " * (-len(raw) % _ALIGNMENT)


def _plan(
    filename: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[tuple[str, np.ndarray, int]]]:
    """Validate the inputs; return the padded header and the write plan."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(
            f"{filename}: tensors must be a mapping of name -> numpy array, "
            f"got {type(tensors).__name__}"
        )
    header: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise CheckpointError(
                f"{filename}: metadata must be a mapping of str -> str, "
                f"got {type(metadata).__name__}"
            )
        meta: dict[str, str] = {}
        for key, value in metadata.items():
            if not isinstance(key, str):
                raise CheckpointError(
                    f"{filename}: metadata key {key!r} must be a str, "
                    f"got {type(key).__name__}"
                )
            if not isinstance(value, str):
                raise CheckpointError(
                    f"{filename}: metadata value of key {key!r} must be a str, "
                    f"got {type(value).__name__}"
                )
            meta[key] = value
        header[_METADATA_KEY] = meta

    for name in tensors:
        if not isinstance(name, str) or not name:
            raise CheckpointError(
                f"{filename}: tensor names must be non-empty str, got {name!r}"
            )
        if name == _METADATA_KEY:
            raise CheckpointError(f"{filename}: {_METADATA_KEY!r} is reserved, not a tensor name")

    plan: list[tuple[str, np.ndarray, int]] = []
    offset = 0
    for name in sorted(tensors):
        array = tensors[name]
        if isinstance(array, np.generic):
            array = np.asarray(array)
        if not isinstance(array, np.ndarray):
            raise CheckpointError(
                f"{filename}: tensor {name!r} must be a numpy array, got {type(array).__name__}"
            )
        code = _dtype_code(array.dtype)
        if code is None:
            raise CheckpointError(
                f"{filename}: tensor {name!r} has unsupported dtype {array.dtype} "
                f"(supported: bool, u/int8-64, float16/32/64)"
            )
        nbytes = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + nbytes],
        }
        plan.append((name, array, nbytes))
        offset += nbytes
    return _encode_header(header, filename), plan


def save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and optional str -> str ``metadata``) to a safetensors file.

    Tensors are written in sorted-name order, little-endian, C order (non-contiguous and
    big-endian arrays are converted); 0-d and zero-size arrays are fine.  Supported
    dtypes: bool, int8/16/32/64, uint8/16/32/64, float16/32/64.  Invalid input raises
    :class:`CheckpointError` before anything touches the disk.  The write is atomic:
    on any failure the temporary file is removed and an existing file at ``path`` is
    left untouched.  OS errors are raised as :class:`CheckpointError` naming the file.
    """
    filename = _filename(path)
    header, plan = _plan(filename, tensors, metadata)
    def write(f) -> None:
        f.write(_PREFIX.pack(len(header)))
        f.write(header)
        for name, array, nbytes in plan:
            little = array.astype(array.dtype.newbyteorder("<"), copy=False)
            payload = little.tobytes(order="C")
            if len(payload) != nbytes:
                raise CheckpointError(
                    f"{filename}: tensor {name!r} produced {len(payload)} bytes, expected {nbytes}"
                )
            f.write(payload)

    atomic_write_binary(filename, write)

"""A writer of PyTorch checkpoint files, without PyTorch.

:func:`write_torch_zip` and :func:`write_torch_legacy` produce files that
``torch.load(path, weights_only=True)`` opens: a protocol-2 pickle written opcode by
opcode here (plain containers, str, int, float, bool, None, NumPy arrays and
:class:`TorchTensor` views), with persistent ids exactly like ``torch.save``'s
(``('storage', torch.XStorage, key, location, numel[, None])``), and

* zip form (``torch.save``'s default): PyTorch's archive layout, ``<archive>/data.pkl``,
  ``.format_version``, ``.storage_alignment``, ``byteorder`` (``little``),
  ``data/<key>`` and ``version`` (``3``), every record's data 64-byte aligned;
* legacy form (``_use_new_zipfile_serialization=False``): magic number, protocol version
  1001, system info, the object, the sorted storage keys, then per storage an 8-byte
  little-endian element count and its bytes.

The formats' constants (storage types, magic number) are those of the reader,
:mod:`sttn_sim.io.torch_reader`.  Writes are atomic (:mod:`sttn_sim.io.atomic`).
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError
from .atomic import atomic_write_binary, file_name
from .torch_reader import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, STORAGE_TYPES

__all__ = ["TorchTensor", "torch_pickle_bytes", "write_torch_legacy", "write_torch_zip"]


@dataclass
class TorchTensor:
    """A tensor to write with explicit storage layout (views, offsets, device tags).

    ``storage`` is a 1-D array (its identity decides which tensors share a storage);
    the tensor is ``as_strided(storage[offset:], size, stride)`` in elements.
    ``storage_type`` overrides the torch storage class (e.g. ``"BFloat16Storage"`` for a
    uint16 array of bfloat16 bits); ``location`` is the device tag written
    (``"cpu"``, ``"cuda:0"``).
    """

    storage: np.ndarray
    size: tuple[int, ...]
    stride: tuple[int, ...] | None = None
    offset: int = 0
    location: str = "cpu"
    storage_type: str | None = None


_NUMPY_TO_STORAGE = {
    ("f", 4): "FloatStorage", ("f", 8): "DoubleStorage", ("f", 2): "HalfStorage",
    ("i", 8): "LongStorage", ("i", 4): "IntStorage", ("i", 2): "ShortStorage", ("i", 1): "CharStorage",
    ("u", 1): "ByteStorage", ("b", 1): "BoolStorage",
}

_P = pickle  # opcode constants


class _PickleWriter:
    """Writes a protocol-2 pickle of plain containers and tensors like ``torch.save``."""

    def __init__(self, legacy: bool, location: str = "cpu"):
        self.out = bytearray(b"\x80\x02")
        self.memo: dict[Any, int] = {}
        self.legacy = legacy
        self.location = location
        self.storages: dict[int, tuple[str, np.ndarray, str]] = {}  # id(storage) -> (key, array, type name)
        self.keepalive: list = []

    def _put(self, key) -> None:
        idx = len(self.memo)
        self.memo[key] = idx
        self.out += _P.BINPUT + bytes([idx]) if idx < 256 else _P.LONG_BINPUT + struct.pack("<I", idx)

    def _get(self, key) -> bool:
        idx = self.memo.get(key)
        if idx is None:
            return False
        self.out += _P.BINGET + bytes([idx]) if idx < 256 else _P.LONG_BINGET + struct.pack("<I", idx)
        return True

    def global_(self, module: str, name: str) -> None:
        if not self._get(("global", module, name)):
            self.out += _P.GLOBAL + f"{module}\n{name}\n".encode("ascii")
            self._put(("global", module, name))

    def int_(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += _P.BININT1 + bytes([v])
        elif 0 <= v < 65536:
            self.out += _P.BININT2 + struct.pack("<H", v)
        elif -(2**31) <= v < 2**31:
            self.out += _P.BININT + struct.pack("<i", v)
        else:
            enc = pickle.encode_long(v)
            if len(enc) > 255:
                raise CheckpointError(f"integer {v} is too large to write")
            self.out += _P.LONG1 + bytes([len(enc)]) + enc

    def str_(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.out += _P.BINUNICODE + struct.pack("<I", len(raw)) + raw

    def tuple_(self, items) -> None:
        items = list(items)
        if not items:
            self.out += _P.EMPTY_TUPLE
            return
        if len(items) > 3:
            self.out += _P.MARK
        for item in items:
            self.value(item)
        self.out += {1: _P.TUPLE1, 2: _P.TUPLE2, 3: _P.TUPLE3}.get(len(items), _P.TUPLE)

    def ordered_dict_empty(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out += _P.EMPTY_TUPLE + _P.REDUCE

    def tensor(self, t: TorchTensor) -> None:
        storage = t.storage
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise CheckpointError("a TorchTensor storage must be a 1-D numpy array")
        type_name = t.storage_type or _NUMPY_TO_STORAGE.get((storage.dtype.kind, storage.dtype.itemsize))
        if type_name is None or type_name not in STORAGE_TYPES:
            raise CheckpointError(f"numpy dtype {storage.dtype} has no torch storage type")
        entry = self.storages.get(id(storage))
        if entry is None:
            entry = (str(len(self.storages)), storage, type_name)
            self.storages[id(storage)] = entry
            self.keepalive.append(storage)
        elif entry[2] != type_name:
            raise CheckpointError("one storage written with two storage types")
        size = tuple(int(d) for d in t.size)
        if t.stride is None:
            stride, acc = [], 1
            for d in reversed(size):
                stride.append(acc)
                acc *= d
            stride = tuple(reversed(stride))
        else:
            stride = tuple(int(s) for s in t.stride)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += _P.MARK
        # persistent id, exactly like torch.save: ('storage', torch.XStorage, key, location, numel[, None])
        self.out += _P.MARK
        self.str_("storage")
        self.global_("torch", type_name)
        self.str_(entry[0])
        self.str_(t.location)
        self.int_(int(storage.size))
        if self.legacy:
            self.out += _P.NONE
        self.out += _P.TUPLE + _P.BINPERSID
        self.int_(int(t.offset))
        self.tuple_(size)
        self.tuple_(stride)
        self.out += _P.NEWFALSE
        self.ordered_dict_empty()
        self.out += _P.TUPLE + _P.REDUCE

    def array(self, a: np.ndarray) -> None:
        a = np.asarray(a)
        if (a.dtype.kind, a.dtype.itemsize) not in _NUMPY_TO_STORAGE:
            raise CheckpointError(f"numpy dtype {a.dtype} has no torch storage type")
        flat = np.ascontiguousarray(a).reshape(-1).copy()
        self.tensor(TorchTensor(flat, a.shape, location=self.location))

    def value(self, v) -> None:
        if v is None:
            self.out += _P.NONE
        elif v is True:
            self.out += _P.NEWTRUE
        elif v is False:
            self.out += _P.NEWFALSE
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            self.int_(int(v))
        elif isinstance(v, (float, np.floating)):
            self.out += _P.BINFLOAT + struct.pack(">d", float(v))
        elif isinstance(v, str):
            self.str_(v)
        elif isinstance(v, TorchTensor):
            self.tensor(v)
        elif isinstance(v, (np.ndarray, np.bool_)):
            self.array(v)
        elif isinstance(v, tuple):
            self.tuple_(v)
        elif isinstance(v, list):
            self.out += _P.EMPTY_LIST
            if v:
                self.out += _P.MARK
                for item in v:
                    self.value(item)
                self.out += _P.APPENDS
        elif isinstance(v, dict):
            if isinstance(v, OrderedDict):
                self.ordered_dict_empty()
            else:
                self.out += _P.EMPTY_DICT
            if v:
                self.out += _P.MARK
                for k, item in v.items():
                    if not isinstance(k, (str, int)):
                        raise CheckpointError(f"dict key {k!r}: only str and int keys can be written")
                    self.value(k)
                    self.value(item)
                self.out += _P.SETITEMS
        else:
            raise CheckpointError(f"cannot write a {type(v).__name__} into a PyTorch checkpoint")

    def finish(self) -> bytes:
        return bytes(self.out + _P.STOP)


def torch_pickle_bytes(obj, *, legacy: bool = False, location: str = "cpu"):
    """The protocol-2 pickle of ``obj`` as ``torch.save`` writes it, and its storages.

    Returns ``(pickle_bytes, [(key, type_name, data_bytes)])``.  ``obj`` may hold
    dicts (an :class:`~collections.OrderedDict` is written as one), lists, tuples, str,
    int, float, bool, None, NumPy arrays and :class:`TorchTensor`.
    """
    w = _PickleWriter(legacy, location)
    w.value(obj)
    storages = []
    for key, array, type_name in w.storages.values():
        code = STORAGE_TYPES[type_name]
        dtype = np.dtype("<u2") if code == "bf16" else np.dtype(code)
        storages.append((key, type_name, np.ascontiguousarray(array).astype(dtype, copy=False).tobytes()))
    return w.finish(), storages


def _write_aligned_zip(f, records: list[tuple[str, bytes]], alignment: int = 64) -> None:
    """A stored zip whose every record's data starts at a multiple of ``alignment``
    (padding in an extra field with id ``FB``, as PyTorch's writer does)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            header = 30 + len(name.encode("utf-8")) + 4
            pad = (-(f.tell() + header)) % alignment
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            zf.writestr(info, data)


def write_torch_zip(path, obj, *, archive_name: str = "archive", location: str = "cpu") -> str:
    """Write ``obj`` as a PyTorch zip checkpoint (``torch.save``'s default format); atomic.

    Layout: ``<archive_name>/data.pkl``, ``.format_version``, ``.storage_alignment``,
    ``byteorder`` (``little``), ``data/<key>`` (64-byte aligned), ``version`` (``3``).
    """
    filename = file_name(path, error=CheckpointError)
    if not archive_name or "/" in archive_name:
        raise CheckpointError(f"{filename}: archive_name must be a non-empty name without '/'")
    pkl, storages = torch_pickle_bytes(obj, location=location)
    records = [(f"{archive_name}/data.pkl", pkl), (f"{archive_name}/.format_version", b"1"),
               (f"{archive_name}/.storage_alignment", b"64"), (f"{archive_name}/byteorder", b"little")]
    records += [(f"{archive_name}/data/{key}", data) for key, _, data in storages]
    records += [(f"{archive_name}/version", b"3\n")]
    atomic_write_binary(filename, lambda f: _write_aligned_zip(f, records), error=CheckpointError)
    return filename


def write_torch_legacy(path, obj, *, location: str = "cpu") -> str:
    """Write ``obj`` in the legacy non-zip format of
    ``torch.save(obj, f, _use_new_zipfile_serialization=False)``; atomic."""
    filename = file_name(path, error=CheckpointError)
    pkl, storages = torch_pickle_bytes(obj, legacy=True, location=location)

    def plain(value) -> bytes:
        w = _PickleWriter(legacy=True)
        w.value(value)
        return w.finish()

    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    by_key = {key: (type_name, data) for key, type_name, data in storages}
    keys = sorted(by_key)

    def write(f):
        f.write(plain(LEGACY_MAGIC_NUMBER))
        f.write(plain(LEGACY_PROTOCOL_VERSION))
        f.write(plain(sys_info))
        f.write(pkl)
        f.write(plain(keys))
        for key in keys:
            type_name, data = by_key[key]
            code = STORAGE_TYPES[type_name]
            itemsize = 2 if code == "bf16" else np.dtype(code).itemsize
            f.write(struct.pack("<q", len(data) // itemsize))
            f.write(data)

    atomic_write_binary(filename, write, error=CheckpointError)
    return filename

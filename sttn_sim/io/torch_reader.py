"""A restricted reader of PyTorch checkpoint files, without PyTorch.

Reading never runs code from the file.  ``pickle.load`` and ``torch.load`` are never
called; instead

1. every pickle in the file is first *scanned* opcode by opcode
   (:func:`sttn_sim.io.pickle_scan.scan_pickle`: one compiled linear pass that
   simulates the unpickler's stack, so nothing is built yet): opcodes that build
   arbitrary objects (``INST``, ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX``, ``EXT*``, text
   ``PERSID``, out-of-band buffers) are refused, every ``GLOBAL`` must be on the
   allow-list below, memo indices and declared lengths are bounded, the nesting depth
   of every container is measured and bounded (``MAX_DEPTH``: a deeply nested tuple
   would crash the interpreter when hashed), and so is the number of objects the
   unpickler would create (:data:`OBJECTS_PER_FILE_BYTE`);
2. the pickle is then unpickled by :class:`RestrictedUnpickler`, a
   :class:`pickle.Unpickler` whose :meth:`~RestrictedUnpickler.find_class` maps the
   allow-listed globals to this module's own harmless functions (they build small
   placeholder records, never tensors or arbitrary objects) and refuses everything
   else with a :class:`~sttn_sim.errors.CheckpointError` naming ``module.name``.
   ``BUILD`` on any placeholder is refused; ``BUILD`` on builtin containers fails
   (they have no ``__dict__``); the only ``BUILD`` accepted is the ``_metadata``
   attribute PyTorch attaches to a state_dict ``OrderedDict`` (it is dropped);
3. ``persistent_load`` resolves storage ids
   ``('storage', <torch.XStorage>, key, location, numel[, view])``: the dtype comes
   from the storage type, the location (``'cpu'``, ``'cuda:0'``, ...) is only recorded
   (all data goes to host memory), and the declared size is checked against the real
   data before anything is read;
4. every tensor record is checked against its storage (size, stride and storage offset:
   the largest element index must lie inside it) and the bytes every tensor will
   produce are counted, all before any storage data is read; then each storage is
   read once, only the element range its tensors use (a deflated zip entry is inflated
   in 1 MiB steps up to the last byte used, never whole);
5. finally every tensor is turned into a NumPy array: the strided view is taken with
   ``as_strided`` on that bounds-checked buffer and copied out in native byte order.
   Tensors that share a storage (views) read the same bytes.

Resource bounds, all proportional to the file's size ``S`` (a real checkpoint stays far
below each; every one is checked before the memory is spent):

* ``data.pkl`` may expand to at most ``PICKLE_RATIO x S + PICKLE_SLACK`` bytes
  (8 x S + 1 MiB: a checkpoint's pickle is small next to its tensors, and deflates
  about 4:1) and never beyond :data:`MAX_PICKLE_BYTES`; the scan runs at tens of MB/s
  on adversarial streams and over 100 MB/s on a real ``data.pkl``;
* a pickle may create at most ``S // OBJECTS_PER_FILE_BYTE + OBJECTS_SLACK`` objects
  (S/16 + 32768: PyTorch writes ~15 pickle bytes per object into a file at least as
  large), which bounds the unpickler's memory (up to ~250 bytes per object, an empty
  set) and the time spent on them;
* the bytes inflated from deflated storage entries, *counting every byte inflated*
  (used by a tensor or not), total at most ``INFLATE_RATIO x S + INFLATE_SLACK``
  (8 x S + 16 MiB); each storage may inflate what is left of that;
* the arrays produced (views of one storage included) total at most
  ``MATERIALISE_RATIO x S + MATERIALISE_SLACK`` (4 x S + 16 MiB).

Allow-list (module.name → what it becomes here):

* ``collections.OrderedDict`` → a dict (keys keep their order);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` → a tensor record;
* ``torch._utils._rebuild_parameter`` / ``_rebuild_parameter_with_state`` → its data
  (a Parameter is just a tensor here; hooks and state are ignored);
* ``torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage``,
  ``torch.UntypedStorage`` / ``torch.storage.UntypedStorage`` → storage type tags
  (only usable inside a persistent id); ``torch.storage.TypedStorage`` is recognised
  and refused in a persistent id (it carries no dtype);
* ``torch.device`` → the device string (``'cuda:0'``);
* ``builtins.set`` / ``frozenset`` / ``bytes`` / ``bytearray`` / ``complex`` (and the
  Python 2 ``__builtin__`` spellings) and ``_codecs.encode`` (protocol-2 ``bytes``) →
  checked wrappers that accept only plain values (``bytearray(10**12)`` and
  ``bytes(10**12)`` are refused, not allocated).

Formats: zip archives (``<any name>/data.pkl``, ``<name>/data/<key>``,
``<name>/byteorder``, ``<name>/version``; stored or deflated entries) and the legacy
non-zip stream of ``torch.save(..., _use_new_zipfile_serialization=False)`` (magic
number pickle, protocol version 1001, system info, the object, the sorted list of
storage keys, then per storage an 8-byte little-endian element count and its bytes).
The very old tar format is recognised and refused.  Storage dtypes: float32, float64,
float16, bfloat16 (widened exactly to float32: NumPy has no bfloat16), int64, int32,
int16, int8, uint8, bool.

The writer of the same formats is :mod:`sttn_sim.io.torch_writer`.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import CheckpointError, SttnError
from .atomic import file_name
from .pickle_scan import MAX_DEPTH, ScanRefused
from .pickle_scan import scan_pickle as _scan_opcodes

__all__ = [
    "LEGACY_MAGIC_NUMBER",
    "LEGACY_PROTOCOL_VERSION",
    "STORAGE_TYPES",
    "ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "TorchFile",
    "read_torch_file",
    "scan_pickle",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

#: torch storage class name -> numpy dtype of the stored (little-endian) elements.
#: ``"bf16"`` is raw uint16 bits, widened to float32 on read.
STORAGE_TYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "|i1",
    "ByteStorage": "|u1",
    "BoolStorage": "|b1",
    "UntypedStorage": "|u1",
}

MAX_NDIM = 64
_MAX_DIM = 1 << 48  # no real dimension or stride comes near this; keeps NumPy's index arithmetic in range
MAX_PICKLE_BYTES = 1 << 30
#: data.pkl may expand to PICKLE_RATIO x file size + PICKLE_SLACK bytes
PICKLE_RATIO, PICKLE_SLACK = 8, 1 << 20
#: a pickle may create file size // OBJECTS_PER_FILE_BYTE + OBJECTS_SLACK objects
OBJECTS_PER_FILE_BYTE, OBJECTS_SLACK = 16, 1 << 15
#: bytes inflated from deflated storage entries: INFLATE_RATIO x file size + INFLATE_SLACK in total
INFLATE_RATIO, INFLATE_SLACK = 8, 16 << 20
#: bytes of the arrays produced: MATERIALISE_RATIO x file size + MATERIALISE_SLACK in total
MATERIALISE_RATIO, MATERIALISE_SLACK = 4, 16 << 20
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032:1
_INFLATE_CHUNK = 1 << 20  # deflated entries are inflated in steps of this size


class _Refused(Exception):
    """Internal: a reason to refuse the file (turned into CheckpointError with the file name)."""


# --------------------------------------------------------------------------------------
# placeholder objects built by the allow-listed callables


class _Sealed:
    """Base of every object the unpickler may put on its stack: refuses BUILD and pickling."""

    __slots__ = ()

    def __setstate__(self, state):  # BUILD
        raise _Refused(f"BUILD (setting state) on a {type(self).__name__.lstrip('_')} is not allowed")

    def __reduce_ex__(self, protocol):
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class _StorageTag(_Sealed):
    """Stands for a torch storage class (``torch.FloatStorage``); used in persistent ids."""

    __slots__ = ("name", "code")

    def __init__(self, name: str, code: str | None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "code", code)

    def __call__(self, *args, **kwargs):
        raise _Refused(f"calling torch.{self.name} is not allowed (storage types only appear in persistent ids)")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _SafeCallable(_Sealed):
    """An allow-listed global: calls one of this module's own functions."""

    __slots__ = ("qualname", "func")

    def __init__(self, qualname: str, func: Callable):
        object.__setattr__(self, "qualname", qualname)
        object.__setattr__(self, "func", func)

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _Refused(f"{self.qualname} called with keyword arguments")
        return self.func(*args)

    def __repr__(self) -> str:
        return self.qualname


class _StorageRef(_Sealed):
    """A storage resolved by ``persistent_load``: type, key, device tag and size."""

    __slots__ = ("key", "tag", "location", "numel", "dtype", "itemsize", "loader", "parent", "elem_offset")

    def __init__(self, key, tag, location, numel, dtype, loader, parent=None, elem_offset=0):
        for name, value in (("key", key), ("tag", tag), ("location", location), ("numel", numel),
                            ("dtype", dtype), ("itemsize", dtype.itemsize), ("loader", loader),
                            ("parent", parent), ("elem_offset", elem_offset)):
            object.__setattr__(self, name, value)


class _TensorRecord(_Sealed):
    """A tensor described by ``_rebuild_tensor_v2``; materialised after unpickling."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)


class _PickledDict(dict):
    """The ``collections.OrderedDict`` of a pickle (a plain dict keeps order).

    PyTorch attaches ``_metadata`` (module versions) to a state_dict; BUILD with exactly
    that attribute is accepted and the value dropped.  Any other state is refused.
    """

    __slots__ = ()

    def __setstate__(self, state):
        if isinstance(state, dict) and set(state) <= {"_metadata"}:
            return
        if isinstance(state, tuple) and len(state) == 2 and state[0] is None and isinstance(state[1], dict) \
                and set(state[1]) <= {"_metadata"}:
            return
        raise _Refused("BUILD on an OrderedDict with state other than '_metadata' is not allowed")

    def __reduce_ex__(self, protocol):
        raise TypeError("_PickledDict cannot be pickled")


# --------------------------------------------------------------------------------------
# the allow-listed functions (all arguments checked; nothing here allocates by request)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ordered_dict(*args):
    if not args:
        return _PickledDict()
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        result = _PickledDict()
        for item in args[0]:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise _Refused("collections.OrderedDict called with items that are not (key, value) pairs")
            result[item[0]] = item[1]
        return result
    raise _Refused("collections.OrderedDict called with unexpected arguments")


def _check_sizes(size, stride, offset, what: str):
    if not isinstance(size, tuple) or not all(_is_int(d) and d >= 0 for d in size):
        raise _Refused(f"{what}: size must be a tuple of non-negative integers, got {_short(size)}")
    if not isinstance(stride, tuple) or len(stride) != len(size) or not all(_is_int(s) and s >= 0 for s in stride):
        raise _Refused(f"{what}: stride must be a tuple of {len(size)} non-negative integers, got {_short(stride)}")
    if len(size) > MAX_NDIM:
        raise _Refused(f"{what}: {len(size)} dimensions (at most {MAX_NDIM})")
    if any(d >= _MAX_DIM for d in size) or any(st >= _MAX_DIM for st in stride):
        raise _Refused(f"{what}: size {_short(size)} or stride {_short(stride)} is absurdly large")
    if not _is_int(offset) or offset < 0:
        raise _Refused(f"{what}: storage offset must be a non-negative integer, got {_short(offset)}")


def _rebuild_tensor_v2(storage=None, storage_offset=None, size=None, stride=None, requires_grad=False,
                       backward_hooks=None, metadata=None, *extra):
    if not isinstance(storage, _StorageRef):
        raise _Refused(f"torch._utils._rebuild_tensor_v2: first argument must be a storage, got {_short(storage)}")
    if isinstance(size, list):
        size = tuple(size)
    if isinstance(stride, list):
        stride = tuple(stride)
    _check_sizes(size, stride, storage_offset, "torch._utils._rebuild_tensor_v2")
    if not isinstance(requires_grad, bool):
        raise _Refused("torch._utils._rebuild_tensor_v2: requires_grad must be a bool")
    return _TensorRecord(storage, storage_offset, size, stride)


def _rebuild_tensor(storage=None, storage_offset=None, size=None, stride=None, *extra):
    if extra:
        raise _Refused("torch._utils._rebuild_tensor: too many arguments")
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data=None, requires_grad=False, backward_hooks=None, *extra):
    if not isinstance(data, _TensorRecord):
        raise _Refused(f"torch._utils._rebuild_parameter: data must be a tensor, got {_short(data)}")
    return data


def _rebuild_parameter_with_state(data=None, requires_grad=False, backward_hooks=None, state=None, *extra):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _device(kind=None, index=None, *extra):
    if extra or not isinstance(kind, str) or not (index is None or _is_int(index)):
        raise _Refused("torch.device called with unexpected arguments")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text=None, encoding=None, *extra):
    if extra or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only as (str, 'latin1') for protocol-2 bytes")
    return text.encode("latin-1")


def _bytearray(data=b"", encoding=None, *extra):
    if extra:
        raise _Refused("builtins.bytearray: too many arguments")
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin-1"))
    if isinstance(data, (bytes, bytearray)) and encoding is None:
        return bytearray(data)
    raise _Refused("builtins.bytearray is allowed only on bytes or (str, 'latin-1')")


def _bytes(data=b"", *extra):
    if extra or not isinstance(data, (bytes, bytearray)):
        raise _Refused("builtins.bytes is allowed only without arguments or on bytes (protocol-2 empty bytes)")
    return bytes(data)


def _set(items=(), *extra):
    if extra or not isinstance(items, (list, tuple)):
        raise _Refused("builtins.set is allowed only on a list or tuple")
    return set(items)


def _frozenset(items=(), *extra):
    if extra or not isinstance(items, (list, tuple)):
        raise _Refused("builtins.frozenset is allowed only on a list or tuple")
    return frozenset(items)


def _complex(real=0.0, imag=0.0, *extra):
    if extra or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (real, imag)):
        raise _Refused("builtins.complex is allowed only on two numbers")
    return complex(real, imag)


def _build_allow_list() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {}

    def fn(module, name, func):
        table[(module, name)] = _SafeCallable(f"{module}.{name}", func)

    fn("collections", "OrderedDict", _ordered_dict)
    fn("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    fn("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    fn("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    fn("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter_with_state)
    fn("torch", "device", _device)
    fn("_codecs", "encode", _codecs_encode)
    for builtins_name in ("builtins", "__builtin__"):
        fn(builtins_name, "set", _set)
        fn(builtins_name, "frozenset", _frozenset)
        fn(builtins_name, "bytearray", _bytearray)
        fn(builtins_name, "bytes", _bytes)
        fn(builtins_name, "complex", _complex)
    for name, code in STORAGE_TYPES.items():
        table[("torch", name)] = _StorageTag(name, code)
    table[("torch.storage", "UntypedStorage")] = _StorageTag("UntypedStorage", STORAGE_TYPES["UntypedStorage"])
    table[("torch.storage", "TypedStorage")] = _StorageTag("TypedStorage", None)
    return table


_ALLOW = _build_allow_list()
_ALLOWED_PAIRS = frozenset(_ALLOW)
#: The globals a checkpoint pickle may name, as ``"module.name"`` strings.
ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(f"{m}.{n}" for m, n in _ALLOW))

def _short(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - our own objects always have a repr
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_global(module: str, name: str) -> _Refused:
    return _Refused(
        f"refused to load global '{module}.{name}': only tensor, storage and plain-container types are allowed "
        f"(nothing was executed)")


# --------------------------------------------------------------------------------------
# scanning and unpickling


def scan_pickle(data: bytes, start: int = 0, max_objects: int = 1 << 62) -> int:
    """Check the pickle starting at ``data[start]`` opcode by opcode against this
    module's allow-list (:func:`sttn_sim.io.pickle_scan.scan_pickle`); return its end
    offset.  Raises ``_Refused`` for a disallowed opcode or global, an out-of-range memo
    index, nesting deeper than ``MAX_DEPTH``, more than ``max_objects`` objects, or a
    malformed / truncated pickle.  Nothing is unpickled."""
    try:
        return _scan_opcodes(data, start, _ALLOWED_PAIRS, max_objects)
    except ScanRefused as exc:
        raise _Refused(str(exc)) from None


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that only knows the allow-list of this module.

    ``persistent_load`` (optional) resolves storage ids; without it any persistent id is
    refused.  Use :func:`scan_pickle` first: it bounds lengths and memo indices and
    refuses object-building opcodes before this class sees the data.
    """

    def __init__(self, file, persistent: Callable[[Any], Any] | None = None):
        super().__init__(file, encoding="utf-8", errors="strict")
        self._persistent = persistent

    def find_class(self, module, name):  # noqa: D401 - pickle API
        target = _ALLOW.get((module, name)) if isinstance(module, str) and isinstance(name, str) else None
        if target is None:
            raise _refuse_global(str(module), str(name))
        return target

    def persistent_load(self, pid):  # noqa: D401 - pickle API
        if self._persistent is None:
            raise _Refused(f"unexpected persistent id {_short(pid)}")
        return self._persistent(pid)


def _unpickle(data: bytes, start: int, max_objects: int, persistent=None) -> tuple[Any, int]:
    """Scan, then unpickle the pickle at ``data[start:]``; return (object, end offset)."""
    end = scan_pickle(data, start, max_objects)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data[start:end]), persistent).load()
    except _Refused:
        raise
    except SttnError:
        raise
    except RecursionError:
        raise _Refused(f"the pickle at byte {start} nests too deeply") from None
    except Exception as exc:  # any failure inside the restricted unpickler is a malformed file
        raise _Refused(f"the pickle at byte {start} is malformed ({type(exc).__name__}: {exc})") from None
    return obj, end


def _ascii(value, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise _Refused(f"{what} is not ASCII") from None
    if not isinstance(value, str):
        raise _Refused(f"{what} must be a string, got {_short(value)}")
    return value


class _StorageTable:
    """Resolves persistent ids; one :class:`_StorageRef` per key (views share it)."""

    def __init__(self, declare: Callable[[str, "_StorageTag", str, int], Callable[[], np.ndarray]], byteorder: str):
        self.declare = declare
        self.byteorder = byteorder
        self.refs: dict[str, _StorageRef] = {}
        self.views: dict[str, _StorageRef] = {}
        self.devices: list[str] = []

    def _dtype(self, tag: _StorageTag) -> np.dtype:
        code = tag.code
        if code == "bf16":
            dtype = np.dtype("<u2")
        else:
            dtype = np.dtype(code)
        if self.byteorder == "big" and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(">")
        return dtype

    def __call__(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise _Refused(f"persistent id {_short(pid)} is not a torch storage id")
        if not isinstance(pid[0], (str, bytes)) or _ascii(pid[0], "persistent id type") != "storage":
            raise _Refused(f"persistent id of type {_short(pid[0])} is not supported (only 'storage'; a pickled "
                           f"nn.Module class is refused)")
        if len(pid) not in (5, 6):
            raise _Refused(f"persistent id {_short(pid)} is not a torch storage id")
        tag, key, location, numel = pid[1:5]
        if not isinstance(tag, _StorageTag):
            raise _Refused(f"persistent id {_short(pid)}: {_short(tag)} is not a torch storage type")
        if tag.code is None:
            raise _Refused(f"persistent id {_short(pid)}: torch.storage.{tag.name} carries no dtype")
        key = _ascii(key, "storage key")
        location = _ascii(location, f"storage {key!r} location")
        if not _is_int(numel) or numel < 0:
            raise _Refused(f"storage {key!r}: element count must be a non-negative integer, got {_short(numel)}")
        if location not in self.devices:
            self.devices.append(location)
        ref = self.refs.get(key)
        if ref is None:
            dtype = self._dtype(tag)
            loader = self.declare(key, tag, location, numel * dtype.itemsize)
            ref = _StorageRef(key, tag, location, numel, dtype, loader)
            self.refs[key] = ref
        elif ref.tag is not tag or ref.numel != numel:
            raise _Refused(f"storage {key!r} is declared twice with different types or sizes "
                           f"({ref.tag!r} x {ref.numel} and {tag!r} x {numel})")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return ref
        # legacy storage views: (view_key, offset, size) in elements of the root storage
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])):
            raise _Refused(f"storage {key!r}: malformed view metadata {_short(view)}")
        view_key = _ascii(view[0], "storage view key")
        v_off, v_size = view[1], view[2]
        if v_off < 0 or v_size < 0 or v_off + v_size > numel:
            raise _Refused(f"storage view {view_key!r} [{v_off}, {v_off + v_size}) is outside storage {key!r} "
                           f"of {numel} elements")
        existing = self.views.get(view_key)
        if existing is None:
            existing = _StorageRef(view_key, tag, location, v_size, ref.dtype, None, parent=ref, elem_offset=v_off)
            self.views[view_key] = existing
        return existing


class _Budget:
    """What reading one file may still cost: bytes of arrays to produce and bytes to
    inflate from deflated entries, both proportional to the file size (module docstring)."""

    def __init__(self, file_size: int):
        self.materialise = MATERIALISE_RATIO * file_size + MATERIALISE_SLACK
        self.inflate = INFLATE_RATIO * file_size + INFLATE_SLACK

    def spend_materialise(self, nbytes: int, what: str) -> None:
        if nbytes > self.materialise:
            raise _Refused(f"{what} needs {nbytes} bytes, more than the file can justify ({self.materialise} bytes "
                           f"left of the budget of {MATERIALISE_RATIO} x file size + "
                           f"{MATERIALISE_SLACK >> 20} MiB)")
        self.materialise -= nbytes

    def inflate_step(self, wanted: int, what: str) -> int:
        """How many more bytes may be inflated now (at most ``wanted``); refuses when none."""
        if self.inflate <= 0:
            raise _Refused(f"{what}: inflating more than {INFLATE_RATIO} x file size + {INFLATE_SLACK >> 20} MiB "
                           f"in total, more than the file can justify")
        return min(wanted, self.inflate)

    def spend_inflate(self, nbytes: int) -> None:
        self.inflate -= nbytes


#: the scalar types an unpickled object can have (exact: the unpickler makes no subclasses)
_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})


def _root(ref: _StorageRef) -> tuple[_StorageRef, int]:
    """The storage that holds ``ref``'s data and ``ref``'s first element in it."""
    base = 0
    while ref.parent is not None:
        base += ref.elem_offset
        ref = ref.parent
    return ref, base


class _Materialiser:
    """Turns the unpickled tree into plain Python + NumPy, within a byte budget.

    Three steps: :meth:`plan` checks every tensor against its storage, counts the bytes
    the arrays will take (refused beyond the budget) and notes the element range each
    root storage must supply; :meth:`load` reads those ranges (nothing else); then
    :meth:`convert` builds the result.
    """

    def __init__(self, budget: _Budget):
        self.budget = budget
        self.cache: dict = {}
        self.tensors = 0
        self.needed: dict[int, tuple[_StorageRef, int, int]] = {}  # id(root) -> (root, first, end) elements
        self.loaded: dict[int, tuple[np.ndarray, int]] = {}  # id(root) -> (elements first..end-1, first)

    def _need(self, ref: _StorageRef, first: int, end: int) -> None:
        root, base = _root(ref)
        lo, hi = base + first, base + end
        known = self.needed.get(id(root))
        if known is not None:
            lo, hi = min(lo, known[1]), max(hi, known[2])
        self.needed[id(root)] = (root, lo, hi)

    def plan(self, obj) -> None:
        """Check and count every tensor and storage in ``obj`` (walked iteratively, each
        object once, no deeper than ``MAX_DEPTH``); read nothing."""
        seen: set[int] = set()
        counted: set = set()
        todo = [(obj, 0)]
        while todo:
            item, depth = todo.pop()
            kind = type(item)
            if kind in _PLAIN_TYPES or id(item) in seen:
                continue
            seen.add(id(item))
            if depth > MAX_DEPTH:
                raise _Refused(f"containers nest deeper than {MAX_DEPTH} levels")
            if kind is _TensorRecord:
                self._plan_tensor(item, counted)
            elif kind is _StorageRef:
                if item.numel:
                    self.budget.spend_materialise(item.numel * item.itemsize, f"storage {item.key!r}")
                    self._need(item, 0, item.numel)
            elif isinstance(item, dict):
                todo.extend((x, depth + 1) for kv in item.items() for x in kv)
            elif kind in (list, tuple, set, frozenset):
                todo.extend((x, depth + 1) for x in item)

    def _plan_tensor(self, rec: _TensorRecord, counted: set) -> None:
        st, size, stride, offset = rec.storage, rec.size, rec.stride, rec.offset
        key = (id(st), offset, size, stride)
        numel = math.prod(size)
        if key in counted or numel == 0:
            return
        counted.add(key)
        what = f"tensor of shape {list(size)} on storage {st.key!r}"
        last = offset + sum((d - 1) * s for d, s in zip(size, stride))
        if last >= st.numel:
            raise _Refused(f"{what} with stride {list(stride)} and offset {offset} reaches element {last}, "
                           f"but the storage holds {st.numel} elements ({st.tag!r})")
        self.budget.spend_materialise(numel * _native_dtype(st).itemsize, what)
        self._need(st, offset, last + 1)

    def load(self) -> None:
        """Read, per root storage, the element range the tensors use."""
        for key, (root, lo, hi) in self.needed.items():
            data = root.loader(lo * root.itemsize, hi * root.itemsize)
            flat = np.frombuffer(data, dtype=root.dtype)
            if flat.size != hi - lo:  # the loaders check this; a second line of defence
                raise _Refused(f"storage {root.key!r} gave {flat.size} elements, expected {hi - lo}")
            self.loaded[key] = (flat, lo)

    def elements(self, ref: _StorageRef, first: int) -> np.ndarray:
        """The elements of ``ref`` from element ``first`` on, as far as :meth:`load` read
        them (a view; :meth:`plan` made sure they cover what the caller uses)."""
        root, base = _root(ref)
        flat, lo = self.loaded[id(root)]
        return flat[base + first - lo:]

    def tensor(self, rec: _TensorRecord) -> np.ndarray:
        st, size, stride, offset = rec.storage, rec.size, rec.stride, rec.offset
        key = (id(st), offset, size, stride)
        if key in self.cache:
            return self.cache[key]
        if math.prod(size) == 0:
            out = np.zeros(size, _native_dtype(st))
        else:
            flat = self.elements(st, offset)
            strides = tuple(0 if d == 1 else s * flat.itemsize for d, s in zip(size, stride))
            view = np.lib.stride_tricks.as_strided(flat, shape=size, strides=strides, writeable=False)
            out = _to_native(view, st)
        self.tensors += 1
        self.cache[key] = out
        return out

    def convert(self, obj, depth: int = 0, memo: dict | None = None):
        if type(obj) in _PLAIN_TYPES:
            return obj
        memo = {} if memo is None else memo
        oid = id(obj)
        if oid in memo:
            return memo[oid]
        if depth > MAX_DEPTH:
            raise _Refused(f"containers nest deeper than {MAX_DEPTH} levels")
        if isinstance(obj, _TensorRecord):
            result = self.tensor(obj)
        elif isinstance(obj, _StorageRef):
            flat = self.elements(obj, 0)[: obj.numel] if obj.numel else np.zeros(0, obj.dtype)
            result = _to_native(flat, obj)
        elif isinstance(obj, dict):  # _PickledDict or a plain dict
            result = {}
            memo[oid] = result
            for k, v in obj.items():
                ck = self.convert(k, depth + 1, memo)
                try:
                    hash(ck)
                except TypeError:
                    raise _Refused(f"a dict key is a {type(ck).__name__}, not a plain value") from None
                result[ck] = self.convert(v, depth + 1, memo)
        elif isinstance(obj, list):
            result = []
            memo[oid] = result
            result.extend(self.convert(v, depth + 1, memo) for v in obj)
        elif isinstance(obj, tuple):
            result = tuple(self.convert(v, depth + 1, memo) for v in obj)
        elif isinstance(obj, (set, frozenset)):
            items = [self.convert(v, depth + 1, memo) for v in obj]
            try:
                result = type(obj)(items)
            except TypeError:
                raise _Refused("a set holds unhashable values") from None
        elif isinstance(obj, bytearray):
            result = bytes(obj)
        elif isinstance(obj, _StorageTag):
            result = f"torch.{obj.name}"
        elif isinstance(obj, _SafeCallable):
            raise _Refused(f"the object refers to the callable {obj.qualname} without calling it")
        else:  # pragma: no cover - the allow-list cannot produce anything else
            raise _Refused(f"unexpected object of type {type(obj).__name__}")
        memo[oid] = result
        return result


def _native_dtype(st: _StorageRef) -> np.dtype:
    if st.tag.code == "bf16":
        return np.dtype(np.float32)
    if st.tag.code == "|b1":
        return np.dtype(np.bool_)
    return st.dtype.newbyteorder("=")


def _to_native(view: np.ndarray, st: _StorageRef) -> np.ndarray:
    code = st.tag.code
    if code == "bf16":
        return (view.astype(np.uint32) << 16).view(np.float32)
    if code == "|b1":
        return view.view(np.uint8) != 0
    return view.astype(st.dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------
# containers: zip archive and legacy stream


@dataclass
class TorchFile:
    """What :func:`read_torch_file` found.

    ``obj`` is the checkpoint object with every tensor as a NumPy array and every
    OrderedDict as a dict; ``container`` is ``"pytorch-zip"`` or ``"pytorch-legacy"``.
    """

    path: str
    obj: Any
    container: str
    archive_name: str | None = None
    version: str | None = None
    byteorder: str = "little"
    devices: tuple[str, ...] = ()
    storages: int = 0
    tensors: int = 0


def _file_size(filename: str) -> int:
    try:
        return os.stat(filename).st_size
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot be read ({exc.strerror or exc})") from None


def _pickle_limits(size: int) -> tuple[int, int]:
    """(largest data.pkl, most objects per pickle) for a file of ``size`` bytes."""
    return (min(MAX_PICKLE_BYTES, PICKLE_RATIO * size + PICKLE_SLACK),
            size // OBJECTS_PER_FILE_BYTE + OBJECTS_SLACK)


def _read_zip(filename: str) -> TorchFile:
    size = _file_size(filename)
    budget = _Budget(size)
    pickle_limit, max_objects = _pickle_limits(size)
    try:
        zf = zipfile.ZipFile(filename)
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # BadZipFile, struct.error, ValueError, ... from a corrupt directory
        raise _Refused(f"corrupt zip archive ({type(exc).__name__}: {exc})") from None
    with zf:
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.filename in infos:
                raise _Refused(f"zip archive holds the entry {info.filename!r} twice")
            infos[info.filename] = info
        tops = sorted({n.split("/", 1)[0] for n in infos if n.endswith("/data.pkl") and n.count("/") == 1})
        if not tops:
            hint = " (a TorchScript archive? save model.state_dict() instead)" if any(
                n.endswith("/constants.pkl") for n in infos) else ""
            raise _Refused(f"zip archive without '<name>/data.pkl': not a PyTorch checkpoint{hint}")
        if len(tops) > 1:
            raise _Refused(f"zip archive holds several checkpoints ({', '.join(tops)})")
        prefix = tops[0]

        def checked_info(name: str, limit: int | None) -> zipfile.ZipInfo:
            info = infos[name]
            if info.compress_type == zipfile.ZIP_STORED:
                if info.compress_size != info.file_size or info.file_size > size:
                    raise _Refused(f"entry {name!r} declares {info.file_size} bytes, more than the file holds")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > _DEFLATE_MAX_RATIO * max(info.compress_size, 1):
                    raise _Refused(f"entry {name!r} declares an impossible size of {info.file_size} bytes")
            else:
                raise _Refused(f"entry {name!r} uses unsupported zip compression method {info.compress_type}")
            if limit is not None and info.file_size > limit:
                raise _Refused(f"entry {name!r} is {info.file_size} bytes, more than the limit of {limit}")
            return info

        def read_entry(name: str, limit: int) -> bytes:
            info = checked_info(name, limit)
            try:
                data = zf.read(info)
            except Exception as exc:  # BadZipFile (CRC, header mismatch), zlib.error, EOFError ...
                raise _Refused(f"entry {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
            if len(data) != info.file_size:
                raise _Refused(f"entry {name!r} holds {len(data)} bytes, its header says {info.file_size}")
            return data

        def read_range(name: str, lo: int, hi: int) -> bytearray:
            """Bytes ``lo`` .. ``hi - 1`` of an entry, streamed in steps of 1 MiB.  A stored
            entry is read to its end (its bytes are in the file; the CRC gets checked); a
            deflated one is inflated only up to ``hi``, every byte counted against the
            budget (its CRC is checked when ``hi`` is its end)."""
            info = checked_info(name, None)  # (its size was checked against the pickle's declaration)
            deflated = info.compress_type == zipfile.ZIP_DEFLATED
            if deflated and hi > budget.inflate:  # refused before anything is inflated or allocated
                raise _Refused(f"entry {name!r}: tensors use its bytes up to {hi}, but inflating them would exceed "
                               f"{INFLATE_RATIO} x file size + {INFLATE_SLACK >> 20} MiB in total "
                               f"({budget.inflate} bytes left), more than the file can justify")
            stop = hi if deflated else info.file_size
            out = bytearray(hi - lo)
            view = memoryview(out)
            pos = 0
            try:
                with zf.open(info) as f:
                    while pos < stop:
                        step = min(_INFLATE_CHUNK, stop - pos)
                        if deflated:
                            step = budget.inflate_step(step, f"entry {name!r}")
                        chunk = f.read(step)
                        if deflated:
                            budget.spend_inflate(len(chunk))
                        if not chunk:
                            raise _Refused(f"entry {name!r} ends after {pos} bytes, its header says {info.file_size}")
                        a, b = max(pos, lo), min(pos + len(chunk), hi)
                        if a < b:
                            view[a - lo: b - lo] = chunk[a - pos: b - pos]
                        pos += len(chunk)
            except _Refused:
                raise
            except Exception as exc:  # BadZipFile (CRC, header mismatch), zlib.error, EOFError ...
                raise _Refused(f"entry {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
            return out

        byteorder = "little"
        if f"{prefix}/byteorder" in infos:
            raw = read_entry(f"{prefix}/byteorder", 64)
            if raw not in (b"little", b"big"):
                raise _Refused(f"entry '{prefix}/byteorder' is {raw[:20]!r}, expected 'little' or 'big'")
            byteorder = raw.decode()
        version = None
        for vname in (f"{prefix}/version", f"{prefix}/.data/version"):
            if vname in infos:
                raw = read_entry(vname, 64).strip()
                if not raw.isdigit():
                    raise _Refused(f"entry {vname!r} is {raw[:20]!r}, expected a version number")
                version = raw.decode()
                break

        def declare(key: str, tag: _StorageTag, location: str, nbytes: int):
            name = f"{prefix}/data/{key}"
            info = infos.get(name)
            if info is None:
                raise _Refused(f"storage {key!r} ({tag!r}) has no entry {name!r} in the archive")
            if info.file_size != nbytes:
                raise _Refused(f"storage {key!r}: entry {name!r} holds {info.file_size} bytes but the pickle "
                               f"declares {tag!r} of {nbytes} bytes")
            return lambda lo, hi: read_range(name, lo, hi)

        table = _StorageTable(declare, byteorder)
        pkl = read_entry(f"{prefix}/data.pkl", pickle_limit)
        obj, end = _unpickle(pkl, 0, max_objects, table)
        if end != len(pkl):
            raise _Refused(f"'{prefix}/data.pkl' has {len(pkl) - end} bytes after the end of the pickle")
        del pkl
        result, tensors = _materialised(obj, budget)
        return TorchFile(filename, result, "pytorch-zip", prefix, version, byteorder, tuple(table.devices),
                         len(table.refs), tensors)


def _materialised(obj, budget: _Budget) -> tuple[Any, int]:
    """``obj`` with NumPy arrays for its tensors, and the number of tensors."""
    mat = _Materialiser(budget)
    mat.plan(obj)
    mat.load()
    return mat.convert(obj), mat.tensors


def _read_legacy(filename: str) -> TorchFile:
    size = _file_size(filename)
    budget = _Budget(size)
    _, max_objects = _pickle_limits(size)
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot be read ({exc.strerror or exc})") from None
    if len(data) >= 262 and data[257:262] == b"ustar":
        raise _Refused("this is the very old tar-based PyTorch format, which is not supported; "
                       "re-save it with a current PyTorch")
    magic, pos = _unpickle(data, 0, max_objects)
    if not _is_int(magic) or magic != LEGACY_MAGIC_NUMBER:
        raise _Refused(f"not a PyTorch legacy checkpoint: the first pickle is {_short(magic)}, "
                       f"expected the magic number {LEGACY_MAGIC_NUMBER:#x}")
    proto, pos = _unpickle(data, pos, max_objects)
    if not _is_int(proto) or proto != LEGACY_PROTOCOL_VERSION:
        raise _Refused(f"legacy protocol version {_short(proto)} is not supported (expected {LEGACY_PROTOCOL_VERSION})")
    sys_info, pos = _unpickle(data, pos, max_objects)
    if not isinstance(sys_info, dict):
        raise _Refused("the legacy system-info record is not a dict")

    declared: dict[str, tuple[_StorageTag, int]] = {}
    views: dict[str, memoryview] = {}

    def declare(key, tag, location, nbytes):
        declared[key] = (tag, nbytes)

        def load(lo: int, hi: int) -> memoryview:
            if key not in views:
                raise _Refused(f"storage {key!r} is used by a tensor but has no data in the file")
            return views[key][lo:hi]

        return load

    table = _StorageTable(declare, "little")  # the legacy writer always stores little-endian data
    obj, pos = _unpickle(data, pos, max_objects, table)
    keys, pos = _unpickle(data, pos, max_objects)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Refused("the legacy storage key list is not a list of strings")
    for key in keys:
        if key not in declared:
            raise _Refused(f"the storage key list names {key!r}, which no tensor declared")
        tag, nbytes = declared[key]
        if pos + 8 > len(data):
            raise _Refused(f"file ends before the size record of storage {key!r} (truncated)")
        (count,) = struct.unpack_from("<q", data, pos)
        itemsize = table._dtype(tag).itemsize
        if count * itemsize != nbytes:
            raise _Refused(f"storage {key!r}: the file records {count} elements but the pickle declares "
                           f"{nbytes // itemsize} ({tag!r})")
        start = pos + 8
        if start + nbytes > len(data):
            raise _Refused(f"storage {key!r} needs {nbytes} bytes at offset {start} but the file has only "
                           f"{len(data) - start} left (truncated)")
        views[key] = memoryview(data)[start: start + nbytes]
        pos = start + nbytes
    result, tensors = _materialised(obj, budget)
    return TorchFile(filename, result, "pytorch-legacy", None, str(LEGACY_PROTOCOL_VERSION), "little",
                     tuple(table.devices), len(table.refs), tensors)


def read_torch_file(path) -> TorchFile:
    """Read a PyTorch checkpoint (zip archive or legacy stream) without PyTorch and safely.

    The container is chosen by content (``PK\\x03\\x04`` → zip, else the legacy
    stream).  Every problem raises :class:`CheckpointError` starting with
    ``"<path>: PyTorch checkpoint (<container>): "`` and naming the entry, storage or
    global involved.
    """
    filename = file_name(path, error=CheckpointError)
    try:
        with open(filename, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{filename}: cannot be read ({exc.strerror or exc})") from None
    container = "pytorch-zip" if head == b"PK\x03\x04" else "pytorch-legacy"
    try:
        return _read_zip(filename) if container == "pytorch-zip" else _read_legacy(filename)
    except _Refused as exc:
        raise CheckpointError(f"{filename}: PyTorch checkpoint ({container}): {exc}") from None
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{filename}: PyTorch checkpoint ({container}): structure nests too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{filename}: PyTorch checkpoint ({container}): out of memory while reading") from None
    except Exception as exc:  # last resort: a malformed file must never escape as a bare traceback
        raise CheckpointError(f"{filename}: PyTorch checkpoint ({container}): malformed file "
                              f"({type(exc).__name__}: {exc})") from None

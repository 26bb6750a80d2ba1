"""The opcode scan of an untrusted pickle: one linear pass over the bytes, nothing unpickled.

:func:`scan_pickle` walks the opcodes of the pickle at ``data[start:]`` the way the C
unpickler will, but only *simulates* its stack: every stack entry is an object number
(0 for every scalar, a fresh number for every container or call result) whose nesting
depth is recorded, so the structure the unpickler would build is measured before it
exists.  The pass refuses (:class:`ScanRefused`, turned into a
:class:`~sttn_sim.errors.CheckpointError` naming the file by the reader):

* an opcode outside :data:`ALLOWED_OPCODES` (``INST``, ``OBJ``, ``NEWOBJ``,
  ``NEWOBJ_EX``, ``EXT*``, text ``PERSID``, out-of-band buffers build arbitrary objects);
* a ``GLOBAL`` whose ``module.name`` is not in the caller's allow-list (a
  ``STACK_GLOBAL`` takes its names from the stack; the unpickler's ``find_class``
  checks those);
* a declared length or a line reaching past the data (truncation), a protocol above 5;
* a memo index at or above ``min(MAX_MEMO, pickle length + 16)``, a ``GET`` of an index
  never stored;
* a stack underflow (a pop below the innermost MARK), more than :data:`MAX_STACK`
  entries on the stack or more than :data:`MAX_DEPTH` open MARKs;
* more than ``max_objects`` objects pushed or built (every scalar push and every new
  container counts): the unpickler spends up to ~250 bytes per object (an empty set),
  so this bounds its memory by the caller's budget, whatever the pickle's length;
* **nesting**: a container (``EMPTY_*``, ``TUPLE*``, ``LIST``, ``DICT``, ``FROZENSET``,
  and the results of ``REDUCE`` / ``BINPERSID``, which hold their arguments) has depth
  ``1 + max(depth of its items)`` (scalars 0); ``APPEND(S)``, ``SETITEM(S)``,
  ``ADDITEMS`` and ``BUILD`` raise the depth of the container they change.  Any depth
  above :data:`MAX_DEPTH` is refused.  The C unpickler builds deep structures without
  recursion, but hashing a deeply nested tuple (a dict key, a frozenset item) then
  recurses in C without a guard and overflows the C stack (SIGSEGV): this is why the
  depth is measured here, before the unpickler sees the stream.
* a container changed after a reference to it was taken from the memo (``GET``) or
  duplicated (``DUP``): that is the only way to grow an object already nested in
  another one (which would make the recorded depths stale), and it only occurs in
  cyclic structures, which no checkpoint holds.  So the recorded depth of every object
  is exact when it is nested, and every nesting depth is bounded.

Cost: one pass compiled with Numba (bounds-checked indexing), O(1) work per opcode (a
length-prefixed argument is skipped), memory O(stack height + number of containers),
with the stack height, the memo and the open MARKs capped.  Measured on the 2-core
development machine (loaded): about 100 MB/s on a real ``data.pkl`` and 30-80 MB/s on
streams of one-byte opcodes (``pickletools.genops``: 1-2 MB/s on both).  The first call
in a process loads the compiled kernel from numba's cache (the first ever call compiles
it: seconds).
"""

from __future__ import annotations

import functools
import pickletools

import numba
import numpy as np

__all__ = ["ALLOWED_OPCODES", "MAX_DEPTH", "MAX_MEMO", "MAX_STACK", "ScanRefused", "scan_pickle"]

#: Deepest nesting accepted (a PyTorch checkpoint nests about 6 levels: checkpoint dict,
#: state_dict, ``_rebuild_tensor_v2`` arguments, persistent id; an optimizer state one or
#: two more).
MAX_DEPTH = 100
#: Most entries the unpickler's stack may hold at once (the standard pickler batches
#: list and dict items by 1000, so a real pickle stays in the low thousands).
MAX_STACK = 1 << 20
#: Highest memo index + 1 (a checkpoint memoizes a few objects per tensor).
MAX_MEMO = 1 << 20

ALLOWED_OPCODES = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP
    INT BININT BININT1 BININT2 LONG LONG1 LONG4 NONE NEWTRUE NEWFALSE FLOAT BINFLOAT
    STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS
    EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
    GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE
    GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID""".split()
)


class ScanRefused(Exception):
    """The pickle is refused by the scan (the message says why and at which byte)."""


# --------------------------------------------------------------------------------------
# opcode tables (argument layout from pickletools' descriptors; stack effect by name)

# argument kinds
_NONE, _FIXED, _LEN1, _LEN4S, _LEN4U, _LEN8, _LINE, _LINE2 = range(8)
# stack effects
(_PUSH, _EMPTY, _MARK, _FROM_MARK, _TUPLE_N, _APPEND, _SETITEM, _MUTATE_FROM_MARK, _POP, _POP_MARK, _DUP,
 _GET, _PUT, _MEMOIZE, _STACK_GLOBAL, _REDUCE, _BUILD, _BINPERSID, _PROTO, _FRAME, _STOP) = range(21)

_EFFECTS = {
    "EMPTY_TUPLE": _EMPTY, "EMPTY_LIST": _EMPTY, "EMPTY_DICT": _EMPTY, "EMPTY_SET": _EMPTY,
    "MARK": _MARK, "TUPLE": _FROM_MARK, "LIST": _FROM_MARK, "DICT": _FROM_MARK, "FROZENSET": _FROM_MARK,
    "TUPLE1": _TUPLE_N, "TUPLE2": _TUPLE_N, "TUPLE3": _TUPLE_N,
    "APPEND": _APPEND, "SETITEM": _SETITEM,
    "APPENDS": _MUTATE_FROM_MARK, "SETITEMS": _MUTATE_FROM_MARK, "ADDITEMS": _MUTATE_FROM_MARK,
    "POP": _POP, "POP_MARK": _POP_MARK, "DUP": _DUP,
    "GET": _GET, "BINGET": _GET, "LONG_BINGET": _GET, "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT,
    "MEMOIZE": _MEMOIZE, "STACK_GLOBAL": _STACK_GLOBAL, "REDUCE": _REDUCE, "BUILD": _BUILD,
    "BINPERSID": _BINPERSID, "PROTO": _PROTO, "FRAME": _FRAME, "STOP": _STOP,
}  # every other allowed opcode pushes one scalar (numbers, strings, bytes, None, bools, GLOBAL)

_ARG_KINDS = {
    pickletools.UP_TO_NEWLINE: _LINE,
    pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
    pickletools.TAKEN_FROM_ARGUMENT4: _LEN4S,
    pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4U,
    pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8,
}


def _tables():
    names = [None] * 256
    arg_kind = np.full(256, -1, np.int8)  # -1: refused (not allowed, or not an opcode)
    arg_size = np.zeros(256, np.int8)
    effect = np.full(256, _PUSH, np.int8)
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        names[code] = op.name
        if op.name not in ALLOWED_OPCODES:
            continue
        if op.arg is None:
            arg_kind[code] = _NONE
        elif op.arg.n >= 0:
            arg_kind[code], arg_size[code] = _FIXED, op.arg.n
        elif op.name == "GLOBAL":
            arg_kind[code] = _LINE2
        else:
            arg_kind[code] = _ARG_KINDS[op.arg.n]
        effect[code] = _EFFECTS.get(op.name, _PUSH)
    return tuple(names), arg_kind, arg_size, effect


_NAMES, _ARG_KIND, _ARG_SIZE, _EFFECT = _tables()


# --------------------------------------------------------------------------------------
# the scan: a compiled loop that returns (status, byte, value); messages are made below

(_OK, _TRUNCATED, _NOT_ALLOWED, _GLOBAL, _NEGATIVE_LENGTH, _MEMO_RANGE, _MEMO_MISSING, _MEMO_TEXT, _UNDERFLOW,
 _TOO_DEEP, _STACK_FULL, _SHARED, _PROTOCOL, _TOO_MANY, _NEED_ROOM) = range(15)
# the scan's state between calls of the kernel (it returns _NEED_ROOM when an array is full)
_POS, _HEIGHT, _NMARKS, _OBJECTS, _SCALARS, _MEMO_LEN, _AT, _VALUE, _ROOM, _STATE_SIZE = range(10)
_ROOM_STACK, _ROOM_OBJECTS, _ROOM_MEMO = range(3)


@numba.njit(cache=True)
def _read_uint(data, pos, size):
    """Little-endian unsigned integer of ``size`` bytes at ``data[pos]``."""
    value = np.int64(0)
    for k in range(size):
        value |= np.int64(data[pos + k]) << (8 * k)
    return value


@numba.njit(cache=True, nogil=True, boundscheck=True)
def _scan_kernel(data, state, stack, marks, depth, shared, memo, arg_kind, arg_size, effect, allowed, allowed_ends,
                 memo_limit, max_depth, max_stack, max_objects):
    """Run the scan of the module docstring from ``state`` (position, stack height, open
    MARKs, containers, scalars, memo entries); return a status.  ``_OK``: ``state[_AT]``
    is the end; ``_NEED_ROOM``: array ``state[_ROOM]`` (stack, objects, memo) must hold at
    least ``state[_VALUE]`` entries (nothing of the opcode at ``state[_POS]`` was done:
    grow it and call again); otherwise the refusal, at the opcode at ``state[_AT]`` with
    detail ``state[_VALUE]``.

    ``stack``: object numbers (0 stands for every scalar); ``marks``: stack heights at
    the open MARKs; ``depth``/``shared``: per object number its depth and whether a
    reference was taken from the memo or duplicated; ``memo``: index -> object number
    (-1: nothing stored).  The arrays are arguments (never reassigned here) so the loop
    does no reference counting."""
    n = data.shape[0]
    pos, height, nmarks = state[_POS], state[_HEIGHT], state[_NMARKS]
    objects, scalars, memo_len = state[_OBJECTS], state[_SCALARS], state[_MEMO_LEN]
    fence = marks[nmarks - 1] if nmarks > 0 else 0  # pops may not go below the innermost MARK
    status, at, value, room = _OK, pos, np.int64(0), _ROOM_STACK
    while True:
        at = pos
        if pos >= n:
            status = _TRUNCATED
            break
        op = data[pos]
        kind = arg_kind[op]
        # ---- the argument
        if kind == _NONE:
            pos += 1
        elif kind == _FIXED:
            pos += 1 + arg_size[op]
        elif kind == _LEN1:
            if pos + 2 > n:
                status = _TRUNCATED
                break
            pos += 2 + np.int64(data[pos + 1])
        elif kind == _LEN4U or kind == _LEN4S:
            if pos + 5 > n:
                status = _TRUNCATED
                break
            length = _read_uint(data, pos + 1, 4)
            if kind == _LEN4S and length >= 1 << 31:
                status, value = _NEGATIVE_LENGTH, length - (1 << 32)
                break
            pos += 5 + length
        elif kind == _LEN8:
            if pos + 9 > n or data[pos + 8] >= 0x80:  # (a length beyond int64 is beyond any file)
                status = _TRUNCATED
                break
            length = _read_uint(data, pos + 1, 8)
            if length > n:
                status = _TRUNCATED
                break
            pos += 9 + length
        elif kind == _LINE or kind == _LINE2:
            lines = 1 if kind == _LINE else 2
            end = pos + 1
            while end < n:
                if data[end] == 10:
                    lines -= 1
                    if lines == 0:
                        break
                end += 1
            if end >= n:
                status = _TRUNCATED
                break
            pos = end + 1
            if kind == _LINE2:  # GLOBAL: "module\nname\n" must be one of the allowed entries
                size = pos - (at + 1)
                found = False
                for g in range(allowed_ends.shape[0] - 1):
                    lo = allowed_ends[g]
                    if allowed_ends[g + 1] - lo == size:
                        same = True
                        for k in range(size):
                            if allowed[lo + k] != data[at + 1 + k]:
                                same = False
                                break
                        if same:
                            found = True
                            break
                if not found:
                    status = _GLOBAL
                    break
        else:
            status, value = _NOT_ALLOWED, np.int64(op)
            break
        if pos > n:
            status = _TRUNCATED
            break

        # ---- room for what the opcode may add (checked before anything changes)
        e = effect[op]
        if height >= stack.shape[0]:
            status, value, room = _NEED_ROOM, height + 1, _ROOM_STACK
            break
        if objects >= depth.shape[0]:
            status, value, room = _NEED_ROOM, objects + 1, _ROOM_OBJECTS
            break
        index = np.int64(-1)
        if e == _PUT or e == _MEMOIZE or e == _GET:
            if e == _MEMOIZE:
                index = memo_len
            elif arg_size[op] == 1:
                index = np.int64(data[at + 1])
            elif arg_size[op] == 4:
                index = _read_uint(data, at + 1, 4)
            else:  # text: decimal digits up to the newline
                digits = pos - 1 - (at + 1)
                if digits < 1 or digits > 12:
                    status = _MEMO_TEXT
                    break
                index = 0
                for k in range(at + 1, pos - 1):
                    c = data[k]
                    if c < 48 or c > 57:
                        status = _MEMO_TEXT
                        break
                    index = 10 * index + (c - 48)
                if status != _OK:
                    break
            if index >= memo_limit:
                status, value = _MEMO_RANGE, index
                break
            if e != _GET and index >= memo.shape[0]:
                status, value, room = _NEED_ROOM, index + 1, _ROOM_MEMO
                break

        # ---- the stack effect
        if e == _PUSH:
            stack[height] = 0
            height += 1
            scalars += 1
        elif e == _PUT or e == _MEMOIZE:
            if height <= fence:
                status = _UNDERFLOW
                break
            if memo[index] < 0:
                memo_len += 1
            memo[index] = stack[height - 1]
        elif e == _GET:
            obj = memo[index] if index < memo.shape[0] else -1
            if obj < 0:
                status, value = _MEMO_MISSING, index
                break
            shared[obj] = 1
            stack[height] = obj
            height += 1
        elif e == _MARK:
            if nmarks >= max_depth:
                status = _TOO_DEEP
                break
            marks[nmarks] = height
            nmarks += 1
            fence = height
        elif e == _EMPTY or e == _FROM_MARK or e == _TUPLE_N or e == _REDUCE or e == _BINPERSID:
            # a new object: from nothing, from the items above the MARK or the top 1-3
            # items (one level deeper than they are), or a call result / persistent id
            # (as deep as its arguments)
            if e == _EMPTY:
                low = height
            elif e == _FROM_MARK:
                if nmarks == 0:
                    status = _UNDERFLOW
                    break
                low = marks[nmarks - 1]
            elif e == _TUPLE_N:
                low = height - (op - 0x84)  # TUPLE1/2/3 are 0x85/0x86/0x87
            elif e == _REDUCE:
                low = height - 2
            else:
                low = height - 1
            if low < fence and e != _FROM_MARK:
                status = _UNDERFLOW
                break
            d = np.int64(1)
            if e == _REDUCE or e == _BINPERSID:
                d = max(d, np.int64(depth[stack[height - 1]]))  # the arguments or the id (not the callable)
            else:
                for k in range(low, height):
                    d = max(d, np.int64(depth[stack[k]]) + 1)
            if d > max_depth:
                status, value = _TOO_DEEP, d
                break
            if e == _FROM_MARK:
                nmarks -= 1
                fence = marks[nmarks - 1] if nmarks > 0 else 0
            depth[objects] = d
            shared[objects] = 0
            height = low
            stack[height] = objects
            height += 1
            objects += 1
        elif e == _APPEND or e == _SETITEM or e == _BUILD or e == _MUTATE_FROM_MARK:
            # items added to a container below them (or below the MARK)
            if e == _MUTATE_FROM_MARK:
                if nmarks == 0 or marks[nmarks - 1] == 0:
                    status = _UNDERFLOW
                    break
                low = marks[nmarks - 1]
            else:
                low = height - (2 if e == _SETITEM else 1)
                if low <= fence:
                    status = _UNDERFLOW
                    break
            target = stack[low - 1]
            if height > low and target != 0:  # (a scalar target: the unpickler fails, or a bytearray takes ints)
                if shared[target]:
                    status = _SHARED
                    break
                d = np.int64(depth[target])
                for k in range(low, height):
                    d = max(d, np.int64(depth[stack[k]]) + 1)
                if d > max_depth:
                    status, value = _TOO_DEEP, d
                    break
                depth[target] = d
            if e == _MUTATE_FROM_MARK:
                nmarks -= 1
                fence = marks[nmarks - 1] if nmarks > 0 else 0
            height = low
        elif e == _STACK_GLOBAL:
            if height - 2 < fence:
                status = _UNDERFLOW
                break
            height -= 1
            stack[height - 1] = 0
        elif e == _POP:
            if nmarks > 0 and marks[nmarks - 1] == height:  # the C unpickler's POP drops a MARK on top
                nmarks -= 1
                fence = marks[nmarks - 1] if nmarks > 0 else 0
            elif height <= fence:
                status = _UNDERFLOW
                break
            else:
                height -= 1
        elif e == _POP_MARK:
            if nmarks == 0:
                status = _UNDERFLOW
                break
            nmarks -= 1
            height = marks[nmarks]
            fence = marks[nmarks - 1] if nmarks > 0 else 0
        elif e == _DUP:
            if height <= fence:
                status = _UNDERFLOW
                break
            shared[stack[height - 1]] = 1
            stack[height] = stack[height - 1]
            height += 1
        elif e == _PROTO:
            if data[at + 1] > 5:
                status, value = _PROTOCOL, np.int64(data[at + 1])
                break
        elif e == _STOP:
            if height <= fence:
                status = _UNDERFLOW
                break
            at = pos  # the end
            break
        # (_FRAME is only a size hint for buffering)
        if height > max_stack:
            status = _STACK_FULL
            break
        if objects - 1 + scalars > max_objects:  # (object 0 stands for the scalars)
            status = _TOO_MANY
            break
    state[_POS], state[_HEIGHT], state[_NMARKS] = pos if status != _NEED_ROOM else at, height, nmarks
    state[_OBJECTS], state[_SCALARS], state[_MEMO_LEN] = objects, scalars, memo_len
    state[_AT], state[_VALUE], state[_ROOM] = at, value, room
    return status


def _grown(a: np.ndarray, need: int, fill) -> np.ndarray:
    """A copy of ``a`` at least twice as long (and at least ``need``), new entries ``fill``."""
    b = np.full(max(need, 2 * len(a)), fill, a.dtype)
    b[: len(a)] = a
    return b


@functools.lru_cache(maxsize=8)
def _allowed_table(allowed_globals: frozenset) -> tuple[np.ndarray, np.ndarray]:
    """The allowed ``(module, name)`` pairs as the bytes ``module\\nname\\n`` back to back,
    and the offsets where each starts (plus the end)."""
    entries = [f"{m}\n{g}\n".encode("utf-8") for m, g in sorted(allowed_globals)]
    ends = np.cumsum([0] + [len(e) for e in entries]).astype(np.int64)
    return np.frombuffer(b"".join(entries) or b"\0", np.uint8), ends


def scan_pickle(data: bytes, start: int = 0, allowed_globals: frozenset = frozenset(),
                max_objects: int = 1 << 62) -> int:
    """Check the pickle starting at ``data[start]`` (see the module docstring); return
    the offset just after its STOP opcode.  ``allowed_globals`` holds the
    ``(module, name)`` pairs a ``GLOBAL`` may name; ``max_objects`` bounds the objects
    the unpickler would create.  Raises :class:`ScanRefused`."""
    buffer = np.frombuffer(data, np.uint8)
    allowed, ends = _allowed_table(frozenset(allowed_globals))
    memo_limit = min(MAX_MEMO, len(data) - start + 16)
    state = np.zeros(_STATE_SIZE, np.int64)
    state[_POS], state[_OBJECTS] = start, 1  # object 0 stands for every scalar
    stack, marks = np.zeros(256, np.int32), np.zeros(MAX_DEPTH + 1, np.int64)
    depth, shared, memo = np.zeros(256, np.uint8), np.zeros(256, np.uint8), np.full(64, -1, np.int32)
    while True:
        status = _scan_kernel(buffer, state, stack, marks, depth, shared, memo, _ARG_KIND, _ARG_SIZE, _EFFECT,
                              allowed, ends, memo_limit, MAX_DEPTH, MAX_STACK, max_objects)
        if status != _NEED_ROOM:
            break
        need = int(state[_VALUE])
        if state[_ROOM] == _ROOM_STACK:
            stack = _grown(stack, need, 0)
        elif state[_ROOM] == _ROOM_OBJECTS:
            depth, shared = _grown(depth, need, 0), _grown(shared, need, 0)
        else:
            memo = _grown(memo, need, -1)
    at, value = int(state[_AT]), int(state[_VALUE])
    if status == _OK:
        return at
    raise ScanRefused(_message(data, start, status, at, value, max_objects))


def _message(data: bytes, start: int, status: int, at: int, value: int, max_objects: int) -> str:
    where = f"the pickle at byte {start}"
    if status == _TRUNCATED:
        return f"{where} is corrupt or truncated (the opcode at byte {at} runs past the end)"
    if status == _NOT_ALLOWED:
        name = _NAMES[value]
        if name is None:
            return f"{where} is corrupt: byte {value:#04x} at byte {at} is not a pickle opcode"
        return f"pickle opcode {name} at byte {at} is not allowed (it builds arbitrary objects)"
    if status == _GLOBAL:
        module, _, rest = data[at + 1:].partition(b"\n")
        name = rest.partition(b"\n")[0]
        module_text, name_text = (s[:200].decode("utf-8", "backslashreplace") for s in (module, name))
        return (f"refused to load global '{module_text}.{name_text}': only tensor, storage and plain-container "
                f"types are allowed (nothing was executed)")
    if status == _NEGATIVE_LENGTH:
        return f"{where} is corrupt: negative length {value} at byte {at}"
    if status == _MEMO_RANGE:
        return f"pickle memo index {value} at byte {at} is out of range"
    if status == _MEMO_MISSING:
        return f"{where} is corrupt: memo index {value} at byte {at} was never stored"
    if status == _MEMO_TEXT:
        return f"{where} is corrupt: bad memo index at byte {at}"
    if status == _UNDERFLOW:
        return f"{where} is malformed: stack underflow at byte {at}"
    if status == _TOO_DEEP:
        return f"containers nest deeper than {MAX_DEPTH} levels (at byte {at})"
    if status == _STACK_FULL:
        return f"{where} puts more than {MAX_STACK} objects on the unpickler's stack (at byte {at})"
    if status == _SHARED:
        return (f"pickle changes a container at byte {at} after referencing it from the memo (a cyclic or "
                f"self-modifying structure, which no checkpoint holds)")
    if status == _PROTOCOL:
        return f"pickle protocol {value} is not supported"
    if status == _TOO_MANY:
        return (f"{where} builds more than {max_objects} objects (at byte {at}), more than the file's size "
                f"can justify")
    return f"{where} is refused (scan status {status} at byte {at})"  # pragma: no cover

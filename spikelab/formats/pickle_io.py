"""Pickle I/O: a loader for untrusted SpikeData pickles, and atomic pickling.

An untrusted pickle is loaded in three steps, each refusing what it can on its own:

1. :func:`scan_pickle` reads the opcode stream without building anything: it simulates the
   unpickler's stack and memo and refuses streams that nest too deeply, make too many objects,
   declare payloads larger than the file, change an object after it was placed in another, or
   use opcodes a SpikeData pickle never needs. Payloads (array data) are seeked over, not read.
2. :class:`SafeUnpickler` (the pure-Python unpickler with its opcode table restricted) builds
   only what a SpikeData pickle holds: numpy arrays through numpy's own reconstruction path
   with their size and dtype checked, numpy dtypes and scalars of numeric (and fixed-width
   text) types, builtin containers and scalars, dates, and the SpikeData itself, each call in
   the one form a pickler writes.
3. The finished SpikeData is validated after unpickling ends (so nothing in the stream can
   change it afterwards): its state must be complete, its trains valid, and its metadata and
   neuron attributes plain data (iteratively walked, depth and size bounded).

Bounds, and what real pickles use
---------------------------------
Measured with numpy 2.4 and Python 3.11 (``scan_pickle``'s report; "data items" are the items
of metadata, neuron_attributes and scalar fields, array elements included)::

    pickle                                         opcodes   objects     memo  depth  data items
    SpikeLab 0.1.2 fixtures (5-8 units, proto 5)   172-331    79-142    57-92      6        6-49
    1000 units x 10 000 spikes, 80 MB, proto 2-5  <=43 128  <=18 067  <=10 043   <=7       6 006
    10 000 units, 10 attributes each, proto 5      610 415   230 124  130 085      7     171 040
    the same, protocol 0 (the most opcodes)      1 189 846   389 973  229 924      8     171 040

The 10 000-unit recording has per unit: electrode, channel, location [x, y], cluster_id,
quality, amplitude, an np.float64 snr, firing rate, a 4-float32 template and a bool; and
metadata with a datetime, a nested dict, an np.int64 and a 1024-element channel map.

- nesting (MAX_NESTING = 64): 8 times the deepest real pickle (8).
- objects and memo entries (MAX_OBJECTS = 2 000 000 each): 5 and 9 times the most seen. At
  the bound a hostile file of 2 MB costs about 200 MB and 3 s before it is refused.
- declared payload sizes: never more than the bytes left in the file (checked before any
  read; payloads are then seeked over). The largest real one is a unit's train (80 000 bytes;
  112 468 as protocol-2 text). LONG4 integers: MAX_INT_BYTES = 4096 (real pickles have none).
- metadata and attributes (checked once unpickled): MAX_DATA_DEPTH = 32 levels (real: 3),
  MAX_DATA_ITEMS = 5 000 000 (29 times the most), MAX_DATA_BYTES = 16 MiB per bytes value.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import copyreg
import datetime
import io
import math
import os
import pickle
import re
import struct
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spikelab.formats.atomic import atomic_file
from spikelab.formats.errors import ExportError, LoadError
from spikelab.formats.registry import Format, ResourceModel
from spikelab.spikedata.spikedata import (
    STATE_FIELDS,
    InvalidSpikeDataError,
    SpikeData,
    short_repr,
    validate_finished,
)

__all__ = [
    "UnsafePickleError",
    "SafeUnpickler",
    "ScanReport",
    "scan_pickle",
    "load_spikedata_from_pickle",
    "export_to_pickle",
    "FORMAT",
]

# ------------------------------------------------------------------------------------ bounds
MAX_NESTING = 64  #: containers inside containers (in the stack simulation)
MAX_OBJECTS = 2_000_000  #: objects built, and memo entries (each)
MAX_INT_BYTES = 4096  #: bytes of one LONG4 integer; a SpikeData pickle has none
MAX_NAME = 4096  #: bytes of a module or global name (GLOBAL opcode)
MAX_DATA_DEPTH = 32  #: nesting of metadata / neuron_attributes / other attributes
MAX_DATA_ITEMS = 5_000_000  #: items (array elements included) in metadata and attributes
MAX_DATA_BYTES = 16 << 20  #: bytes of one bytes/bytearray value in metadata or attributes
MAX_TEXT_DTYPE = 1 << 20  #: characters of a fixed-width str/bytes dtype ('U5', 'S16', ...)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global, a call or a state change outside the allow-list;
    nothing from it was executed."""


_OPT_IN = "If you trust this file, see 'Safety' in the README for the opt-in."


def _unsafe(source: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: refused to load: the pickle {what}. Nothing from the file was executed. "
        + _OPT_IN
    )


def _corrupt(source: str, what: str) -> LoadError:
    return LoadError(f"{source}: not a readable pickle (truncated or corrupt: {what})")


def _too_big(source: str, what: str) -> LoadError:
    return LoadError(
        f"{source}: refused to load: {what}; SpikeData pickles stay far below this bound, so the "
        "file is damaged or hostile"
    )


def _malformed(source: str, what: str) -> LoadError:
    return LoadError(f"{source}: malformed SpikeData pickle: {what}")


def _describe(obj: Any) -> str:
    """``module.qualname`` of a class or function, else the type of ``obj``; never its repr."""
    if isinstance(obj, type) or callable(obj):
        module = getattr(obj, "__module__", None) or "?"
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or "?"
        if isinstance(module, str) and isinstance(name, str):
            return f"{module}.{name}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


# ------------------------------------------------------------------------ 1. the scanner
class ScanReport(NamedTuple):
    """What :func:`scan_pickle` measured: opcodes read, objects built, memo entries, deepest
    container nesting, largest declared payload (bytes), and the pickle protocol."""

    opcodes: int
    objects: int
    memo: int
    depth: int
    largest: int
    protocol: int


# argument kinds
_NOARG, _FIXED, _LEN1, _LEN4, _LEN4S, _LEN8, _LINE, _LINE2 = range(8)
# stack actions
(
    _LEAF,
    _MARK,
    _EMPTY,
    _TUPLEN,
    _SEQ,
    _MSEQ,
    _ADD,
    _ADDMARK,
    _PUT,
    _GET,
    _MEMOIZE,
    _GLOBAL2,
    _CALL,
    _NEWOBJEX,
    _BUILD,
    _POP,
    _POPMARK,
    _STOP,
    _PROTO,
    _FRAME,
    _UNSAFE,
    _UNUSED,
) = range(22)

# opcode -> (argument kind, fixed argument size, action, action argument). Every opcode of
# pickle protocols 0-5 is listed (tests check this against pickletools); others are corrupt.
_OPCODES: dict[bytes, tuple[int, int, int, int]] = {
    b"(": (_NOARG, 0, _MARK, 0),  # MARK
    b".": (_NOARG, 0, _STOP, 0),  # STOP
    b"0": (_NOARG, 0, _POP, 0),  # POP
    b"1": (_NOARG, 0, _POPMARK, 0),  # POP_MARK
    b"2": (_NOARG, 0, _UNUSED, 0),  # DUP: no pickler writes it
    b"F": (_LINE, 0, _LEAF, 0),  # FLOAT
    b"I": (_LINE, 0, _LEAF, 0),  # INT
    b"J": (_FIXED, 4, _LEAF, 0),  # BININT
    b"K": (_FIXED, 1, _LEAF, 0),  # BININT1
    b"L": (_LINE, 0, _LEAF, 0),  # LONG
    b"M": (_FIXED, 2, _LEAF, 0),  # BININT2
    b"N": (_NOARG, 0, _LEAF, 0),  # NONE
    b"P": (_NOARG, 0, _UNUSED, 0),  # PERSID
    b"Q": (_NOARG, 0, _UNUSED, 0),  # BINPERSID
    b"R": (_NOARG, 0, _CALL, 0),  # REDUCE
    b"S": (_LINE, 0, _LEAF, 0),  # STRING
    b"T": (_LEN4S, 0, _LEAF, 0),  # BINSTRING
    b"U": (_LEN1, 0, _LEAF, 0),  # SHORT_BINSTRING
    b"V": (_LINE, 0, _LEAF, 0),  # UNICODE
    b"X": (_LEN4, 0, _LEAF, 0),  # BINUNICODE
    b"a": (_NOARG, 0, _ADD, 1),  # APPEND
    b"b": (_NOARG, 0, _BUILD, 0),  # BUILD
    b"c": (_LINE2, 0, _LEAF, 0),  # GLOBAL
    b"d": (_NOARG, 0, _MSEQ, 0),  # DICT
    b"}": (_NOARG, 0, _EMPTY, 0),  # EMPTY_DICT
    b"e": (_NOARG, 0, _ADDMARK, 0),  # APPENDS
    b"g": (_LINE, 0, _GET, 0),  # GET
    b"h": (_FIXED, 1, _GET, 0),  # BINGET
    b"i": (_NOARG, 0, _UNSAFE, 0),  # INST
    b"j": (_FIXED, 4, _GET, 0),  # LONG_BINGET
    b"l": (_NOARG, 0, _MSEQ, 0),  # LIST
    b"]": (_NOARG, 0, _EMPTY, 0),  # EMPTY_LIST
    b"o": (_NOARG, 0, _UNSAFE, 0),  # OBJ
    b"p": (_LINE, 0, _PUT, 0),  # PUT
    b"q": (_FIXED, 1, _PUT, 0),  # BINPUT
    b"r": (_FIXED, 4, _PUT, 0),  # LONG_BINPUT
    b"s": (_NOARG, 0, _ADD, 2),  # SETITEM
    b"t": (_NOARG, 0, _SEQ, 0),  # TUPLE
    b")": (_NOARG, 0, _TUPLEN, 0),  # EMPTY_TUPLE
    b"u": (_NOARG, 0, _ADDMARK, 0),  # SETITEMS
    b"G": (_FIXED, 8, _LEAF, 0),  # BINFLOAT
    b"\x80": (_FIXED, 1, _PROTO, 0),  # PROTO
    b"\x81": (_NOARG, 0, _CALL, 0),  # NEWOBJ
    b"\x82": (_NOARG, 0, _UNSAFE, 0),  # EXT1
    b"\x83": (_NOARG, 0, _UNSAFE, 0),  # EXT2
    b"\x84": (_NOARG, 0, _UNSAFE, 0),  # EXT4
    b"\x85": (_NOARG, 0, _TUPLEN, 1),  # TUPLE1
    b"\x86": (_NOARG, 0, _TUPLEN, 2),  # TUPLE2
    b"\x87": (_NOARG, 0, _TUPLEN, 3),  # TUPLE3
    b"\x88": (_NOARG, 0, _LEAF, 0),  # NEWTRUE
    b"\x89": (_NOARG, 0, _LEAF, 0),  # NEWFALSE
    b"\x8a": (_LEN1, 0, _LEAF, 0),  # LONG1
    b"\x8b": (_LEN4S, 0, _LEAF, 1),  # LONG4 (action argument 1: bounded by MAX_INT_BYTES)
    b"B": (_LEN4, 0, _LEAF, 0),  # BINBYTES
    b"C": (_LEN1, 0, _LEAF, 0),  # SHORT_BINBYTES
    b"\x8c": (_LEN1, 0, _LEAF, 0),  # SHORT_BINUNICODE
    b"\x8d": (_LEN8, 0, _LEAF, 0),  # BINUNICODE8
    b"\x8e": (_LEN8, 0, _LEAF, 0),  # BINBYTES8
    b"\x8f": (_NOARG, 0, _EMPTY, 0),  # EMPTY_SET
    b"\x90": (_NOARG, 0, _ADDMARK, 0),  # ADDITEMS
    b"\x91": (_NOARG, 0, _SEQ, 0),  # FROZENSET
    b"\x92": (_NOARG, 0, _NEWOBJEX, 0),  # NEWOBJ_EX
    b"\x93": (_NOARG, 0, _GLOBAL2, 0),  # STACK_GLOBAL
    b"\x94": (_NOARG, 0, _MEMOIZE, 0),  # MEMOIZE
    b"\x95": (_FIXED, 8, _FRAME, 0),  # FRAME
    b"\x96": (_LEN8, 0, _LEAF, 0),  # BYTEARRAY8
    b"\x97": (_NOARG, 0, _UNUSED, 0),  # NEXT_BUFFER: out-of-band buffers are never passed
    b"\x98": (_NOARG, 0, _UNUSED, 0),  # READONLY_BUFFER
}
_TABLE: list[tuple[int, int, int, int] | None] = [None] * 256
for _code, _spec in _OPCODES.items():
    _TABLE[_code[0]] = _spec
_OPNAMES = {op.code.encode("latin-1")[0]: op.name for op in __import__("pickletools").opcodes}

#: opcode -> size of its argument, for the opcodes that push a scalar with a fixed-size one
_LEAF_SIZE = [-1] * 256
for _code, _size in ((b"N", 0), (b"\x88", 0), (b"\x89", 0), (b"K", 1), (b"M", 2), (b"J", 4)):
    _LEAF_SIZE[_code[0]] = _size
_LEAF_SIZE[b"G"[0]] = 8
_MEMO_WIDTH = {0x68: 1, 0x6A: 4, 0x71: 1, 0x72: 4}  # BINGET, LONG_BINGET, BINPUT, LONG_BINPUT
_FROZEN, _FILLABLE, _BUILDABLE = 1, 2, 4  # node flags
_SCAN_CHUNK = 1 << 20
_LEN_FORMAT = {_LEN1: (1, False), _LEN4: (4, False), _LEN4S: (4, True), _LEN8: (8, False)}


def _refill(fh: Any, buf: bytes, base: int, pos: int, n: int, size: int, source: str):
    """``(buf, base, pos, blen)`` with ``buf[pos:pos + n]`` available (``n`` small)."""
    if base + pos + n > size:
        raise _corrupt(source, f"the file ends inside an opcode at byte {base + pos}")
    rest = buf[pos:]
    buf = rest + fh.read(max(_SCAN_CHUNK, n - len(rest)))
    if len(buf) < n:
        raise _corrupt(source, f"the file ends inside an opcode at byte {base + pos}")
    return buf, base + pos, 0, len(buf)


def _skip_line(fh: Any, buf: bytes, base: int, pos: int, size: int, source: str):
    """``(buf, base, pos, blen)`` past a text argument's newline, however long the line."""
    start = base + pos
    while True:
        i = buf.find(b"\n", pos)
        if i >= 0:
            return buf, base, i + 1, len(buf)
        base += len(buf)
        pos = 0
        buf = fh.read(_SCAN_CHUNK) if base < size else b""
        if not buf:
            raise _corrupt(source, f"a text argument at byte {start} has no end of line")


def _short_line(fh: Any, buf: bytes, base: int, pos: int, limit: int, size: int, source: str):
    """``(text, buf, base, pos, blen)``: a text argument of at most ``limit`` bytes."""
    if pos + limit + 1 > len(buf) and base + len(buf) < size:
        buf, base, pos, _ = _refill(
            fh, buf, base, pos, min(limit + 1, size - base - pos), size, source
        )
    i = buf.find(b"\n", pos, pos + limit + 1)
    if i < 0:
        raise _corrupt(source, f"a name or index at byte {base + pos} is too long or unended")
    return buf[pos:i], buf, base, i + 1, len(buf)


def _absorb(items: list[Any]) -> int:
    """Freeze ``items`` (now placed in a new parent); return their deepest depth."""
    d = 0
    for it in items:
        if it:
            if it[0] > d:
                d = it[0]
            it[1] |= _FROZEN
    return d


def _fill(target: Any, items: list[Any], at: int, name: str, source: str) -> int:
    """Put ``items`` into the container ``target`` (APPEND, SETITEM, ...); return its depth."""
    if not target or not target[1] & _FILLABLE:
        raise _corrupt(source, f"{name} at byte {at} fills something that is not a container")
    if target[1] & _FROZEN:
        raise _unsafe(
            source,
            f"changes a container after it was placed in another ({name} at byte {at}), "
            "which no pickler writes",
        )
    for it in items:
        if it is target:
            raise _corrupt(source, f"a container contains itself ({name} at byte {at})")
    d = _absorb(items) + 1
    if d > target[0]:
        target[0] = d
    return target[0]


def scan_pickle(fh: Any, size: int, *, source: str = "<pickle>") -> ScanReport:
    """Check a pickle's opcode stream against the bounds above without building anything.

    ``fh`` is a binary file positioned at the start of the pickle and ``size`` its length in
    bytes. Simulates the unpickler's stack and memo: each container is a node ``[depth,
    flags]`` (scalars are ``0``), so nesting is known at every step; a container that was put
    into another (or into a call's arguments, or a BUILD state) is frozen, and any later
    APPEND/SETITEM/ADDITEMS/BUILD on it is refused, so depths never change after the fact and
    nothing can be altered after it was placed. Payloads are seeked over, never read; every
    opcode must lie wholly inside or outside a frame. Raises :class:`LoadError` (malformed,
    too large, too deep) or :class:`UnsafePickleError` (opcodes that would construct what a
    SpikeData pickle never holds, or a change to an object already placed).
    """
    max_objects, max_nesting = MAX_OBJECTS, MAX_NESTING
    leaf_size, table = _LEAF_SIZE, _TABLE
    buf = b""
    base = pos = blen = 0  # buf[pos] is the byte at file offset base + pos
    stack: list[Any] = []
    marks: list[int] = []
    floor = 0  # len(stack) at the innermost MARK: opcodes see only what lies above it
    memo: dict[int, Any] = {}
    objects = opcodes = largest = protocol = deepest = 0
    frame_end = -1  # file offset where the current frame ends
    try:
        while True:
            if pos >= blen:
                buf, base, pos, blen = _refill(fh, buf, base, pos, 1, size, source)
            op = buf[pos]
            pos += 1
            opcodes += 1
            # fast paths for the opcodes that make up most of a SpikeData pickle
            if op == 0x94:  # MEMOIZE
                if len(stack) <= floor:
                    raise _corrupt(
                        source, f"MEMOIZE with nothing to store at byte {base + pos - 1}"
                    )
                memo[len(memo)] = stack[-1]
                if len(memo) > max_objects:
                    raise _too_big(source, f"more than {max_objects} memo entries")
                continue
            n = leaf_size[op]
            if n >= 0:  # NONE, NEWTRUE, NEWFALSE, BININT1, BININT2, BININT, BINFLOAT
                if n:
                    if pos + n > blen:
                        buf, base, pos, blen = _refill(fh, buf, base, pos, n, size, source)
                    pos += n
                    if base + pos > frame_end > base + pos - n - 1:
                        raise _corrupt(
                            source, f"an opcode crosses the end of its frame at byte {frame_end}"
                        )
                stack.append(0)
                objects += 1
                if objects > max_objects:
                    raise _too_big(source, f"more than {max_objects} objects")
                continue
            if op == 0x28:  # MARK
                marks.append(len(stack))
                floor = len(stack)
                continue
            if op in _MEMO_WIDTH:  # BINGET, LONG_BINGET, BINPUT, LONG_BINPUT
                n = _MEMO_WIDTH[op]
                if pos + n > blen:
                    buf, base, pos, blen = _refill(fh, buf, base, pos, n, size, source)
                value = int.from_bytes(buf[pos : pos + n], "little")
                pos += n
                if base + pos > frame_end > base + pos - n - 1:
                    raise _corrupt(
                        source, f"an opcode crosses the end of its frame at byte {frame_end}"
                    )
                if op == 0x68 or op == 0x6A:
                    try:
                        stack.append(memo[value])
                    except KeyError:
                        raise _corrupt(
                            source, f"memo index {value} at byte {base + pos - n - 1} was never set"
                        ) from None
                else:
                    if len(stack) <= floor:
                        raise _corrupt(
                            source, f"memo store with nothing to store at byte {base + pos - n - 1}"
                        )
                    memo[value] = stack[-1]
                    if len(memo) > max_objects:
                        raise _too_big(source, f"more than {max_objects} memo entries")
                continue
            at = base + pos - 1
            spec = table[op]
            if spec is None:
                raise _corrupt(source, f"invalid opcode {bytes([op])!r} at byte {at}")
            argkind, argn, action, k = spec
            value = 0
            if argkind == _FIXED:
                if pos + argn > blen:
                    buf, base, pos, blen = _refill(fh, buf, base, pos, argn, size, source)
                value = int.from_bytes(buf[pos : pos + argn], "little")
                pos += argn
            elif argkind == _LINE:
                if action == _GET or action == _PUT:
                    text, buf, base, pos, blen = _short_line(fh, buf, base, pos, 20, size, source)
                    if not text.isdigit():
                        raise _corrupt(source, f"memo index {text[:20]!r} at byte {at}")
                    value = int(text)
                else:
                    buf, base, pos, blen = _skip_line(fh, buf, base, pos, size, source)
            elif argkind != _NOARG:
                if argkind == _LINE2:
                    for _ in range(2):
                        _, buf, base, pos, blen = _short_line(
                            fh, buf, base, pos, MAX_NAME, size, source
                        )
                else:
                    width, signed = _LEN_FORMAT[argkind]
                    if pos + width > blen:
                        buf, base, pos, blen = _refill(fh, buf, base, pos, width, size, source)
                    n = int.from_bytes(buf[pos : pos + width], "little", signed=signed)
                    pos += width
                    if n < 0:
                        raise _corrupt(source, f"negative length at byte {at}")
                    if n > size - base - pos:
                        raise _corrupt(
                            source,
                            f"{_OPNAMES[op]} at byte {at} declares {n} bytes, more than the "
                            f"{size - base - pos} left in the file",
                        )
                    if k and n > MAX_INT_BYTES:
                        raise _too_big(source, f"an integer of {n} bytes at byte {at}")
                    if n > largest:
                        largest = n
                    if pos + n <= blen:
                        pos += n
                    else:  # seek over the payload instead of reading it
                        base = base + pos + n
                        fh.seek(base)
                        buf = b""
                        pos = blen = 0
            if base + pos > frame_end > at:  # pickler frames hold whole opcodes
                raise _corrupt(source, f"the opcode at byte {at} crosses the end of its frame")

            depth = 0  # of the container this opcode makes or fills
            if action == _LEAF:
                stack.append(0)
                objects += 1
            elif action == _GET:
                try:
                    stack.append(memo[value])
                except KeyError:
                    raise _corrupt(
                        source, f"memo index {value} at byte {at} was never set"
                    ) from None
            elif action == _PUT:
                if len(stack) <= floor:
                    raise _corrupt(source, f"memo store with nothing to store at byte {at}")
                memo[value] = stack[-1]
                if len(memo) > max_objects:
                    raise _too_big(source, f"more than {max_objects} memo entries")
            elif action == _EMPTY:
                stack.append([1, _FILLABLE])
                objects += 1
            elif action == _TUPLEN:
                if k:
                    if len(stack) - floor < k:
                        raise _corrupt(source, f"a tuple with too few items at byte {at}")
                    depth = _absorb(stack[-k:]) + 1
                    del stack[-k:]
                    stack.append([depth, 0])
                else:
                    stack.append(0)
                objects += 1
            elif action == _ADD:
                if len(stack) - floor < k + 1:
                    raise _corrupt(source, f"{_OPNAMES[op]} with too few items at byte {at}")
                items = stack[-k:]
                del stack[-k:]
                depth = _fill(stack[-1], items, at, _OPNAMES[op], source)
            elif action == _ADDMARK or action == _SEQ or action == _MSEQ or action == _POPMARK:
                if not marks:
                    raise _corrupt(source, f"{_OPNAMES[op]} without a MARK at byte {at}")
                m = marks.pop()
                items = stack[m:]
                del stack[m:]
                floor = marks[-1] if marks else 0
                if action == _ADDMARK:
                    if len(stack) <= floor:
                        raise _corrupt(source, f"{_OPNAMES[op]} at byte {at} has nothing to fill")
                    depth = _fill(stack[-1], items, at, _OPNAMES[op], source)
                elif action != _POPMARK:
                    depth = _absorb(items) + 1
                    stack.append([depth, _FILLABLE if action == _MSEQ else 0])
                    objects += 1
            elif action == _GLOBAL2:
                if len(stack) - floor < 2:
                    raise _corrupt(source, f"STACK_GLOBAL without a name at byte {at}")
                del stack[-2:]
                stack.append(0)
                objects += 1
            elif action == _CALL or action == _NEWOBJEX:
                n = 3 if action == _NEWOBJEX else 2
                if len(stack) - floor < n:
                    raise _corrupt(source, f"{_OPNAMES[op]} with too few items at byte {at}")
                depth = max(_absorb(stack[-n:]), 1)
                del stack[-n:]
                stack.append([depth, _FILLABLE | _BUILDABLE])
                objects += 1
            elif action == _BUILD:
                if len(stack) - floor < 2:
                    raise _corrupt(source, f"BUILD with too few items at byte {at}")
                state = stack.pop()
                target = stack[-1]
                if not target or not target[1] & _BUILDABLE:
                    raise _unsafe(
                        source,
                        f"sets the state of an object twice, or of one that takes none (BUILD "
                        f"at byte {at}), which no pickler writes",
                    )
                if target[1] & _FROZEN:
                    raise _unsafe(
                        source,
                        f"changes an object after it was placed in another (BUILD at byte {at}), "
                        "which no pickler writes",
                    )
                if state is target:
                    raise _corrupt(source, f"an object is its own state (BUILD at byte {at})")
                target[1] &= ~_BUILDABLE
                depth = max(target[0], _absorb([state]) + 1)
                target[0] = depth
            elif action == _POP:
                if len(stack) > floor:
                    stack.pop()
                elif marks:
                    marks.pop()
                    floor = marks[-1] if marks else 0
                else:
                    raise _corrupt(source, f"POP on an empty stack at byte {at}")
            elif action == _FRAME:
                if at < frame_end and base + pos < frame_end:
                    raise _corrupt(source, f"a frame begins inside another at byte {at}")
                if value > size - base - pos:
                    raise _corrupt(
                        source,
                        f"FRAME at byte {at} declares {value} bytes, more than the "
                        f"{size - base - pos} left in the file",
                    )
                frame_end = base + pos + value
            elif action == _PROTO:
                if value > pickle.HIGHEST_PROTOCOL:
                    raise _corrupt(source, f"unsupported pickle protocol {value}")
                protocol = value
            elif action == _STOP:
                if marks or len(stack) != 1:
                    raise _corrupt(source, f"STOP at byte {at} with an unbalanced stack")
                break
            elif action == _UNSAFE:
                raise _unsafe(
                    source,
                    f"uses the {_OPNAMES[op]} opcode (at byte {at}), which constructs objects "
                    "outside the allow-list and is never used for a SpikeData",
                )
            else:  # _UNUSED
                raise _corrupt(
                    source,
                    f"the {_OPNAMES[op]} opcode at byte {at} is never used in a SpikeData pickle",
                )
            if depth > deepest:
                deepest = depth
                if depth > max_nesting:
                    raise _too_big(
                        source, f"containers nested more than {max_nesting} deep (at byte {at})"
                    )
            if objects > max_objects:
                raise _too_big(source, f"more than {max_objects} objects")
    except IndexError:  # a pop from an empty stack
        raise _corrupt(source, f"stack underflow at byte {base + pos}") from None
    return ScanReport(opcodes, objects, len(memo), deepest, largest, protocol)


# ----------------------------------------------------------------- 2. the restricted unpickler
_NUMPY_TEXT = re.compile(r"[biufc][0-9]{1,2}|[US][0-9]{1,8}")  # 'f8', 'i4', 'b1', 'U12', 'S3'
_DATES = (datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone)
#: values that may be dict keys or set elements: hashing them never recurses
_KEY_TYPES = frozenset({str, int, float, bool, type(None), bytes, complex, *_DATES})
_ARRAY, _DTYPE, _SPIKEDATA, _USER = "array", "dtype", "spikedata", "user"


def _global_table() -> dict[tuple[str, str], Any]:
    """``(module, name)`` -> object, for every global a SpikeData pickle may name.

    Naming a global only resolves it; calling one is allowed only in the forms listed in
    :data:`_CALL_NAMES` (a class object left in the data is refused when the data is validated).
    """
    from numpy._core import multiarray, numeric

    table: dict[tuple[str, str], Any] = {}
    for mod in ("numpy._core", "numpy.core"):  # numpy 2.x and numpy 1.x names
        table[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    import numpy.dtypes as dtypes  # numpy >= 1.25 may name dtype classes

    for name in dir(dtypes):
        obj = getattr(dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            table[("numpy.dtypes", name)] = obj
    names = "bool int float complex str bytes bytearray list tuple dict set frozenset object"
    for mod in ("builtins", "__builtin__"):  # Python 3 and protocol 0-2 names
        for name in (*names.split(), "slice", "range"):
            table[(mod, name)] = getattr(builtins, name)
    import codecs

    table[("_codecs", "encode")] = codecs.encode  # protocol 0-2 bytes
    for mod in ("copyreg", "copy_reg"):  # protocol 0-1 objects
        table[(mod, "_reconstructor")] = copyreg._reconstructor
    table[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("date", "time", "datetime", "timedelta", "timezone"):
        table[("datetime", name)] = getattr(datetime, name)
    for module in (
        "spikelab.spikedata.spikedata",
        "spikelab.spikedata.spike_data",
        "spikelab.spikedata",
        "spikelab",
    ):
        table[(module, "SpikeData")] = SpikeData
    return table


#: callable -> name of the SafeUnpickler method that checks and performs the call
_CALL_NAMES = {
    "_reconstruct": "_call_reconstruct",
    "scalar": "_call_scalar",
    "_frombuffer": "_call_frombuffer",
    "dtype": "_call_dtype",
    "bytes": "_call_bytes",
    "bytearray": "_call_bytearray",
    "set": "_call_set",
    "frozenset": "_call_set",
    "complex": "_call_complex",
    "encode": "_call_encode",
    "_reconstructor": "_call_reconstructor",
    "OrderedDict": "_call_ordereddict",
    "date": "_call_date",
    "time": "_call_date",
    "datetime": "_call_date",
    "timedelta": "_call_timedelta",
    "timezone": "_call_timezone",
}
_TABLES: tuple[dict[tuple[str, str], Any], dict[int, tuple[Any, str]]] | None = None


def _tables() -> tuple[dict[tuple[str, str], Any], dict[int, tuple[Any, str]]]:
    global _TABLES
    if _TABLES is None:
        globals_ = _global_table()
        calls: dict[int, tuple[Any, str]] = {}
        for (_module, name), obj in globals_.items():
            method = _CALL_NAMES.get(name)
            if method:
                calls[id(obj)] = (obj, method)
        _TABLES = globals_, calls
    return _TABLES


def _canonical_dtype_state(typestr: str) -> tuple:
    return np.dtype(typestr).__reduce__()[2]


class SafeUnpickler(pickle._Unpickler):
    """Unpickler that builds only what a SpikeData pickle holds (see the module docstring).

    The pure-Python unpickler with its opcode table restricted: GLOBAL/STACK_GLOBAL resolve
    only SpikeData, numpy reconstruction helpers, builtin types and dates (anything else:
    :class:`UnsafePickleError` naming the global); REDUCE/NEWOBJ perform only the calls a
    pickler writes for those, each checked for its exact form; BUILD sets the state of a
    numpy array (checked against its shape and dtype), a numpy dtype (checked against the
    canonical state of that dtype) or the SpikeData (kept aside and validated when unpickling
    has ended), once each; INST, OBJ, EXT*, PERSID and out-of-band buffers are refused.
    ``extra_globals`` names more ``"module.qualname"`` globals to allow (calls, NEWOBJ and
    BUILD on them included) for pickles you trust; their instances are accepted as data.
    ``size`` (bytes of the file) bounds every declared payload. On its own it does not bound
    nesting or object counts: run :func:`scan_pickle` over the file first (as
    :func:`load_spikedata_from_pickle` does).
    """

    dispatch: dict[int, Any] = {}

    def __init__(
        self,
        file,
        *,
        source: str = "<pickle>",
        extra_globals: Iterable[str] = (),
        size: int | None = None,
    ):
        super().__init__(file)
        self._source = source
        self._extra = {tuple(g.rsplit(".", 1)) for g in extra_globals}
        self._file_readinto = getattr(file, "readinto", None)
        self._size = sys.maxsize if size is None else size
        self._pending: dict[int, tuple[Any, str, Any]] = {}  # objects awaiting their BUILD
        self._dtypes: dict[int, np.dtype] = {}  # dtypes whose state was set
        self._states: dict[int, tuple[SpikeData, dict]] = {}  # SpikeData -> its state
        self._user: dict[int, Any] = {}  # objects from the user's extra globals
        self._user_types: tuple[type, ...] = ()
        self._frame: io.BytesIO | None = None

    # ------------------------------------------------------------------------ the loop
    def load(self) -> Any:
        """Unpickle, then check that every array and SpikeData got its state and validate a
        SpikeData (its state is applied only now, once nothing in the stream can change it)."""
        try:
            obj = self._load()
            for _obj, kind, _ in self._pending.values():
                if kind == _ARRAY:
                    raise _malformed(
                        self._source,
                        "a numpy array is created (numpy's _reconstruct) but its data is never set",
                    )
                if kind == _SPIKEDATA:
                    raise InvalidSpikeDataError(
                        "the SpikeData has no state at all (none of "
                        f"{', '.join(STATE_FIELDS)} is set)"
                    )
            if type(obj) is SpikeData:
                self._finish_spikedata(obj)
            return obj
        finally:  # drop what the memo holds now (a failed load's traceback keeps self alive)
            self.memo.clear()
            self.stack = self.metastack = []
            for table in (self._pending, self._dtypes, self._states, self._user):
                table.clear()
            self._frame = None
            self.__dict__.pop("readinto", None)  # a bound method of self: a reference cycle

    def _load(self) -> Any:
        self._leave_frame()
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        dispatch = self.dispatch
        try:
            while True:
                key = self.read(1)
                if not key:
                    if self._frame is None:
                        raise EOFError
                    self._leave_frame()  # the frame ended where an opcode begins
                    continue
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def _refuse(self, what: str) -> UnsafePickleError:
        return _unsafe(self._source, what)

    def _bad(self, what: str) -> LoadError:
        return _malformed(self._source, what)

    # -------------------------------------------------------------------------- globals
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._extra:  # the user's: called, created and built freely
            obj = super().find_class(module, name)
            self._user[id(obj)] = obj
            if isinstance(obj, type) and obj not in self._user_types:
                self._user_types += (obj,)
            return obj
        obj = _tables()[0].get((module, name))
        if obj is not None:
            return obj
        named = f"{module}.{name}"
        if len(named) > 200 or not named.isprintable():  # keep the message one short line
            named = short_repr(named)[1:-1]
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle asks for the global "
            f"'{named}', which is not allowed in a SpikeData pickle (only SpikeData, "
            "numpy arrays and builtin containers are). Nothing from the file was executed. "
            + _OPT_IN
        )

    def _is_user(self, obj: Any) -> bool:
        return id(obj) in self._user or (
            bool(self._user_types) and isinstance(obj, self._user_types)
        )

    def _made_by_user(self, obj: Any) -> Any:
        self._user[id(obj)] = obj
        self._pending[id(obj)] = (obj, _USER, None)
        return obj

    # -------------------------------------------------------------------- sized payloads
    def _sized(self, n: int, what: str) -> int:
        if n > self._size:
            raise _corrupt(self._source, f"{what} declares {n} bytes, more than the whole file")
        return n

    def load_binbytes(self):
        self.append(self.read(self._sized(struct.unpack("<I", self.read(4))[0], "BINBYTES")))

    def load_binbytes8(self):
        self.append(self.read(self._sized(struct.unpack("<Q", self.read(8))[0], "BINBYTES8")))

    def load_binunicode(self):
        n = self._sized(struct.unpack("<I", self.read(4))[0], "BINUNICODE")
        self.append(str(self.read(n), "utf-8", "surrogatepass"))

    def load_binunicode8(self):
        n = self._sized(struct.unpack("<Q", self.read(8))[0], "BINUNICODE8")
        self.append(str(self.read(n), "utf-8", "surrogatepass"))

    def load_binstring(self):
        n = struct.unpack("<i", self.read(4))[0]
        if n < 0:
            raise self._bad("BINSTRING with a negative length")
        self.append(self._decode_string(self.read(self._sized(n, "BINSTRING"))))

    def load_bytearray8(self):
        buf = bytearray(self._sized(struct.unpack("<Q", self.read(8))[0], "BYTEARRAY8"))
        self.readinto(buf)
        self.append(buf)

    # Frames (protocol 4+) are read whole and their bytes served by the frame's own C
    # methods, not through pickle._Unframer's Python ones (a third of the unpickling time):
    # the scan has checked that every opcode lies wholly inside or outside a frame.
    def load_frame(self):
        size = self._sized(struct.unpack("<Q", self.read(8))[0], "FRAME")
        if self._frame is not None and self._frame.read(1):
            raise _corrupt(self._source, "a frame begins inside another")
        data = self._file_read(size)
        if len(data) != size:
            raise EOFError(f"the file ends {size - len(data)} bytes into a frame")
        frame = self._frame = io.BytesIO(data)
        self.read, self.readline, self.readinto = frame.read, frame.readline, frame.readinto

    def _leave_frame(self) -> None:
        self._frame = None
        self.read, self.readline = self._file_read, self._file_readline
        self.readinto = self._readinto_file

    def _readinto_file(self, buf: bytearray) -> int:
        if self._file_readinto is None:
            data = self._file_read(len(buf))
            n = len(data)
            buf[:n] = data
        else:
            n = self._file_readinto(buf) or 0
        if n != len(buf):
            raise EOFError(f"the file ends {len(buf) - n} bytes into a payload")
        return n

    def load_long4(self):
        n = struct.unpack("<i", self.read(4))[0]
        if n < 0 or n > MAX_INT_BYTES:
            raise _too_big(self._source, f"an integer of {n} bytes")
        self.append(pickle.decode_long(self.read(n)))

    # ---------------------------------------------------------------------- containers
    def _key(self, key: Any, what: str) -> Any:
        """Refuse dict keys / set elements whose hash could recurse or run code."""
        t = type(key)
        if t in _KEY_TYPES or isinstance(key, np.generic):
            return key
        if t is tuple and all(type(x) in _KEY_TYPES for x in key):
            return key
        if self._is_user(key):
            return key
        raise self._bad(
            f"{what} that is {_describe(key)} (only strings, numbers, bytes, dates "
            "and flat tuples of them)"
        )

    def _target(self, kinds: tuple[type, ...], what: str) -> Any:
        target = self.stack[-1]
        if type(target) in kinds or self._is_user(target):
            return target
        raise self._bad(f"{what} on {_describe(target)}")

    def load_append(self):
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    def load_appends(self):
        items = self.pop_mark()
        target = self._target((list,), "APPENDS")
        if type(target) is list:
            target.extend(items)
        else:
            for item in items:
                target.append(item)

    def load_setitem(self):
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        target = self._target((dict, collections.OrderedDict), "SETITEM")
        target[self._key(key, "a dict key")] = value

    def load_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise self._bad("SETITEMS with a key and no value")
        target = self._target((dict, collections.OrderedDict), "SETITEMS")
        for i in range(0, len(items), 2):
            key = items[i]
            if type(key) is not str:
                self._key(key, "a dict key")
            target[key] = items[i + 1]

    def load_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise self._bad("DICT with a key and no value")
        d = {}
        for i in range(0, len(items), 2):
            d[self._key(items[i], "a dict key")] = items[i + 1]
        self.append(d)

    def load_additems(self):
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        for item in items:
            target.add(self._key(item, "a set element"))

    def load_frozenset(self):
        items = self.pop_mark()
        self.append(frozenset(self._key(item, "a set element") for item in items))

    # ---------------------------------------------------------------------------- calls
    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        stack[-1] = self._call(func, args)

    def _call(self, func: Any, args: Any) -> Any:
        if id(func) in self._user and self._user[id(func)] is func:
            return self._made_by_user(func(*args))
        entry = _tables()[1].get(id(func))
        if entry is not None and entry[0] is func:
            if type(args) is not tuple:
                raise self._bad(f"the arguments of {_describe(func)} are not a tuple")
            return getattr(self, entry[1])(func, args)
        raise self._refuse(f"calls {_describe(func)}(...), which a SpikeData pickle never calls")

    def _wrong_form(self, func: Any, why: str) -> UnsafePickleError:
        return self._refuse(
            f"calls {_describe(func)} with arguments a pickler never writes ({why})"
        )

    def _ready_dtype(self, dtype: Any) -> np.dtype:
        if isinstance(dtype, np.dtype):
            ready = self._dtypes.get(id(dtype))
            if ready is dtype:
                return dtype
            raise self._bad("a numpy dtype is used before its state is set")
        raise self._bad(f"{_describe(dtype)} where a numpy dtype belongs")

    def _shape(self, shape: Any) -> tuple[int, ...]:
        if (
            type(shape) is not tuple
            or len(shape) > 32
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise self._bad("a numpy array shape that is not a tuple of up to 32 sizes >= 0")
        return shape

    def _check_size(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise self._bad(
                f"a numpy array of shape {shape} and dtype {dtype.str} needs {expected} bytes "
                f"of data, the pickle holds {len(data)}"
            )

    def _call_reconstruct(self, func, args):
        if (
            len(args) == 3
            and args[0] is np.ndarray
            and type(args[1]) is tuple
            and len(args[1]) == 1
            and type(args[1][0]) is int
            and args[1][0] == 0
            and type(args[2]) is bytes
            and args[2] == b"b"
        ):
            arr = func(np.ndarray, (0,), b"b")
            self._pending[id(arr)] = (arr, _ARRAY, None)
            return arr
        raise self._wrong_form(
            func,
            "only _reconstruct(numpy.ndarray, (0,), b'b') followed by the array's state is "
            "written; other shapes or classes give arrays of uninitialised memory",
        )

    def _call_frombuffer(self, func, args):
        if len(args) not in (4, 5) or type(args[0]) not in (bytes, bytearray):
            raise self._bad("numpy _frombuffer without (data, dtype, shape, order)")
        data, dtype, shape, order = args[:4]
        dtype = self._ready_dtype(dtype)
        shape = self._shape(shape)
        if len(args) == 4:
            if type(order) is not str or order not in ("C", "F"):
                raise self._bad("numpy _frombuffer with an order other than 'C' or 'F'")
            extra = ()
        else:
            axes = args[4]
            if order != "K" or type(axes) is not tuple or sorted(axes) != list(range(len(shape))):
                raise self._bad("numpy _frombuffer with an axis order that is not a permutation")
            if not all(type(a) is int for a in axes):
                raise self._bad("numpy _frombuffer with an axis order that is not integers")
            extra = (axes,)
        self._check_size(data, shape, dtype)
        return func(data, dtype, shape, order, *extra)

    def _call_scalar(self, func, args):
        if len(args) != 2 or type(args[1]) is not bytes:
            raise self._wrong_form(func, "a numpy scalar is written as scalar(dtype, bytes)")
        dtype = self._ready_dtype(args[0])
        if len(args[1]) != dtype.itemsize:
            raise self._bad(
                f"a numpy {dtype.str} scalar needs {dtype.itemsize} bytes, the pickle holds "
                f"{len(args[1])}"
            )
        return func(dtype, args[1])

    def _call_dtype(self, func, args):
        if len(args) != 3 or type(args[0]) is not str:
            raise self._wrong_form(func, "a dtype is written as dtype(typestr, False, True)")
        typestr, align, copy = args
        if not _NUMPY_TEXT.fullmatch(typestr):
            raise self._wrong_form(
                func,
                f"dtype {typestr[:40]!r}: only numeric and fixed-width text dtypes are allowed",
            )
        if (
            type(align) not in (bool, int)
            or align != 0
            or type(copy) not in (bool, int)
            or copy != 1
        ):
            raise self._wrong_form(func, "a dtype is written as dtype(typestr, False, True)")
        dtype = np.dtype(typestr)  # raises TypeError for sizes numpy does not have
        if (
            dtype.kind not in "biufcUS"
            or not 0 < dtype.itemsize <= 4 * MAX_TEXT_DTYPE
            or dtype.__reduce__()[1][0] != typestr
        ):
            raise self._wrong_form(func, f"dtype {typestr!r} is not a numeric or text dtype")
        dtype = np.dtype(typestr, False, True)  # a fresh copy: its state is set by BUILD
        self._pending[id(dtype)] = (dtype, _DTYPE, typestr)
        return dtype

    def _call_bytes(self, func, args):
        if args == ():
            return b""
        raise self._wrong_form(func, "bytes are written as bytes() (empty) or as data")

    def _call_encode(self, func, args):
        if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
            if type(args[1]) is str:
                return args[0].encode("latin-1")
        raise self._wrong_form(func, "bytes are written as _codecs.encode(str, 'latin1')")

    def _call_bytearray(self, func, args):
        if args == ():
            return bytearray()
        if len(args) == 1 and type(args[0]) in (bytes, bytearray):
            return bytearray(args[0])
        if len(args) == 2 and type(args[0]) is str and type(args[1]) is str:
            if args[1] in ("latin-1", "latin1"):
                return bytearray(args[0], "latin-1")
        raise self._wrong_form(func, "a bytearray is written from bytes or a latin-1 string")

    def _call_set(self, func, args):
        if len(args) == 1 and type(args[0]) is list:
            return func(self._key(item, "a set element") for item in args[0])
        raise self._wrong_form(func, "a set is written as set(list)")

    def _call_complex(self, func, args):
        if len(args) == 2 and all(type(a) in (int, float) for a in args):
            return complex(*args)
        raise self._wrong_form(func, "a complex number is written as complex(real, imag)")

    def _call_ordereddict(self, func, args):
        if args == ():
            return collections.OrderedDict()
        raise self._wrong_form(func, "an OrderedDict is written as OrderedDict() and its items")

    def _call_date(self, func, args):
        sizes = {datetime.date: 4, datetime.time: 6, datetime.datetime: 10}
        ok = len(args) in (1, 2) and type(args[0]) in (bytes, str) and len(args[0]) == sizes[func]
        if ok and len(args) == 2:
            ok = func is not datetime.date and (
                type(args[1]) is datetime.timezone or self._is_user(args[1])
            )
        if ok:
            return func(*args)
        raise self._wrong_form(func, "a date or time is written from its packed bytes")

    def _call_timedelta(self, func, args):
        if len(args) == 3 and all(type(a) is int for a in args):
            return func(*args)
        raise self._wrong_form(func, "a timedelta is written as timedelta(days, seconds, us)")

    def _call_timezone(self, func, args):
        if 1 <= len(args) <= 2 and type(args[0]) is datetime.timedelta:
            if len(args) == 1 or type(args[1]) is str:
                return func(*args)
        raise self._wrong_form(func, "a timezone is written as timezone(timedelta[, name])")

    def _call_reconstructor(self, func, args):
        if len(args) == 3:
            cls, base, state = args
            if cls is SpikeData and base is object and state is None:
                obj = object.__new__(SpikeData)
                self._pending[id(obj)] = (obj, _SPIKEDATA, None)
                return obj
            if (
                isinstance(cls, type)
                and self._is_user(cls)
                and (
                    (base is object and state is None)
                    or (base in (dict, list) and type(state) is base)
                )
            ):
                return self._made_by_user(func(cls, base, state))
        raise self._wrong_form(
            func, "only SpikeData and the classes you allow are reconstructed (protocols 0-1)"
        )

    def load_newobj(self):
        stack = self.stack
        args = stack.pop()
        cls = stack.pop()
        self.append(self._new(cls, args, {}))

    def load_newobj_ex(self):
        stack = self.stack
        kwargs = stack.pop()
        args = stack.pop()
        cls = stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(args) is not tuple or type(kwargs) is not dict:
            raise self._bad("NEWOBJ with arguments that are not a tuple (and a dict)")
        if cls is SpikeData:
            if args or kwargs:
                raise self._wrong_form(cls, "a SpikeData is created with no arguments")
            obj = object.__new__(SpikeData)
            self._pending[id(obj)] = (obj, _SPIKEDATA, None)
            return obj
        if isinstance(cls, type) and self._is_user(cls):
            return self._made_by_user(cls.__new__(cls, *args, **kwargs))
        raise self._refuse(
            f"creates an instance of {_describe(cls)}, which a SpikeData pickle never holds"
        )

    # ---------------------------------------------------------------------------- state
    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        entry = self._pending.pop(id(inst), None)
        if entry is None or entry[0] is not inst:
            raise self._refuse(
                f"sets the state of {_describe(inst)} that takes none or already has one, which "
                "no pickler writes"
            )
        kind = entry[1]
        if kind == _ARRAY:
            self._build_array(inst, state)
        elif kind == _DTYPE:
            self._build_dtype(inst, state, entry[2])
        elif kind == _SPIKEDATA:
            if type(state) is not dict:
                raise InvalidSpikeDataError(
                    f"SpikeData state must be a dict, got {type(state).__name__}"
                )
            self._states[id(inst)] = (inst, state)
        else:  # the user's own class
            stack.append(state)
            super().load_build()

    def _build_array(self, arr: np.ndarray, state: Any) -> None:
        if type(state) is not tuple or len(state) != 5:
            raise self._bad("a numpy array state that is not (1, shape, dtype, fortran, data)")
        version, shape, dtype, fortran, data = state
        if type(version) is not int or version != 1:
            raise self._bad(f"numpy array state version {short_repr(version)}")
        shape = self._shape(shape)
        dtype = self._ready_dtype(dtype)
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise self._bad("numpy array state with a Fortran flag that is not a bool")
        if type(data) is not bytes:
            raise self._bad(f"numpy array data held as {_describe(data)}, not bytes")
        self._check_size(data, shape, dtype)
        arr.__setstate__((1, shape, dtype, bool(fortran), data))

    def _build_dtype(self, dtype: np.dtype, state: Any, typestr: str) -> None:
        canonical = _canonical_dtype_state(typestr)
        if (
            type(state) is not tuple
            or len(state) != len(canonical)
            or any(
                i != 1 and (type(s) not in (int, bool, str, type(None)) or s != c)
                for i, (s, c) in enumerate(zip(state, canonical, strict=True))
            )
        ):
            raise self._refuse(
                f"sets a numpy {typestr!r} dtype to a state other than that dtype's own"
            )
        order = state[1]
        allowed = ("|",) if canonical[1] == "|" else ("<", ">")
        if type(order) is not str or order not in allowed:
            raise self._refuse(f"sets a numpy {typestr!r} dtype to byte order {short_repr(order)}")
        dtype.__setstate__((canonical[0], order, *canonical[2:]))
        self._dtypes[id(dtype)] = dtype

    # --------------------------------------------------------------- 3. the finished data
    def _finish_spikedata(self, sd: SpikeData) -> None:
        entry = self._states.get(id(sd))
        if entry is None or entry[0] is not sd:
            raise InvalidSpikeDataError("the SpikeData has no state")
        state = entry[1]
        for key in state:
            if type(key) is not str:
                raise InvalidSpikeDataError(
                    f"SpikeData state has a non-string key {short_repr(key)}"
                )
        missing = [k for k in STATE_FIELDS if k not in state]
        if missing:
            raise InvalidSpikeDataError(
                f"SpikeData state lacks {', '.join(map(repr, missing))} (a SpikeData pickle "
                f"sets all of {', '.join(STATE_FIELDS)})"
            )
        budget = [MAX_DATA_ITEMS]
        for key, value in state.items():
            if key == "train":
                _check_train(value)
            elif key in ("raw_data", "raw_time"):
                if value is not None and type(value) is not np.ndarray:
                    raise InvalidSpikeDataError(
                        f"{key} must be a numpy array, got {type(value).__name__}"
                    )
            else:
                _check_plain_data(key, value, budget, self._is_user)
        sd._apply_state(state)  # converts the trains and validates; no callable is left


def _check_train(train: Any) -> None:
    """Trains are a list (or tuple) of arrays or flat sequences of numbers (no deep lists)."""
    if type(train) not in (list, tuple):
        return  # SpikeData.__setstate__ names the fault
    for i, t in enumerate(train):
        if type(t) is np.ndarray:
            continue
        if type(t) in (list, tuple) and all(type(x) in (int, float) for x in t):
            continue
        raise InvalidSpikeDataError(
            f"unit {i}: spike times must be a numpy array of numbers (ms), got {type(t).__name__}"
        )


_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None), complex, *_DATES})
_PLAIN_KINDS = "biufcUS"
_PLAIN = (
    "plain data (str, numbers, bools, None, bytes, dates and times, lists, tuples, dicts with "
    "str keys, sets, numpy numbers and numeric arrays)"
)


def _check_plain_data(key: str, value: Any, budget: list[int], is_user) -> None:
    """Refuse anything in a SpikeData attribute but plain data, iteratively (no recursion),
    at most MAX_DATA_DEPTH deep, with ``budget[0]`` items left for all attributes."""

    def fault(v: Any, path: tuple, depth: int, why: str | None = None) -> InvalidSpikeDataError:
        where = key + "".join(f"[{short_repr(p)}]" for p in path)
        at = "" if not path else f" (at {where})"
        if why:
            return InvalidSpikeDataError(f"SpikeData attribute {key!r} {why}{at}")
        if isinstance(v, type) or callable(v):
            return InvalidSpikeDataError(
                f"SpikeData attribute {key!r} holds a callable or class; refused{at}"
            )
        return InvalidSpikeDataError(
            f"SpikeData attribute {key!r} holds {_describe(v)}{at}; only {_PLAIN} is accepted"
        )

    left = budget[0] - 1
    todo = [(value, 0, ())]
    while todo:
        v, depth, path = todo.pop()
        t = type(v)
        if t in _PLAIN_LEAVES:
            continue
        if t is dict or t is collections.OrderedDict or t in (list, tuple, set, frozenset):
            if depth >= MAX_DATA_DEPTH:
                raise fault(v, path, depth, f"is nested deeper than {MAX_DATA_DEPTH} levels")
            left -= len(v)
            if left < 0:
                break
            if t is dict or t is collections.OrderedDict:
                for k, x in v.items():
                    if type(k) is not str:
                        raise fault(v, path, depth, f"has a non-string key {short_repr(k)}")
                    if type(x) not in _PLAIN_LEAVES:
                        todo.append((x, depth + 1, (*path, k)))
            else:
                for i, x in enumerate(v):
                    if type(x) not in _PLAIN_LEAVES:
                        todo.append((x, depth + 1, (*path, i)))
            continue
        if t is bytes or t is bytearray:
            if len(v) > MAX_DATA_BYTES:
                raise fault(v, path, depth, f"holds {len(v)} bytes (bound {MAX_DATA_BYTES})")
            continue
        if t is np.ndarray:
            if v.dtype.kind not in _PLAIN_KINDS or v.dtype.hasobject:
                raise fault(v, path, depth, f"holds a numpy array of dtype {v.dtype.str}")
            left -= v.size
            continue
        if isinstance(v, np.generic) and v.dtype.kind in _PLAIN_KINDS:
            continue
        if is_user(v):
            continue
        raise fault(v, path, depth)
    if left < 0:
        raise InvalidSpikeDataError(
            f"SpikeData attribute {key!r}: metadata and attributes hold more than "
            f"{MAX_DATA_ITEMS} items"
        )
    budget[0] = left


def _build_dispatch() -> dict[int, Any]:
    """SafeUnpickler's opcode table: the stock handlers that only push plain values or use
    the memo and stack, SafeUnpickler's own for everything that stores, calls or sizes, and a
    refusal for the rest (INST, OBJ, EXT*, PERSID, DUP, out-of-band buffers, invalid bytes)."""
    stock = (
        "PROTO STOP MARK POP POP_MARK NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG "
        "LONG1 FLOAT BINFLOAT STRING SHORT_BINSTRING UNICODE SHORT_BINUNICODE SHORT_BINBYTES "
        "EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST EMPTY_DICT EMPTY_SET GET BINGET "
        "LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE GLOBAL STACK_GLOBAL"
    ).split()
    own = (
        "FRAME BINBYTES BINBYTES8 BINUNICODE BINUNICODE8 BINSTRING BYTEARRAY8 LONG4 APPEND "
        "APPENDS SETITEM SETITEMS DICT ADDITEMS FROZENSET REDUCE NEWOBJ NEWOBJ_EX BUILD"
    ).split()
    table: dict[int, Any] = {}
    for code in range(256):
        table[code] = _refusal(code)
    for name in stock:
        code = getattr(pickle, name)[0]
        table[code] = pickle._Unpickler.dispatch[code]
    for name in own:
        table[getattr(pickle, name)[0]] = getattr(SafeUnpickler, f"load_{name.lower()}")
    return table


def _refusal(code: int):
    name = _OPNAMES.get(code)
    unsafe = name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4")

    def refuse(self: SafeUnpickler) -> None:
        if name is None:
            raise _corrupt(self._source, f"invalid opcode {bytes([code])!r}")
        if unsafe:
            raise self._refuse(f"uses the {name} opcode, which is never used for a SpikeData")
        raise _corrupt(self._source, f"the {name} opcode is never used in a SpikeData pickle")

    return refuse


SafeUnpickler.dispatch = _build_dispatch()


# ------------------------------------------------------------------------------ the loader
def _exception_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return "?"
    text = " ".join(text.split())  # one line
    return text if len(text) <= 200 else text[:200] + "..."


def _read_local_spikedata(
    path: Path, *, source: str, trusted: bool, allow_globals: Iterable[str]
) -> SpikeData:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{source}: is a directory, not a pickle file") from None
    if path.is_dir():
        raise LoadError(f"{source}: is a directory, not a pickle file")
    if size == 0:
        raise LoadError(f"{source}: the file is empty (0 bytes), not a SpikeData pickle")
    allow_globals = list(allow_globals)
    with open(path, "rb", buffering=0) as raw:
        try:
            obj = _load(raw, source=source, trusted=trusted, allow_globals=allow_globals)
        except (UnsafePickleError, LoadError, OSError):
            raise  # already name the file (OSError: a fault of the disk, not of the data)
        except InvalidSpikeDataError as exc:
            raise LoadError(f"{source}: invalid SpikeData: {exc}") from None
        except (EOFError, pickle.UnpicklingError) as exc:
            raise _corrupt(source, _exception_text(exc) or "unexpected end") from None
        except MemoryError:
            raise LoadError(
                f"{source}: corrupt pickle (asks for more memory than exists)"
            ) from None
        except RecursionError:
            raise LoadError(
                f"{source}: corrupt pickle (RecursionError: nested too deeply)"
            ) from None
        except Exception as exc:  # whatever else the data provokes: one LoadError naming it
            raise LoadError(
                f"{source}: corrupt pickle ({type(exc).__name__}: {_exception_text(exc)})"
            ) from None
    if not isinstance(obj, SpikeData):
        raise LoadError(
            f"{source}: the pickle holds a {type(obj).__module__}.{type(obj).__qualname__}, "
            "not a SpikeData"
        )
    return obj


def _load(raw: Any, *, source: str, trusted: bool, allow_globals: list[str]) -> Any:
    """Scan, unpickle and validate the open file ``raw`` (or, trusted, ``pickle.load`` it and
    validate the SpikeData it holds)."""
    before = os.fstat(raw.fileno())
    if trusted:  # explicit, documented opt-in for trusted files
        obj = pickle.load(io.BufferedReader(raw, buffer_size=1 << 20))
        if isinstance(obj, SpikeData):
            validate_finished(obj)
        return obj
    scan_pickle(raw, before.st_size, source=source)
    raw.seek(0)
    reader = io.BufferedReader(raw, buffer_size=1 << 20)
    obj = SafeUnpickler(
        reader, source=source, extra_globals=allow_globals, size=before.st_size
    ).load()
    if isinstance(obj, SpikeData) and type(obj) is not SpikeData:  # an allowed subclass
        validate_finished(obj)
    after = os.fstat(raw.fileno())
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ):
        raise LoadError(f"{source}: the file changed while it was read; load it once complete")
    return obj


def load_spikedata_from_pickle(
    filepath: str | os.PathLike,
    *,
    allow_remote: bool = False,
    trusted: bool = False,
    allow_globals: Iterable[str] = (),
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> SpikeData:
    """Load a SpikeData pickle (local path or, with ``allow_remote=True``, an ``s3://`` URL).

    The file is scanned (:func:`scan_pickle`), unpickled with :class:`SafeUnpickler` (only
    SpikeData, numpy arrays and builtin containers may be built, each in the form a pickler
    writes) and the finished SpikeData validated. ``trusted=True`` uses plain ``pickle.load``
    instead (only for files you trust: a pickle can run any code) and still validates the
    SpikeData; ``allow_globals`` allows named extra globals. Every refusal is an
    :class:`UnsafePickleError` or a :class:`LoadError` naming the file. Times are in ms.
    """
    from spikelab import s3 as s3_utils

    source = os.fspath(filepath)
    if s3_utils.is_s3_url(source):
        if not allow_remote:
            raise LoadError(f"{source}: remote pickles need allow_remote=True")
        with tempfile.TemporaryDirectory(prefix="spikelab-s3-") as tmp:
            local = Path(tmp) / "download.pkl"
            s3_utils.download_from_s3(
                source,
                local,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
                endpoint_url=endpoint_url,
            )
            return _read_local_spikedata(
                local, source=source, trusted=trusted, allow_globals=allow_globals
            )
    return _read_local_spikedata(
        Path(source), source=source, trusted=trusted, allow_globals=allow_globals
    )


class _GatheringWriter:
    """Write-only file for ``pickle.dump`` that collects the pickler's pieces (small frames and
    whole array buffers, referenced, not copied) and hands them to the OS in few ``os.writev``
    calls.

    A buffered file makes one or two write calls per array: with 1000s of units their cost
    (~10 us each on ext4) doubles the time of writing the bytes themselves. The object being
    pickled must not change during the dump.
    """

    MAX_PIECES = 1024  # pieces per call at most (lowered to the system's IOV_MAX below)
    MAX_BYTES = 4 << 20  # bytes per call at most: bounds the frames kept; fastest measured

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pieces: list[Any] = []
        self._size = 0
        with contextlib.suppress(AttributeError, ValueError, OSError):
            iov_max = os.sysconf("SC_IOV_MAX")
            if iov_max > 0:
                self.MAX_PIECES = min(self.MAX_PIECES, iov_max)

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._pieces.append(data)
        self._size += size
        if len(self._pieces) >= self.MAX_PIECES or self._size >= self.MAX_BYTES:
            self.flush()
        return size

    def flush(self) -> None:
        pieces, size = self._pieces, self._size
        self._pieces, self._size = [], 0
        while size:
            done = os.writev(self._fd, pieces)
            if done <= 0:
                raise OSError(f"no byte written of {size} (file descriptor {self._fd})")
            if done < size:  # a short write (e.g. over 2 GiB at once): resume byte-exactly
                pieces = _unwritten(pieces, done)
            size -= done


def _unwritten(pieces: list[Any], done: int) -> list[memoryview]:
    """What remains of ``pieces`` (bytes-like objects or PickleBuffers) after ``done`` bytes."""
    views = [
        p.raw() if isinstance(p, pickle.PickleBuffer) else memoryview(p).cast("B") for p in pieces
    ]
    i = 0
    while done >= views[i].nbytes:
        done -= views[i].nbytes
        i += 1
    return [views[i][done:], *views[i + 1 :]]


def _dump(obj: Any, path: str | os.PathLike, protocol: int) -> None:
    """Pickle ``obj`` into a new file at ``path`` (mode 0666 & ~umask) with few system calls."""
    if not hasattr(os, "writev"):  # not on Windows
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        out = _GatheringWriter(fd)
        pickle.dump(obj, out, protocol=protocol)
        out.flush()
    finally:
        os.close(fd)


def export_to_pickle(
    obj: Any,
    filepath: str | os.PathLike,
    *,
    protocol: int | None = None,
    s3_upload: bool = False,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """Pickle ``obj`` atomically to ``filepath`` and return the path (or the ``s3://`` URL).

    Local files are written to a temporary name and renamed, so a failed dump leaves any
    previous file intact. With ``s3_upload=True``, ``filepath`` is an ``s3://bucket/key`` URL:
    the object is pickled to a local temporary file, uploaded (multipart for large files) and
    the temporary file removed. Credentials default to boto3's chain (environment, shared
    files, instance role); ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) selects an S3-compatible
    store. ``protocol`` defaults to ``pickle.HIGHEST_PROTOCOL``.
    """
    from spikelab import s3 as s3_utils

    if protocol is None:
        protocol = pickle.HIGHEST_PROTOCOL
    if (
        isinstance(protocol, bool)
        or not isinstance(protocol, int)
        or not -1 <= protocol <= pickle.HIGHEST_PROTOCOL
    ):
        raise ExportError(
            f"protocol must be an integer from 0 to {pickle.HIGHEST_PROTOCOL}, got {protocol!r}"
        )
    target = os.fspath(filepath)
    remote = s3_utils.is_s3_url(target)
    if s3_upload and not remote:
        raise ExportError(f"s3_upload=True needs an s3://bucket/key destination, got {target!r}")
    if remote and not s3_upload:
        raise ExportError(f"{target}: writing to an s3:// URL needs s3_upload=True")
    if not remote:
        with atomic_file(target) as tmp:
            _dump(obj, tmp, protocol)
        return target
    s3_utils.parse_s3_url(target)  # validate before pickling
    with tempfile.TemporaryDirectory(prefix="spikelab-upload-") as tmp:
        local = Path(tmp) / "upload.pkl"
        _dump(obj, local, protocol)
        s3_utils.upload_to_s3(
            local,
            target,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            region_name=region_name,
            endpoint_url=endpoint_url,
        )
    return target


# --------------------------------------------------------------------------- registry entry
class PickleFormat(Format):
    """A SpikeData pickle, read back with the restricted unpickler (or the job's opt-ins)."""

    name = "pickle"
    description = "SpikeData pickle (SpikeLab's own format), written atomically"
    extension = ".pkl"
    option_keys = ("protocol",)
    resources = ResourceModel(base_mem_mb=300)

    def writer(self):
        return export_to_pickle

    def reader(self):
        return load_spikedata_from_pickle

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        loading = dict(pickle_loading or {})
        return {k: loading[k] for k in ("trusted", "allow_globals") if k in loading}


FORMAT = PickleFormat()

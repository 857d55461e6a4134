"""Step 1 of loading an untrusted pickle: read its opcode stream without building anything,
and refuse streams that nest too deeply, make too many objects, declare payloads larger than
the file, change an object after it was placed in another, or use opcodes a SpikeData pickle
never needs. Also the bounds and the errors every step raises.

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

import pickle
from typing import Any, NamedTuple

from spikelab.formats.errors import LoadError

__all__ = [
    "MAX_NESTING",
    "MAX_OBJECTS",
    "MAX_INT_BYTES",
    "MAX_DATA_DEPTH",
    "MAX_DATA_ITEMS",
    "MAX_DATA_BYTES",
    "UnsafePickleError",
    "ScanReport",
    "scan_pickle",
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


OPT_IN = "If you trust this file, see 'Safety' in the README for the opt-in."


def unsafe(source: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: refused to load: the pickle {what}. Nothing from the file was executed. "
        + OPT_IN
    )


def corrupt(source: str, what: str) -> LoadError:
    return LoadError(f"{source}: not a readable pickle (truncated or corrupt: {what})")


def too_big(source: str, what: str) -> LoadError:
    return LoadError(
        f"{source}: refused to load: {what}; SpikeData pickles stay far below this bound, so the "
        "file is damaged or hostile"
    )


def malformed(source: str, what: str) -> LoadError:
    return LoadError(f"{source}: malformed SpikeData pickle: {what}")


def describe_object(obj: Any) -> str:
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
OPNAMES = {op.code.encode("latin-1")[0]: op.name for op in __import__("pickletools").opcodes}

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
        raise corrupt(source, f"the file ends inside an opcode at byte {base + pos}")
    rest = buf[pos:]
    buf = rest + fh.read(max(_SCAN_CHUNK, n - len(rest)))
    if len(buf) < n:
        raise corrupt(source, f"the file ends inside an opcode at byte {base + pos}")
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
            raise corrupt(source, f"a text argument at byte {start} has no end of line")


def _short_line(fh: Any, buf: bytes, base: int, pos: int, limit: int, size: int, source: str):
    """``(text, buf, base, pos, blen)``: a text argument of at most ``limit`` bytes."""
    if pos + limit + 1 > len(buf) and base + len(buf) < size:
        buf, base, pos, _ = _refill(
            fh, buf, base, pos, min(limit + 1, size - base - pos), size, source
        )
    i = buf.find(b"\n", pos, pos + limit + 1)
    if i < 0:
        raise corrupt(source, f"a name or index at byte {base + pos} is too long or unended")
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
        raise corrupt(source, f"{name} at byte {at} fills something that is not a container")
    if target[1] & _FROZEN:
        raise unsafe(
            source,
            f"changes a container after it was placed in another ({name} at byte {at}), "
            "which no pickler writes",
        )
    for it in items:
        if it is target:
            raise corrupt(source, f"a container contains itself ({name} at byte {at})")
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
                    raise corrupt(source, f"MEMOIZE with nothing to store at byte {base + pos - 1}")
                memo[len(memo)] = stack[-1]
                if len(memo) > max_objects:
                    raise too_big(source, f"more than {max_objects} memo entries")
                continue
            n = leaf_size[op]
            if n >= 0:  # NONE, NEWTRUE, NEWFALSE, BININT1, BININT2, BININT, BINFLOAT
                if n:
                    if pos + n > blen:
                        buf, base, pos, blen = _refill(fh, buf, base, pos, n, size, source)
                    pos += n
                    if base + pos > frame_end > base + pos - n - 1:
                        raise corrupt(
                            source, f"an opcode crosses the end of its frame at byte {frame_end}"
                        )
                stack.append(0)
                objects += 1
                if objects > max_objects:
                    raise too_big(source, f"more than {max_objects} objects")
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
                    raise corrupt(
                        source, f"an opcode crosses the end of its frame at byte {frame_end}"
                    )
                if op == 0x68 or op == 0x6A:
                    try:
                        stack.append(memo[value])
                    except KeyError:
                        raise corrupt(
                            source, f"memo index {value} at byte {base + pos - n - 1} was never set"
                        ) from None
                else:
                    if len(stack) <= floor:
                        raise corrupt(
                            source, f"memo store with nothing to store at byte {base + pos - n - 1}"
                        )
                    memo[value] = stack[-1]
                    if len(memo) > max_objects:
                        raise too_big(source, f"more than {max_objects} memo entries")
                continue
            at = base + pos - 1
            spec = table[op]
            if spec is None:
                raise corrupt(source, f"invalid opcode {bytes([op])!r} at byte {at}")
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
                        raise corrupt(source, f"memo index {text[:20]!r} at byte {at}")
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
                        raise corrupt(source, f"negative length at byte {at}")
                    if n > size - base - pos:
                        raise corrupt(
                            source,
                            f"{OPNAMES[op]} at byte {at} declares {n} bytes, more than the "
                            f"{size - base - pos} left in the file",
                        )
                    if k and n > MAX_INT_BYTES:
                        raise too_big(source, f"an integer of {n} bytes at byte {at}")
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
                raise corrupt(source, f"the opcode at byte {at} crosses the end of its frame")

            depth = 0  # of the container this opcode makes or fills
            if action == _LEAF:
                stack.append(0)
                objects += 1
            elif action == _GET:
                try:
                    stack.append(memo[value])
                except KeyError:
                    raise corrupt(
                        source, f"memo index {value} at byte {at} was never set"
                    ) from None
            elif action == _PUT:
                if len(stack) <= floor:
                    raise corrupt(source, f"memo store with nothing to store at byte {at}")
                memo[value] = stack[-1]
                if len(memo) > max_objects:
                    raise too_big(source, f"more than {max_objects} memo entries")
            elif action == _EMPTY:
                stack.append([1, _FILLABLE])
                objects += 1
            elif action == _TUPLEN:
                if k:
                    if len(stack) - floor < k:
                        raise corrupt(source, f"a tuple with too few items at byte {at}")
                    depth = _absorb(stack[-k:]) + 1
                    del stack[-k:]
                    stack.append([depth, 0])
                else:
                    stack.append(0)
                objects += 1
            elif action == _ADD:
                if len(stack) - floor < k + 1:
                    raise corrupt(source, f"{OPNAMES[op]} with too few items at byte {at}")
                items = stack[-k:]
                del stack[-k:]
                depth = _fill(stack[-1], items, at, OPNAMES[op], source)
            elif action == _ADDMARK or action == _SEQ or action == _MSEQ or action == _POPMARK:
                if not marks:
                    raise corrupt(source, f"{OPNAMES[op]} without a MARK at byte {at}")
                m = marks.pop()
                items = stack[m:]
                del stack[m:]
                floor = marks[-1] if marks else 0
                if action == _ADDMARK:
                    if len(stack) <= floor:
                        raise corrupt(source, f"{OPNAMES[op]} at byte {at} has nothing to fill")
                    depth = _fill(stack[-1], items, at, OPNAMES[op], source)
                elif action != _POPMARK:
                    depth = _absorb(items) + 1
                    stack.append([depth, _FILLABLE if action == _MSEQ else 0])
                    objects += 1
            elif action == _GLOBAL2:
                if len(stack) - floor < 2:
                    raise corrupt(source, f"STACK_GLOBAL without a name at byte {at}")
                del stack[-2:]
                stack.append(0)
                objects += 1
            elif action == _CALL or action == _NEWOBJEX:
                n = 3 if action == _NEWOBJEX else 2
                if len(stack) - floor < n:
                    raise corrupt(source, f"{OPNAMES[op]} with too few items at byte {at}")
                depth = max(_absorb(stack[-n:]), 1)
                del stack[-n:]
                stack.append([depth, _FILLABLE | _BUILDABLE])
                objects += 1
            elif action == _BUILD:
                if len(stack) - floor < 2:
                    raise corrupt(source, f"BUILD with too few items at byte {at}")
                state = stack.pop()
                target = stack[-1]
                if not target or not target[1] & _BUILDABLE:
                    raise unsafe(
                        source,
                        f"sets the state of an object twice, or of one that takes none (BUILD "
                        f"at byte {at}), which no pickler writes",
                    )
                if target[1] & _FROZEN:
                    raise unsafe(
                        source,
                        f"changes an object after it was placed in another (BUILD at byte {at}), "
                        "which no pickler writes",
                    )
                if state is target:
                    raise corrupt(source, f"an object is its own state (BUILD at byte {at})")
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
                    raise corrupt(source, f"POP on an empty stack at byte {at}")
            elif action == _FRAME:
                if at < frame_end and base + pos < frame_end:
                    raise corrupt(source, f"a frame begins inside another at byte {at}")
                if value > size - base - pos:
                    raise corrupt(
                        source,
                        f"FRAME at byte {at} declares {value} bytes, more than the "
                        f"{size - base - pos} left in the file",
                    )
                frame_end = base + pos + value
            elif action == _PROTO:
                if value > pickle.HIGHEST_PROTOCOL:
                    raise corrupt(source, f"unsupported pickle protocol {value}")
                protocol = value
            elif action == _STOP:
                if marks or len(stack) != 1:
                    raise corrupt(source, f"STOP at byte {at} with an unbalanced stack")
                break
            elif action == _UNSAFE:
                raise unsafe(
                    source,
                    f"uses the {OPNAMES[op]} opcode (at byte {at}), which constructs objects "
                    "outside the allow-list and is never used for a SpikeData",
                )
            else:  # _UNUSED
                raise corrupt(
                    source,
                    f"the {OPNAMES[op]} opcode at byte {at} is never used in a SpikeData pickle",
                )
            if depth > deepest:
                deepest = depth
                if depth > max_nesting:
                    raise too_big(
                        source, f"containers nested more than {max_nesting} deep (at byte {at})"
                    )
            if objects > max_objects:
                raise too_big(source, f"more than {max_objects} objects")
    except IndexError:  # a pop from an empty stack
        raise corrupt(source, f"stack underflow at byte {base + pos}") from None
    return ScanReport(opcodes, objects, len(memo), deepest, largest, protocol)

"""Hostile pickles written opcode by opcode, for tests/test_hostile_pickles.py.

Each :class:`Hostile` is one file: its bytes, the error class the loader must raise, a
fragment of the message, and whether the pickle is also fed to the restricted unpickler with
the scan skipped (``unscanned``: what the unpickler alone must refuse, as a second line of
defence). None of them runs code; they try to crash the process (C recursion, out-of-bounds
reads), exhaust its memory, read uninitialised memory, or change a SpikeData after it was
validated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from spikelab.spikedata import SpikeData

# ------------------------------------------------------------------------------- opcodes
MARK, STOP, POP, TUPLE, TUPLE1, TUPLE3 = b"(", b".", b"0", b"t", b"\x85", b"\x87"
EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT = b")", b"]", b"}"
APPEND, APPENDS, SETITEM, SETITEMS = b"a", b"e", b"s", b"u"
REDUCE, BUILD, NEWOBJ, MEMOIZE, NONE = b"R", b"b", b"\x81", b"\x94", b"N"
NEWTRUE, NEWFALSE = b"\x88", b"\x89"


def proto(n: int = 4) -> bytes:
    return b"\x80" + bytes([n])


def text(s: str) -> bytes:
    data = s.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def raw(b: bytes) -> bytes:
    """bytes (SHORT_BINBYTES / BINBYTES)."""
    return (b"C" + bytes([len(b)]) if len(b) < 256 else b"B" + struct.pack("<I", len(b))) + b


def bytearray8(b: bytes) -> bytes:
    return b"\x96" + struct.pack("<Q", len(b)) + b


def integer(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def floating(x: float) -> bytes:
    return b"G" + struct.pack(">d", x)


def glob(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + REDUCE


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def dict_of(items: dict[str, bytes]) -> bytes:
    return EMPTY_DICT + MARK + b"".join(text(k) + v for k, v in items.items()) + SETITEMS


def list_of(*items: bytes) -> bytes:
    return EMPTY_LIST + MARK + b"".join(items) + APPENDS


CANONICAL_F8_STATE = tup(
    integer(3), text("<"), NONE, NONE, NONE, integer(-1), integer(-1), integer(0)
)


def dtype(typestr: str = "f8", state: bytes = CANONICAL_F8_STATE) -> bytes:
    return call(glob("numpy", "dtype"), text(typestr), NEWFALSE, NEWTRUE) + state + BUILD


def frombuffer(data: bytes, dtype_ops: bytes, shape: tuple[int, ...]) -> bytes:
    return call(
        glob("numpy._core.numeric", "_frombuffer"),
        bytearray8(data),
        dtype_ops,
        tup(*map(integer, shape)),
        text("C"),
    )


# memo slots used by spikedata(): what a trick after the BUILD can GET again
F8, TRAIN_LIST, TRAIN0, METADATA, STATE = 900, 901, 902, 903, 904


def spikedata(
    *, fields: dict[str, bytes] | None = None, omit: tuple[str, ...] = (), after: bytes = b""
) -> bytes:
    """A valid protocol-4 SpikeData pickle (one unit, spikes at 1 and 2 ms, length 10 ms),
    written opcode by opcode. ``fields`` replaces the opcodes of some fields, ``omit`` leaves
    fields out, ``after`` runs once the SpikeData has its state (the SpikeData is on the
    stack; the memo holds the f8 dtype, the train list, its array, the metadata and the state
    at F8, TRAIN_LIST, TRAIN0, METADATA and STATE)."""
    train0 = frombuffer(np.array([1.0, 2.0]).tobytes(), dtype() + put(F8), (2,)) + put(TRAIN0)
    default = {
        "train": EMPTY_LIST + put(TRAIN_LIST) + MARK + train0 + APPENDS,
        "N": integer(1),
        "length": floating(10.0),
        "start_time": floating(0.0),
        "neuron_attributes": NONE,
        "metadata": EMPTY_DICT + put(METADATA) + MARK + text("fs_Hz") + floating(2e4) + SETITEMS,
        "raw_data": NONE,
        "raw_time": NONE,
    }
    default.update(fields or {})
    items = b"".join(text(k) + v for k, v in default.items() if k not in omit)
    return (
        proto(4)
        + glob("spikelab.spikedata.spikedata", "SpikeData")
        + EMPTY_TUPLE
        + NEWOBJ
        + EMPTY_DICT
        + put(STATE)
        + MARK
        + items
        + SETITEMS
        + BUILD
        + after
        + STOP
    )


def nested(depth: int, leaf: bytes = NONE, one: bytes = TUPLE1) -> bytes:
    """``depth`` containers inside each other around ``leaf`` (TUPLE1: tuples)."""
    return leaf + one * depth


@dataclass
class Probe:
    """A user's own class, for the ``allow_globals`` opt-in."""

    name: str
    channels: list


class LabSpikeData(SpikeData):
    """A user's SpikeData subclass, for the ``allow_globals`` opt-in."""


# ------------------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Hostile:
    """One hostile file: its bytes, the error the loader raises and a fragment of it."""

    name: str
    data: bytes
    error: str  # "UnsafePickleError" or "LoadError"
    fragment: str
    unscanned: tuple[str, str] | None = None  # (error, fragment) with the scan skipped


NAN = struct.pack("<d", float("nan"))


def _array_state(shape: tuple[int, ...], data: bytes, typestr_memo: int = F8) -> bytes:
    return tup(integer(1), tup(*map(integer, shape)), get(typestr_memo), NEWFALSE, raw(data))


def _late_build(state: bytes) -> bytes:
    """After the SpikeData's BUILD: BUILD again on the memoised train array, then POP."""
    return get(TRAIN0) + state + BUILD + POP


def _cases() -> list[Hostile]:
    sd_glob = glob("spikelab.spikedata.spikedata", "SpikeData")
    md = "metadata"
    cases = [
        # ------------------------------------------------- C recursion (segfault) and depth
        Hostile(
            "deep_tuple_as_dict_key",  # hashing a 300 000-deep tuple overflows the C stack
            proto(4) + EMPTY_DICT + nested(300_000) + NONE + SETITEM + STOP,
            "LoadError",
            "containers nested more than 64 deep",
            unscanned=("LoadError", "a dict key that is a builtins.tuple"),
        ),
        Hostile(
            "deep_list_in_metadata",  # every exporter's json_safe recursed on it
            spikedata(fields={md: dict_of({"deep": _deep(100_000)})}),
            "LoadError",
            "containers nested more than 64 deep",
        ),
        Hostile(
            "metadata_40_deep",  # within the scan's bound, beyond the data's
            spikedata(fields={md: dict_of({"deep": _deep(40)})}),
            "LoadError",
            "SpikeData attribute 'metadata' is nested deeper than 32 levels",
        ),
        Hostile(
            "crafted_dtype_state",  # dtype.__setstate__ with a forged elsize reads out of bounds
            spikedata(
                fields={
                    md: dict_of(
                        {
                            "d": dtype(
                                "f8",
                                tup(
                                    integer(3),
                                    text("<"),
                                    NONE,
                                    NONE,
                                    NONE,
                                    integer(1 << 30),
                                    integer(1),
                                    integer(0),
                                ),
                            )
                        }
                    )
                }
            ),
            "UnsafePickleError",
            "sets a numpy 'f8' dtype to a state other than that dtype's own",
            unscanned=("UnsafePickleError", "dtype's own"),
        ),
        Hostile(
            "dtype_byte_order_forged",
            proto(4)
            + dtype(
                "f8", tup(integer(3), text("|"), *[NONE] * 3, integer(-1), integer(-1), integer(0))
            )
            + STOP,
            "UnsafePickleError",
            "byte order '|'",
        ),
        # ------------------------------------------------ calls a pickler never writes
        Hostile(
            "bytes_of_1e20",
            proto(4) + call(glob("builtins", "bytes"), integer(10**20)) + STOP,
            "UnsafePickleError",
            "calls builtins.bytes with arguments a pickler never writes",
        ),
        Hostile(
            "float_of_10_to_400",
            proto(4) + call(glob("builtins", "float"), integer(10**400)) + STOP,
            "UnsafePickleError",
            "calls builtins.float(...), which a SpikeData pickle never calls",
        ),
        Hostile(
            "codec_lookup",
            proto(4) + call(glob("_codecs", "encode"), text("x"), text("no-such-codec")) + STOP,
            "UnsafePickleError",
            "calls _codecs.encode with arguments a pickler never writes",
        ),
        Hostile(
            "bytearray_of_2_5e9",
            proto(4) + call(glob("builtins", "bytearray"), integer(2_500_000_000)) + STOP,
            "UnsafePickleError",
            "calls builtins.bytearray with arguments a pickler never writes",
        ),
        Hostile(
            "list_of_range_5e7",
            proto(4)
            + call(glob("builtins", "list"), call(glob("builtins", "range"), integer(50_000_000)))
            + STOP,
            "UnsafePickleError",
            "calls builtins.range(...)",
        ),
        Hostile(
            "zero_stride_train",  # ndarray((2.5e8,), f8, 8 bytes, 0, (0,)): 2 GB once copied
            spikedata(
                fields={
                    "train": list_of(
                        call(
                            glob("numpy", "ndarray"),
                            tup(integer(250_000_000)),
                            text("<f8"),
                            raw(bytes(8)),
                            integer(0),
                            tup(integer(0)),
                        )
                    )
                }
            ),
            "UnsafePickleError",
            "calls numpy.ndarray(...), which a SpikeData pickle never calls",
        ),
        Hostile(
            "bare_ndarray_uninitialised",  # other recordings' spike times, read back
            spikedata(
                fields={
                    md: dict_of(
                        {"leak": call(glob("numpy", "ndarray"), tup(integer(2000)), text("<f8"))}
                    )
                }
            ),
            "UnsafePickleError",
            "calls numpy.ndarray(...)",
        ),
        Hostile(
            "reconstruct_with_a_shape_and_no_build",
            spikedata(
                fields={
                    md: dict_of(
                        {
                            "leak": call(
                                glob("numpy._core.multiarray", "_reconstruct"),
                                glob("numpy", "ndarray"),
                                tup(integer(2000)),
                                raw(b"f8"),
                            )
                        }
                    )
                }
            ),
            "UnsafePickleError",
            "uninitialised memory",
        ),
        Hostile(
            "reconstruct_never_built",
            spikedata(
                fields={
                    md: dict_of(
                        {
                            "a": call(
                                glob("numpy._core.multiarray", "_reconstruct"),
                                glob("numpy", "ndarray"),
                                tup(integer(0)),
                                raw(b"b"),
                            )
                        }
                    )
                }
            ),
            "LoadError",
            "a numpy array is created (numpy's _reconstruct) but its data is never set",
        ),
        Hostile(
            "object_array",
            spikedata(fields={md: dict_of({"o": frombuffer(bytes(8), dtype("O8"), (1,))})}),
            "UnsafePickleError",
            "dtype 'O8'",
        ),
        Hostile(
            "object_array_by_state",  # _reconstruct + a state whose data is a list of objects
            spikedata(
                fields={
                    md: dict_of(
                        {
                            "o": call(
                                glob("numpy._core.multiarray", "_reconstruct"),
                                glob("numpy", "ndarray"),
                                tup(integer(0)),
                                raw(b"b"),
                            )
                            + tup(
                                integer(1),
                                tup(integer(1)),
                                get(F8),
                                NEWFALSE,
                                list_of(glob("builtins", "dict")),
                            )
                            + BUILD
                        }
                    )
                }
            ),
            "LoadError",
            "numpy array data held as a builtins.list, not bytes",
        ),
        Hostile(
            "array_data_shorter_than_its_shape",
            spikedata(fields={"train": list_of(frombuffer(bytes(8), dtype(), (1_000_000,)))}),
            "LoadError",
            "needs 8000000 bytes of data, the pickle holds 8",
        ),
        Hostile(
            "scalar_data_wrong_size",
            spikedata(
                fields={
                    md: dict_of(
                        {"x": call(glob("numpy._core.multiarray", "scalar"), dtype(), raw(b"1"))}
                    )
                }
            ),
            "LoadError",
            "scalar needs 8 bytes, the pickle holds 1",
        ),
        Hostile(
            "newobj_ndarray",
            proto(4) + glob("numpy", "ndarray") + tup(tup(integer(2000))) + NEWOBJ + STOP,
            "UnsafePickleError",
            "creates an instance of numpy.ndarray",
        ),
        Hostile(
            "spikedata_called_directly",
            proto(4) + call(sd_glob, list_of()) + STOP,
            "UnsafePickleError",
            "calls spikelab.spikedata.spikedata.SpikeData(...)",
        ),
        Hostile(
            "inst_opcode",
            b"(i__builtin__\nlist\n.",
            "UnsafePickleError",
            "uses the INST opcode",
        ),
        Hostile(
            "obj_opcode",
            proto(2) + MARK + glob0("builtins", "list") + b"o" + STOP,
            "UnsafePickleError",
            "uses the OBJ opcode",
        ),
        Hostile(
            "extension_registry",
            proto(2) + b"\x82\x01" + STOP,
            "UnsafePickleError",
            "uses the EXT1 opcode",
        ),
        Hostile(
            "persistent_id",
            proto(2) + b"Pabc\n" + STOP,
            "LoadError",
            "the PERSID opcode",
        ),
        Hostile(
            "out_of_band_buffer",
            proto(5) + b"\x97" + STOP,
            "LoadError",
            "the NEXT_BUFFER opcode",
        ),
        # -------------------------------------------------------- change after validation
        Hostile(
            "second_build_makes_train_nan",
            spikedata(after=_late_build(_array_state((2,), NAN * 2))),
            "UnsafePickleError",
            "changes an object after it was placed in another (BUILD",
            unscanned=("UnsafePickleError", "that takes none or already has one"),
        ),
        Hostile(
            "second_build_makes_train_2d",
            spikedata(after=_late_build(_array_state((2, 2), bytes(32)))),
            "UnsafePickleError",
            "changes an object after it was placed in another (BUILD",
            unscanned=("UnsafePickleError", "that takes none or already has one"),
        ),
        Hostile(
            "second_build_makes_train_negative",
            spikedata(after=_late_build(_array_state((2,), struct.pack("<2d", -5.0, -4.0)))),
            "UnsafePickleError",
            "changes an object after it was placed in another (BUILD",
            unscanned=("UnsafePickleError", "that takes none or already has one"),
        ),
        Hostile(
            "class_into_metadata_by_late_setitem",
            spikedata(after=get(METADATA) + text("cls") + glob("builtins", "dict") + SETITEM + POP),
            "UnsafePickleError",
            "changes a container after it was placed in another (SETITEM",
            unscanned=("LoadError", "holds a callable or class"),
        ),
        Hostile(
            "class_into_metadata_by_late_build",
            spikedata(
                after=get(METADATA) + dict_of({"cls": glob("builtins", "dict")}) + BUILD + POP
            ),
            "UnsafePickleError",
            "sets the state of an object twice, or of one that takes none",
            unscanned=("UnsafePickleError", "that takes none or already has one"),
        ),
        Hostile(
            "second_build_on_the_spikedata",
            spikedata(after=dict_of({"train": list_of()}) + BUILD),
            "UnsafePickleError",
            "sets the state of an object twice",
            unscanned=("UnsafePickleError", "already has one"),
        ),
        Hostile(
            "class_as_a_metadata_key",
            spikedata(fields={md: EMPTY_DICT + glob("builtins", "dict") + NONE + SETITEM}),
            "LoadError",
            "a dict key that is builtins.dict",
        ),
        Hostile(
            "class_deep_in_metadata",  # below the old walk's depth-8 cutoff
            spikedata(fields={md: dict_of({"x": glob("builtins", "dict") + b"\x85" * 20})}),
            "LoadError",
            "SpikeData attribute 'metadata' holds a callable or class; refused",
        ),
        Hostile(
            "container_contains_itself",
            proto(4) + EMPTY_LIST + put(1) + get(1) + APPEND + STOP,
            "LoadError",
            "contains itself",
        ),
        # ------------------------------------------------------------- incomplete SpikeData
        Hostile(
            "spikedata_without_state",  # 45 bytes
            proto(4) + sd_glob + EMPTY_TUPLE + NEWOBJ + STOP,
            "LoadError",
            "invalid SpikeData: the SpikeData has no state at all",
        ),
        Hostile(
            "spikedata_empty_state",
            proto(4) + sd_glob + EMPTY_TUPLE + NEWOBJ + EMPTY_DICT + BUILD + STOP,
            "LoadError",
            "SpikeData state lacks 'train', 'N', 'length', 'start_time'",
        ),
        Hostile(
            "spikedata_partial_state",
            spikedata(omit=("raw_time", "length")),
            "LoadError",
            "SpikeData state lacks 'length', 'raw_time'",
        ),
        # --------------------------------------------------------------- sizes and memory
        Hostile(
            "binbytes8_declaring_1e12",
            proto(4) + b"\x8e" + struct.pack("<Q", 10**12) + b"x" * 150 + STOP,
            "LoadError",
            "BINBYTES8 at byte 2 declares 1000000000000 bytes, more than the",
            unscanned=("LoadError", "more than the whole file"),
        ),
        Hostile(
            "bytearray8_declaring_1e12",
            proto(5) + b"\x96" + struct.pack("<Q", 10**12) + STOP,
            "LoadError",
            "BYTEARRAY8 at byte 2 declares 1000000000000 bytes",
            unscanned=("LoadError", "more than the whole file"),
        ),
        Hostile(
            "frame_declaring_1e12",
            proto(4) + b"\x95" + struct.pack("<Q", 10**12) + STOP,
            "LoadError",
            "FRAME at byte 2 declares 1000000000000 bytes",
            unscanned=("LoadError", "more than the whole file"),
        ),
        Hostile(
            "huge_long4",
            proto(4) + b"\x8b" + struct.pack("<i", 1 << 20) + bytes(1 << 20) + STOP,
            "LoadError",
            "an integer of 1048576 bytes",
            unscanned=("LoadError", "an integer of 1048576 bytes"),
        ),
        Hostile(
            "opcode_across_a_frame_end",  # the frame ends inside the string's bytes
            proto(4) + b"\x95" + struct.pack("<Q", 4) + b"\x8c\x05abcdef" + STOP,
            "LoadError",
            "the opcode at byte 11 crosses the end of its frame",
        ),
        Hostile(
            "frame_inside_a_frame",
            proto(4) + b"\x95" + struct.pack("<Q", 12) + b"N0\x95" + struct.pack("<Q", 1) + b"N.",
            "LoadError",
            "a frame begins inside another",
        ),
        Hostile(
            "huge_global_name",  # the message stays one short line
            proto(4) + glob("os\n" * 100_000, "system") + STOP,
            "UnsafePickleError",
            "the pickle asks for the global 'os\\nos\\nos",
        ),
        # ------------------------------------------------------ other exceptions become LoadError
        Hostile(
            "invalid_utf8",
            proto(4) + b"X" + struct.pack("<I", 2) + b"\xff\xfe" + STOP,
            "LoadError",
            "corrupt pickle (UnicodeDecodeError",
        ),
        Hostile(
            "timedelta_overflow",
            proto(4)
            + call(glob("datetime", "timedelta"), integer(10**12), integer(0), integer(0))
            + STOP,
            "LoadError",
            "corrupt pickle (OverflowError",
        ),
        Hostile(
            "date_month_13",
            proto(4) + call(glob("datetime", "date"), raw(b"\x07\xe8\x0d\x01")) + STOP,
            "LoadError",
            "corrupt pickle (TypeError",
        ),
        Hostile(
            "dtype_used_before_its_state",
            spikedata(
                fields={
                    "train": list_of(
                        frombuffer(
                            bytes(8),
                            call(glob("numpy", "dtype"), text("f8"), NEWFALSE, NEWTRUE),
                            (1,),
                        )
                    )
                }
            ),
            "LoadError",
            "a numpy dtype is used before its state is set",
        ),
    ]
    return cases


def glob0(module: str, name: str) -> bytes:
    """A protocol 0-3 GLOBAL opcode."""
    return b"c" + f"{module}\n{name}\n".encode()


def _deep(depth: int) -> bytes:
    """A list nested ``depth`` deep: MARK ... LIST wraps the value above the mark in a list."""
    return MARK * depth + NONE + b"l" * depth


CASES: tuple[Hostile, ...] = tuple(_cases())
BY_NAME = {c.name: c for c in CASES}

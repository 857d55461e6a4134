"""Step 2 of loading an untrusted pickle: the pure-Python unpickler with its opcode table
restricted, building only what a SpikeData pickle holds, each call in the one form a pickler
writes, and validating the finished SpikeData (step 3) once unpickling ends."""

from __future__ import annotations

import builtins
import collections
import copyreg
import datetime
import io
import math
import pickle
import re
import struct
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError
from spikelab.formats.pickle_scan import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_DATA_ITEMS,
    MAX_INT_BYTES,
    MAX_TEXT_DTYPE,
    OPNAMES,
    OPT_IN,
    UnsafePickleError,
    corrupt,
    describe_object,
    malformed,
    too_big,
    unsafe,
)
from spikelab.spikedata.spikedata import (
    STATE_FIELDS,
    InvalidSpikeDataError,
    SpikeData,
    short_repr,
)

__all__ = [
    "SafeUnpickler",
]

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
                    raise malformed(
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
        return unsafe(self._source, what)

    def _bad(self, what: str) -> LoadError:
        return malformed(self._source, what)

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
            + OPT_IN
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
            raise corrupt(self._source, f"{what} declares {n} bytes, more than the whole file")
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
            raise corrupt(self._source, "a frame begins inside another")
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
            raise too_big(self._source, f"an integer of {n} bytes")
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
            f"{what} that is {describe_object(key)} (only strings, numbers, bytes, dates "
            "and flat tuples of them)"
        )

    def _target(self, kinds: tuple[type, ...], what: str) -> Any:
        target = self.stack[-1]
        if type(target) in kinds or self._is_user(target):
            return target
        raise self._bad(f"{what} on {describe_object(target)}")

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
                raise self._bad(f"the arguments of {describe_object(func)} are not a tuple")
            return getattr(self, entry[1])(func, args)
        raise self._refuse(
            f"calls {describe_object(func)}(...), which a SpikeData pickle never calls"
        )

    def _wrong_form(self, func: Any, why: str) -> UnsafePickleError:
        return self._refuse(
            f"calls {describe_object(func)} with arguments a pickler never writes ({why})"
        )

    def _ready_dtype(self, dtype: Any) -> np.dtype:
        if isinstance(dtype, np.dtype):
            ready = self._dtypes.get(id(dtype))
            if ready is dtype:
                return dtype
            raise self._bad("a numpy dtype is used before its state is set")
        raise self._bad(f"{describe_object(dtype)} where a numpy dtype belongs")

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
            f"creates an instance of {describe_object(cls)}, which a SpikeData pickle never holds"
        )

    # ---------------------------------------------------------------------------- state
    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        entry = self._pending.pop(id(inst), None)
        if entry is None or entry[0] is not inst:
            raise self._refuse(
                f"sets the state of {describe_object(inst)} that takes none or already has one, "
                "which no pickler writes"
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
            raise self._bad(f"numpy array data held as {describe_object(data)}, not bytes")
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
            f"SpikeData attribute {key!r} holds {describe_object(v)}{at}; only {_PLAIN} is accepted"
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
    name = OPNAMES.get(code)
    unsafe = name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4")

    def refuse(self: SafeUnpickler) -> None:
        if name is None:
            raise corrupt(self._source, f"invalid opcode {bytes([code])!r}")
        if unsafe:
            raise self._refuse(f"uses the {name} opcode, which is never used for a SpikeData")
        raise corrupt(self._source, f"the {name} opcode is never used in a SpikeData pickle")

    return refuse


SafeUnpickler.dispatch = _build_dispatch()

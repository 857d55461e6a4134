"""HDF5 files opened by a loader that trusts nothing in them (the HDF5 and NWB loaders).

An HDF5 file can make a reader open other files (external links, datasets whose raw data lives
in external files, virtual datasets mapping other files), allocate far more memory than the
file holds (a dataset declaring 10**12 elements that were never written reads back as fill
values), or read objects no link names (object references). :func:`open_hdf5` opens a file
only if it is a regular file (see :func:`~spikelab.formats.files.open_regular`; HDF5 then opens
the very descriptor checked, through ``/proc/self/fd``), and :class:`StrictH5` gives the loader
checked access:

- paths are resolved link by link (:meth:`StrictH5.node`): hard links and soft links (whose
  targets are resolved the same way) only; an external or user-defined link is refused;
- before any dataset is read (:meth:`StrictH5.check_dataset`): external raw storage and virtual
  layouts are refused, and the declared size (shape x type size) must be what the dataset
  stores in the file, or, for a dataset stored through filters (compression), at most
  :data:`~spikelab.formats.files.MAX_EXPANSION` (1032, deflate's largest ratio) times that,
  give or take :data:`UNSTORED_BYTES` (a dataset never written reads back as fill values: 10**12
  of them from a 2 KB file);
- attributes are read only when their declared size fits in the file, and converted to text or
  numbers with a LoadError naming the attribute when they are not what they should be;
- :meth:`StrictH5.check_whole_file` checks every link, object, attribute and object reference of
  the file at once, for readers that touch all of it (pynwb): it costs one visit of the links
  and objects, not of the data.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError
from spikelab.formats.failure_record import refuse_open_file
from spikelab.formats.files import MAX_EXPANSION, fd_path, open_regular

__all__ = ["open_hdf5", "StrictH5"]

_MAX_SOFT_LINKS = 16  # HDF5's own limit of nested soft links
#: Bytes a dataset may declare beyond what it stores (fill values of a small dataset never
#: written); each dataset costs the file more than ~1/40 of this in headers.
UNSTORED_BYTES = 4096


@contextlib.contextmanager
def open_hdf5(
    path: str | os.PathLike,
    source: str,
    *,
    not_hdf5: str = "not a readable HDF5 file",
    what: str = "an HDF5 file",
) -> Iterator[StrictH5]:
    """Open the regular file ``path`` read-only with h5py and yield a :class:`StrictH5`.

    A missing path raises FileNotFoundError (``source: no such file``); the workflow's failure
    record raises FailureRecordError (``source: this is a failure record of ..., not {what}``);
    anything else that is not a regular HDF5 file raises LoadError (``source: {not_hdf5}
    (...)``).
    """
    import h5py

    with open_regular(path, source) as (fd, size):
        name = fd_path(fd, path)
        try:
            signed = h5py.is_hdf5(name)
        except (OSError, ValueError, RuntimeError):
            signed = False
        if not signed:
            refuse_open_file(fd, size, source, what)
            raise LoadError(f"{source}: {not_hdf5} (no HDF5 signature)")
        try:
            f = h5py.File(name, "r")
        except (OSError, ValueError, RuntimeError) as exc:
            first = (str(exc).splitlines() or [""])[0][:300]
            raise LoadError(f"{source}: {not_hdf5} ({first})") from None
        with f:
            yield StrictH5(f, source, size, os.fstat(fd))


def _text(name: Any) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _ref_fields(dtype: np.dtype) -> list[str | None]:
    """Fields of ``dtype`` holding HDF5 object or region references (None: the whole value)."""
    import h5py

    if h5py.check_dtype(ref=dtype) is not None:
        return [None]
    if dtype.fields:
        return [
            name
            for name, (sub, *_rest) in dtype.fields.items()
            if h5py.check_dtype(ref=sub) is not None
        ]
    return []


def _wrap(oid):
    """The h5py object (Dataset, Group or Datatype) of the low-level object id ``oid``, as
    ``group[name]`` makes it (without a second lookup of the name)."""
    import h5py
    from h5py import h5i

    kind = h5i.get_type(oid)
    if kind == h5i.DATASET:
        return h5py.Dataset(oid, readonly=True)
    if kind == h5i.GROUP:
        return h5py.Group(oid)
    return h5py.Datatype(oid)


def _read_attribute(aid) -> Any:
    """The value of the open attribute ``aid``, exactly as h5py's ``obj.attrs[name]`` reads it
    (without opening it again)."""
    import h5py
    from h5py import h5t

    shape = aid.shape
    if shape is None:  # empty dataspace
        return h5py.Empty(aid.dtype)
    dtype = aid.dtype
    htype = h5t.py_create(dtype)
    if dtype.subdtype is not None:  # top-level array type: numpy has none
        subdtype, subshape = dtype.subdtype
        shape, dtype = shape + subshape, subdtype
    arr = np.zeros(shape, dtype=dtype, order="C")
    aid.read(arr, mtype=htype)
    string_info = h5t.check_string_dtype(dtype)
    if string_info and string_info.length is None:  # variable-length: bytes to str
        texts = [b.decode("utf-8", "surrogateescape") for b in arr.flat]
        arr = np.array(texts, dtype=dtype).reshape(arr.shape)
    return arr[()] if arr.ndim == 0 else arr


class StrictH5:
    """Checked access to an open h5py File ``f`` of ``size`` bytes, named ``source`` in errors;
    ``stat``: ``os.fstat`` of the very file opened (what :meth:`is_written` compares)."""

    def __init__(self, f, source: str, size: int, stat: os.stat_result | None = None) -> None:
        self.f, self.source, self.size, self.stat = f, source, size, stat

    def is_written(self, written) -> bool:
        """Whether the open file is exactly ``written`` (a
        :class:`~spikelab.formats.atomic.WrittenFile`: a file this process's writer put in
        place, unchanged since: same device, inode, size and modification time). Anything
        else, a None ``written`` included, is False."""
        from spikelab.formats.atomic import WrittenFile

        return (
            isinstance(written, WrittenFile)
            and self.stat is not None
            and written.matches(self.stat)
        )

    # ------------------------------------------------------------------------ links
    def node(self, name: str, base=None, _depth: int = 0):
        """The object at path ``name`` (relative to ``base``, default the root), or None when
        no link of that name exists. Only hard and soft links are followed."""
        import h5py
        from h5py import h5l, h5o

        if _depth > _MAX_SOFT_LINKS:
            raise LoadError(f"{self.source}: more than {_MAX_SOFT_LINKS} nested soft links")
        obj = self.f if name.startswith("/") or base is None else base
        for part in (p for p in name.split("/") if p not in ("", ".")):
            if not isinstance(obj, h5py.Group):
                return None
            key = part.encode("utf-8")
            if not obj.id.links.exists(key):  # the link alone, not its target
                return None
            kind = obj.id.links.get_info(key).type
            if kind == h5l.TYPE_HARD:
                obj = _wrap(h5o.open(obj.id, key))
            elif kind == h5l.TYPE_SOFT:
                obj = self.node(_text(obj.id.links.get_val(key)), obj, _depth + 1)
                if obj is None:
                    return None
            else:
                self._refuse_link(obj, key, kind)
        return obj

    def _refuse_link(self, group, key: bytes, kind: int):
        from h5py import h5l

        where = f"{group.name.rstrip('/')}/{_text(key)}"
        if kind == h5l.TYPE_EXTERNAL:
            target_file, target = group.id.links.get_val(key)
            raise LoadError(
                f"{self.source}: {where!r} is an external link to {_text(target)!r} in file "
                f"{_text(target_file)!r}; refused: a loader reads only the file it is given"
            )
        raise LoadError(
            f"{self.source}: {where!r} is a user-defined link (type {kind}); refused: a loader "
            "follows only hard and soft links inside the file"
        )

    def dataset(self, name: str, what: str = "dataset", base=None):
        """The dataset at ``name``, checked (:meth:`check_dataset`); LoadError when absent."""
        import h5py

        obj = self.node(name, base)
        if obj is None:
            raise LoadError(f"{self.source}: no {what} {name!r} in the file")
        if not isinstance(obj, h5py.Dataset):
            kind = "group" if isinstance(obj, h5py.Group) else "named datatype"
            raise LoadError(f"{self.source}: {name!r} is a {kind}, not a dataset")
        self.check_dataset(obj, name)
        return obj

    def group(self, name: str, what: str = "group"):
        """The group at ``name``; LoadError when absent or not a group."""
        import h5py

        obj = self.node(name)
        if obj is None:
            raise LoadError(f"{self.source}: no {what} {name!r} in the file")
        if not isinstance(obj, h5py.Group):
            raise LoadError(f"{self.source}: {name!r} is not a group")
        return obj

    # ------------------------------------------------------------------------ datasets
    def check_dataset(self, dset, label: str) -> None:
        """Refuse ``dset`` unless reading it stays inside this file and within its size."""
        from h5py import h5d

        dcpl = dset.id.get_create_plist()
        if dcpl.get_external_count():
            outside = _text(dcpl.get_external(0)[0])
            raise LoadError(
                f"{self.source}: dataset {label!r} keeps its data in external file(s) "
                f"({outside!r}...) outside this file; refused: a loader reads only the file "
                "it is given"
            )
        if dcpl.get_layout() == h5d.VIRTUAL:
            raise LoadError(
                f"{self.source}: dataset {label!r} is a virtual dataset (its data is mapped "
                "from other datasets, possibly in other files); refused"
            )
        shape = dset.shape
        count = 0 if shape is None else math.prod(shape)
        declared = count * dset.id.get_type().get_size()
        if declared <= UNSTORED_BYTES:
            return
        stored = dset.id.get_storage_size()
        if dcpl.get_nfilters() == 0:
            if declared > self.size or declared > stored + UNSTORED_BYTES:
                raise LoadError(
                    f"{self.source}: dataset {label!r} declares shape {shape} of "
                    f"{dset.id.get_type().get_size()}-byte values = {declared} bytes, but this "
                    f"{self.size}-byte file stores {stored} bytes of it (the rest would be fill "
                    "values never written); refused"
                )
        elif declared > MAX_EXPANSION * stored + UNSTORED_BYTES:
            raise LoadError(
                f"{self.source}: dataset {label!r} declares shape {shape} = {declared} bytes "
                f"but stores {stored} compressed bytes: more than {MAX_EXPANSION}:1, the largest "
                "ratio deflate reaches; refused"
            )

    def read(self, dset, label: str, *, numeric: bool = True) -> Any:
        """``dset[()]`` after :meth:`check_dataset`; ``numeric``: refuse non-number dtypes."""
        self.check_dataset(dset, label)
        if numeric and dset.dtype.kind not in "biuf":
            raise LoadError(
                f"{self.source}: dataset {label!r} must hold numbers, got dtype {dset.dtype}"
            )
        return dset[()]

    # ------------------------------------------------------------------------ attributes
    def attr(self, obj, key: str) -> Any:
        """Attribute ``key`` of ``obj`` (None when absent), read only when its declared size
        fits in the file."""
        from h5py import h5a

        name = key.encode("utf-8")
        if not h5a.exists(obj.id, name):  # cheaper than a failed open (the usual case)
            return None
        aid = h5a.open(obj.id, name)
        declared = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
        if declared > self.size:
            raise LoadError(
                f"{self.source}: attribute {key!r}{self._of(obj)} declares {declared} bytes, "
                f"more than this {self.size}-byte file holds; refused"
            )
        try:
            return _read_attribute(aid)
        except (OSError, TypeError, ValueError, KeyError, RuntimeError) as exc:
            first = (str(exc).splitlines() or [""])[0][:200]
            raise LoadError(
                f"{self.source}: attribute {key!r}{self._of(obj)} is unreadable ({first})"
            ) from None

    @staticmethod
    def _of(obj) -> str:
        name = obj.name
        return "" if name in (None, "/") else f" of {name!r}"

    def text_attr(self, obj, key: str, default: str | None = None) -> str | None:
        """Attribute ``key`` as text (``default`` when absent); LoadError when not a text."""
        value = self.attr(obj, key)
        if value is None:
            return default
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LoadError(
                    f"{self.source}: attribute {key!r}{self._of(obj)} is not UTF-8 text ({exc})"
                ) from None
        if isinstance(value, str):
            if not value.isascii():  # h5py decodes invalid UTF-8 with surrogate escapes
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise LoadError(
                        f"{self.source}: attribute {key!r}{self._of(obj)} is not UTF-8 text "
                        f"({exc.reason} at {exc.start})"
                    ) from None
            return str(value)
        raise LoadError(
            f"{self.source}: attribute {key!r}{self._of(obj)} must be a text, got "
            f"{_describe(value)}"
        )

    def number_attr(
        self,
        obj,
        key: str,
        default: Any = None,
        *,
        unit: str = "",
        integer: bool = False,
        positive: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        """Attribute ``key`` as a finite float (or int when ``integer``); ``default`` when
        absent; LoadError naming the attribute when it is anything else or out of range."""
        value = self.attr(obj, key)
        if value is None:
            return default
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        what = f"attribute {key!r}{self._of(obj)}"
        units = f" ({unit})" if unit else ""
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise LoadError(
                f"{self.source}: {what} must be a number{units}, got {_describe(value)}"
            )
        if integer:
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                raise LoadError(f"{self.source}: {what} must be an integer, got {value!r}")
            out: Any = int(value)
        else:
            out = float(value)
            if not math.isfinite(out):
                raise LoadError(f"{self.source}: {what} must be finite{units}, got {out!r}")
        if positive and not out > 0:
            raise LoadError(f"{self.source}: {what} must be > 0{units}, got {value!r}")
        if minimum is not None and out < minimum:
            raise LoadError(f"{self.source}: {what} must be >= {minimum}{units}, got {value!r}")
        if maximum is not None and out > maximum:
            raise LoadError(f"{self.source}: {what} must be <= {maximum}{units}, got {value!r}")
        return out

    # ------------------------------------------------------------------------ whole file
    def check_whole_file(self) -> None:
        """Refuse the file if any link leaves it, any dataset reads outside it or beyond its
        size, any attribute declares more than it holds, or any object reference names an
        object no link reaches (such objects escape this check)."""
        import h5py
        from h5py import h5a, h5l, h5o

        bad: list[tuple[bytes, int]] = []

        def on_link(name: bytes, info) -> Any:
            if info.type not in (h5l.TYPE_HARD, h5l.TYPE_SOFT):
                bad.append((name, info.type))
                return True  # stop
            return None

        self.f.id.links.visit(on_link, info=True)
        if bad:
            name, kind = bad[0]
            parent, _, key = name.rpartition(b"/")
            group = self.f[_text(parent)] if parent else self.f
            self._refuse_link(group, key, kind)

        objects: list[tuple[bytes, int]] = []
        h5o.visit(self.f.id, lambda name, info: objects.append((name, info.type)), info=True)
        for name, kind in objects:
            oid = h5o.open(self.f.id, name)
            label = "/" if name == b"." else "/" + _text(name)
            if kind == h5o.TYPE_DATASET:
                obj = h5py.Dataset(oid)
                self.check_dataset(obj, label)
                fields = _ref_fields(obj.dtype)
                if fields == [None] and h5py.check_dtype(ref=obj.dtype) is h5py.Reference:
                    self._check_object_references(obj, label)
                elif fields:
                    values = obj[()]
                    for field in fields:
                        self._check_references(values if field is None else values[field], label)
            elif kind == h5o.TYPE_GROUP:
                obj = h5py.Group(oid)
            else:
                obj = h5py.Datatype(oid)
            for index in range(h5a.get_num_attrs(oid)):
                aid = h5a.open(oid, index=index)
                declared = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
                if declared > self.size:
                    self.attr(obj, _text(aid.get_name()))  # raises, naming the attribute
                fields = _ref_fields(aid.dtype)
                if fields:
                    value = self.attr(obj, _text(aid.get_name()))
                    for field in fields:
                        self._check_references(value if field is None else value[field], label)

    def _check_object_references(self, dset, label: str) -> None:
        """:meth:`_check_references` of a dataset of object references, each distinct target
        looked up once (their raw values are the targets' addresses)."""
        from h5py import h5s, h5t

        raw = np.empty(dset.shape, dtype=np.uint64)
        dset.id.read(h5s.ALL, h5s.ALL, raw, mtype=h5t.STD_REF_OBJ)
        _unique, first = np.unique(raw.reshape(-1), return_index=True)
        if first.size:
            refs = np.asarray(dset[()], dtype=object).reshape(-1)
            self._check_references(refs[first], label)

    def _check_references(self, values: Any, label: str) -> None:
        from h5py import h5r

        for ref in np.asarray(values, dtype=object).reshape(-1):
            if ref and h5r.get_name(ref, self.f.id) is None:
                raise LoadError(
                    f"{self.source}: {label!r} holds a reference to an object that no link "
                    "names; refused (it would escape the checks)"
                )

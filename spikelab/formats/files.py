"""Input files are hostile until proven otherwise: what every loader shares to read them.

- :func:`open_regular` opens a path only if it is a regular file (symlinks followed): a FIFO, a
  device, a socket or a directory where a file is expected is refused before it is opened, and
  the descriptor is opened non-blocking and checked again, so a FIFO swapped in meanwhile
  cannot hang the loader.
- :func:`read_text` reads a small text file (params.py, a TSV table, a JSON side file) whole,
  only if its size is below a stated limit; :func:`parse_json` turns every JSON fault (syntax,
  nesting too deep, numbers too long) into a :class:`LoadError` naming the file and the field.
- :func:`read_npy_vector` reads a ``.npy`` file after checking its header: numeric dtype only
  (never objects, so never pickles), a shape that is a vector, and a declared size that the file
  holds, before anything is allocated; :func:`read_npy_array` the same for an array of a
  given rank (KiloSort's templates, channel positions), up to a stated size.
- :func:`loader_boundary` wraps a loader: any exception that is not already a
  :class:`LoadError` becomes one naming the file, so no content of an input can raise anything
  else.

Limits (documented here, used by the loaders):

- :data:`MAX_UNITS`: no loader builds more than 2**20 (1 048 576) units; a real recording has at
  most tens of thousands, and a count written in one attribute (``N``) must not make a loader
  create a billion empty trains.
- :data:`MAX_EXPANSION`: a compressed dataset may declare at most 1032 bytes per byte it
  stores, deflate's largest possible ratio; data beyond that cannot come from the file.
- :data:`PARAMS_MAX_BYTES`, :data:`TABLE_MAX_BYTES`, :data:`SIDE_FILE_MAX_BYTES`: the largest
  params.py (1 MiB; a real one holds ~200 bytes), cluster table (32 MiB, and at most
  :data:`TABLE_MAX_CELLS` = 2**22 cells, ~400 MB of Python objects: 100 000 units x 40 columns)
  and SpikeLab side file (64 MiB: ~1 KB of attributes for each of 60 000 units; parsed JSON
  takes up to ~30x its text in memory) a loader reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from typing import Any

import numpy as np

from spikelab.formats.errors import LoadError

__all__ = [
    "MAX_UNITS",
    "MAX_EXPANSION",
    "PARAMS_MAX_BYTES",
    "TABLE_MAX_BYTES",
    "TABLE_MAX_CELLS",
    "SIDE_FILE_MAX_BYTES",
    "describe_mode",
    "regular_or_absent",
    "open_regular",
    "fd_path",
    "read_text",
    "parse_json",
    "read_npy_vector",
    "read_npy_array",
    "loader_boundary",
    "check_unit_count",
]

MAX_UNITS = 1 << 20
MAX_EXPANSION = 1032
PARAMS_MAX_BYTES = 1 << 20
TABLE_MAX_BYTES = 32 << 20
TABLE_MAX_CELLS = 1 << 22
SIDE_FILE_MAX_BYTES = 64 << 20

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def describe_mode(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a FIFO (named pipe)", "a directory", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def regular_or_absent(path: str | os.PathLike, source: str | None = None) -> bool:
    """True when ``path`` is a regular file (symlinks followed), False when nothing is there;
    LoadError when something else (a FIFO, a device, a directory...) is."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise LoadError(f"{source or os.fspath(path)}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(
            f"{source or os.fspath(path)}: is {describe_mode(st.st_mode)}, not a regular file; "
            "refused"
        )
    return True


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, source: str | None = None) -> Iterator[tuple[int, int]]:
    """Open ``path`` read-only if it is a regular file; yield ``(fd, size in bytes)``.

    Symlinks are followed; what they end on must be a regular file. The type is checked with
    ``os.stat`` before opening and with ``os.fstat`` on the descriptor, which is opened with
    ``O_NONBLOCK`` (opening a FIFO then returns at once instead of waiting for a writer).
    A missing path raises FileNotFoundError naming ``source``; anything else that is not a
    readable regular file raises LoadError. The descriptor is closed on exit.
    """
    source = source or os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such file") from None
    except OSError as exc:
        raise LoadError(f"{source}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(f"{source}: is {describe_mode(st.st_mode)}, not a regular file; refused")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such file") from None
    except OSError as exc:
        raise LoadError(f"{source}: cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the two checks
            raise LoadError(
                f"{source}: is {describe_mode(st.st_mode)}, not a regular file; refused"
            )
        os.set_blocking(fd, True)
        yield fd, st.st_size
    finally:
        os.close(fd)


def fd_path(fd: int, path: str | os.PathLike) -> str:
    """A path that opens the very file behind ``fd`` (``/proc/self/fd/N`` on Linux), for
    libraries that take a name (HDF5); elsewhere ``path`` itself, checked just before."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else os.fspath(path)


def _read_fd(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``'s current position (fewer at the end of the file)."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_text(path: str | os.PathLike, limit: int, what: str, source: str | None = None) -> str:
    """The UTF-8 text of the regular file ``path``, refused (LoadError) when it holds more than
    ``limit`` bytes; ``what`` names the file's role in messages (e.g. "params.py")."""
    source = source or os.fspath(path)
    with open_regular(path, source) as (fd, size):
        if size > limit:
            raise LoadError(
                f"{source}: {size} bytes, more than the {limit} bytes a {what} may hold; refused"
            )
        data = _read_fd(fd, limit + 1)
    if len(data) > limit:  # grew while being read
        raise LoadError(f"{source}: more than the {limit} bytes a {what} may hold; refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{source}: {what} is not UTF-8 text ({exc})") from None


def parse_json(text: Any, source: str, field: str) -> Any:
    """``json.loads(text)``; any fault becomes a LoadError naming ``source`` and ``field``."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"{source}: {field} is not UTF-8 text ({exc})") from None
    if not isinstance(text, str):
        raise LoadError(f"{source}: {field} must be a JSON text, got {type(text).__name__}")
    try:
        return json.loads(text)
    except RecursionError:
        raise LoadError(f"{source}: {field} is JSON nested too deeply to read; refused") from None
    except MemoryError:
        raise LoadError(f"{source}: {field} is JSON too large to read; refused") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        raise LoadError(f"{source}: {field} is not readable JSON ({_first_line(exc)})") from None


def _npy_header(fh, size: int, source: str, what: str) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) of the ``.npy`` file open as ``fh``
    (``size`` bytes), checked: a 1.0 or 2.0 header, a numeric dtype (never objects), a valid
    shape whose declared size the file holds. Any fault is a LoadError naming ``source``."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError, UnicodeError) as exc:
        raise LoadError(f"{source}: not a readable .npy file ({_first_line(exc)})") from None
    except (MemoryError, RecursionError):
        raise LoadError(f"{source}: not a readable .npy file (absurd header)") from None
    header_end = fh.tell()
    if dtype.hasobject:
        raise LoadError(f"{source}: {what}: dtype {dtype} holds Python objects (a pickle); refused")
    if dtype.kind not in "biuf" or dtype.shape:
        raise LoadError(f"{source}: {what}: dtype {dtype} is not a number type; refused")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise LoadError(f"{source}: {what}: invalid shape {shape} in the .npy header")
    count = math.prod(shape)
    held = size - header_end
    if count * dtype.itemsize > held:
        raise LoadError(
            f"{source}: {what}: the .npy header declares shape {shape} of {dtype} = "
            f"{count * dtype.itemsize} bytes, but the file holds {held} bytes of data "
            "(truncated, or a forged header); refused"
        )
    return shape, bool(fortran), dtype, header_end


def read_npy_vector(path: str | os.PathLike, what: str, source: str | None = None) -> np.ndarray:
    """The 1-D array of the ``.npy`` file ``path`` (``(n,)``, ``(n, 1)``, ``(1, n)`` or a
    scalar, flattened), read only after its header is checked.

    Refused with a LoadError naming the file and ``what`` (its role, e.g. "spike times"):
    a header that is not a ``.npy`` header of version 1.0 or 2.0; a dtype that is not bool,
    integer or float (an object dtype would be a pickle); a shape that is not a vector; a
    declared size (shape x itemsize) larger than the data the file holds. Fortran order is
    the same byte order for these shapes.
    """
    source = source or os.fspath(path)
    with open_regular(path, source) as (fd, size), open(fd, "rb", closefd=False) as fh:
        shape, _fortran, dtype, _ = _npy_header(fh, size, source, what)
        if len(shape) > 2 or (len(shape) == 2 and 1 not in shape):
            raise LoadError(f"{source}: expected one value per spike, got shape {shape}")
        count = math.prod(shape)
        arr = np.fromfile(fh, dtype=dtype, count=count)
    if arr.size != count:  # shrank while being read
        raise LoadError(f"{source}: {what}: truncated ({arr.size} of {count} values)")
    return arr.reshape(-1)


def read_npy_array(
    path: str | os.PathLike, what: str, ndim: int, max_bytes: int, source: str | None = None
) -> np.ndarray | None:
    """The ``ndim``-dimensional array of the ``.npy`` file ``path``, its header checked as in
    :func:`read_npy_vector`; None (nothing read) when it declares more than ``max_bytes``
    bytes. A shape of another rank is a LoadError naming the file and ``what``."""
    source = source or os.fspath(path)
    with open_regular(path, source) as (fd, size), open(fd, "rb", closefd=False) as fh:
        shape, fortran, dtype, _ = _npy_header(fh, size, source, what)
        if len(shape) != ndim:
            raise LoadError(f"{source}: {what}: expected {ndim} dimensions, got shape {shape}")
        count = math.prod(shape)
        if count * dtype.itemsize > max_bytes:
            return None
        arr = np.fromfile(fh, dtype=dtype, count=count)
    if arr.size != count:  # shrank while being read
        raise LoadError(f"{source}: {what}: truncated ({arr.size} of {count} values)")
    return arr.reshape(shape, order="F" if fortran else "C")


def check_unit_count(n: int, source: str, where: str) -> None:
    """LoadError when a file would make more than :data:`MAX_UNITS` units."""
    if n > MAX_UNITS:
        raise LoadError(
            f"{source}: {where} makes {n} units, more than the {MAX_UNITS} a loader builds; refused"
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


@contextlib.contextmanager
def loader_boundary(source: str, passthrough: tuple[type, ...] = ()) -> Iterator[None]:
    """Turn any exception of the loader body into a LoadError naming ``source`` (LoadError,
    warnings and ``passthrough`` types pass unchanged): whatever a file holds, a loader raises
    nothing else."""
    try:
        yield
    except (LoadError, Warning, *passthrough):
        raise
    except MemoryError:
        raise LoadError(
            f"{source}: reading it needs more memory than is available (MemoryError); "
            "the file is corrupt or declares absurd sizes"
        ) from None
    except RecursionError:
        raise LoadError(f"{source}: nested too deeply to read (RecursionError)") from None
    except Exception as exc:
        raise LoadError(
            f"{source}: unreadable ({type(exc).__name__}: {_first_line(exc)})"
        ) from None

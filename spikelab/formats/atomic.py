"""Atomic writes: every output appears whole under its name, or not at all.

A writer works on a temporary name beside the output (``.<name>.pid<pid>.<random>.tmp``) and
renames it into place on success; temporaries of writers that were killed (their pid is gone)
are removed by the next write of the same output. Finding them lists the output's folder;
within :func:`temporaries_listed_once` (a batch job writing thousands of files into one folder)
each folder is listed once, on the first write into it, instead of once per file.

A writer may ask :func:`atomic_file` to remember what it put in place (``record=True``): the
file's identity (device, inode, size, modification time), kept in this process only, for a
reader in the same process to tell whether the file it opened is still exactly that output
(:func:`written_file`, :meth:`WrittenFile.matches`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spikelab.formats.errors import OutputInTheWayError

__all__ = [
    "atomic_file",
    "atomic_directory",
    "remove_stale_temporaries",
    "temporaries_listed_once",
    "abandoned_temporary",
    "write_errors",
    "WrittenFile",
    "written_file",
]


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.pid{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_pattern(final: Path) -> re.Pattern[str]:
    """The exact names of ``final``'s temporaries: ``.<name>.pid<pid>.<8 random>.tmp|.old``
    (``tempfile``'s random part: lower-case letters, digits and ``_``)."""
    return re.compile(rf"\.{re.escape(final.name)}\.pid(\d+)\.[a-z0-9_]{{8}}\.(tmp|old)")


def remove_stale_temporaries(final: Path) -> None:
    """Remove temporaries of exactly ``final`` left by writers that were killed (their pid is
    gone); those of other outputs, even with a name starting like ``final``'s, are kept. Lists
    ``final``'s folder now."""
    try:
        siblings = list(final.parent.glob(f".{glob.escape(final.name)}.pid*.*"))
    except OSError:
        return
    _remove_stale(final, siblings)


def _remove_stale(final: Path, candidates: list[Path]) -> None:
    pattern = _stale_pattern(final)
    for tmp in candidates:
        match = pattern.fullmatch(tmp.name)
        if match is None or _pid_alive(int(match[1])):
            continue
        kept = tmp / final.name
        if match[2] == "old" and kept.exists() and not final.exists():
            os.replace(kept, final)  # killed mid-swap: put the previous output back
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()


# Within temporaries_listed_once: folder -> {output name: its temporaries when listed}.
_listings: dict[str, dict[str, list[Path]]] | None = None
_listings_lock = threading.Lock()


@contextlib.contextmanager
def temporaries_listed_once() -> Iterator[None]:
    """Within this block, a write finds the stale temporaries of its output in one listing of
    the output's folder, made by the first write into that folder, rather than listing it for
    every file (at 10 000 files in a folder, ~6 ms a file). A temporary of a writer killed
    after that listing is left to the next run; :func:`remove_stale_temporaries` (after a
    worker died writing) still lists the folder afresh. Nested blocks share the outer's
    listings; a forked child inherits them."""
    global _listings
    with _listings_lock:
        outer = _listings
        if outer is None:
            _listings = {}
    try:
        yield
    finally:
        if outer is None:
            with _listings_lock:
                _listings = None


def _remove_stale_before_writing(final: Path) -> None:
    """:func:`remove_stale_temporaries`, from the folder's listing within
    :func:`temporaries_listed_once`."""
    with _listings_lock:
        listings = _listings
        if listings is not None:
            folder = os.path.abspath(final.parent)
            found = listings.get(folder)
            if found is None:
                found = listings[folder] = _list_temporaries(final.parent)
            candidates = found.pop(final.name, [])
    if listings is None:
        remove_stale_temporaries(final)
    elif candidates:
        _remove_stale(final, candidates)


def _list_temporaries(folder: Path) -> dict[str, list[Path]]:
    """Every temporary in ``folder`` by the name of its output (empty if it cannot be read)."""
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _ANY_TEMPORARY.fullmatch(entry.name)
                if match is not None:
                    found.setdefault(match[1], []).append(folder / entry.name)
    except OSError:
        return {}
    return found


_ANY_TEMPORARY = re.compile(r"\.(.+)\.pid(\d+)\.[a-z0-9_]{8}\.(tmp|old)")


def abandoned_temporary(path: Path) -> str | None:
    """The name of the output whose temporary ``path`` is, if its writer is gone (its pid is
    not running here); None for any other name, and for a running writer's temporary."""
    match = _ANY_TEMPORARY.fullmatch(path.name)
    if match is None or _pid_alive(int(match[2])):
        return None
    return match[1]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(final), suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    os.close(fd)
    return Path(name)


@dataclass(frozen=True)
class WrittenFile:
    """The identity of a file an atomic writer of this process put in place (``record=True``):
    its absolute path, device, inode, size and modification time (ns) when it was renamed
    into place. A file replaced since (a new inode) or written to (a new size or time) no
    longer :meth:`matches`. (A change in place that keeps the size, made within the file
    system's timestamp granularity of the write, would go unseen: only someone with write
    access to the outputs could make it, and they can change any output anyway.)"""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` (``os.fstat`` of an open file) is this very file, unchanged."""
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.device,
            self.inode,
            self.size,
            self.mtime_ns,
        )


#: The files this process's writers recorded (``atomic_file(record=True)``), newest last.
_written: OrderedDict[str, WrittenFile] = OrderedDict()
_written_lock = threading.Lock()
_WRITTEN_KEPT = 256


def _record_written(tmp: Path, final: Path) -> None:
    st = os.stat(tmp)  # before the rename, which keeps inode, size and modification time
    key = os.path.abspath(final)
    entry = WrittenFile(key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _written_lock:
        _written.pop(key, None)
        _written[key] = entry
        while len(_written) > _WRITTEN_KEPT:
            _written.popitem(last=False)


def _forget_written(final: Path) -> None:
    with _written_lock:
        _written.pop(os.path.abspath(final), None)


def written_file(filepath: str | os.PathLike) -> WrittenFile | None:
    """The identity of the last file that a writer of this process put at ``filepath`` with
    ``atomic_file(..., record=True)`` (one of the last 256 recorded), else None. Says nothing
    of the file there now: compare with :meth:`WrittenFile.matches`."""
    with _written_lock:
        return _written.get(os.path.abspath(filepath))


@contextlib.contextmanager
def atomic_file(filepath: str | os.PathLike, *, record: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``filepath``; rename it over ``filepath`` on success.

    On any exception the temporary file is removed and an existing ``filepath`` is untouched.
    Parent directories are created. ``record``: remember the identity of the file put in
    place, for :func:`written_file` (only writers whose content is their own ask for it; a
    copy of an input never does).
    """
    final = Path(filepath)
    if final.is_dir():
        raise OutputInTheWayError(f"{final}: a directory is in the way of the output file")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_before_writing(final)
    _forget_written(final)  # whatever is there from now on is not a recorded output
    tmp = _tmp_name(final)
    try:
        yield tmp
        if record:
            _record_written(tmp, final)
        os.replace(tmp, final)
    except BaseException:
        _forget_written(final)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``folder``; put it in place of ``folder`` on success.

    An existing ``folder`` is replaced only once the new one is complete; on failure the
    temporary directory is removed and ``folder`` is untouched.
    """
    final = Path(folder)
    if final.exists() and not final.is_dir():
        raise OutputInTheWayError(f"{final}: a file is in the way of the output folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_before_writing(final)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual mode
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def write_errors(target: str | os.PathLike) -> Iterator[None]:
    """Turn h5py/HDF5 write failures (a full disk, a quota, a file-size limit: HDF5 reports
    some as RuntimeError) into one OSError naming ``target``, so that callers see a fault of
    the disk, not of the data."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise OSError(
            f"{os.fspath(target)}: writing failed ({type(exc).__name__}: {first}); "
            "an existing file at this path is unchanged"
        ) from exc

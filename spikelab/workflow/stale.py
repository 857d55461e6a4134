"""Stale outputs: what lies in ``results/`` that no rule of the current workflow declares.

After the input folder is switched, a recording is removed or renamed, an HDF5 entry is
dropped from the config or ``batch_size`` changes, the old outputs (and failure records, verify
results, figures) stay in ``results/``: Snakemake only ever looks at the paths it declares.
:func:`find_stale` lists them against :func:`~spikelab.workflow.targets.declared_outputs` (the
paths the rules declare, built by the functions the rules use), and :func:`remove_stale`
removes them.

What is listed, and what never is:

- a file, a symlink (never followed) or a folder that is not a declared output and holds none
  (a folder is one entry: ``results/hdf5/old_entry/``); inside a declared folder output (a
  KiloSort folder) nothing is looked at;
- a temporary of an atomic write (``.<name>.pid<pid>.<random>.tmp``) whose writer is gone and
  whose output is not declared; other hidden names (``.nfs...``, a running writer's
  temporary, the temporaries of a declared output, which its next write removes) never are;
- nothing outside the results folder: a symlink inside it is an entry of its own (removing it
  unlinks the link, never what it points to), and a symlink where a folder of declared outputs
  goes is left alone and not looked into; the results folder itself may be a symlink;
- the workflow's own inputs, should a source pickle lie under ``results/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from spikelab.formats.atomic import abandoned_temporary
from spikelab.formats.failure_record import read_failure_record
from spikelab.jobs import setup_logging
from spikelab.workflow.targets import RESULTS, Target, declared_outputs

__all__ = [
    "StaleEntry",
    "declared_from_params",
    "find_stale",
    "remove_stale",
    "stale_line",
    "snakemake_command",
    "run_stale_job",
]

log = logging.getLogger("spikelab.workflow")


@dataclass(frozen=True)
class StaleEntry:
    """One stale entry of the results folder.

    ``path`` is the path as given under the results folder (``results/nwb/old.nwb``); ``kind``
    is ``file``, ``folder``, ``symlink`` or ``temporary``; ``n_files`` the files a folder
    holds; ``failure_record`` is True for a failure record of an export.
    """

    path: str
    kind: str
    n_files: int = 1
    failure_record: bool = False

    def describe(self) -> str:
        """The path with what it is: ``results/kilosort/old/ (folder, 12 files)``."""
        if self.failure_record:
            return f"{self.path}{'/' if self.kind == 'folder' else ''} (failure record)"
        if self.kind == "folder":
            return f"{self.path}/ (folder, {self.n_files} files)"
        if self.kind != "file":
            return f"{self.path} ({self.kind})"
        return self.path


def declared_from_params(params: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """``(declared outputs, sources)`` from the rules' ``declared`` param: ``recordings``
    (names), ``batches`` (keys), ``targets`` (:meth:`Target.as_params`) and ``sources``
    (the local input paths)."""
    targets = [Target.from_params(t) for t in params["targets"]]
    declared = declared_outputs(params["recordings"], params["batches"], targets)
    return declared, set(params.get("sources") or ())


def _parts_under(root: str, paths: Iterable[str]) -> set[tuple[str, ...]]:
    """The path components below ``root`` of each path of ``paths`` that lies under it."""
    base = os.path.abspath(root)
    out = set()
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), base)
        parts = PurePosixPath(rel.replace(os.sep, "/")).parts
        if parts and parts[0] != ".." and rel != ".":
            out.add(parts)
    return out


def _count_files(folder: str) -> int:
    n = 0
    for _dirpath, _dirnames, filenames in os.walk(folder, followlinks=False):
        n += len(filenames)
    return n


def find_stale(
    results_dir: str | os.PathLike,
    declared: Iterable[str],
    keep: Iterable[str] = (),
) -> list[StaleEntry]:
    """Entries of ``results_dir`` that are not among the ``declared`` output paths and hold
    none of them, sorted by path (see the module docstring for what is never listed).

    ``declared`` and ``keep`` (paths never listed, e.g. the workflow's inputs) are paths as the
    rules write them (``results/nwb/x.nwb``, relative to the working directory); a missing
    results folder has no stale entries.
    """
    root = os.fspath(results_dir)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):  # a symlinked results folder is followed
            return []
    except (FileNotFoundError, NotADirectoryError):
        return []
    wanted = _parts_under(root, declared)
    kept = wanted | _parts_under(root, keep)
    containers = {parts[:i] for parts in kept for i in range(1, len(parts))}
    stale: list[StaleEntry] = []

    def walk(parts: tuple[str, ...]) -> None:
        folder = os.path.join(root, *parts)
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            here = (*parts, entry.name)
            if here in kept:
                continue
            path = "/".join((root.rstrip("/"), *here))
            if entry.name.startswith("."):
                final = abandoned_temporary(Path(entry.path))
                if final is not None and (*parts, final) not in kept:
                    stale.append(StaleEntry(path, "temporary"))
                continue
            if entry.is_symlink():
                if here not in containers:
                    stale.append(StaleEntry(path, "symlink"))
                continue  # a symlinked folder of outputs: never followed out
            if entry.is_dir(follow_symlinks=False):
                if here in containers:
                    walk(here)
                else:
                    record = read_failure_record(entry.path) is not None
                    stale.append(StaleEntry(path, "folder", _count_files(entry.path), record))
            else:
                record = read_failure_record(entry.path) is not None
                stale.append(StaleEntry(path, "file", 1, record))

    walk(())
    return sorted(stale, key=lambda e: e.path)


def remove_stale(
    results_dir: str | os.PathLike,
    declared: Iterable[str],
    keep: Iterable[str] = (),
) -> list[StaleEntry]:
    """Remove what :func:`find_stale` lists (a symlink is unlinked, never followed; a folder is
    removed with everything in it, without following the links it holds); return the entries
    removed. Each entry is checked again just before it goes: it must still lie inside the
    results folder (no folder on its way replaced by a symlink meanwhile)."""
    root = os.path.realpath(results_dir)
    removed = []
    for entry in find_stale(results_dir, declared, keep):
        parent = os.path.realpath(os.path.dirname(entry.path))
        if os.path.commonpath([root, parent]) != root:
            log.warning("%s: no longer inside %s; left alone", entry.path, results_dir)
            continue
        path = os.path.join(parent, os.path.basename(entry.path))
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)  # removes links inside, never what they point to
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        removed.append(entry)
    return removed


def snakemake_command(rule: str) -> str:
    """How to run ``rule``: the ``snakemake`` beside the running Python (as a path relative
    to the working directory when it is under it, e.g. ``.venv/bin/snakemake``), else
    ``snakemake``."""
    exe = Path(sys.executable).parent / "snakemake"
    if not exe.is_file():
        return f"snakemake {rule}"
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    return f"{exe} {rule}"


def stale_line(entries: list[StaleEntry], results_dir: str = RESULTS, *, shown: int = 5) -> str:
    """One line naming the stale entries (the first ``shown``) and the commands that list and
    remove them."""
    names = ", ".join(e.describe() for e in entries[:shown])
    more = f" and {len(entries) - shown} more" if len(entries) > shown else ""
    what = "output belongs" if len(entries) == 1 else "outputs belong"
    return (
        f"{len(entries)} {what} to no current recording or target in {results_dir}/: "
        f"{names}{more}; list: {snakemake_command('list_stale')}; "
        f"remove: {snakemake_command('clean_stale')}"
    )


def run_stale_job(
    *,
    declared: Mapping[str, Any],
    log_path: str | None,
    remove: bool,
    results_dir: str = RESULTS,
) -> list[StaleEntry]:
    """Entry point of ``scripts/stale.py`` (rules ``list_stale`` and ``clean_stale``): list
    (``remove=False``) or remove the stale entries of ``results_dir``, one line each on the
    terminal and in the log."""
    setup_logging(log_path, stderr_level=logging.INFO)
    outputs, sources = declared_from_params(declared)
    if remove:
        entries = remove_stale(results_dir, outputs, sources)
        for e in entries:
            log.info("removed %s", e.describe())
        log.info("removed %d stale outputs from %s/", len(entries), results_dir)
    else:
        entries = find_stale(results_dir, outputs, sources)
        for e in entries:
            log.info("stale: %s", e.describe())
        log.info(
            "%d outputs in %s/ belong to no current recording or target%s",
            len(entries),
            results_dir,
            f"; remove them with: {snakemake_command('clean_stale')}" if entries else "",
        )
    return entries

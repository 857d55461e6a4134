"""Group recordings into stable batches, one export (and one verify) job per batch and target.

Snakemake pays 0.1-0.6 s to start each script job, so converting one small file per job would
spend most of the run starting Python. A batch job converts ``batch_size`` recordings (on
average) in one process and still declares every file it writes as an output.

Batch membership must not shift when recordings are added or removed, or one new recording
would re-run every batch after it. Chunking the sorted names by position has that flaw, and so
does hashing names into ``n / batch_size`` buckets (the bucket count changes). Instead the
batches are *content-defined*: the names are sorted and a new batch starts at every name whose
hash is divisible by ``batch_size`` (probability ``1 / batch_size``, so batches hold
``batch_size`` names on average). A boundary depends only on the name itself, so adding a
recording changes only the batch it falls into (or splits it in two when the new name is itself
a boundary), and removing one changes only its own batch (or merges it with its predecessor).
A batch that reaches ``max_factor * batch_size`` names is cut there, which bounds the job size;
such forced cuts are rare (about 2% of batches for ``max_factor=4``) and their effect ends at
the next natural boundary. ``batch_size=1`` gives one recording per batch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spikelab.workflow.inputs import Recording

__all__ = ["Batch", "plan_batches", "batch_key", "export_mem_mb", "export_runtime_min"]


@dataclass(frozen=True)
class Batch:
    """Recordings converted together.

    Attributes
    ----------
    key : str
        Stable identifier ([A-Za-z0-9_]), derived from the first recording's name; used in rule
        names (``export_nwb_<key>``), log and benchmark paths and verify result paths.
    recordings : tuple of Recording
        Members, sorted by name.
    """

    key: str
    recordings: tuple[Recording, ...]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.recordings]

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.recordings]

    @property
    def sizes_mb(self) -> list[float] | None:
        """Input sizes (MiB) seen at discovery, or None when one is unknown."""
        sizes = [r.size_bytes for r in self.recordings]
        return None if None in sizes else [n / 2**20 for n in sizes]


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")


def batch_key(name: str) -> str:
    """Identifier-safe form of a recording name (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def plan_batches(
    recordings: Sequence[Recording], batch_size: int, *, max_factor: int = 4
) -> list[Batch]:
    """Split ``recordings`` into content-defined batches of about ``batch_size`` each.

    The result depends only on the set of names, not on the input order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    cap = max(1, max_factor * batch_size)
    groups: list[list[Recording]] = []
    for rec in sorted(recordings, key=lambda r: r.name):
        if not groups or _name_hash(rec.name) % batch_size == 0 or len(groups[-1]) >= cap:
            groups.append([])
        groups[-1].append(rec)
    keys: dict[str, int] = {}
    batches = []
    for group in groups:
        key = batch_key(group[0].name)
        if key in keys:  # e.g. "a-b" and "a_b" both start a batch
            keys[key] += 1
            key = f"{key}_{keys[key]}"
        keys.setdefault(key, 1)
        batches.append(Batch(key, tuple(group)))
    return batches


# Resource estimates for one batch job. Base memory covers the interpreter, numpy and h5py
# (pynwb adds ~150 MB); a recording in memory takes about its pickle size, and the exporters
# and loaders hold a few temporary copies of the spike times.
_BASE_MEM_MB = {"nwb": 500, "hdf5": 350, "kilosort": 350, "pickle": 300}


def export_mem_mb(fmt: str, sizes_mb: Sequence[float], attempt: int = 1) -> int:
    """Memory (MB) for a batch job of format ``fmt`` reading files of ``sizes_mb`` (MB).

    Files are processed one at a time, so the largest file counts; doubled on each retry.
    """
    largest = max(sizes_mb, default=0.0)
    return int(math.ceil((_BASE_MEM_MB.get(fmt, 400) + 6 * largest) * 2 ** (attempt - 1)))


def export_runtime_min(fmt: str, sizes_mb: Sequence[float], attempt: int = 1) -> int:
    """Wall time (minutes) for a batch job: generous, a limit for cluster schedulers."""
    seconds = 60 + 2 * len(sizes_mb) + 2.0 * sum(sizes_mb)
    if fmt == "nwb":
        seconds *= 2
    return int(math.ceil(seconds / 60 * attempt))

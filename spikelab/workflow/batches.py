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
from collections.abc import Sequence
from dataclasses import dataclass

from spikelab.workflow.inputs import Recording

__all__ = [
    "Batch",
    "plan_batches",
    "batch_key",
    "write_sources_list",
    "read_sources_list",
    "job_sources",
]


@dataclass(frozen=True)
class Batch:
    """Recordings converted together.

    Attributes
    ----------
    key : str
        Identifier of the membership (``b`` and 10 hex digits of a hash of the sorted names):
        the same recordings give the same key. Used in rule names (``export_nwb__<key>``),
        log and benchmark paths and verify result paths.
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


def batch_key(names: Sequence[str]) -> str:
    """Identifier of a batch holding ``names``: ``b`` and 10 hex digits of a hash of the
    sorted names (40 bits: 100 000 batches collide with odds below 1 in 10 000, and
    :func:`plan_batches` suffixes a collision)."""
    text = "\n".join(sorted(names)).encode("utf-8")
    return "b" + hashlib.blake2b(text, digest_size=5).hexdigest()


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
        key = batch_key([r.name for r in group])
        if key in keys:  # a hash collision
            keys[key] += 1
            key = f"{key}_{keys[key]}"
        keys.setdefault(key, 1)
        batches.append(Batch(key, tuple(group)))
    return batches


def write_sources_list(sources: Sequence[Sequence[str]], out: str) -> None:
    """Write ``out`` (atomically): a TSV of a batch's recordings, their input paths (a file or
    a KiloSort/Phy folder) and sizes (bytes), in batch order.

    The jobs of a batch depend on this one file instead of each declaring every input file of
    the batch, and read their sources from it instead of from their params: a changed input
    re-writes it, which re-runs them. Snakemake then tracks each input once per batch, not once
    per job (at 10 000 recordings, 60 000 declared inputs fewer, no checksum of 100 inputs per
    output when a job finishes, and job records without the batch's paths).
    """
    from pathlib import Path

    from spikelab.formats.atomic import atomic_file
    from spikelab.jobs import output_size

    lines = ["recording\tpath\tbytes"]
    for name, path in sources:
        if "\t" in path or "\n" in path:
            raise ValueError(f"{path!r}: a source path with a tab or newline cannot be listed")
        lines.append(f"{name}\t{path}\t{output_size(path)}")
    with atomic_file(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_sources_list(path: str) -> list[str]:
    """The input paths listed by :func:`write_sources_list` in ``path``, in batch order."""
    with open(path, encoding="utf-8") as fh:
        rows = [line.rstrip("\n").split("\t") for line in fh]
    if not rows or rows[0] != ["recording", "path", "bytes"] or any(len(r) != 3 for r in rows):
        raise ValueError(f"{path}: not a list of sources (recording, path, bytes)")
    return [r[1] for r in rows[1:]]


def job_sources(inputs: Sequence[str], *, from_list: bool) -> list[str]:
    """A batch job's source paths: read from its one input, the batch's list of sources
    (``from_list``), or its inputs themselves (local copies of sources on S3)."""
    return read_sources_list(str(inputs[0])) if from_list else [str(p) for p in inputs]

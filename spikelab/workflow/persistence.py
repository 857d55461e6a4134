"""Snakemake's job records (``.snakemake/metadata``) read once per output, not 3.4 times.

To decide whether a job is up to date, Snakemake's file persistence reads the record of each
of the job's outputs in five passes (has metadata, outdated, params, input, code), through a
cache of 128 records (``functools.lru_cache`` on ``FilePersistence._read_record_cached``). A
job with more outputs than that (a batch of more than 127 recordings) evicts each record
before the next pass reads it again: at 10 000 recordings a no-op run read 3.4 records per
output, a third of its time. Sized to the largest job, each record is read once (the cache
then holds one job's records, each with the job's params). Nothing else changes: the cache
is emptied on every write, as before.
"""

from __future__ import annotations

import functools


def fit_metadata_cache(outputs_per_job: int) -> int | None:
    """Let Snakemake's record cache hold ``outputs_per_job`` records; return its new size, or
    None when it is left alone (big enough already, or Snakemake's internals are not what
    this expects)."""
    try:
        from snakemake.persistence.file import FilePersistence
    except ImportError:
        return None
    cached = FilePersistence.__dict__.get("_read_record_cached")
    maxsize = getattr(cached, "cache_parameters", dict)().get("maxsize")
    wrapped = getattr(cached, "__wrapped__", None)
    if wrapped is None or maxsize is None or maxsize >= outputs_per_job:
        return None
    FilePersistence._read_record_cached = functools.lru_cache(maxsize=outputs_per_job)(wrapped)
    return outputs_per_job

"""Snakemake's job-record cache sized to the largest job (spikelab/workflow/persistence.py).
The workflow side (a 141-output job still re-runs on params, code and input changes, and a
no-op plans nothing) is in tests/test_workflow.py."""

from __future__ import annotations

import pytest
from snakemake.persistence.file import FilePersistence

from spikelab.workflow.persistence import fit_metadata_cache


@pytest.fixture
def restored_cache():
    before = FilePersistence.__dict__["_read_record_cached"]
    yield before
    FilePersistence._read_record_cached = before


def test_snakemakes_cache_is_what_the_fit_expects(restored_cache):
    # if Snakemake changes this, the fit does nothing (and this test says why)
    assert restored_cache.cache_parameters()["maxsize"] == 128
    assert callable(restored_cache.__wrapped__)


def test_a_job_bigger_than_the_cache_gets_a_cache_of_its_size(restored_cache):
    assert fit_metadata_cache(401) == 401
    cached = FilePersistence.__dict__["_read_record_cached"]
    assert cached.cache_parameters()["maxsize"] == 401
    assert cached.__wrapped__ is restored_cache.__wrapped__  # the same reader, bigger cache


def test_a_small_job_leaves_the_cache_alone(restored_cache):
    assert fit_metadata_cache(101) is None
    assert FilePersistence.__dict__["_read_record_cached"] is restored_cache


def test_other_internals_are_left_alone(restored_cache):
    FilePersistence._read_record_cached = restored_cache.__wrapped__  # no lru_cache around it
    assert fit_metadata_cache(1000) is None
    assert FilePersistence.__dict__["_read_record_cached"] is restored_cache.__wrapped__

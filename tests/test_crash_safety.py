"""Killing an export at any moment never leaves a corrupt file at the final path."""

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from spikedata_factories import assert_same_trains

from spikelab.data_loaders import data_exporters, data_loaders
from spikelab.data_loaders.data_exporters import export_to_pickle
from spikelab.spikedata import SpikeData

FS = 20000.0
KILLS_PER_FORMAT = 6
EXPORT = {  # format: (exporter in data_exporters, keyword arguments)
    "hdf5": ("export_spikedata_to_hdf5", {}),
    "raster": ("export_spikedata_to_hdf5", {"style": "raster", "raster_bin_size_ms": 1.0}),
    "nwb": ("export_spikedata_to_nwb", {}),
    "kilosort": ("export_spikedata_to_kilosort", {"fs_Hz": FS}),
    "pickle": ("export_to_pickle", {}),
}


def _export(fmt, sd, out):
    name, kwargs = EXPORT[fmt]
    getattr(data_exporters, name)(sd, out, **kwargs)


def _load(fmt, path):
    if fmt in ("hdf5", "raster"):
        return data_loaders.load_spikedata_from_hdf5(path)
    if fmt == "nwb":
        return data_loaders.load_spikedata_from_nwb(path)
    if fmt == "kilosort":
        return data_loaders.load_spikedata_from_kilosort(path, FS)
    return data_loaders.load_spikedata_from_pickle(path)


def _check(fmt, sd, back):
    if fmt == "raster":
        assert back.N == sd.N and back.n_spikes == sd.n_spikes
    elif fmt == "kilosort":
        assert_same_trains(sd, back, atol_ms=0.5 * 1000 / FS + 1e-9)
    elif fmt in ("hdf5", "nwb"):
        assert_same_trains(sd, back, atol_ms=1e-9, rtol=1e-15)
    else:
        assert_same_trains(sd, back)


@pytest.fixture(scope="module")
def large_pickle(tmp_path_factory):
    rng = np.random.default_rng(3)
    train = [np.sort(rng.uniform(0, 60_000, rng.integers(1000, 8000))) for _ in range(300)]
    sd = SpikeData(train, length=60_000.0, metadata={"fs_Hz": FS})
    return export_to_pickle(sd, tmp_path_factory.mktemp("crash") / "large.pkl"), sd


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(EXPORT))
def test_sigkill_at_random_points_never_corrupts_the_final_output(tmp_path, large_pickle, fmt):
    pkl, sd = large_pickle
    out = tmp_path / ("out" if fmt == "kilosort" else f"out.{fmt}")
    code = textwrap.dedent(
        f"""
        import sys
        from spikelab.data_loaders import data_exporters as ex
        from spikelab.formats.pickle_io import load_spikedata_from_pickle
        sd = load_spikedata_from_pickle({str(pkl)!r})
        out = {str(out)!r}
        print("ready", flush=True)
        while True:
            getattr(ex, {EXPORT[fmt][0]!r})(sd, out, **{EXPORT[fmt][1]!r})
        """
    )
    rng = random.Random(fmt)
    t0 = time.perf_counter()
    _export(fmt, sd, out)
    duration = time.perf_counter() - t0
    _check(fmt, sd, _load(fmt, out))
    for _ in range(KILLS_PER_FORMAT):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 2.5 * duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            _check(fmt, sd, _load(fmt, out))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    _export(fmt, sd, out)
    _check(fmt, sd, _load(fmt, out))
    assert [p.name for p in tmp_path.iterdir()] == [out.name], f"left behind: {leftovers}"


def test_cleanup_removes_only_the_exact_targets_temporaries_of_dead_writers(tmp_path):
    """Writing ``a.pkl`` removes a dead writer's ``.a.pkl.pid<pid>.<random>.tmp``, never the
    in-flight temporary of another output whose name merely starts with ``a.pkl.pid``."""
    dead = 2**22 + 12345  # above pid_max's default: no process has it
    stale = tmp_path / f".a.pkl.pid{dead}.k3j9x_2q.tmp"
    other_output = f"a.pkl.pid{dead}.b.pkl"  # a legitimate (if odd) output name
    in_flight = tmp_path / f".{other_output}.pid{dead}.zz81abcd.tmp"
    live = tmp_path / f".a.pkl.pid{os.getpid()}.abcdefgh.tmp"
    for path in (stale, in_flight, live):
        path.write_bytes(b"partial")
    export_to_pickle(SpikeData([[1.0]], length=2.0), tmp_path / "a.pkl")
    assert not stale.exists()
    assert in_flight.read_bytes() == b"partial" and live.read_bytes() == b"partial"


@pytest.mark.parametrize("listed_once", [False, True])
def test_cleanup_within_one_listing_removes_the_same_temporaries(tmp_path, listed_once):
    """Within ``temporaries_listed_once`` (a batch job), writes clean up exactly what they
    would clean up alone: a dead writer's temporaries of their own output, nothing else."""
    from spikelab.formats.atomic import temporaries_listed_once

    dead = 2**22 + 12345
    stale = [tmp_path / f".r{i}.pkl.pid{dead}.k3j9x_2q.tmp" for i in range(3)]
    stale_old = tmp_path / f".r3.pkl.pid{dead}.abcd_123.old"  # killed mid-swap of a folder
    other_output = f"r0.pkl.pid{dead}.b.pkl"
    in_flight = tmp_path / f".{other_output}.pid{dead}.zz81abcd.tmp"
    live = tmp_path / f".r1.pkl.pid{os.getpid()}.abcdefgh.tmp"
    for path in (*stale, stale_old, in_flight, live):
        path.write_bytes(b"partial")
    scope = temporaries_listed_once() if listed_once else contextlib.nullcontext()
    with scope:
        for i in range(4):
            export_to_pickle(SpikeData([[1.0]], length=2.0), tmp_path / f"r{i}.pkl")
    assert not any(path.exists() for path in (*stale, stale_old))
    assert in_flight.read_bytes() == b"partial" and live.read_bytes() == b"partial"


def test_one_listing_per_folder_within_a_batch_and_afresh_after_a_worker_died(
    tmp_path, monkeypatch
):
    """A batch lists each output folder once, not once per file; a temporary that appears
    after that listing (a worker killed while writing) is removed by
    ``remove_stale_temporaries``, which the jobs call after such a death, and the block's end
    brings back one listing per write."""
    from spikelab.formats import atomic
    from spikelab.formats.atomic import remove_stale_temporaries, temporaries_listed_once

    listed = []
    real = atomic._list_temporaries
    monkeypatch.setattr(
        atomic, "_list_temporaries", lambda folder: listed.append(folder) or real(folder)
    )
    dead = 2**22 + 12345
    sd = SpikeData([[1.0]], length=2.0)
    with temporaries_listed_once():
        with temporaries_listed_once():  # nested: the same listings
            export_to_pickle(sd, tmp_path / "a" / "r0.pkl")
        for i in range(1, 50):
            export_to_pickle(sd, tmp_path / "a" / f"r{i}.pkl")
        export_to_pickle(sd, tmp_path / "b" / "r0.pkl")
        late = tmp_path / "a" / f".r7.pkl.pid{dead}.k3j9x_2q.tmp"
        late.write_bytes(b"partial")
        export_to_pickle(sd, tmp_path / "a" / "r7.pkl")
        assert late.exists()  # not in the listing: left for the next run...
        remove_stale_temporaries(tmp_path / "a" / "r7.pkl")
        assert not late.exists()  # ...or for the job that saw its worker die
    assert listed == [tmp_path / "a", tmp_path / "b"]
    late.write_bytes(b"partial")
    export_to_pickle(sd, tmp_path / "a" / "r7.pkl")
    assert not late.exists()


def test_a_batch_lists_each_output_folder_once(tmp_path, monkeypatch):
    """``for_each_recording`` (every batch job) writes within one listing per folder."""
    from spikelab.formats import atomic
    from spikelab.jobs import for_each_recording

    listed = []
    real = atomic._list_temporaries
    monkeypatch.setattr(
        atomic, "_list_temporaries", lambda folder: listed.append(folder) or real(folder)
    )
    sd = SpikeData([[1.0]], length=2.0)
    for_each_recording(
        [f"r{i}" for i in range(20)],
        lambda name: export_to_pickle(sd, tmp_path / f"{name}.pkl"),
        on_fault=lambda item, fault, keep_going: None,
        context=str,
        failed="{bad} of {total}",
    )
    assert listed == [tmp_path]
    assert len(list(tmp_path.glob("r*.pkl"))) == 20

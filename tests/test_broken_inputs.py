"""Hostile and broken inputs at the library level: the corpus of tests/broken_corpus.py through
the restricted loader, exporter arguments that cannot work, and outputs that cannot be written
(something in the way, a read-only folder, a full disk). Nothing executes, nothing is
half-written, and an existing output is never damaged."""

from __future__ import annotations

import math
import os
import re
import resource
import socket
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest
from broken_corpus import BY_NAME, CASES, FS, good, sentinels, write_corpus

from spikelab.data_loaders import data_exporters, data_loaders
from spikelab.data_loaders.data_exporters import (
    ExportError,
    OutputInTheWayError,
    export_spikedata_to_hdf5,
    export_spikedata_to_kilosort,
    export_spikedata_to_nwb,
    export_to_pickle,
)
from spikelab.data_loaders.data_loaders import (
    LoadError,
    UnsafePickleError,
    load_spikedata_from_pickle,
)
from spikelab.spikedata import SpikeData

LIGHT_CASES = [c.name for c in CASES if c.name != "ten_million_spikes"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cases = [BY_NAME[n] for n in LIGHT_CASES]
    return write_corpus(root / "in", root / "sentinels", cases), root / "sentinels"


# ------------------------------------------------------------------- the restricted loader
@pytest.mark.parametrize("name", LIGHT_CASES)
def test_each_corpus_file_loads_or_gives_one_error_naming_file_and_fault(
    corpus, name, monkeypatch, capfd
):
    paths, sentinel_dir = corpus
    monkeypatch.syspath_prepend(str(sentinel_dir))  # the importlib payload's module is there
    case, path = BY_NAME[name], paths[name]
    if case.load is None:
        sd = load_spikedata_from_pickle(path)
        assert isinstance(sd, SpikeData)
        return
    expected = UnsafePickleError if case.unsafe else LoadError
    with pytest.raises(expected) as err:
        load_spikedata_from_pickle(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and case.load in message
    assert "\n" not in message  # one line: what, which file, why
    if case.unsafe:
        assert f"the global '{case.unsafe}'" in message
        assert "Nothing from the file was executed" in message
    assert sentinels(sentinel_dir) == []
    assert "spikelab_evil_module" not in sys.modules
    assert capfd.readouterr().out == ""


def test_the_loader_error_types_are_what_the_workflow_treats_as_bad_data():
    from spikelab.jobs import DATA_FAULTS

    assert issubclass(UnsafePickleError, DATA_FAULTS) and issubclass(LoadError, DATA_FAULTS)


def test_the_trusted_opt_ins_are_off_by_default_and_explicit(tmp_path):
    from collections import Counter

    path = tmp_path / "custom.pkl"
    export_to_pickle(SpikeData([[1.0]], length=2.0, metadata={"c": Counter(a=2)}), path)
    with pytest.raises(UnsafePickleError, match="'collections.Counter'"):
        load_spikedata_from_pickle(path)
    assert load_spikedata_from_pickle(path, allow_globals=["collections.Counter"]).metadata["c"]
    assert load_spikedata_from_pickle(path, trusted=True).metadata["c"] == Counter(a=2)
    # allowing one global allows only that one
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(UnsafePickleError, match="'os.system'"):
        load_spikedata_from_pickle(evil, allow_globals=["collections.Counter"])


# ------------------------------------------------------------ arguments that cannot work
def _ok() -> SpikeData:
    return good(metadata={})


BAD_ARGUMENTS = {  # case: (exporter, keyword arguments, fragment of the ExportError)
    "unknown hdf5 style": (export_spikedata_to_hdf5, {"style": "dense"}, "unknown HDF5 style"),
    "hdf5 style not a string": (export_spikedata_to_hdf5, {"style": 3}, "unknown HDF5 style"),
    "raster bin size 0": (
        export_spikedata_to_hdf5,
        {"style": "raster", "raster_bin_size_ms": 0},
        "raster_bin_size_ms",
    ),
    "raster bin size negative": (
        export_spikedata_to_hdf5,
        {"style": "raster", "raster_bin_size_ms": -1.0},
        "raster_bin_size_ms",
    ),
    "raster bin size NaN": (
        export_spikedata_to_hdf5,
        {"style": "raster", "raster_bin_size_ms": math.nan},
        "raster_bin_size_ms",
    ),
    "raster bin size inf": (
        export_spikedata_to_hdf5,
        {"style": "raster", "raster_bin_size_ms": math.inf},
        "raster_bin_size_ms",
    ),
    "raster bin size missing": (
        export_spikedata_to_hdf5,
        {"style": "raster"},
        "raster_bin_size_ms",
    ),
    "hdf5 samples without fs": (
        export_spikedata_to_hdf5,
        {"spike_times_unit": "samples"},
        "needs fs_Hz",
    ),
    "hdf5 samples at fs NaN": (
        export_spikedata_to_hdf5,
        {"spike_times_unit": "samples", "fs_Hz": math.nan},
        "fs_Hz must be a finite sampling rate > 0 Hz",
    ),
    "kilosort fs missing": (export_spikedata_to_kilosort, {"fs_Hz": None}, "fs_Hz"),
    "kilosort fs zero": (export_spikedata_to_kilosort, {"fs_Hz": 0}, "fs_Hz"),
    "kilosort fs negative": (export_spikedata_to_kilosort, {"fs_Hz": -20000.0}, "fs_Hz"),
    "kilosort fs NaN": (export_spikedata_to_kilosort, {"fs_Hz": math.nan}, "fs_Hz"),
    "kilosort fs inf": (export_spikedata_to_kilosort, {"fs_Hz": math.inf}, "fs_Hz"),
    "kilosort fs text": (export_spikedata_to_kilosort, {"fs_Hz": "fast"}, "fs_Hz"),
    "nwb fs zero": (export_spikedata_to_nwb, {"fs_Hz": 0}, "fs_Hz"),
    "nwb fs NaN": (export_spikedata_to_nwb, {"fs_Hz": math.nan}, "fs_Hz"),
    "cluster_ids too short": (
        export_spikedata_to_kilosort,
        {"fs_Hz": FS, "cluster_ids": [1, 2]},
        "one id per unit: 3 expected, got 2",
    ),
    "cluster_ids too long": (
        export_spikedata_to_kilosort,
        {"fs_Hz": FS, "cluster_ids": [1, 2, 3, 4]},
        "one id per unit: 3 expected, got 4",
    ),
    "cluster_ids duplicated": (
        export_spikedata_to_kilosort,
        {"fs_Hz": FS, "cluster_ids": [7, 7, 8]},
        "must be unique; repeated: [7]",
    ),
    "cluster_ids not integers": (
        export_spikedata_to_kilosort,
        {"fs_Hz": FS, "cluster_ids": [1.5, 2, 3]},
        "must be integers",
    ),
    "cluster_ids NaN": (
        export_spikedata_to_kilosort,
        {"fs_Hz": FS, "cluster_ids": [math.nan, 2, 3]},
        "must be integers",
    ),
    "pickle protocol": (export_to_pickle, {"protocol": 99}, "protocol"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_an_export_that_cannot_work_fails_before_creating_anything(tmp_path, case):
    exporter, kwargs, fragment = BAD_ARGUMENTS[case]
    out = tmp_path / "out" / "rec.out"
    with pytest.raises(ExportError) as err:
        exporter(_ok(), out, **kwargs)
    assert fragment in str(err.value)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder


# ------------------------------------------------------------------ outputs in the way
_EXPORTS = {
    "hdf5": lambda sd, p: export_spikedata_to_hdf5(sd, p),
    "nwb": lambda sd, p: export_spikedata_to_nwb(sd, p),
    "kilosort": lambda sd, p: export_spikedata_to_kilosort(sd, p, fs_Hz=FS),
    "pickle": lambda sd, p: export_to_pickle(sd, p),
}
FILE_EXPORTS = {
    "hdf5": _EXPORTS["hdf5"],
    "raster": lambda sd, p: export_spikedata_to_hdf5(sd, p, style="raster", raster_bin_size_ms=1.0),
    "nwb": _EXPORTS["nwb"],
    "pickle": _EXPORTS["pickle"],
}


@pytest.mark.parametrize("fmt", list(FILE_EXPORTS))
def test_a_folder_where_the_output_file_goes_is_refused_and_left_alone(tmp_path, fmt):
    target = tmp_path / "rec.out"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(OutputInTheWayError, match="a directory is in the way of the output file"):
        FILE_EXPORTS[fmt](good(), target)
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.out"]


def test_a_file_where_the_kilosort_folder_goes_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "rec"
    target.write_text("keep me")
    with pytest.raises(OutputInTheWayError, match="a file is in the way of the output folder"):
        export_spikedata_to_kilosort(good(), target, fs_Hz=FS)
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]
    assert issubclass(OutputInTheWayError, ExportError)  # existing callers still catch it


def _writable_by_this_process(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except PermissionError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.mark.parametrize("fmt", ["hdf5", "nwb", "kilosort", "pickle"])
def test_a_read_only_folder_fails_the_export_and_keeps_the_previous_output(tmp_path, fmt):
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / ("rec" if fmt == "kilosort" else f"rec.{fmt}")
    export = _EXPORTS[fmt]
    export(good(1), out)
    before = _snapshot(out)
    folder.chmod(0o555)
    immutable = False
    try:
        if _writable_by_this_process(folder):  # root: chmod is not enough
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
                pytest.skip("cannot make a folder read-only here")
            immutable = True
        with pytest.raises(PermissionError):
            export(good(2), out)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
    assert _snapshot(out) == before
    assert sorted(p.name for p in folder.iterdir()) == [out.name]


# ------------------------------------------------------------------------- a full disk
_EXPORT_CALLS = {
    "hdf5": "ex.export_spikedata_to_hdf5(sd, out)",
    "nwb": "ex.export_spikedata_to_nwb(sd, out)",
    "kilosort": f"ex.export_spikedata_to_kilosort(sd, out, fs_Hz={FS})",
    "pickle": "ex.export_to_pickle(sd, out)",
}


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return {path.name: path.read_bytes()}


@pytest.fixture(scope="module")
def big_pickle(tmp_path_factory):
    rng = np.random.default_rng(9)
    train = [np.sort(rng.uniform(0, 60_000.0, 100_000)) for _ in range(3)]
    sd = SpikeData(train, length=60_000.0, metadata={"fs_Hz": FS})
    return export_to_pickle(sd, tmp_path_factory.mktemp("big") / "big.pkl")  # 2.4 MB


@pytest.mark.parametrize("fmt", ["hdf5", "nwb", "kilosort", "pickle"])
def test_a_full_disk_fails_the_export_and_keeps_the_previous_output(tmp_path, big_pickle, fmt):
    out = tmp_path / ("rec" if fmt == "kilosort" else f"rec.{fmt}")
    _EXPORTS[fmt](good(1), out)  # a small previous output
    before = _snapshot(out)
    code = textwrap.dedent(
        f"""
        from spikelab.data_loaders import data_exporters as ex
        from spikelab.formats.pickle_io import load_spikedata_from_pickle
        sd = load_spikedata_from_pickle({str(big_pickle)!r})
        out = {str(out)!r}
        {_EXPORT_CALLS[fmt]}
        """
    )

    def limit():  # a file-size limit of 1 MB: writes beyond it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit
    )
    assert proc.returncode != 0
    assert re.search(r"File too large|file write failed|is the disk full", proc.stderr), proc.stderr
    assert _snapshot(out) == before  # the previous output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left
    _EXPORTS[fmt](data_loaders.load_spikedata_from_pickle(big_pickle), out)  # room again


# ------------------------------------------------------------------- no credentials leak
KEY_ID, SECRET, TOKEN = "AKIAFAKELIBRARY4KEY9", "libSeCrEt/DoNotLeak+0123456789", "libToken//x9"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_errors_and_reprs_never_hold_the_keys(tmp_path, monkeypatch):
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, os.devnull)
    creds = dict(
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
        endpoint_url=f"http://127.0.0.1:{_free_port()}",  # nothing listens: connection refused
    )
    sd = good()
    texts = [repr(sd), str(sd)]
    for call in (
        lambda: export_to_pickle(sd, "s3://bucket/rec.pkl", s3_upload=True, **creds),
        lambda: load_spikedata_from_pickle("s3://bucket/rec.pkl", allow_remote=True, **creds),
    ):
        with pytest.raises(Exception) as err:
            call()
        assert "s3://bucket/rec.pkl" in str(err.value)
        texts += [str(err.value), repr(err.value)]
        texts += traceback.format_exception(err.value)
    leaked = [t for t in texts for key in (KEY_ID, SECRET, TOKEN) if key in t]
    assert leaked == []


def test_exporters_module_exposes_what_the_docs_name():
    assert set(data_exporters.__all__) >= {"ExportError", "OutputInTheWayError"}

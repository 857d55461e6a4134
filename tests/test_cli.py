"""The command line, run as a real program: ``python -m spikelab`` (this checkout first on
PYTHONPATH) and the installed ``spikelab`` console script."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from importlib import metadata
from pathlib import Path

import pytest
from broken_corpus import BY_NAME as BROKEN
from broken_corpus import sentinels, write_corpus
from hostile_pickles import BY_NAME as HOSTILE
from spikedata_factories import DATA, assert_same_trains, fixture

from spikelab.formats.hdf5 import load_spikedata_from_hdf5
from spikelab.formats.kilosort import load_spikedata_from_kilosort
from spikelab.formats.nwb import load_spikedata_from_nwb
from spikelab.formats.pickle_io import load_spikedata_from_pickle

REPO = Path(__file__).resolve().parent.parent
_PATH = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(_PATH))
FS = 20000.0  # metadata["fs_Hz"] of tests/data/small.pkl


def spikelab(*args: str, cwd: Path, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m spikelab *args`` in ``cwd``; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "spikelab", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        **popen,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_convert_one_pickle_to_every_format_and_read_each_back(tmp_path):
    res = spikelab(
        "convert", str(DATA / "small.pkl"), "--to", "nwb,hdf5,kilosort,pickle", "-o", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.startswith(
        "1 of 1 inputs converted to hdf5/ragged, nwb, kilosort, pickle in out/ "
        "(4 outputs, each read back and verified; "
    )
    src, out = fixture("small"), tmp_path / "out"
    assert_same_trains(load_spikedata_from_hdf5(out / "hdf5/ragged/small.h5"), src, atol_ms=1e-9)
    assert_same_trains(load_spikedata_from_nwb(out / "nwb/small.nwb"), src, atol_ms=1e-9)
    half_sample_ms = 500.0 / FS
    ks = load_spikedata_from_kilosort(out / "kilosort/small")
    assert_same_trains(ks, src, atol_ms=half_sample_ms)
    pkl = load_spikedata_from_pickle(out / "pickle/small.pkl")
    assert_same_trains(pkl, src)
    assert pkl.metadata == src.metadata


def test_folder_with_hostile_and_broken_pickles_converts_the_others_and_names_each_bad_one(
    tmp_path,
):
    inputs, sentinel = tmp_path / "in", tmp_path / "sentinel"
    write_corpus(inputs, sentinel, [BROKEN["evil_os_system"], BROKEN["truncated"]])
    (inputs / "forged.pkl").write_bytes(HOSTILE["bare_ndarray_uninitialised"].data)
    for name in ("small", "empty_units", "neg_start"):
        shutil.copy(DATA / f"{name}.pkl", inputs)
    res = spikelab(
        "convert", "in", "--to", "hdf5,pickle", "-o", "out", "--log", "x.log", cwd=tmp_path
    )
    assert res.returncode == 1
    assert lines(res.stderr) == [
        "spikelab: FAILED in/evil_os_system.pkl: UnsafePickleError: refused to load: the pickle "
        "asks for the global 'posix.system', which is not allowed in a SpikeData pickle (only "
        "SpikeData, numpy arrays and builtin containers are). Nothing from the file was "
        "executed. If you trust this file, see 'Safety' in the README for the opt-in.",
        "spikelab: FAILED in/forged.pkl: UnsafePickleError: refused to load: the pickle calls "
        "numpy.ndarray(...), which a SpikeData pickle never calls. Nothing from the file was "
        "executed. If you trust this file, see 'Safety' in the README for the opt-in.",
        "spikelab: FAILED in/truncated.pkl: LoadError: not a readable pickle (truncated or "
        "corrupt: FRAME at byte 2 declares 919 bytes, more than the 289 left in the file)",
    ]
    assert sentinels(sentinel) == []
    assert res.stdout.startswith(
        "3 of 6 inputs converted to hdf5/ragged, pickle in out/ (6 outputs"
    )
    assert res.stdout.rstrip().endswith("; 3 failed")
    for name in ("small", "empty_units", "neg_start"):
        src = fixture(name)
        assert_same_trains(load_spikedata_from_pickle(tmp_path / f"out/pickle/{name}.pkl"), src)
        h5 = load_spikedata_from_hdf5(tmp_path / f"out/hdf5/ragged/{name}.h5")
        assert_same_trains(h5, src, atol_ms=1e-9)
    assert sorted(p.name for p in (tmp_path / "out/pickle").iterdir()) == [
        "empty_units.pkl",
        "neg_start.pkl",
        "small.pkl",
    ]
    log = (tmp_path / "x.log").read_text()
    assert "ERROR FAILED in/truncated.pkl: LoadError" in log
    assert "INFO verified out/pickle/small.pkl: 8 units, 1396 spikes" in log


def test_on_bad_fail_stops_at_the_first_bad_input_in_process(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_broken.pkl").write_bytes(b"")
    shutil.copy(DATA / "small.pkl", inputs / "b_good.pkl")
    res = spikelab(
        "convert", "in", "--to", "pickle", "-o", "out", "--on-bad", "fail", "--no-isolation",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 1
    assert lines(res.stderr) == [
        "spikelab: FAILED in/a_broken.pkl: LoadError: the file is empty (0 bytes), not a SpikeData "
        "pickle"
    ]
    assert "stopped at the first failure (--on-bad fail), 1 not tried" in res.stdout
    assert not (tmp_path / "out/pickle/b_good.pkl").exists()


def test_kilosort_without_a_sampling_rate_fails_naming_the_target_until_fs_Hz_is_given(tmp_path):
    res = spikelab("convert", str(DATA / "neg_start.pkl"), "--to", "kilosort,nwb", "-o", "out",
                   cwd=tmp_path)  # fmt: skip
    assert res.returncode == 1
    assert lines(res.stderr) == [
        f"spikelab: FAILED {DATA / 'neg_start.pkl'}: kilosort: MissingSamplingRateError: needs "
        "a sampling rate: the input's metadata has no usable 'fs_Hz'; pass --fs-Hz HZ"
    ]
    assert (tmp_path / "out/nwb/neg_start.nwb").is_file()  # the other target of that input
    res = spikelab("convert", str(DATA / "neg_start.pkl"), "--to", "kilosort", "-o", "out",
                   "--fs-Hz", "30000", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "sample_rate = 30000.0" in (tmp_path / "out/kilosort/neg_start/params.py").read_text()
    ks = load_spikedata_from_kilosort(tmp_path / "out/kilosort/neg_start")
    assert_same_trains(ks, fixture("neg_start"), atol_ms=500.0 / 30000)


def test_hdf5_styles_and_options_write_one_folder_per_style(tmp_path):
    res = spikelab(
        "convert", str(DATA / "small.pkl"), "--to", "hdf5", "-o", "out",
        "--hdf5-style", "raster,paired", "--option", "hdf5.raster_bin_size_ms=2.5",
        "--option", "hdf5.times_unit=samples",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    raster = load_spikedata_from_hdf5(tmp_path / "out/hdf5/raster/small.h5")
    assert raster.N == 8 and raster.n_spikes == 1396
    paired = load_spikedata_from_hdf5(tmp_path / "out/hdf5/paired/small.h5")
    assert_same_trains(paired, fixture("small"), atol_ms=500.0 / FS)


def test_other_formats_are_inputs_too(tmp_path):
    """An NWB file, an HDF5 file and a KiloSort/Phy folder, by extension and folder contents."""
    first = spikelab("convert", str(DATA / "small.pkl"), "--to", "nwb,hdf5,kilosort", "-o", "a",
                     cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    shutil.copytree(tmp_path / "a/kilosort/small", tmp_path / "mixed/from_ks")
    shutil.copy(tmp_path / "a/nwb/small.nwb", tmp_path / "mixed/from_nwb.nwb")
    shutil.copy(tmp_path / "a/hdf5/ragged/small.h5", tmp_path / "mixed/from_h5.h5")
    (tmp_path / "mixed/notes.txt").write_text("not an input")
    res = spikelab("convert", "mixed", "--to", "pickle", "-o", "b", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("3 of 3 inputs converted to pickle in b/")
    src = fixture("small")
    for name, atol in (("from_ks", 500.0 / FS), ("from_nwb", 1e-9), ("from_h5", 1e-9)):
        out = load_spikedata_from_pickle(tmp_path / f"b/pickle/{name}.pkl")
        assert_same_trains(out, src, atol_ms=atol)


def test_inputs_with_the_same_name_both_fail(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        shutil.copy(DATA / "small.pkl", tmp_path / folder / "rec.pkl")
    res = spikelab("convert", "x/rec.pkl", "y/rec.pkl", "--to", "pickle", "-o", "out", cwd=tmp_path)
    assert res.returncode == 1
    assert lines(res.stderr) == [
        "spikelab: FAILED x/rec.pkl: LoadError: another input has the name 'rec' (up to case): "
        "y/rec.pkl; their outputs would collide",
        "spikelab: FAILED y/rec.pkl: LoadError: another input has the name 'rec' (up to case): "
        "x/rec.pkl; their outputs would collide",
    ]
    assert not (tmp_path / "out/pickle").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--to", "nwbb"],
            "--to: unknown format 'nwbb' (did you mean 'nwb'?); known formats: hdf5, nwb, "
            "kilosort, pickle",
        ),
        (
            ["--to", "hdf5", "--option", "hdf5.spike_time_unit=ms"],
            "--option hdf5.spike_time_unit: hdf5 has no option 'spike_time_unit' (did you mean "
            "'spike_times_unit'?); hdf5 takes: style, raw_dataset, raw_time_dataset, "
            "raw_time_unit, spike_times_dataset, spike_times_index_dataset, spike_times_unit, "
            "raster_dataset, raster_bin_size_ms, raster_dtype, raster_compression, "
            "raster_compression_opts, raster_max_cells, group_per_unit, group_time_unit, "
            "idces_dataset, times_dataset, times_unit",
        ),
        (
            ["--to", "nwb", "--option", "nwbb.lab=x"],
            "--option nwbb.lab: unknown format 'nwbb' (did you mean 'nwb'?); known formats: "
            "hdf5, nwb, kilosort, pickle",
        ),
        (
            ["--to", "hdf5", "--hdf5-style", "rastr"],
            "--hdf5-style: unknown style 'rastr' (did you mean 'raster'?); styles: ragged, "
            "raster, group, paired",
        ),
        (
            ["--to", "hdf5", "--hdf5-style", "raster"],
            "--option hdf5.raster_bin_size_ms: style 'raster' needs a bin width in ms (e.g. 1.0)",
        ),
        (
            ["--to", "hdf5", "--option", "hdf5.raster_bin_size_ms=1"],
            "--option hdf5.raster_bin_size_ms: not used by hdf5/ragged",
        ),
        (
            ["--to", "pickle", "--option", "nwb.lab=x"],
            "--option nwb.lab: nwb is not among the formats of --to",
        ),
        (
            ["--to", "nwb", "--option", "nwb.compression=zip"],
            "nwb: these options cannot work: ExportError: compression must be one of None, "
            "'gzip', 'lzf', got 'zip'",
        ),
        (
            ["--to", "pickle", "--option", "pickle.protocol=NaN"],
            "--option pickle.protocol: NaN is not a finite number",
        ),
    ],
)
def test_bad_command_lines_give_one_line_and_write_nothing(tmp_path, args, error):
    res = spikelab("convert", str(DATA / "small.pkl"), "-o", "out", *args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == f"spikelab convert: error: {error}\n"
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_inspect_describes_a_pickle(tmp_path):
    res = spikelab("inspect", str(DATA / "neg_start.pkl"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        f"file               {DATA / 'neg_start.pkl'}\n"
        "format             pickle\n"
        "units              5\n"
        "spikes             104\n"
        "duration           500 ms\n"
        "start_time         -200 ms\n"
        "fs_Hz              none\n"
        "neuron_attributes  none\n"
        "metadata           case\n"
        "raw data           no\n"
        "converts to        hdf5, nwb, kilosort (needs a sampling rate: pass --fs-Hz HZ), pickle\n"
    )


def test_inspect_json(tmp_path):
    res = spikelab("inspect", "--json", str(DATA / "small.pkl"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info == {
        "file": str(DATA / "small.pkl"),
        "format": "pickle",
        "units": 8,
        "spikes": 1396,
        "duration_ms": 10000.0,
        "start_time_ms": 0.0,
        "fs_Hz": FS,
        "fs_Hz_source": "metadata",
        "neuron_attributes": ["electrode", "location"],
        "metadata": ["experiment", "fs_Hz", "seed", "notes"],
        "raw_data": False,
        "raw_data_shape": None,
        "converts_to": [
            {"format": name, "needs_fs_Hz": name == "kilosort", "ready": True}
            for name in ("hdf5", "nwb", "kilosort", "pickle")
        ],
    }


def test_inspect_refuses_a_hostile_pickle_in_one_line(tmp_path):
    (tmp_path / "forged.pkl").write_bytes(HOSTILE["bare_ndarray_uninitialised"].data)
    res = spikelab("inspect", "forged.pkl", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == (
        "spikelab inspect: error: forged.pkl: UnsafePickleError: refused to load: the pickle "
        "calls numpy.ndarray(...), which a SpikeData pickle never calls. Nothing from the file "
        "was executed. If you trust this file, see 'Safety' in the README for the opt-in.\n"
    )


def test_version(tmp_path):
    res = spikelab("--version", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout == f"spikelab {metadata.version('spikelab')}\n"


def test_progress_bar_on_a_terminal_shows_counts(tmp_path):
    for name in ("small", "empty_units"):
        shutil.copy(DATA / f"{name}.pkl", tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikelab", "convert", ".", "--to", "pickle", "-o", "out"],
        cwd=tmp_path,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    stdout = proc.stdout.read().decode()
    assert proc.wait(timeout=60) == 0
    text = seen.decode()
    assert "converting: 100%" in text and "2/2" in text, text
    assert stdout.startswith("2 of 2 inputs converted to pickle in out/")
    quiet = spikelab("convert", ".", "--to", "pickle", "-o", "out", "--quiet", cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_installed_console_script(tmp_path):
    script = Path(sys.executable).with_name("spikelab")
    assert script.is_file(), (
        f"no {script}: the console script is made by installing the package; run "
        f"`{Path(sys.executable).with_name('pip')} install -e .` in {REPO}"
    )
    res = subprocess.run(
        [str(script), "convert", str(DATA / "small.pkl"), "--to", "pickle", "-o", "out"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert_same_trains(
        load_spikedata_from_pickle(tmp_path / "out/pickle/small.pkl"), fixture("small")
    )

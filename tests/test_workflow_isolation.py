"""One batch, three good recordings and hostile ones that crash, exhaust or hang the process
reading them: the good ones are converted and verified, each bad one is reported, and no
output made for a bad one holds any value of a good one."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_workflow, run_snakemake

from spikelab.formats.pickle_io import export_to_pickle, load_spikedata_from_pickle
from spikelab.spikedata import SpikeData
from spikelab.workflow.summary import read_summary

pytestmark = pytest.mark.slow

FS = 20000.0
GOOD = ("good_a", "good_b", "good_c")
TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
CHECK = "results/verified.ok"
PLACEHOLDER = "SPIKELAB-PLACEHOLDER"


def _good(seed: int) -> SpikeData:
    rng = np.random.default_rng(100 + seed)
    train = [np.sort(rng.uniform(0.0, 2000.0, n)) for n in (300, 5, 120)]
    return SpikeData(train, length=2000.0, metadata={"fs_Hz": FS})


def _spikedata_around(opcodes: bytes) -> bytes:
    """A protocol-2 SpikeData pickle (no framing) whose ``metadata["x"]`` is built by
    ``opcodes`` (raw pickle opcodes pushing one object)."""
    sd = SpikeData([[1.0, 2.0]], length=10.0, metadata={"fs_Hz": FS, "x": PLACEHOLDER})
    data = pickle.dumps(sd, protocol=2)
    text = PLACEHOLDER.encode()
    string = b"X" + struct.pack("<I", len(text)) + text  # BINUNICODE
    assert data.count(string) == 1
    return data.replace(string, opcodes)


def _deep_tuple_as_dict_key(depth: int = 300_000) -> bytes:
    """A dict whose key is a tuple nested ``depth`` deep: hashing it overflows the C stack."""
    return b"\x80\x04}" + b")" + b"\x85" * depth + b"Ns."


def _deep_list(depth: int = 100_000) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _empty_array(n: int) -> bytes:
    """``numpy.ndarray((n,), '<f8')``: an array of uninitialised memory."""
    return (
        _global("numpy", "ndarray") + b"J" + struct.pack("<i", n) + b"\x85X\x03\x00\x00\x00<f8\x86R"
    )


def _long(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


HOSTILE = {
    # the C unpickler recurses in hash(): a segfault while loading
    "deep_key": lambda: _deep_tuple_as_dict_key(),
    # 100 000 nested lists in metadata: every exporter's JSON writer recursed
    "deep_metadata": lambda: _spikedata_around(_deep_list()),
    # bytearray(2.5e9) through REDUCE: 2.5 GB from a small file
    "memory_bomb": lambda: _spikedata_around(
        _global("builtins", "bytearray") + _long(2_500_000_000) + b"\x85R"
    ),
    # numpy.ndarray((n,), '<f8'): uninitialised memory, which held the spike times of the
    # recordings converted before it in the same process (sorted after good_*)
    "heap_leak": lambda: _spikedata_around(
        b"(" + b"".join(_empty_array(n) for n in (300, 2000)) + b"l"
    ),
}


def _configure(wd: Path, **config) -> None:
    path = wd / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(config)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _workflow(tmp_path: Path, hostile: dict[str, bytes]) -> Path:
    wd = copy_workflow(tmp_path / "wf", example=False)
    (wd / "in").mkdir()
    for i, name in enumerate(GOOD):
        export_to_pickle(_good(i), wd / "in" / f"{name}.pkl")
    for name, data in hostile.items():
        (wd / "in" / f"{name}.pkl").write_bytes(data)
    _configure(
        wd,
        inputs={"directory": "in", "glob": None, "sample_sheet": None},
        fs_Hz=FS,
        isolation={"enabled": True, "memory_mb": 600, "seconds": 60},
    )
    return wd


def _good_value_patterns(wd: Path) -> list[bytes]:
    """Byte patterns of the good recordings' spike times: float64 in ms and in s, and their
    text (as JSON would write them)."""
    patterns = []
    for name in GOOD:
        sd = load_spikedata_from_pickle(wd / "in" / f"{name}.pkl")
        for t in sd.train:
            for value in (*t[:40], *(t[:40] / 1000.0)):
                patterns += [struct.pack("<d", value), repr(float(value)).encode()]
    return patterns


def _files_of(wd: Path, name: str) -> dict[str, bytes]:
    """Every file the run made for recording ``name``: outputs (or failure records), figure."""
    files = {}
    for path in (wd / "results").rglob("*"):
        rel = path.relative_to(wd / "results")
        if path.is_file() and (
            path.stem == name or name in rel.parts or path.name == f"{name}.png"
        ):
            files[str(rel)] = path.read_bytes()
    return files


def _summary(wd: Path) -> dict[tuple[str, str], dict[str, str]]:
    rows = read_summary(wd / "results" / "summary.tsv")
    return {(r["recording"], r["target"]): r for r in rows}


@pytest.mark.parametrize("keep_going", [False, True], ids=["stop-at-first-error", "keep-going"])
def test_hostile_recordings_in_a_batch_cannot_sink_it_or_leak_into_each_other(tmp_path, keep_going):
    hostile = {name: build() for name, build in HOSTILE.items()}
    wd = _workflow(tmp_path, hostile)
    args = (CHECK, "--cores", "2") + (("--keep-going",) if keep_going else ())
    proc = run_snakemake(wd, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0  # the check fails, naming every bad file
    assert "Error in rule export_" not in out, out[-3000:]  # no export job failed
    rows = _summary(wd)
    for name in GOOD:
        for target in TARGETS:
            assert rows[name, target]["status"] == "ok", rows[name, target]
    for name in hostile:
        for target in TARGETS:
            row = rows[name, target]
            assert row["status"] != "ok", (name, target, row)
            assert name in row["message"] or f"in/{name}.pkl" in row["message"], row
            assert f"in/{name}.pkl" in out  # the terminal names the file
    patterns = _good_value_patterns(wd)
    for name in hostile:
        for rel, data in _files_of(wd, name).items():
            leaked = [p for p in patterns if p in data]
            assert leaked == [], f"{rel} holds values of the good recordings"


def test_trusted_pickles_that_crash_exhaust_or_hang_their_child_are_reported(tmp_path):
    """With trusted_pickles a pickle may run code: each bad one ends only its own child."""
    hostile = {
        "segfault": _global("ctypes", "string_at") + b"K\x00\x85R.",  # string_at(0)
        "bomb": _global("builtins", "bytearray") + _long(4 * 2**30) + b"\x85R.",
        "hang": _global("time", "sleep") + b"K\x78\x85R.",  # sleep(120)
    }
    wd = _workflow(tmp_path, hostile)
    _configure(
        wd,
        trusted_pickles=True,
        formats=["pickle", "hdf5"],
        isolation={"enabled": True, "memory_mb": 400, "seconds": 3},
    )
    proc = run_snakemake(wd, "--cores", "2", "--keep-going")  # rule all: report figures too
    assert proc.returncode != 0
    rows = _summary(wd)
    for name in GOOD:
        for target in ("pickle", "hdf5/ragged", "hdf5/raster"):
            assert rows[name, target]["status"] == "ok", rows[name, target]
    expected = {  # the loader itself turns a MemoryError into a LoadError
        "segfault": r"in/segfault\.pkl: crashed with SIGSEGV while loading",
        "bomb": r"in/bomb\.pkl: (ran out of memory \(limit of 400 MB\)|.*more memory)",
        "hang": r"in/hang\.pkl: took longer than 3 s while loading; stopped",
    }
    for name, pattern in expected.items():
        for target in ("pickle", "hdf5/ragged", "hdf5/raster"):
            row = rows[name, target]
            assert row["status"] == "export_failed", row
            assert re.search(pattern, row["message"]), row
    stats = [p.read_text() for p in (wd / "results" / "report" / "stats").glob("*.json")]
    assert any("took longer than 3 s while loading" in s for s in stats)


def test_without_isolation_a_crash_ends_its_whole_batch_job(tmp_path):
    """isolation.enabled: false converts in the job's own process (the option reaches the
    jobs): a crashing pickle then takes its batch job down, as the README says."""
    segfault = _global("ctypes", "string_at") + b"K\x00\x85R."
    wd = _workflow(tmp_path, {"segfault": segfault})
    _configure(wd, trusted_pickles=True, formats=["pickle"], isolation={"enabled": False})
    proc = run_snakemake(wd, CHECK, "--cores", "1")
    assert proc.returncode != 0
    assert re.search(r"Error in rule export_pickle__b[0-9a-f]{10}", proc.stdout + proc.stderr)
    assert not (wd / "results" / "summary.tsv").exists()

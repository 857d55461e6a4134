"""Stale outputs: what lies in results/ that no rule declares, listed and removed safely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikelab.jobs import write_failure_stub
from spikelab.workflow.stale import (
    StaleEntry,
    declared_from_params,
    find_stale,
    remove_stale,
    stale_line,
)
from spikelab.workflow.targets import declared_outputs, targets_from_config

CONFIG = {
    "hdf5": {"ragged": {"style": "ragged"}},
    "nwb": {},
    "kilosort": {},
    "pickle": {},
}
TARGETS = targets_from_config(CONFIG)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory whose results/ holds the outputs of recording 'a' (declared) and
    of 'gone' (stale), and things that must never be listed or removed."""
    monkeypatch.chdir(tmp_path)
    declared = declared_outputs(["a"], ["b0000000001"], TARGETS)
    for path in declared:
        if path.startswith("results/kilosort/"):
            _touch(Path(path) / "spike_times.npy")
        else:
            _touch(Path(path))
    _touch(Path("results/kilosort/a/notes.txt"))  # inside a declared folder output
    write_failure_stub(
        "results/nwb/gone.nwb",
        is_dir=False,
        recording="gone",
        source="in/gone.pkl",
        target="nwb",
        error="LoadError: in/gone.pkl: truncated",
    )
    write_failure_stub(
        "results/kilosort/gone",
        is_dir=True,
        recording="gone",
        source="in/gone.pkl",
        target="kilosort",
        error="LoadError: in/gone.pkl: truncated",
    )
    _touch(Path("results/pickle/gone.pkl"))
    _touch(Path("results/verify/nwb/b00000000ff.json"))  # an old batch
    for name in ("x.h5", "y.h5", "z.h5"):
        _touch(Path("results/hdf5/dropped_entry") / name)  # an entry no longer in the config
    outside = _touch(tmp_path / "outside" / "keep.txt", "precious")
    (tmp_path / "results" / "link_out").symlink_to(outside.parent)  # a stale symlink
    dead = _dead_pid()
    _touch(Path(f"results/pickle/.gone.pkl.pid{dead}.abcd1234.tmp"))  # writer gone
    _touch(Path(f"results/pickle/.a.pkl.pid{dead}.abcd1234.tmp"))  # of a declared output
    _touch(Path(f"results/pickle/.other.pkl.pid{os.getpid()}.abcd1234.tmp"))  # running
    _touch(Path("results/nwb/.nfs000001"))  # a hidden name of someone else
    _touch(Path("results/in/source.pkl"))  # an input kept under results/
    return {
        "declared": declared,
        "keep": {"results/in/source.pkl"},
        "outside": outside,
        "dead": dead,
    }


def test_stale_entries_are_listed_once_each_folders_whole(workdir):
    entries = find_stale("results", workdir["declared"], workdir["keep"])
    dead = workdir["dead"]
    assert [e.describe() for e in entries] == [
        "results/hdf5/dropped_entry/ (folder, 3 files)",
        "results/kilosort/gone/ (failure record)",
        "results/link_out (symlink)",
        "results/nwb/gone.nwb (failure record)",
        f"results/pickle/.gone.pkl.pid{dead}.abcd1234.tmp (temporary)",
        "results/pickle/gone.pkl",
        "results/verify/nwb/b00000000ff.json",
    ]


def test_removing_stale_entries_keeps_every_declared_output_and_all_outside(workdir, tmp_path):
    before = sorted(str(p) for p in Path("results").rglob("*"))
    removed = remove_stale("results", workdir["declared"], workdir["keep"])
    assert len(removed) == 7
    assert find_stale("results", workdir["declared"], workdir["keep"]) == []
    for path in workdir["declared"]:
        assert Path(path).exists(), path
    assert Path("results/kilosort/a/notes.txt").is_file()  # inside a declared folder
    assert Path("results/in/source.pkl").is_file()
    assert Path("results/nwb/.nfs000001").is_file()
    assert len(list(Path("results/pickle").glob(".*.tmp"))) == 2  # declared's, running's
    assert workdir["outside"].read_text() == "precious"  # the link went, not its target
    assert not os.path.lexists("results/link_out")
    after = sorted(str(p) for p in Path("results").rglob("*"))
    assert set(after) < set(before)


def test_a_symlinked_folder_of_outputs_is_not_followed_nor_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    declared = declared_outputs(["a"], ["b0000000001"], TARGETS)
    elsewhere = tmp_path / "disk2" / "nwb"
    _touch(elsewhere / "a.nwb")
    _touch(elsewhere / "someone_elses.nwb", "precious")
    Path("results").mkdir()
    Path("results/nwb").symlink_to(elsewhere)
    assert find_stale("results", declared) == []
    assert remove_stale("results", declared) == []
    assert (elsewhere / "someone_elses.nwb").read_text() == "precious"


def test_a_symlinked_results_folder_is_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    declared = declared_outputs(["a"], ["b0000000001"], TARGETS)
    real = tmp_path / "scratch" / "results"
    _touch(real / "nwb" / "a.nwb")
    _touch(real / "nwb" / "old.nwb")
    Path("results").symlink_to(real)
    assert [e.path for e in find_stale("results", declared)] == ["results/nwb/old.nwb"]
    assert [e.path for e in remove_stale("results", declared)] == ["results/nwb/old.nwb"]
    assert (real / "nwb" / "a.nwb").is_file() and not (real / "nwb" / "old.nwb").exists()


def test_no_results_folder_has_nothing_stale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_stale("results", {"results/summary.tsv"}) == []


def test_the_declared_param_gives_the_rules_paths():
    params = {
        "recordings": ["a", "b"],
        "batches": ["b0000000001"],
        "targets": [t.as_params() for t in TARGETS],
        "sources": ["in/a.pkl"],
    }
    declared, sources = declared_from_params(params)
    assert sources == {"in/a.pkl"}
    assert declared == {
        "results/summary.tsv",
        "results/verified.ok",
        "results/report/recordings.tsv",
        "results/report/recordings.html",
        "results/report/a.png",
        "results/report/b.png",
        "results/report/stats/b0000000001.json",
        "results/sources/b0000000001.tsv",
        *(f"results/{t}/{n}{e}" for t, e in (("nwb", ".nwb"), ("pickle", ".pkl")) for n in "ab"),
        "results/hdf5/ragged/a.h5",
        "results/hdf5/ragged/b.h5",
        "results/kilosort/a",
        "results/kilosort/b",
        *(f"results/verify/{t.name}/b0000000001.json" for t in TARGETS),
    }


def test_the_stale_line_names_the_first_entries_and_both_commands():
    entries = [StaleEntry(f"results/nwb/r{i}.nwb", "file") for i in range(7)]
    entries[0] = StaleEntry("results/nwb/r0.nwb", "file", failure_record=True)
    line = stale_line(entries)
    assert line.startswith(
        "7 outputs belong to no current recording or target in results/: "
        "results/nwb/r0.nwb (failure record), results/nwb/r1.nwb, results/nwb/r2.nwb, "
        "results/nwb/r3.nwb, results/nwb/r4.nwb and 2 more; list: "
    )
    assert "snakemake list_stale; remove: " in line and line.endswith("snakemake clean_stale")
    assert "\n" not in line

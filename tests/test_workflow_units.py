"""The export runner (logging, bad recordings), targets from config, summary and check."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spikelab.data_loaders import data_exporters
from spikelab.jobs import STUB_MARKER, read_failure_stub
from spikelab.workflow import WorkflowConfigError
from spikelab.workflow.export import (
    BatchExportError,
    ExportItem,
    export_batch,
    run_export_job,
)
from spikelab.workflow.summary import (
    COLUMNS,
    VerificationFailed,
    check_summary,
    read_summary,
    write_summary,
)
from spikelab.workflow.targets import Target, selected_targets, targets_from_config

DATA = Path(__file__).parent / "data"


def _items(tmp_path, target, names, bad=()):
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    items = []
    for name in names:
        path = src / f"{name}.pkl"
        if name in bad:
            path.write_bytes(b"\x80\x04garbage")
        else:
            path.write_bytes((DATA / f"{name}.pkl").read_bytes())
        items.append(ExportItem(name, str(path), str(tmp_path / target.output(name))))
    return items


# ------------------------------------------------------------------------- runner
def test_each_file_written_gets_one_info_line_with_path_size_and_seconds(tmp_path):
    target = Target("hdf5/ragged", "hdf5", {"style": "ragged", "spike_times_unit": "s"})
    items = _items(tmp_path, target, ["small", "empty_units"])
    log_path = tmp_path / "logs" / "job.log"
    results = run_export_job(
        data_exporters.export_spikedata_to_hdf5,
        target=target.as_params(),
        sources=[i.source for i in items],
        outputs=[i.output for i in items],
        recordings=[{"recording": i.recording} for i in items],
        default_fs_Hz=None,
        on_bad_recording="continue",
        log_path=str(log_path),
    )
    logging.getLogger().handlers.clear()
    assert all(r.ok for r in results)
    lines = [line for line in log_path.read_text().splitlines() if " wrote " in line]
    assert len(lines) == 2
    for item, line, result in zip(items, lines, results, strict=True):
        m = re.search(r"INFO wrote (\S+) \((\d+) bytes, ([\d.]+) s\) from (\S+)", line)
        assert m and m.group(1) == item.output and m.group(4) == item.source
        assert int(m.group(2)) == Path(item.output).stat().st_size == result.bytes


def test_continue_converts_the_rest_and_stubs_the_bad_recording(tmp_path, caplog):
    target = Target("nwb", "nwb", {})
    items = _items(tmp_path, target, ["empty_units", "broken", "small"], bad={"broken"})
    with caplog.at_level(logging.INFO):
        results = export_batch(
            data_exporters.export_spikedata_to_nwb, target, items, default_fs_Hz=20000.0
        )
    assert [r.ok for r in results] == [True, False, True]
    assert Path(items[0].output).stat().st_size > 1000 and Path(items[2].output).is_file()
    stub = Path(items[1].output).read_text()
    assert stub.startswith(STUB_MARKER) and items[1].source in stub
    assert read_failure_stub(items[1].output) == results[1].error
    assert "broken.pkl" in results[1].error and "LoadError" in results[1].error
    assert "cannot convert broken" in caplog.text


def test_fail_converts_the_rest_then_raises_naming_every_bad_file(tmp_path):
    target = Target("pickle", "pickle", {})
    items = _items(tmp_path, target, ["bad1", "small", "bad2"], bad={"bad1", "bad2"})
    with pytest.raises(BatchExportError) as err:
        export_batch(
            data_exporters.export_to_pickle,
            target,
            items,
            default_fs_Hz=None,
            on_bad_recording="fail",
        )
    msg = str(err.value)
    assert "2 of 3 recordings could not be converted" in msg
    assert "bad1.pkl" in msg and "bad2.pkl" in msg
    assert Path(items[1].output).is_file()
    assert not Path(items[0].output).exists()


def test_kilosort_without_any_sampling_rate_is_a_clear_per_recording_error(tmp_path):
    target = Target("kilosort", "kilosort", {"time_unit": "samples"})
    items = _items(tmp_path, target, ["neg_start", "small"])  # small has metadata fs_Hz
    results = export_batch(
        data_exporters.export_spikedata_to_kilosort, target, items, default_fs_Hz=None
    )
    assert [r.ok for r in results] == [False, True]
    assert "'neg_start': the kilosort export needs a sampling rate" in results[0].error
    assert "Set fs_Hz in config.yaml" in results[0].error
    assert read_failure_stub(items[0].output) == results[0].error  # a folder with the text


def test_a_bug_is_not_swallowed_and_names_the_recording(tmp_path):
    def broken_exporter(sd, path, **kwargs):
        raise TypeError("boom")

    target = Target("pickle", "pickle", {})
    items = _items(tmp_path, target, ["small"])
    with pytest.raises(TypeError, match="boom") as err:
        export_batch(broken_exporter, target, items, default_fs_Hz=None)
    assert any("while converting recording 'small'" in n for n in err.value.__notes__)


@pytest.mark.parametrize("fmt", ["hdf5", "kilosort", "pickle"])
def test_export_jobs_import_no_heavy_library_they_do_not_need(tmp_path, fmt):
    opts = {"hdf5": {"style": "ragged"}, "kilosort": {}, "pickle": {}}[fmt]
    out = tmp_path / "out"
    code = f"""
import sys
import json
from spikelab.workflow.export import run_export_job
t = {{"name": "{fmt}", "format": "{fmt}", "options": {opts!r}}}
run_export_job(target=t, sources=[{str(DATA / "small.pkl")!r}], outputs=[{str(out)!r}],
               recordings=[{{"recording": "small"}}], default_fs_Hz=20000.0,
               on_bad_recording="continue", log_path=None, batch="b",
               verify_json={str(tmp_path / "v.json")!r})
doc = json.loads(open({str(tmp_path / "v.json")!r}).read())
assert doc["ok"], doc
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               ("pynwb", "hdmf", "boto3", "botocore", "scipy", "matplotlib", "pandas"))
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def _export_and_verify(tmp_path, target, items, **kwargs):
    out_json = tmp_path / "verify.json"
    run_export_job(
        target=target.as_params(),
        sources=[i.source for i in items],
        outputs=[i.output for i in items],
        recordings=[{"recording": i.recording} for i in items],
        default_fs_Hz=20000.0,
        on_bad_recording="continue",
        log_path=None,
        verify_json=str(out_json),
        batch="b0123456789",
        **kwargs,
    )
    return json.loads(out_json.read_text())


@pytest.mark.parametrize("isolation", [{"enabled": True}, {"enabled": False}])
def test_the_export_job_verifies_each_output_and_records_failures_in_its_json(tmp_path, isolation):
    target = Target("kilosort", "kilosort", {})
    items = _items(tmp_path, target, ["small", "empty_units", "neg_start"], bad=("empty_units",))
    doc = _export_and_verify(tmp_path, target, items, isolation=isolation, mem_mb=2000)
    assert (doc["target"], doc["batch"], doc["ok"]) == ("kilosort", "b0123456789", False)
    by_name = {r["recording"]: r for r in doc["results"]}
    assert [r["recording"] for r in doc["results"]] == ["small", "empty_units", "neg_start"]
    assert by_name["small"]["status"] == by_name["neg_start"]["status"] == "ok"
    assert by_name["small"]["n_spikes"] == 1396
    assert by_name["small"]["tolerance_ms"] > 0  # half a sample at 20 kHz
    assert by_name["empty_units"]["status"] == "export_failed"
    assert "not a readable pickle" in by_name["empty_units"]["message"]


def test_a_crash_while_verifying_keeps_the_output_and_reports_it_unreadable(tmp_path, monkeypatch):
    import os
    import signal

    from spikelab.formats import pickle_io

    target = Target("pickle", "pickle", {})
    items = _items(tmp_path, target, ["small"])

    read = pickle_io.load_spikedata_from_pickle

    def crash(path, **kwargs):
        if str(path) == items[0].output:  # not the job's warm-up file
            os.kill(os.getpid(), signal.SIGSEGV)
        return read(path, **kwargs)

    monkeypatch.setattr(pickle_io.PickleFormat, "reader", lambda self: crash)
    doc = _export_and_verify(tmp_path, target, items, isolation={"enabled": True}, mem_mb=2000)
    (row,) = doc["results"]
    assert row["status"] == "unreadable"
    assert row["message"] == "crashed with SIGSEGV while reading the output"
    assert read_failure_stub(items[0].output) is None  # the output stays: it was written
    assert Path(items[0].output).stat().st_size == row["output_bytes"] > 0


# ------------------------------------------------------------------------ targets
def test_targets_keep_only_the_options_their_style_uses():
    config = {
        "hdf5": {
            "ragged": {"style": "ragged", "spike_times_unit": "ms", "raster_bin_size_ms": 5.0},
            "raster": {"style": "raster", "raster_bin_size_ms": 1.0, "times_unit": "s"},
        },
        "nwb": {"session_description": "rec {recording}", "lab": None},
        "kilosort": {"time_unit": "samples"},
        "pickle": {"protocol": 4},
        "formats": ["hdf5", "pickle"],
    }
    targets = {t.name: t for t in targets_from_config(config)}
    assert targets["hdf5/ragged"].options == {"style": "ragged", "spike_times_unit": "ms"}
    assert targets["hdf5/raster"].options == {"style": "raster", "raster_bin_size_ms": 1.0}
    assert targets["pickle"].options == {"protocol": 4}
    assert targets["nwb"].exporter_kwargs("small", 30000.0) == {
        "session_description": "rec small",
        "lab": None,
        "fs_Hz": 30000.0,
    }
    assert targets["hdf5/ragged"].exporter_kwargs("x", 30000.0) == {
        "style": "ragged",
        "spike_times_unit": "ms",
    }
    assert [t.name for t in selected_targets(config, list(targets.values()))] == [
        "hdf5/ragged",
        "hdf5/raster",
        "pickle",
    ]
    assert targets["hdf5/raster"].output("a") == "results/hdf5/raster/a.h5"
    assert targets["kilosort"].output("a") == "results/kilosort/a"
    assert targets["hdf5/raster"].rule_name == "hdf5_raster"


def test_fs_reaches_only_the_targets_that_use_it():
    def t(fmt, **o):
        return Target(fmt, fmt, o)

    assert t("kilosort").uses_fs and t("kilosort").needs_fs
    assert t("nwb").uses_fs and not t("nwb").needs_fs
    assert not t("pickle").uses_fs
    assert not t("hdf5", style="ragged", spike_times_unit="s").uses_fs
    assert t("hdf5", style="paired", times_unit="samples").needs_fs
    assert t("hdf5", style="raster", raster_bin_size_ms=1.0).uses_fs


@pytest.mark.parametrize(
    "config, match",
    [
        ({"hdf5": {"r": {"style": "raster"}}}, "hdf5.r.raster_bin_size_ms"),
        ({"hdf5": {"r": {"style": "ragged", "raw_time_dataset": "t"}}}, "hdf5.r.raw_dataset"),
        (
            {"kilosort": {"spike_times_file": "a.npy", "spike_clusters_file": "a.npy"}},
            "must differ",
        ),
    ],
)
def test_inconsistent_target_options_stop_at_start_naming_the_key(config, match):
    with pytest.raises(WorkflowConfigError, match=match):
        targets_from_config(config)


def test_selecting_hdf5_without_entries_is_an_error():
    with pytest.raises(WorkflowConfigError, match="hdf5 block defines no entry"):
        selected_targets({"formats": ["hdf5"]}, targets_from_config({"hdf5": {}}))


# ------------------------------------------------------------------------ summary
def _verify_json(path, rows, batch=None):
    path.write_text(json.dumps({"target": "t", "batch": batch, "results": rows}))
    return path


def _row(rec, target, status="ok", message="", **fields):
    return {
        "recording": rec,
        "target": target,
        "status": status,
        "ok": status == "ok",
        "n_units": 2,
        "n_spikes": 5,
        "max_abs_error_ms": 0.0,
        "message": message,
        **fields,
    }


def test_summary_has_a_row_per_recording_and_target_sorted(tmp_path):
    a = _verify_json(tmp_path / "a.json", [_row("b", "nwb"), _row("a", "nwb")])
    b = _verify_json(tmp_path / "b.json", [_row("a", "hdf5/ragged", message="x\ty\nz")])
    out = tmp_path / "summary.tsv"
    assert write_summary([a, b], out) == 3
    rows = read_summary(out)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["recording"], r["target"]) for r in rows] == [
        ("a", "hdf5/ragged"),
        ("a", "nwb"),
        ("b", "nwb"),
    ]
    assert rows[0]["message"] == "x y z" and rows[0]["fs_Hz"] == ""
    assert check_summary(out, tmp_path / "ok") == 3 and (tmp_path / "ok").is_file()


def test_summary_gives_every_row_of_a_recording_its_resolved_sampling_rate(tmp_path):
    """Verify jobs of targets that use no rate know only the metadata's; the summary completes
    every row: the sheet's rate, else the metadata's, else the config's, whatever the target."""
    meta = {"fs_Hz": 30000.0, "fs_Hz_from": "metadata"}
    none = {"fs_Hz": None, "fs_Hz_from": "none"}
    rows = [
        _row("meta", "pickle", **meta),
        _row("meta", "nwb", **meta),
        _row("meta", "hdf5/ragged", "export_failed", "x"),  # nothing loaded
        _row("sheet", "pickle", **meta),  # the sheet wins over the metadata
        _row("sheet", "kilosort", fs_Hz=10000.0, fs_Hz_from="sample sheet"),
        _row("config", "pickle", **none),
        _row("config", "kilosort", fs_Hz=20000.0, fs_Hz_from="config fs_Hz"),
    ]
    out = tmp_path / "summary.tsv"
    write_summary(
        [_verify_json(tmp_path / "a.json", rows)],
        out,
        default_fs_Hz=20000.0,
        sheet_fs_Hz={"sheet": 10000.0},
    )
    fs = {(r["recording"], r["target"]): r["fs_Hz"] for r in read_summary(out)}
    assert {k: v for k, v in fs.items() if k[0] == "meta"} == {
        ("meta", t): "30000.0" for t in ("pickle", "nwb", "hdf5/ragged")
    }
    assert fs["sheet", "pickle"] == fs["sheet", "kilosort"] == "10000.0"
    assert fs["config", "pickle"] == fs["config", "kilosort"] == "20000.0"
    write_summary([_verify_json(tmp_path / "a.json", rows)], out)  # no sheet, no default
    fs = {(r["recording"], r["target"]): r["fs_Hz"] for r in read_summary(out)}
    assert fs["config", "pickle"] == fs["config", "kilosort"] == ""
    assert fs["sheet", "kilosort"] == "30000.0"  # its metadata's


def test_summary_names_the_log_holding_each_rows_details(tmp_path):
    rows = [_row("a", "nwb"), _row("b", "nwb", "export_failed", "x"), _row("c", "nwb", "mismatch")]
    out = tmp_path / "summary.tsv"
    write_summary([_verify_json(tmp_path / "a.json", rows, batch="b0123456789")], out)
    logs = {r["recording"]: r["log"] for r in read_summary(out)}
    assert logs == {
        "a": "logs/export/nwb/b0123456789.log",
        "b": "logs/export/nwb/b0123456789.log",
        "c": "logs/export/nwb/b0123456789.log",
    }


def test_check_fails_with_one_line_per_bad_recording_and_fault(tmp_path):
    load = "LoadError: in/bad.pkl: not a readable pickle (truncated)"
    targets = ("hdf5/ragged", "kilosort", "nwb", "pickle")
    rows = [_row("good", t, source="in/good.pkl") for t in targets]
    rows += [_row("bad", t, "export_failed", load, source="in/bad.pkl") for t in targets]
    rows += [_row("nofs", t, source="in/nofs.pkl") for t in targets if t != "kilosort"]
    rows.append(
        _row(
            "nofs",
            "kilosort",
            "export_failed",
            "MissingSamplingRateError: recording 'nofs': the kilosort export needs a rate "
            + "x" * 300,
            source="in/nofs.pkl",
        )
    )
    rows.append(_row("odd", "nwb", "mismatch", "unit 2: 1 spike times off", source="in/odd.pkl"))
    rows.append(_row("odd", "pickle", "unreadable", "source: in/odd.pkl: crashed", source="x"))
    out = tmp_path / "summary.tsv"
    write_summary([_verify_json(tmp_path / "a.json", rows, batch="b0123456789")], out)
    with pytest.raises(VerificationFailed) as err:
        check_summary(out, tmp_path / "ok")
    lines = str(err.value).splitlines()
    assert lines[0] == (f"7 of 14 outputs failed, from 3 of 4 recordings (every row: {out}):")
    assert lines[1] == (
        "  in/bad.pkl (bad): export_failed in all 4 targets: LoadError: not a readable pickle "
        "(truncated); log: logs/export/hdf5/ragged/b0123456789.log"
    )
    assert lines[2].startswith(
        "  in/nofs.pkl (nofs): export_failed in kilosort: MissingSamplingRateError: recording"
    )
    assert lines[2].endswith("xxx...; log: logs/export/kilosort/b0123456789.log")
    assert lines[3] == (
        "  in/odd.pkl (odd): mismatch in nwb: unit 2: 1 spike times off; "
        "log: logs/export/nwb/b0123456789.log"
    )
    assert lines[4] == "  x (odd): unreadable in pickle: in/odd.pkl: crashed; " + (
        "log: logs/export/pickle/b0123456789.log"
    )
    assert len(lines) == 5
    assert not (tmp_path / "ok").exists()

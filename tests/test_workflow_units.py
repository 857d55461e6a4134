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
from spikelab.workflow.export import run_export_job
from spikelab.workflow.verify import run_verify_job
t = {{"name": "{fmt}", "format": "{fmt}", "options": {opts!r}}}
run_export_job(target=t, sources=[{str(DATA / "small.pkl")!r}], outputs=[{str(out)!r}],
               recordings=[{{"recording": "small"}}], default_fs_Hz=20000.0,
               on_bad_recording="continue", log_path=None)
doc = run_verify_job(target=t, sources=[{str(DATA / "small.pkl")!r}], outputs=[{str(out)!r}],
                     recordings=[{{"recording": "small"}}], default_fs_Hz=20000.0, batch="b",
                     out_json={str(tmp_path / "v.json")!r}, log_path=None)
assert doc["ok"], doc
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               ("pynwb", "hdmf", "boto3", "botocore", "scipy", "matplotlib", "pandas"))
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


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
def _verify_json(path, rows):
    path.write_text(json.dumps({"target": "t", "results": rows}))
    return path


def _row(rec, target, status="ok", message=""):
    return {
        "recording": rec,
        "target": target,
        "status": status,
        "ok": status == "ok",
        "n_units": 2,
        "n_spikes": 5,
        "max_abs_error_ms": 0.0,
        "message": message,
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


def test_check_fails_listing_every_bad_output(tmp_path):
    a = _verify_json(
        tmp_path / "a.json",
        [_row("good", "nwb"), _row("bad", "nwb", "export_failed", "bad.pkl: truncated")],
    )
    out = tmp_path / "summary.tsv"
    write_summary([a], out)
    with pytest.raises(VerificationFailed) as err:
        check_summary(out, tmp_path / "ok")
    assert "1 of 2 outputs failed" in str(err.value)
    assert "nwb  bad: export_failed: bad.pkl: truncated" in str(err.value)
    assert not (tmp_path / "ok").exists()

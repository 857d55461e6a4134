"""Config errors at start: one line per problem (key, value, what is allowed, the nearest known
key), ``null`` from ``--config``, warnings about HDF5 keys a style ignores, and messages that
fit where the inputs come from (a missing sampling rate, the fix a failure record names)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, run_snakemake

from spikelab.data_loaders import data_exporters
from spikelab.formats.errors import MissingSamplingRateError
from spikelab.formats.registry import all_formats, get_format
from spikelab.jobs import SOURCE_FIX, RecordingLimits
from spikelab.workflow import WorkflowConfigError
from spikelab.workflow.config_check import check_config
from spikelab.workflow.export import ExportItem, export_batch
from spikelab.workflow.inputs import InputError, discover_recordings
from spikelab.workflow.targets import Target

SCHEMA = REPO / "schemas" / "config.schema.yaml"
SHIPPED = yaml.safe_load((REPO / "config.yaml").read_text())
DATA = Path(__file__).parent / "data"
HEADER = "in the config (config.yaml lists every option with its default):"


def config_with(**changes) -> dict:
    """The shipped config with top-level ``changes``."""
    return {**copy.deepcopy(SHIPPED), **changes}


def problems(config: dict) -> list[str]:
    """The lines of the error the check raises on ``config`` (header first)."""
    with pytest.raises(WorkflowConfigError) as err:
        check_config(config, SCHEMA)
    return str(err.value).splitlines()


# ======================================================================= config_check
def test_the_shipped_config_passes_without_warnings():
    config = copy.deepcopy(SHIPPED)
    assert check_config(config, SCHEMA) == []


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"inputs": {"glob": "x/*.pkl"}, "nwb": {"lab": "L"}},
        {"hdf5": {"r": {"style": "raster", "raster_bin_size_ms": 2.0}}, "isolation": {}},
        SHIPPED,
    ],
    ids=["empty", "partial blocks", "one hdf5 entry", "shipped"],
)
def test_defaults_are_filled_as_snakemake_validate_fills_them(config):
    from snakemake.utils import validate

    ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
    check_config(ours, SCHEMA)
    validate(theirs, str(SCHEMA))
    assert ours == theirs


def test_defaults_fill_nested_blocks_and_every_hdf5_entry():
    config = {"hdf5": {"p": {"style": "paired"}}}
    check_config(config, SCHEMA)
    assert config["inputs"] == {
        "directory": None,
        "glob": None,
        "sample_sheet": None,
        "read_options": {},
    }
    assert config["isolation"] == {"enabled": True, "memory_mb": None, "seconds": None}
    assert config["hdf5"]["p"]["times_unit"] == "ms"
    assert config["hdf5"]["p"]["raster_max_cells"] == 2**36
    default = {}
    check_config(default, SCHEMA)
    assert set(default["hdf5"]) == {"ragged", "raster"}
    assert default["hdf5"]["raster"]["raster_bin_size_ms"] == 1.0
    assert default["hdf5"]["ragged"]["spike_times_unit"] == "s"


def test_a_filled_default_is_a_copy_not_the_schema_object():
    first, second = {}, {}
    schema = yaml.safe_load(SCHEMA.read_text())
    check_config(first, schema)
    first["hdf5"]["ragged"]["style"] = "group"
    first["formats"].append("x")
    check_config(second, schema)
    assert second["hdf5"]["ragged"]["style"] == "ragged"
    assert "x" not in second["formats"]


def test_every_problem_is_reported_at_once_one_line_each():
    config = config_with(
        batchsize=100,
        fs_Hz=-1,
        on_bad_recording="skip",
        trusted_pickles="yes",
        nwb={**SHIPPED["nwb"], "sesion_description": "x", "sex": "male"},
        hdf5={"ragged": {"style": "ragged", "spike_times_unit": "sec"}},
    )
    lines = problems(config)
    assert lines[0] == f"7 problems {HEADER}"
    assert sorted(line.strip() for line in lines[1:]) == sorted(
        [
            "batchsize: unknown key (set to 100); did you mean 'batch_size'?",
            "fs_Hz: -1 is not a number > 0 or null",
            "on_bad_recording: 'skip' is not one of 'continue', 'fail'",
            "trusted_pickles: 'yes' is not true or false",
            "nwb.sesion_description: unknown key (set to 'x'); did you mean 'session_description'?",
            "nwb.sex: 'male' is not one of 'M', 'F', 'U', 'O', null",
            "hdf5.ragged.spike_times_unit: 'sec' is not one of 'ms', 's', 'samples'",
        ]
    )


def test_an_unknown_key_of_an_hdf5_entry_gets_the_nearest_known_key():
    lines = problems(config_with(hdf5={"r": {"style": "ragged", "spike_time_unit": "ms"}}))
    assert lines[1:] == [
        "  hdf5.r.spike_time_unit: unknown key (set to 'ms'); did you mean 'spike_times_unit'?"
    ]


def test_an_unknown_key_far_from_all_lists_the_known_keys_of_its_level():
    (line,) = problems(config_with(pickle={"compress": True}))[1:]
    assert line == "  pickle.compress: unknown key (set to true); known keys here: protocol"


@pytest.mark.parametrize(
    "change, line",
    [
        ({"batch_size": "many"}, "batch_size: 'many' is not an integer >= 1"),
        ({"batch_size": 0}, "batch_size: 0 is not an integer >= 1"),
        ({"pickle": 5}, "pickle: 5 is not a mapping (key: value)"),
        (
            {"pickle": {"protocol": 7}},
            "pickle.protocol: 7 is not an integer from 0 to 5 or null",
        ),
        (
            {"formats": ["nwb", "csv"]},
            "formats[1]: 'csv' is not one of 'hdf5', 'nwb', 'kilosort', 'pickle'",
        ),
        ({"formats": ["nwb", "nwb"]}, "formats: ['nwb', 'nwb'] lists an item twice"),
        (
            {"allow_globals": ["os system"]},
            "allow_globals[0]: 'os system' is not a global as module.name, e.g. mypkg.MyClass",
        ),
        (
            {"hdf5": {"raw-1": {"style": "ragged"}}},
            "hdf5.raw-1: the name 'raw-1' is not letters and digits, starting with a letter, "
            "in words joined by single '_' (e.g. raster_1ms)",
        ),
        (
            {"nwb": {"age": "90 days"}},
            "nwb.age: '90 days' is not an ISO 8601 duration, e.g. P90D, or a range P90D/P120D "
            "(or null)",
        ),
        (
            {"nwb": {"experimenter": ""}},
            "nwb.experimenter: '' is not null, a non-empty text or a non-empty list whose "
            "items are each a non-empty text",
        ),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(change, line):
    assert problems(config_with(**change)) == [f"1 problem {HEADER}", f"  {line}"]


def test_a_long_value_is_shortened():
    (line,) = problems(config_with(batch_size="x" * 500))[1:]
    assert len(line) < 120 and "xxx..." in line


@pytest.mark.parametrize("word", ["null", "Null", "NULL", "~", "None"])
def test_null_given_as_text_is_null_where_null_is_allowed(word):
    config = config_with(
        inputs={"directory": "in", "glob": word, "sample_sheet": word},
        fs_Hz=word,
        nwb={"experimenter": word, "sex": word},
        hdf5={"r": {"style": "raster", "raster_bin_size_ms": "1", "raster_dtype": word}},
    )
    check_config(config, SCHEMA)
    assert config["inputs"] == {
        "directory": "in",
        "glob": None,
        "sample_sheet": None,
        "read_options": {},
    }
    assert config["fs_Hz"] is None
    assert config["nwb"]["experimenter"] is None and config["nwb"]["sex"] is None
    assert config["hdf5"]["r"]["raster_dtype"] is None


def test_numbers_and_booleans_given_as_text_are_read_where_no_text_is_allowed():
    config = config_with(
        batch_size="250",
        fs_Hz="2e4",
        isolation={"enabled": "false", "memory_mb": "500", "seconds": "12.5"},
        trusted_pickles="False",
        hdf5={"r": {"style": "raster", "raster_bin_size_ms": "1", "raster_compression_opts": "9"}},
        pickle={"protocol": "4"},
    )
    check_config(config, SCHEMA)
    assert config["batch_size"] == 250 and type(config["batch_size"]) is int
    assert config["fs_Hz"] == 20000.0
    assert config["isolation"] == {"enabled": False, "memory_mb": 500, "seconds": 12.5}
    assert config["trusted_pickles"] is False
    assert config["hdf5"]["r"]["raster_bin_size_ms"] == 1.0
    assert config["hdf5"]["r"]["raster_compression_opts"] == 9
    assert config["pickle"]["protocol"] == 4


def test_text_stays_text_where_text_is_allowed_and_non_numbers_are_reported():
    config = config_with(nwb={"subject_id": "007", "lab": "true"})
    check_config(config, SCHEMA)
    assert config["nwb"]["subject_id"] == "007" and config["nwb"]["lab"] == "true"
    seen = problems(config_with(batch_size="2.5", fs_Hz="nan", isolation={"enabled": "yes"}))
    assert sorted(seen[1:]) == [
        "  batch_size: '2.5' is not an integer >= 1",
        "  fs_Hz: 'nan' is not a number > 0 or null",
        "  isolation.enabled: 'yes' is not true or false",
    ]


def test_null_as_text_stays_text_where_null_is_not_allowed():
    config = config_with(nwb={"electrode_location": "null"})
    check_config(config, SCHEMA)
    assert config["nwb"]["electrode_location"] == "null"
    assert problems(config_with(batch_size="null"))[1:] == [
        "  batch_size: 'null' is not an integer >= 1"
    ]


def test_set_exactly_one_input_shows_the_values_seen():
    with pytest.raises(InputError) as err:
        discover_recordings({"directory": "in", "glob": "*.pkl", "sample_sheet": None})
    assert "got 2 set: {directory: 'in', glob: '*.pkl', sample_sheet: null}" in str(err.value)
    with pytest.raises(InputError) as err:
        discover_recordings({"directory": None, "glob": None, "sample_sheet": None})
    assert "got none set: {directory: null, glob: null, sample_sheet: null}" in str(err.value)


# ============================================================ keys a style ignores
def test_a_key_its_style_ignores_is_warned_naming_entry_and_key():
    config = config_with(
        hdf5={
            "ragged": {"style": "ragged", "group_time_unit": "ms", "raw_dataset": "raw"},
            "plain": {"times_unit": "s"},
            "raster": {"style": "raster", "raster_bin_size_ms": 1.0},
        }
    )
    assert check_config(config, SCHEMA) == [
        "config key hdf5.ragged.group_time_unit: ignored, it is a key of style 'group' and "
        "entry 'ragged' has style 'ragged'",
        "config key hdf5.plain.times_unit: ignored, it is a key of style 'paired' and entry "
        "'plain' has style 'ragged' (the default)",
    ]


def test_only_keys_written_by_the_user_are_warned_not_filled_defaults():
    config = config_with(hdf5={"g": {"style": "group"}})
    assert check_config(config, SCHEMA) == []
    assert "spike_times_unit" in config["hdf5"]["g"]  # filled, yet not warned


def test_formats_warn_about_nothing_by_default():
    assert [f.name for f in all_formats() if f.option_warnings({"x": {"times_unit": "s"}})] == [
        "hdf5"
    ]
    assert get_format("nwb").option_warnings(SHIPPED["nwb"]) == []


# ================================================ messages that fit the situation
def test_a_missing_rate_without_a_sample_sheet_does_not_mention_one():
    target = Target("kilosort", "kilosort", {"time_unit": "samples"})
    with pytest.raises(MissingSamplingRateError) as err:
        target.exporter_kwargs("rec", None, sample_sheet=False)
    assert str(err.value) == (
        "recording 'rec': the kilosort export needs a sampling rate, and none is known: its "
        "metadata has no usable 'fs_Hz' (a number > 0), and the config's fs_Hz is null. Set "
        "fs_Hz in config.yaml (for every recording without one in its metadata)."
    )


def test_a_missing_rate_with_a_sample_sheet_names_its_fs_column():
    target = Target("kilosort", "kilosort", {"time_unit": "samples"})
    with pytest.raises(MissingSamplingRateError) as err:
        target.exporter_kwargs("rec", None, sample_sheet=True)
    assert str(err.value) == (
        "recording 'rec': the kilosort export needs a sampling rate, and none is known: the "
        "sample sheet has no fs_Hz for it, its metadata has no usable 'fs_Hz' (a number > 0), "
        "and the config's fs_Hz is null. Set fs_Hz in config.yaml (for every recording without "
        "one), or the recording's fs_Hz in the sample sheet."
    )


def _stub_items(tmp_path: Path, target: Target, names: dict[str, bytes]) -> list[ExportItem]:
    (tmp_path / "in").mkdir(exist_ok=True)
    items = []
    for name, data in names.items():
        (tmp_path / "in" / f"{name}.pkl").write_bytes(data)
        out = tmp_path / target.output(name)
        items.append(ExportItem(name, str(tmp_path / "in" / f"{name}.pkl"), str(out)))
    return items


def _last_line(stub: Path) -> str:
    return (stub / "EXPORT_FAILED.txt" if stub.is_dir() else stub).read_text().splitlines()[-1]


@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "isolated"])
@pytest.mark.parametrize("sample_sheet", [False, True], ids=["directory", "sample sheet"])
def test_a_failure_record_names_the_fix_that_applies(tmp_path, isolated, sample_sheet):
    target = Target("kilosort", "kilosort", {"time_unit": "samples"})
    items = _stub_items(
        tmp_path,
        target,
        {"no_rate": (DATA / "neg_start.pkl").read_bytes(), "broken": b"\x80\x04garbage"},
    )
    results = export_batch(
        data_exporters.export_spikedata_to_kilosort,
        target,
        items,
        default_fs_Hz=None,
        limits=RecordingLimits() if isolated else None,
        sample_sheet=sample_sheet,
    )
    assert [r.ok for r in results] == [False, False]
    no_rate, broken = (Path(i.output) for i in items)
    fix = (
        "Set fs_Hz in config.yaml (for every recording without one), or the recording's fs_Hz "
        "in the sample sheet"
        if sample_sheet
        else "Set fs_Hz in config.yaml (for every recording without one in its metadata)"
    )
    assert f"No loader reads it. {fix} and run snakemake again (" in _last_line(no_rate)
    assert f"No loader reads it. {SOURCE_FIX} and run snakemake again (" in _last_line(broken)
    assert ("sample sheet" in results[0].error) is sample_sheet


# ================================================================ snakemake -n
@pytest.fixture(scope="module")
def wf_copy(tmp_path_factory) -> Path:
    """One copy of the workflow (the example data; the shipped sample sheet)."""
    return copy_workflow(tmp_path_factory.mktemp("configerr") / "wf")


def dry_run(wd: Path, *config: str) -> subprocess.CompletedProcess:
    return run_snakemake(wd, "-n", *(("--config", *config) if config else ()))


def output_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return (proc.stdout + proc.stderr).splitlines()


def assert_short_error(proc, *texts: str, max_lines: int = 7) -> list[str]:
    lines = output_lines(proc)
    out = "\n".join(lines)
    assert proc.returncode != 0
    assert len(lines) <= max_lines, out
    for text in texts:
        assert text in out, out
    assert "Job stats" not in out and "Failed validating" not in out and "$defs" not in out
    return lines


def test_a_top_level_typo_prints_a_handful_of_lines(wf_copy):
    lines = assert_short_error(
        dry_run(wf_copy, "batchsize=100"),
        f"1 problem {HEADER}",
        "  batchsize: unknown key (set to 100); did you mean 'batch_size'?",
    )
    assert len(lines) == 6  # profile, --config, WorkflowError, header, problem, File line


def test_a_nested_typo_prints_a_handful_of_lines(wf_copy):
    assert_short_error(
        dry_run(wf_copy, "nwb={sesion_description: x}"),
        "  nwb.sesion_description: unknown key (set to 'x'); did you mean 'session_description'?",
    )


def test_a_bad_choice_and_a_wrong_type_are_both_reported(wf_copy):
    assert_short_error(
        dry_run(wf_copy, "on_bad_recording=skip", "batch_size=many"),
        f"2 problems {HEADER}",
        "  on_bad_recording: 'skip' is not one of 'continue', 'fail'",
        "  batch_size: 'many' is not an integer >= 1",
        max_lines=8,
    )


def test_a_bad_value_in_the_config_file_is_reported_the_same_way(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((wd / "config.yaml").read_text())
    config["hdf5"]["ragged"]["spike_times_unit"] = "sec"
    (wd / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lines = assert_short_error(
        dry_run(wd), "  hdf5.ragged.spike_times_unit: 'sec' is not one of 'ms', 's', 'samples'"
    )
    assert len(lines) == 5  # no --config line


def test_null_from_the_command_line_means_null(wf_copy):
    proc = dry_run(
        wf_copy, "inputs={directory: example/recordings, sample_sheet: null}", "fs_Hz=null"
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Job stats" in out


def test_numbers_inside_a_command_line_mapping_are_numbers(wf_copy):
    proc = dry_run(
        wf_copy,
        "isolation={enabled: false, memory_mb: 500, seconds: 30}",
        "hdf5={raster: {style: raster, raster_bin_size_ms: 2.5}}",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Job stats" in out and "is not" not in out


def test_two_inputs_from_the_command_line_show_the_values_seen(wf_copy):
    assert_short_error(
        dry_run(wf_copy, "inputs={directory: example/recordings}"),
        "got 2 set: {directory: 'example/recordings', glob: null, "
        "sample_sheet: 'example/recordings.tsv'}",
    )


def test_a_key_its_style_ignores_is_warned_once_at_start(wf_copy):
    proc = dry_run(wf_copy, "hdf5={ragged: {group_time_unit: ms}}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    warning = (
        "config key hdf5.ragged.group_time_unit: ignored, it is a key of style 'group' and "
        "entry 'ragged' has style 'ragged'"
    )
    assert [line for line in output_lines(proc) if "ignored" in line] == [warning]
    assert "ignored" not in "".join(output_lines(dry_run(wf_copy)))


def _kilosort_without_rate(wd: Path, inputs: dict) -> str:
    """Run the KiloSort exports with no sampling rate anywhere; the neg_start stub's text."""
    config = yaml.safe_load((wd / "config.yaml").read_text())
    config.update(inputs=inputs, fs_Hz=None, formats=["kilosort"])
    (wd / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(wd, "--keep-going", "--cores", "1", "results/kilosort/neg_start")
    return (wd / "results" / "kilosort" / "neg_start" / "EXPORT_FAILED.txt").read_text()


@pytest.mark.slow
def test_the_workflow_tells_a_directory_input_to_set_fs_Hz_in_the_config(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    stub = _kilosort_without_rate(
        wd, {"directory": "example/recordings", "glob": None, "sample_sheet": None}
    )
    assert "sample sheet" not in stub
    assert (
        "No loader reads it. Set fs_Hz in config.yaml (for every recording without one in its "
        "metadata) and run snakemake again ("
    ) in stub.splitlines()[-1]


@pytest.mark.slow
def test_the_workflow_tells_a_sample_sheet_input_of_its_fs_column(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    (wd / "example" / "bare.tsv").write_text(
        "recording\tpath\nneg_start\trecordings/neg_start.pkl\n"
    )
    stub = _kilosort_without_rate(
        wd, {"directory": None, "glob": None, "sample_sheet": "example/bare.tsv"}
    )
    assert "the sample sheet has no fs_Hz for it" in stub
    assert (
        "or the recording's fs_Hz in the sample sheet and run snakemake again ("
        in stub.splitlines()[-1]
    )

"""The format registry: every format answers every question in one place, the config schema
agrees with it, no other module branches on a format name, and a new format needs only its
module and one registry line."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from spikelab.data_loaders import data_exporters, data_loaders
from spikelab.formats import all_formats, format_names, get_format, registry
from spikelab.jobs import read_failure_stub
from spikelab.workflow.export import ExportItem, export_batch
from spikelab.workflow.targets import Target, selected_targets, targets_from_config
from spikelab.workflow.verify import verify_recording

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())


def test_every_format_is_registered_under_its_own_name_with_the_public_writer_and_reader():
    public = {
        "hdf5": ("export_spikedata_to_hdf5", "load_spikedata_from_hdf5"),
        "nwb": ("export_spikedata_to_nwb", "load_spikedata_from_nwb"),
        "kilosort": ("export_spikedata_to_kilosort", "load_spikedata_from_kilosort"),
        "pickle": ("export_to_pickle", "load_spikedata_from_pickle"),
    }
    assert format_names() == tuple(public)
    for spec in all_formats():
        writer, reader = public[spec.name]
        # the facade's function, or (pickle: the facade adds SpikeLab's upload test hook)
        # the one it wraps
        assert spec.writer().__name__ == getattr(data_exporters, writer).__name__ == writer
        assert spec.writer().__module__.startswith("spikelab.formats.")
        assert spec.reader() is getattr(data_loaders, reader)
        assert spec.is_dir == (spec.extension == "")
        assert spec.resources.mem_mb([]) > 0


def test_an_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown format 'parquet'; known formats: hdf5, nwb"):
        get_format("parquet")


def test_the_config_schema_lists_exactly_the_registered_formats_and_their_keys():
    props = SCHEMA["properties"]
    assert props["formats"]["items"]["enum"] == list(format_names())
    for spec in all_formats():
        if spec.name == "hdf5":  # named entries, each an hdf5_entry
            keys = set(SCHEMA["$defs"]["hdf5_entry"]["properties"])
        else:
            keys = set(props[spec.name]["properties"])
        assert keys == set(spec.option_keys), spec.name
        assert set(spec.reader_keys) <= set(spec.option_keys), spec.name
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())  # every option, commented
    from spikelab.formats.hdf5 import COMMON_KEYS, STYLE_KEYS

    for spec in all_formats():
        if spec.name == "hdf5":
            for entry in shipped["hdf5"].values():
                assert set(entry) == {*COMMON_KEYS, *STYLE_KEYS[entry["style"]]}, entry
        else:
            assert set(shipped[spec.name]) == set(spec.option_keys), spec.name
    sheet = props["inputs"]["properties"]["sample_sheet"]["description"]
    for column in (c for spec in all_formats() for c in spec.sheet_columns):
        assert column in sheet


def test_each_hdf5_style_keeps_the_keys_it_uses_and_the_registry_says_its_unit():
    hdf5 = get_format("hdf5")
    block = {
        "a": {"style": "paired", "times_unit": "samples", "spike_times_unit": "ms"},
        "b": {"style": "raster", "raster_bin_size_ms": 2.0, "times_unit": "s"},
    }
    (a_name, a), (b_name, b) = hdf5.outputs_from_config(block)
    assert (a_name, a) == ("hdf5/a", {"style": "paired", "times_unit": "samples"})
    assert (b_name, b) == ("hdf5/b", {"style": "raster", "raster_bin_size_ms": 2.0})
    assert hdf5.time_unit(a) == "samples" and hdf5.needs_fs(a)
    assert hdf5.time_unit(b) == "bins" and hdf5.uses_fs(b) and not hdf5.needs_fs(b)
    assert hdf5.time_tolerance(b, None) == (2.0, 4)
    assert hdf5.time_tolerance(a, 20000.0) == (500.0 / 20000.0, 4)
    assert hdf5.reader_kwargs(a, 30000.0) == {"times_unit": "samples", "fs_Hz": 30000.0}


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module's code, docstrings left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_outside_the_formats_names_a_format_in_its_code():
    names = set(format_names())
    outside = [
        *sorted((REPO / "spikelab" / "workflow").glob("*.py")),
        *sorted((REPO / "spikelab" / "report").glob("*.py")),
        REPO / "spikelab" / "jobs.py",
        *sorted((REPO / "scripts").glob("*.py")),
    ]
    found = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for path in outside
        for line, value in _string_constants(path)
        if value in names
    ]
    assert found == []
    rules = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    for name in names:
        assert f'"{name}"' not in rules and f"'{name}'" not in rules


TOY_FORMAT = '''
"""A toy format for the registry test: spike trains as JSON (ms)."""
import json
from pathlib import Path

from spikelab.formats.atomic import atomic_file
from spikelab.formats.errors import ExportError, LoadError, OptionError
from spikelab.formats.registry import Format, ResourceModel
from spikelab.spikedata import SpikeData


def export_to_toy(sd, path, *, indent=None):
    if indent is not None and not isinstance(indent, int):
        raise ExportError(f"indent must be an integer, got {indent!r}")
    doc = {"train": [t.tolist() for t in sd.train], "length": sd.length,
           "start_time": sd.start_time}
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=indent))


def load_from_toy(path):
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise LoadError(f"{path}: not toy JSON ({exc})") from None
    return SpikeData(doc["train"], length=doc["length"], start_time=doc["start_time"])


class ToyFormat(Format):
    name = "toy"
    extension = ".toy.json"
    option_keys = ("indent",)
    resources = ResourceModel(base_mem_mb=123)

    def writer(self):
        return export_to_toy

    def reader(self):
        return load_from_toy

    def check_options(self, options):
        if options.get("indent", 0) < 0:
            raise OptionError("config key toy.indent: must be >= 0")


FORMAT = ToyFormat()
'''


@pytest.fixture
def toy_format(tmp_path, monkeypatch):
    """A sixth format, added the documented way: its module plus one registry line."""
    (tmp_path / "toy_format_module.py").write_text(textwrap.dedent(TOY_FORMAT))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.MODULES, "toy", "toy_format_module")
    yield get_format("toy")
    sys.modules.pop("toy_format_module", None)


def test_a_new_format_needs_only_its_module_and_one_registry_line(tmp_path, toy_format):
    config = {"toy": {"indent": 2, "unknown_key": 1}, "formats": ["toy"]}
    (target,) = selected_targets(config, targets_from_config(config))
    assert target.options == {"indent": 2} and target.output("r1") == "results/toy/r1.toy.json"
    assert target.spec.resources.mem_mb([10.0]) == 123 + 60
    with pytest.raises(ValueError, match="config key toy.indent: must be >= 0"):
        targets_from_config({"toy": {"indent": -1}})

    src = tmp_path / "in"
    src.mkdir()
    (src / "small.pkl").write_bytes((DATA / "small.pkl").read_bytes())
    (src / "bad.pkl").write_bytes(b"\x80\x04 not a pickle")
    items = [
        ExportItem(n, str(src / f"{n}.pkl"), str(tmp_path / target.output(n)))
        for n in ("bad", "small")
    ]
    results = export_batch(target.spec.writer(), target, items, default_fs_Hz=None)
    assert [r.ok for r in results] == [False, True]
    assert read_failure_stub(items[0].output).startswith(f"LoadError: {items[0].source}: not a")
    doc = json.loads(Path(items[1].output).read_text())
    assert len(doc["train"]) == 8
    result = verify_recording(target, "small", items[1].source, items[1].output)
    assert result["status"] == "ok" and result["n_units"] == 8, result
    assert result["time_unit"] == "ms" and result["max_abs_error_ms"] == 0.0


def test_targets_come_in_registry_order_with_each_format_s_options():
    config = {
        "pickle": {"protocol": 4},
        "kilosort": {"time_unit": "ms"},
        "nwb": {"lab": "L"},
        "hdf5": {"r": {"style": "ragged"}},
    }
    targets = targets_from_config(config)
    assert [t.name for t in targets] == ["hdf5/r", "nwb", "kilosort", "pickle"]
    assert [t.time_unit for t in targets] == ["s", "s", "ms", "ms"]
    assert [t.is_dir for t in targets] == [False, False, True, False]
    pickle_target = targets[-1]
    loading = {"trusted": False, "allow_globals": ["a.B"], "other": 1}
    assert pickle_target.loader_kwargs(None, pickle_loading=loading) == {
        "trusted": False,
        "allow_globals": ["a.B"],
    }
    assert Target("nwb", "nwb", {}).loader_kwargs(None) == {"prefer_pynwb": False}


def test_tolerances_follow_the_unit_in_the_file():
    fs = 30000.0
    assert registry.tolerance_for_unit("ms", fs) == (0.0, 0)
    assert registry.tolerance_for_unit("s", fs) == (0.0, 2)
    assert registry.tolerance_for_unit("samples", fs) == (500.0 / fs, 4)
    assert registry.tolerance_for_unit("samples", None)[0] == np.inf
    with pytest.raises(ValueError, match="furlongs"):
        registry.tolerance_for_unit("furlongs", fs)


def test_sheet_options_reach_only_the_formats_that_take_them():
    from spikelab.workflow.export import RecordingParams
    from spikelab.workflow.inputs import Recording

    rec = Recording("r", "r.pkl", 20000.0, (("subject_id", "m1"), ("age", "P9D")))
    nwb, pickle_target = Target("nwb", "nwb", {}), Target("pickle", "pickle", {})
    assert RecordingParams.for_target(nwb, rec).as_params() == {
        "recording": "r",
        "sheet_fs_Hz": 20000.0,
        "sheet_options": {"age": "P9D", "subject_id": "m1"},
    }
    assert RecordingParams.for_target(pickle_target, rec).as_params() == "r"  # nothing else
    assert RecordingParams.from_mapping("r") == RecordingParams("r")
    with pytest.raises(ValueError, match="per-recording params need 'recording'"):
        RecordingParams.from_mapping({"name": "r"})

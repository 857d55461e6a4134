"""Input discovery, recording names, sample sheets, sampling-rate precedence, batching."""

from __future__ import annotations

import random
import re
import string

import pytest

from spikelab.formats import get_format
from spikelab.workflow.batches import batch_key, plan_batches
from spikelab.workflow.inputs import (
    NAME_PATTERN,
    InputError,
    Recording,
    discover_recordings,
    name_problem,
    recordings_from_sample_sheet,
    resolve_fs_Hz,
)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# ------------------------------------------------------------------------ discovery
def test_directory_takes_every_pkl_named_by_stem_and_skips_hidden_and_others(tmp_path):
    for name in ("b.pkl", "a.v2.pkl", ".hidden.pkl", "notes.txt", "sub/c.pkl"):
        _touch(tmp_path / name)
    recs = discover_recordings({"directory": str(tmp_path)})
    assert [r.name for r in recs] == ["a.v2", "b"]
    assert recs[0].path == str(tmp_path / "a.v2.pkl")
    assert all(r.fs_Hz is None for r in recs)


def test_glob_is_recursive_and_names_by_stem(tmp_path):
    _touch(tmp_path / "x" / "one.pkl")
    _touch(tmp_path / "x" / "y" / "two.pkl")
    recs = discover_recordings({"glob": str(tmp_path / "**" / "*.pkl")})
    assert [r.name for r in recs] == ["one", "two"]


def test_exactly_one_input_kind_must_be_set(tmp_path):
    with pytest.raises(InputError, match="exactly one of"):
        discover_recordings({"directory": str(tmp_path), "glob": "*.pkl"})
    with pytest.raises(InputError, match="got none"):
        discover_recordings({"directory": None, "glob": None, "sample_sheet": None})


def test_missing_directory_and_empty_inputs_are_errors(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        discover_recordings({"directory": str(tmp_path / "nope")})
    with pytest.raises(InputError, match=r"no input in the folder \(\*\.pkl, \*\.nwb"):
        discover_recordings({"directory": str(tmp_path)})
    with pytest.raises(InputError, match="matches no file"):
        discover_recordings({"glob": str(tmp_path / "*.pkl")})


# -------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name, why",
    [
        ("../x", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "starts with '.'"),
        (".x", "starts with '.'"),
        ("my rec", "whitespace"),
        ("tab\there", "whitespace"),
        ("", "is empty"),
        ("x" * 201, "longer than 200"),
        ("caf\u00e9", "contains 'é'"),
        ("a;b", "contains ';'"),
        ("-x", "must start with a letter or a digit"),
    ],
)
def test_bad_recording_names_are_rejected_with_the_reason(name, why):
    assert why in name_problem(name)
    assert not re.fullmatch(NAME_PATTERN, name)


@pytest.mark.parametrize("name", ["small", "rec-01", "a.b_c+d", "2024_05_01", "X" * 200])
def test_good_names_pass_and_match_the_wildcard_constraint(name):
    assert name_problem(name) is None
    assert re.fullmatch(NAME_PATTERN, name)


def test_a_bad_name_in_a_directory_stops_discovery_naming_file_and_reason(tmp_path):
    _touch(tmp_path / "ok.pkl")
    _touch(tmp_path / "my rec.pkl")
    with pytest.raises(InputError) as err:
        discover_recordings({"directory": str(tmp_path)})
    msg = str(err.value)
    assert "'my rec'" in msg and "my rec.pkl" in msg and "whitespace" in msg


def test_duplicate_and_case_colliding_names_are_rejected(tmp_path):
    _touch(tmp_path / "a" / "rec.pkl")
    _touch(tmp_path / "b" / "rec.pkl")
    _touch(tmp_path / "b" / "Rec2.pkl")
    _touch(tmp_path / "c" / "rec2.pkl")
    with pytest.raises(InputError) as err:
        discover_recordings({"glob": str(tmp_path / "*" / "*.pkl")})
    msg = str(err.value)
    assert "'rec' is used by 2 files" in msg
    assert "'Rec2', 'rec2' differ only in case" in msg


# ----------------------------------------------------------------------- sample sheet
def test_sample_sheet_paths_are_relative_to_the_sheet_and_fs_is_optional(tmp_path):
    _touch(tmp_path / "data" / "a.pkl")
    _touch(tmp_path / "data" / "b.pkl")
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(
        "# a comment\nrecording\tpath\tfs_Hz\nalpha\tdata/a.pkl\t30000\n\nbeta\tdata/b.pkl\t\n"
    )
    recs = discover_recordings({"sample_sheet": str(sheet)})
    assert recs == [
        Recording("alpha", str(tmp_path / "data" / "a.pkl"), 30000.0),
        Recording("beta", str(tmp_path / "data" / "b.pkl"), None),
    ]


def test_sample_sheet_nwb_columns_reach_the_recording_and_empty_cells_are_skipped(tmp_path):
    _touch(tmp_path / "a.pkl")
    _touch(tmp_path / "b.pkl")
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(
        "recording\tpath\tsubject_id\tspecies\tage\n"
        "alpha\ta.pkl\tm1\tMus musculus\tP90D\n"
        "beta\tb.pkl\t\tMus musculus\t\n"
    )
    alpha, beta = recordings_from_sample_sheet(sheet)
    assert dict(alpha.sheet_options) == {
        "subject_id": "m1",
        "species": "Mus musculus",
        "age": "P90D",
    }
    assert dict(beta.sheet_options) == {"species": "Mus musculus"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("recording\tfile\n", "missing: path"),
        ("recording\tpath\tfs\n", "unknown: fs"),
        ("recording\tpath\nx\tdata/none.pkl\n", "line 2: recording 'x': no such file"),
        ("recording\tpath\tfs_Hz\nx\tdata/a.pkl\tfast\n", "line 2: fs_Hz 'fast' is not a number"),
        ("recording\tpath\tfs_Hz\nx\tdata/a.pkl\t-5\n", "must be a sampling rate > 0 Hz"),
        ("recording\tpath\nx\n", "line 2: 1 fields for 2 columns"),
    ],
)
def test_malformed_sample_sheets_are_rejected_with_line_numbers(tmp_path, text, match):
    _touch(tmp_path / "data" / "a.pkl")
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(text)
    with pytest.raises(InputError, match=match):
        recordings_from_sample_sheet(sheet)


def test_sample_sheet_name_with_a_path_separator_is_rejected(tmp_path):
    _touch(tmp_path / "a.pkl")
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("recording\tpath\n../x\ta.pkl\n")
    with pytest.raises(InputError, match=r"'\.\./x' .* path separator"):
        discover_recordings({"sample_sheet": str(sheet)})


# ---------------------------------------------------------------------- fs precedence
def test_fs_precedence_is_sheet_then_metadata_then_config_default():
    assert resolve_fs_Hz(30000, {"fs_Hz": 20000}, 10000) == (30000.0, "sample sheet")
    assert resolve_fs_Hz(None, {"fs_Hz": 20000}, 10000) == (20000.0, "metadata")
    assert resolve_fs_Hz(None, {}, 10000) == (10000.0, "config fs_Hz")
    assert resolve_fs_Hz(None, None, None) == (None, "none")


def test_unusable_metadata_fs_is_skipped_with_a_warning(caplog):
    assert resolve_fs_Hz(None, {"fs_Hz": "fast"}, 10000) == (10000.0, "config fs_Hz")
    assert resolve_fs_Hz(None, {"fs_Hz": -1}, None) == (None, "none")
    assert "not a sampling rate" in caplog.text


# ---------------------------------------------------------------------------- batches
def _names(n, seed=0):
    rng = random.Random(seed)
    return sorted(
        {"".join(rng.choice(string.ascii_lowercase + "-_.") for _ in range(8)) for _ in range(n)}
    )


def _plan(names, size):
    return {b.key: tuple(b.names) for b in plan_batches([Recording(n, n) for n in names], size)}


def test_batch_size_one_gives_one_recording_per_batch():
    names = _names(50)
    assert list(_plan(names, 1).values()) == [(n,) for n in sorted(names)]


def test_batches_average_the_batch_size_and_are_capped():
    names = _names(5000)
    batches = plan_batches([Recording(n, n) for n in names], 50)
    sizes = [len(b.recordings) for b in batches]
    assert sum(sizes) == len(names)
    assert 35 <= len(names) / len(batches) <= 65
    assert max(sizes) <= 200


def test_batches_do_not_depend_on_input_order():
    names = _names(300)
    shuffled = names[:]
    random.Random(1).shuffle(shuffled)
    assert _plan(names, 10) == _plan(shuffled, 10)


@pytest.mark.parametrize("seed", range(5))
def test_adding_or_removing_a_recording_changes_only_its_own_batch(seed):
    names = _names(2000, seed)
    before = _plan(names, 20)
    rng = random.Random(seed)
    added = rng.choice(names) + "n"  # sorts inside the list, right after an existing name
    after = _plan(sorted(names + [added]), 20)
    changed_before = {k: v for k, v in before.items() if after.get(k) != v}
    changed_after = {k: v for k, v in after.items() if before.get(k) != v}
    assert len(changed_before) <= 1  # the batch the name joined (or that it split)
    assert len(changed_after) <= 2
    assert any(added in v for v in changed_after.values())
    removed = rng.choice(names)
    after = _plan([n for n in names if n != removed], 20)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert 1 <= len(changed) <= 2  # its batch (merged into the previous one if it led it)


def test_batch_keys_are_unique_identifiers_of_the_membership_not_a_name():
    names = ["a-b", "a_b", "a.b", "9lives", "x+y"]
    batches = plan_batches([Recording(n, n) for n in names], 1)
    keys = [b.key for b in batches]
    assert len(set(keys)) == len(keys)
    assert all(f"export_{k}".isidentifier() for k in keys)
    assert all(re.fullmatch(r"b[0-9a-f]{10}", k) for k in keys)
    assert not any(n.replace("-", "_") in k for n in names for k in keys)
    assert batch_key(["b", "a"]) == batch_key(["a", "b"]) != batch_key(["a", "b", "c"])
    (batch,) = plan_batches([Recording(n, n) for n in ("b", "a")], 100)
    assert batch.key == batch_key(["a", "b"])


def test_resources_scale_with_input_size_and_attempt():
    hdf5, nwb = get_format("hdf5").resources, get_format("nwb").resources
    assert hdf5.mem_mb([1.0, 100.0]) == 350 + 600
    assert hdf5.mem_mb([1.0, 100.0], attempt=2) == 2 * (350 + 600)
    assert nwb.mem_mb([]) == 500
    assert hdf5.runtime_min([10.0] * 50) == 20  # (60 + 2 * 50 + 2 * 500) s
    assert nwb.runtime_min([10.0] * 50, attempt=2) == 78
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([], 0)


def test_discovery_records_input_sizes_for_the_resource_estimates(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.pkl").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / "d" / "b.pkl").write_bytes(b"x" * 2**19)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("recording\tpath\na\td/a.pkl\nb\td/b.pkl\n")
    for inputs in (
        {"directory": str(tmp_path / "d")},
        {"glob": str(tmp_path / "d" / "*.pkl")},
        {"sample_sheet": str(sheet)},
    ):
        recs = discover_recordings(inputs)
        assert [r.size_bytes for r in recs] == [3 * 2**20, 2**19], inputs
        (batch,) = plan_batches(recs, 100)
        assert batch.sizes_mb == [3.0, 0.5]
    # A size discovery did not see leaves the estimate to Snakemake (input.size_files_mb).
    assert plan_batches([Recording("a", "s3://b/a.pkl")], 1)[0].sizes_mb is None

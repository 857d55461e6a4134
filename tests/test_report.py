"""The Snakemake report: figure and table jobs, the report built on the example data, and the
report page opened in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, copy_workflow, run_snakemake

from spikelab.report.jobs import (
    STAT_COLUMNS,
    FigureBatchError,
    FigureItem,
    draw_batch,
    run_figures_job,
    write_recordings_table,
)
from spikelab.workflow.summary import write_summary

DATA = Path(__file__).parent / "data"
RECORDINGS = ("empty_units", "neg_start", "small")
TARGETS = ("hdf5/ragged", "hdf5/raster", "kilosort", "nwb", "pickle")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"  # git-ignored; CI keeps what the tests leave here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def smk(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, check=True)


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def report_variable(html: str, name: str):
    """A JSON variable (``var results = {...};``) embedded in Snakemake's report page."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
    assert match, f"no {name} in the report"
    return json.loads(match.group(1))


# --------------------------------------------------------------------------- jobs
def _pickles(tmp_path: Path, names, bad=()) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    paths = []
    for name in names:
        path = tmp_path / "in" / f"{name}.pkl"
        if name in bad:
            path.write_bytes(b"\x80\x04 truncated")
        else:
            shutil.copy(DATA / f"{name}.pkl", path)
        paths.append(str(path))
    return paths


def test_figure_job_logs_one_info_line_per_file_with_path_size_and_seconds(tmp_path, capfd):
    names = ["small", "neg_start"]
    figures = [str(tmp_path / "fig" / f"{n}.png") for n in names]
    rows = run_figures_job(
        recordings=[{"recording": n} for n in names],
        sources=_pickles(tmp_path, names),
        figures=figures,
        stats_json=str(tmp_path / "stats.json"),
        batch="neg_start",
        on_bad_recording="continue",
        log_path=str(tmp_path / "job.log"),
    )
    assert [r["status"] for r in rows] == ["ok", "ok"]
    lines = (tmp_path / "job.log").read_text().splitlines()
    assert len(lines) == 3
    for path in [*figures, str(tmp_path / "stats.json")]:
        size = Path(path).stat().st_size
        assert (
            sum(
                bool(re.search(rf"INFO wrote {re.escape(path)} \({size} bytes, [\d.]+ s\)", x))
                for x in lines
            )
            == 1
        )
    doc = json.loads((tmp_path / "stats.json").read_text())
    assert doc["batch"] == "neg_start"
    small = doc["recordings"][0]
    assert (small["recording"], small["n_units"], small["n_spikes"]) == ("small", 8, 1396)
    assert (small["duration_ms"], small["start_time_ms"], small["mode"]) == (10000.0, 0.0, "ticks")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the console stays Snakemake's


def test_unreadable_recording_gets_a_figure_saying_so_and_no_numbers(tmp_path):
    names = ["bad", "small"]
    figures = [str(tmp_path / f"{n}.png") for n in names]
    rows = run_figures_job(
        recordings=[{"recording": n} for n in names],
        sources=_pickles(tmp_path, names, bad={"bad"}),
        figures=figures,
        stats_json=str(tmp_path / "stats.json"),
        batch="bad",
        on_bad_recording="continue",
        log_path=str(tmp_path / "job.log"),
    )
    assert [r["status"] for r in rows] == ["unreadable", "ok"]
    assert "bad.pkl" in rows[0]["message"] and "n_units" not in rows[0]
    assert Path(figures[0]).read_bytes()[:4] == b"\x89PNG"
    log = (tmp_path / "job.log").read_text()
    assert re.search(r"ERROR cannot read bad: .*bad\.pkl", log)


def test_unreadable_recording_fails_the_job_with_on_bad_recording_fail(tmp_path):
    names = ["bad", "small"]
    with pytest.raises(
        FigureBatchError, match=r"(?s)1 of 2 recordings could not be read.*bad\.pkl"
    ):
        run_figures_job(
            recordings=[{"recording": n} for n in names],
            sources=_pickles(tmp_path, names, bad={"bad"}),
            figures=[str(tmp_path / f"{n}.png") for n in names],
            stats_json=str(tmp_path / "stats.json"),
            batch="bad",
            on_bad_recording="fail",
            log_path=None,
        )
    assert (tmp_path / "small.png").is_file()  # the others are drawn first
    assert not (tmp_path / "stats.json").exists()


def test_pickles_the_user_trusts_are_read_with_the_configured_opt_ins(tmp_path):
    from spikelab.formats.pickle_io import export_to_pickle
    from spikelab.spikedata import SpikeData

    source = tmp_path / "counted.pkl"
    export_to_pickle(SpikeData([[1.0]], length=5.0, metadata={"n": Counter(a=1)}), source)
    item = FigureItem("counted", str(source), str(tmp_path / "counted.png"))
    assert draw_batch([item])[0]["status"] == "unreadable"  # the restricted loader refuses it
    opt_in = {"trusted": False, "allow_globals": ["collections.Counter"]}
    assert draw_batch([item], pickle_loading=opt_in)[0]["status"] == "ok"


def test_table_has_a_row_per_recording_with_numbers_sizes_and_verify_results(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(
        json.dumps(
            {
                "batch": "a",
                "recordings": [
                    {"recording": "b_rec", "status": "unreadable", "message": "LoadError"},
                    {
                        "recording": "a_rec",
                        "status": "ok",
                        "n_units": 4,
                        "n_spikes": 30,
                        "n_empty_units": 1,
                        "start_time_ms": -200.0,
                        "duration_ms": 2500.0,
                        "mean_rate_Hz": 3.0,
                    },
                ],
            }
        )
    )
    verify = tmp_path / "verify.json"
    results = [
        {"recording": "a_rec", "target": "nwb", "status": "ok", "output_bytes": 1234},
        {"recording": "a_rec", "target": "hdf5/ragged", "status": "mismatch", "output_bytes": 99},
        {"recording": "b_rec", "target": "nwb", "status": "export_failed", "output_bytes": 50},
        {"recording": "b_rec", "target": "hdf5/ragged", "status": "export_failed"},
    ]
    verify.write_text(json.dumps({"results": results}))
    write_summary([verify], tmp_path / "summary.tsv")
    n = write_recordings_table(
        [stats], tmp_path / "summary.tsv", tmp_path / "t.tsv", tmp_path / "t.html"
    )
    assert n == 2
    rows = read_tsv(tmp_path / "t.tsv")
    assert list(rows[0]) == [
        *STAT_COLUMNS,
        "hdf5/ragged bytes",
        "hdf5/ragged verify",
        "nwb bytes",
        "nwb verify",
    ]
    assert rows[0] == {
        "recording": "a_rec",
        "n_units": "4",
        "n_spikes": "30",
        "duration_s": "2.5",
        "mean_rate_Hz": "3",
        "n_empty_units": "1",
        "start_time_ms": "-200",
        "hdf5/ragged bytes": "99",
        "hdf5/ragged verify": "mismatch",
        "nwb bytes": "1234",
        "nwb verify": "ok",
    }
    assert rows[1]["recording"] == "b_rec" and rows[1]["n_units"] == ""
    assert rows[1]["nwb verify"] == "export_failed"
    page = (tmp_path / "t.html").read_text()
    assert "<script" not in page and "a_rec" in page and '<td class="bad">mismatch</td>' in page


# ------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The example workflow run to completion, and its report built."""
    wd = copy_workflow(tmp_path_factory.mktemp("report"))
    run = smk(wd)
    smk(wd, "--report", "report.html")
    return wd, run


def test_report_has_one_figure_per_recording_and_the_summary_table(built):
    wd, _ = built
    html = (wd / "report.html").read_text()
    results = report_variable(html, "results")
    categories = report_variable(html, "categories")
    assert set(categories) == {*RECORDINGS, "Summary"}
    for name in RECORDINGS:
        png = f"results/report/{name}.png"
        assert [f for sub in categories[name].values() for f in sub] == [png]
        assert results[png]["labels"]["recording"] == name
        assert "population rate" in results[png]["caption"]
        data = base64.b64encode((wd / png).read_bytes()).decode()
        assert data in html  # the figure itself is in the page
    summary = {f for sub in categories["Summary"].values() for f in sub}
    assert summary == {"results/report/recordings.tsv", "results/report/recordings.html"}
    assert html.count("data:image/png") == len(RECORDINGS)


def test_summary_table_gives_numbers_sizes_and_verify_results_of_the_example(built):
    wd, _ = built
    rows = {r["recording"]: r for r in read_tsv(wd / "results" / "report" / "recordings.tsv")}
    assert sorted(rows) == list(RECORDINGS)
    small, empty, neg = rows["small"], rows["empty_units"], rows["neg_start"]
    assert (small["n_units"], small["n_spikes"], small["duration_s"]) == ("8", "1396", "10")
    assert small["mean_rate_Hz"] == "17.45" and small["n_empty_units"] == "0"
    assert (empty["n_empty_units"], neg["start_time_ms"], neg["duration_s"]) == ("2", "-200", "0.5")
    for row in rows.values():
        for target in TARGETS:
            assert row[f"{target} verify"] == "ok"
            assert int(row[f"{target} bytes"]) > 0
    size = (wd / "results" / "nwb" / "small.nwb").stat().st_size
    assert small["nwb bytes"] == str(size)


def test_scripts_log_to_their_rule_logs_and_the_console_stays_snakemakes(built):
    wd, run = built
    assert "wrote results/report" not in run.stdout + run.stderr
    figure_logs = list((wd / "logs" / "report" / "figures").glob("*.log"))
    lines = [x for log in figure_logs for x in log.read_text().splitlines()]
    for name in RECORDINGS:
        png = wd / "results" / "report" / f"{name}.png"
        pattern = rf"INFO wrote results/report/{name}\.png \({png.stat().st_size} bytes, [\d.]+ s\)"
        assert sum(bool(re.search(pattern, x)) for x in lines) == 1
    table_log = (wd / "logs" / "report" / "table.log").read_text()
    assert re.search(
        r"INFO wrote results/report/recordings\.tsv \(\d+ bytes, [\d.]+ s\)", table_log
    )


def test_report_zip_holds_every_figure_and_the_table(built):
    wd, _ = built
    smk(wd, "--report", "report.zip")
    with zipfile.ZipFile(wd / "report.zip") as zf:
        names = zf.namelist()
    for want in [*(f"{r}.png" for r in RECORDINGS), "recordings.tsv", "recordings.html"]:
        assert any(n.endswith("/" + want) for n in names), want
    assert any(n.endswith("report.html") for n in names)


def _launch_chromium():
    """Playwright and Debian's Chromium, or a skip (a failure under CI, which installs both)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.is_file():
        missing = f"{CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the report page test needs {missing}")
        pytest.skip(f"needs {missing}")
    return sync_playwright


def test_report_page_loads_in_chromium_and_shows_every_recording(built):
    wd, _ = built
    sync_playwright = _launch_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    remote: list[str] = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = pw.chromium.launch_persistent_context(
            profile,  # a fresh --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: r.url.startswith(("file:", "data:", "about:")) or remote.append(r.url),
            )
            page.goto((wd / "report.html").as_uri())
            page.wait_for_load_state("networkidle")
            menu = page.locator("nav")
            for name in RECORDINGS:
                assert menu.get_by_text(name, exact=True).is_visible()
            page.screenshot(path=ARTIFACTS / "report-home.png")
            # Every recording's figure opens from its category.
            for name in RECORDINGS:
                menu.get_by_text(name, exact=True).click()
                menu.locator("a[iconname=eye]").first.click()
                figure = page.locator('img[src^="data:image/png"]')
                figure.wait_for()
                assert figure.evaluate("img => img.naturalWidth") == 1000
                page.screenshot(path=ARTIFACTS / f"report-{name}.png")
                page.locator("nav a", has_text="Results").first.click()
            # The table opens from Summary, with every recording in it.
            menu.get_by_text("Summary", exact=True).click()
            menu.locator("tr", has_text="recordings (TSV)").wait_for()
            menu.locator("tr", has=page.get_by_text("recordings", exact=True)).locator(
                "a[iconname=eye]"
            ).click()
            table = page.frame_locator("iframe").locator("table")
            table.wait_for()
            text = table.inner_text()
            for name in [*RECORDINGS, *TARGETS, "empty units", "mean rate (Hz)", "verify"]:
                assert name in text
            page.screenshot(path=ARTIFACTS / "report-summary.png")
        finally:
            browser.close()
    assert problems == [], problems
    assert remote == [], f"the report asked the network for {remote}"

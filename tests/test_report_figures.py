"""Per-recording overview figures (spikelab.report.figures): binning, stats, modes, PNG files."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.report.figures import (
    FigureError,
    binned_counts,
    choose_bin_ms,
    draw_failure_figure,
    draw_recording_figure,
    figure_title,
    population_counts,
    rate_axis_top,
    recording_stats,
    session_start_text,
)
from spikelab.spikedata import SpikeData

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "example" / "recordings").glob("*.pkl"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path).shape


def random_recording(n_units: int, n_spikes: int, length_ms: float, *, start=0.0, seed=1):
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, n_units, n_spikes)
    times = rng.uniform(start, start + length_ms, n_spikes)
    train = [np.sort(times[owner == i]) for i in range(n_units)]
    return SpikeData(train, length=length_ms, start_time=start)


# ----------------------------------------------------------------------------- binning
@pytest.mark.parametrize(
    ("duration_ms", "max_bins", "expected"),
    [
        (10_000.0, 500, 20.0),
        (600_000.0, 500, 2000.0),
        (600_000.0, 200, 5000.0),
        (500.0, 200, 5.0),
        (100.0, 500, 1.0),
        (0.0, 500, 1.0),
        (1_000.0, 100, 10.0),
        (3_000.0, 1000, 5.0),
    ],
)
def test_bin_width_is_round_and_gives_at_most_max_bins(duration_ms, max_bins, expected):
    width = choose_bin_ms(duration_ms, max_bins)
    assert width == expected
    assert duration_ms / width <= max_bins


def test_binned_counts_match_the_dense_raster_with_negative_start_and_empty_units():
    sd = random_recording(7, 3000, 1234.5, start=-200.0)
    sd.train[3] = np.zeros(0)
    sd.train[5] = np.array([sd.start_time, sd.end_time])  # both edges
    for bin_ms in (1.0, 7.0, 50.0, 2000.0):
        counts = binned_counts(sd, bin_ms)
        assert counts.shape == (7, sd.n_bins(bin_ms))
        np.testing.assert_array_equal(counts, sd.raster(bin_ms))
        np.testing.assert_array_equal(population_counts(sd, bin_ms), counts.sum(axis=0))
    assert binned_counts(sd, 50.0)[5, -1] == 1  # a spike at the very end counts in the last bin


def test_binned_counts_in_blocks_equal_one_block(monkeypatch):
    from spikelab.report import figures

    sd = random_recording(40, 20_000, 10_000.0, seed=3)
    whole = binned_counts(sd, 20.0)
    monkeypatch.setattr(figures, "_BLOCK_SPIKES", 1000)  # many blocks, some of a single unit
    np.testing.assert_array_equal(binned_counts(sd, 20.0), whole)
    np.testing.assert_array_equal(population_counts(sd, 20.0), whole.sum(axis=0))


def test_binned_counts_of_recordings_without_units_or_spikes():
    assert binned_counts(SpikeData([], length=0.0), 1.0).shape == (0, 1)
    assert population_counts(SpikeData([], length=0.0), 1.0).tolist() == [0]
    empty = SpikeData([[], []], length=100.0)
    assert binned_counts(empty, 10.0).tolist() == [[0] * 10, [0] * 10]


# ------------------------------------------------------------------------------ stats
@pytest.mark.parametrize(
    ("max_rate_Hz", "top"),
    [
        (0.0, 1.0),
        (0.95, 1.0),
        (0.96, 1.2),
        (9.5, 10.0),
        (10.0, 12.0),
        (199.0, 250.0),
        (400.0, 500.0),
        (999.0, 1200.0),
        (0.2, 1.0),
        (2e6, 2.5e6),
    ],
)
def test_rate_axis_top_is_a_round_value_above_the_highest_rate(max_rate_Hz, top):
    assert rate_axis_top(max_rate_Hz) == top


def test_rate_axis_tops_leave_headroom_and_are_few():
    rates = np.linspace(1.0, 5000.0, 20_000)
    tops = np.array([rate_axis_top(r) for r in rates])
    assert np.all(tops >= 1.05 * rates)
    assert np.all(tops <= 1.05 * rates * 1.34)  # the largest gap of the ladder: 3 -> 4
    assert len(set(tops.tolist())) <= 10 * 4 + 1  # ten per decade


def test_stats_count_units_spikes_empty_units_and_mean_rate():
    sd = SpikeData([[1.0, 2.0, 3.0], [], [4.0], []], length=2000.0, start_time=-5.0)
    st = recording_stats(sd)
    assert (st.n_units, st.n_spikes, st.n_empty_units) == (4, 4, 2)
    assert (st.start_time_ms, st.duration_ms) == (-5.0, 2000.0)
    assert st.mean_rate_Hz == pytest.approx(4 / 4 / 2.0)


def test_stats_mean_rate_is_none_without_units_or_duration():
    assert recording_stats(SpikeData([], length=100.0)).mean_rate_Hz is None
    assert recording_stats(SpikeData([[0.0]], length=0.0)).mean_rate_Hz is None


def test_title_names_recording_units_empty_units_spikes_duration_and_start():
    sd = SpikeData([[1.0] * 3, [], [5.0]], length=600_000.0, start_time=-200.0)
    title = figure_title("rat7_day2", recording_stats(sd))
    assert title.splitlines()[0] == "rat7_day2"
    assert "3 units (1 empty)" in title
    assert "4 spikes" in title
    assert "duration 10 min" in title
    assert "start -200 ms" in title
    one = figure_title("x", recording_stats(SpikeData([[1.0]], length=1500.0)))
    assert "1 unit," in one and "duration 1.5 s" in one


def test_title_gives_the_session_start_when_known():
    st = recording_stats(SpikeData([[1.0]], length=10.0))
    title = figure_title("r", st, "2024-06-01T10:00:00+00:00")
    assert title.endswith("start 0 ms (session 2024-06-01 10:00:00+00:00)")
    when = datetime.datetime(2024, 6, 1, 10, tzinfo=datetime.UTC)
    assert figure_title("r", st, when).endswith("(session 2024-06-01 10:00:00+00:00)")
    assert session_start_text(None) is None and session_start_text("  ") is None
    assert "session" not in figure_title("r", st)


# ---------------------------------------------------------------------------- figures
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_recordings_are_drawn_as_ticks(tmp_path, path):
    sd = load_spikedata_from_pickle(path)
    out = tmp_path / "fig" / f"{path.stem}.png"  # parent folders are created
    res = draw_recording_figure(sd, path.stem, out)
    assert res.mode == "ticks"
    assert res.path == str(out) and res.bytes == out.stat().st_size
    assert png_shape(out)[:2] == (600, 1000)
    assert res.stats == recording_stats(sd)
    assert res.seconds > 0
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporaries left


def test_many_spikes_or_many_units_are_drawn_as_a_rate_image(tmp_path):
    dense = random_recording(50, 60_000, 60_000.0)
    res = draw_recording_figure(dense, "dense", tmp_path / "dense.png")
    assert res.mode == "image"
    many_units = random_recording(201, 1000, 1000.0)
    assert draw_recording_figure(many_units, "units", tmp_path / "u.png").mode == "image"
    # The thresholds are keyword options.
    few = random_recording(5, 100, 1000.0)
    assert draw_recording_figure(few, "few", tmp_path / "few.png", max_tick_spikes=99).mode == (
        "image"
    )
    assert draw_recording_figure(few, "few", tmp_path / "few.png", max_tick_units=4).mode == (
        "image"
    )
    assert draw_recording_figure(few, "few", tmp_path / "few.png").mode == "ticks"


def test_large_recording_gives_a_small_png(tmp_path):
    sd = random_recording(1000, 1_000_000, 600_000.0, seed=7)
    res = draw_recording_figure(sd, "large", tmp_path / "large.png")
    assert res.mode == "image"
    assert res.bytes < 1_000_000
    assert png_shape(tmp_path / "large.png")[:2] == (600, 1000)


@pytest.mark.parametrize(
    "sd",
    [
        SpikeData([], length=0.0),
        SpikeData([[], [], []], length=1000.0, start_time=-50.0),
        SpikeData([[0.0, 0.0]], length=0.0),
    ],
    ids=["no_units", "no_spikes", "zero_length"],
)
def test_recordings_without_spikes_units_or_duration_still_give_a_figure(tmp_path, sd):
    res = draw_recording_figure(sd, "odd", tmp_path / "odd.png")
    assert res.mode == ("ticks" if sd.n_spikes else "empty")
    assert png_shape(tmp_path / "odd.png")[:2] == (600, 1000)


def test_size_and_resolution_are_options(tmp_path):
    sd = SpikeData([[1.0, 2.0]], length=10.0)
    draw_recording_figure(sd, "s", tmp_path / "s.png", width_in=4, height_in=3, dpi=50)
    assert png_shape(tmp_path / "s.png")[:2] == (150, 200)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": None}, "name must be a non-empty string"),
        ({"png_path": "fig.svg"}, "ending in .png"),
        ({"max_tick_spikes": 0}, "max_tick_spikes must be a number > 0"),
        ({"max_bins": True}, "max_bins must be a number > 0"),
        ({"dpi": -1}, "dpi must be a number > 0"),
        ({"sd": [[1.0]]}, "sd must be a SpikeData"),
    ],
)
def test_bad_arguments_raise_before_any_file_is_written(tmp_path, kwargs, match):
    args = {"sd": SpikeData([[1.0]], length=10.0), "name": "r", "png_path": "fig.png"}
    args.update(kwargs)
    args["png_path"] = tmp_path / "out" / args["png_path"]
    with pytest.raises(FigureError, match=match):
        draw_recording_figure(args.pop("sd"), args.pop("name"), args.pop("png_path"), **args)
    assert not (tmp_path / "out").exists()


def test_a_failed_draw_keeps_the_previous_figure(tmp_path, monkeypatch):
    from spikelab.report import figures

    out = tmp_path / "r.png"
    draw_recording_figure(SpikeData([[1.0]], length=10.0), "r", out)
    before = out.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(figures, "population_counts", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        draw_recording_figure(SpikeData([[2.0]], length=10.0), "r", out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_failure_figure_is_a_png_naming_the_recording(tmp_path):
    size = draw_failure_figure("bad", tmp_path / "bad.png", "LoadError: bad.pkl: truncated " * 20)
    assert size == (tmp_path / "bad.png").stat().st_size
    assert png_shape(tmp_path / "bad.png")[:2] == (600, 1000)


def test_importing_the_module_does_not_import_matplotlib():
    code = (
        "import sys, spikelab.report.figures, spikelab.report.jobs; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------- one figure per process
def png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


def _fresh_process_state():
    from spikelab.report import figures

    figures._OVERVIEWS.clear()


# Recordings that differ in everything a figure shows: mode, units, duration, start, title,
# session start, rate scale, colour scale.
OTHERS = {
    "image": lambda: random_recording(250, 30_000, 42_000.0, start=-1500.0, seed=5),
    "empty": lambda: SpikeData([[], []], length=2500.0, start_time=300.0),
    "many_units_ticks": lambda: random_recording(60, 4000, 7_000.0, seed=9),
    "no_units": lambda: SpikeData([], length=0.0),
    "session": lambda: SpikeData(
        [[1.0, 2.0]], length=10.0, metadata={"session_start_time": "2020-01-02T03:04:05"}
    ),
}


@pytest.mark.parametrize(
    "sd",
    [
        load_spikedata_from_pickle(REPO / "example" / "recordings" / "small.pkl"),
        random_recording(120, 9000, 20_000.0, seed=2),
        random_recording(300, 80_000, 90_000.0, seed=4),  # image
        SpikeData([[], [], []], length=1000.0, start_time=-50.0),  # empty
    ],
    ids=["small", "many_units_ticks", "image", "empty"],
)
def test_a_figure_drawn_after_others_equals_it_drawn_fresh(tmp_path, sd):
    _fresh_process_state()
    fresh = draw_recording_figure(sd, "b", tmp_path / "fresh.png", session_start_time="2024-06-01")
    n, start, length = sd.N, sd.start_time, sd.length
    others = {
        **{name: make() for name, make in OTHERS.items()},
        # The same time axes with other units, the same units over another time.
        "same_time": random_recording(n + 3, 500, length, start=start, seed=6),
        "same_units": random_recording(max(n, 1), 500, length + 1000.0, start=start, seed=6),
    }
    _fresh_process_state()  # what B shows must not come from B's first drawing
    for name, other in others.items():
        draw_recording_figure(other, name, tmp_path / f"{name}.png")
    again = draw_recording_figure(sd, "b", tmp_path / "again.png", session_start_time="2024-06-01")
    assert again.mode == fresh.mode
    np.testing.assert_array_equal(
        png_pixels(tmp_path / "again.png"), png_pixels(tmp_path / "fresh.png")
    )
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "fresh.png").read_bytes()


@pytest.mark.parametrize("mode", ["ticks", "image", "empty"])
def test_kept_layouts_and_glyphs_give_the_pixels_of_a_full_matplotlib_draw(tmp_path, mode):
    """What is restored and drawn over it equals matplotlib drawing the same figure at once
    with its stock Agg renderer (no kept background, unit axis or glyph)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from spikelab.report import figures

    sd = {
        "ticks": random_recording(12, 2000, 10_000.0, seed=3),
        "image": random_recording(400, 70_000, 30_000.0, start=-250.0, seed=3),
        "empty": SpikeData([[]] * 30, length=4000.0),
    }[mode]
    _fresh_process_state()
    for seed in range(3):  # the layout and the glyphs are kept by then
        draw_recording_figure(
            random_recording(12, 2000, 10_000.0, seed=seed), "x", tmp_path / "x.png"
        )
    # Once with some axes drawn (this unit count, this top rate are new), once all restored.
    for name in ("first", "again"):
        draw_recording_figure(
            sd, "recording", tmp_path / f"{name}.png", session_start_time="2024-06-01"
        )

    # The same figure drawn whole: every artist set as for the recording, none animated.
    overview = figures._overview(10.0, 6.0, 100.0)
    content, _ = figures._figure_content(
        sd,
        "recording",
        max_tick_spikes=figures.MAX_TICK_SPIKES,
        max_tick_units=figures.MAX_TICK_UNITS,
        max_bins=figures.MAX_BINS,
        max_rate_bins=figures.MAX_RATE_BINS,
        session_start_time="2024-06-01",
    )
    overview.set_content(content)
    for artist in overview.fig.findobj(lambda a: a.get_animated()):
        artist.set_animated(False)
    stock = FigureCanvasAgg(overview.fig)
    stock.draw()
    try:
        for name in ("first", "again"):
            np.testing.assert_array_equal(
                np.asarray(stock.buffer_rgba()), png_pixels(tmp_path / f"{name}.png")
            )
    finally:
        _fresh_process_state()


def test_a_new_unit_axis_is_matplotlibs_for_every_number_of_units(tmp_path):
    """The unit axis drawn for a new number of units (ticks: 1 to 200 units, image: more), as
    kept and restored, equals matplotlib's stock Agg renderer drawing that axis on the same
    background (no glyph cache, no learnt layout, no font heights kept, no repeat skipped)."""
    from matplotlib.backends.backend_agg import RendererAgg

    from spikelab.report import figures

    _fresh_process_state()
    overview = figures._overview(10.0, 6.0, 100.0)
    axis = overview.ax.yaxis
    for n in [*range(1, 201), 201, 250, 333, 400, 1000, 4096]:
        sd = random_recording(n, 3 * n, 10_000.0, seed=n)
        result = draw_recording_figure(sd, "r", tmp_path / "r.png")
        assert result.mode == ("ticks" if n <= 200 else "image")
        [(background, _)] = overview.backgrounds.values()  # the same time axes throughout
        [key] = [key for key in overview.unit_axes if key[-1] == n]
        (rows, cols), block, mask = overview.unit_axes[key][0]
        ours = background.copy()
        np.copyto(ours[rows, cols], block, where=mask)
        stock = RendererAgg(*background.shape[1::-1], 100.0)
        np.copyto(np.asarray(stock.buffer_rgba()), background)
        axis.draw(stock)  # the axis is still set for n units
        np.testing.assert_array_equal(ours, np.asarray(stock.buffer_rgba()), err_msg=f"{n} units")
        # Nothing of the quick drawing is left on the axis or its tick labels.
        assert not {"_update_ticks", "_get_ticklabel_bboxes"} & set(vars(axis))
        labels = [t.label1 for t in axis.get_major_ticks()]
        assert not any("_get_layout" in vars(label) for label in labels)
    _fresh_process_state()


def test_kept_font_heights_lay_text_out_as_matplotlib():
    """Text laid out with the line heights the renderer keeps equals matplotlib's layout from
    the font's tables: several lines, fonts, sizes, weights, resolutions, angles and a window
    extent asked at another resolution."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

    from spikelab.report.agg import GlyphCachingCanvas

    for dpi in (72.0, 100.0, 150.0):
        fig = Figure(figsize=(4.0, 3.0), dpi=dpi)
        ours = GlyphCachingCanvas(fig).get_renderer()
        assert ours.figure is fig
        stock = RendererAgg(*ours.get_canvas_width_height(), dpi)
        texts = [
            fig.text(0.1, 0.5, s, fontsize=size, family=family, weight=weight, rotation=angle)
            for s in ("10", "unit", "two\nlines", "a\nb\nthree lines, Qy")
            for size in (7, 9.5, 11)
            for family in ("sans-serif", "serif", "monospace")
            for weight in ("normal", "bold")
            for angle in (0, 90)
        ]
        for text in texts:
            assert None not in ours._get_font_height_metrics(text.get_fontproperties())
            laid_out = {}
            for renderer in (ours, stock):
                bbox, lines, corner = text._get_layout(renderer)
                extent = text.get_window_extent(renderer, dpi=2 * dpi)
                laid_out[renderer] = (bbox.bounds, lines, corner, extent.bounds)
            assert laid_out[ours] == laid_out[stock], text.get_text()


def test_a_forked_child_reuses_the_parents_figure(tmp_path):
    from spikelab import isolation

    if not isolation.available():
        pytest.skip("no fork here")
    sd = random_recording(9, 1500, 10_000.0, seed=8)
    _fresh_process_state()
    draw_recording_figure(sd, "r", tmp_path / "fresh.png")
    draw_recording_figure(random_recording(30, 900, 3000.0), "other", tmp_path / "other.png")

    def child() -> int:
        return draw_recording_figure(sd, "r", tmp_path / "child.png").bytes

    assert isolation.run_isolated(child) == (tmp_path / "child.png").stat().st_size
    assert (tmp_path / "child.png").read_bytes() == (tmp_path / "fresh.png").read_bytes()


def test_kept_layouts_and_glyphs_stay_within_their_bounds(tmp_path, monkeypatch):
    from spikelab.report import agg, figures

    _fresh_process_state()
    monkeypatch.setattr(figures._Overview, "BACKGROUND_BYTES", 5_000_000)  # two figures
    monkeypatch.setattr(figures._Overview, "AXIS_BYTES", 300_000)
    monkeypatch.setattr(agg, "MAX_GLYPHS", 50)
    for i in range(12):
        sd = random_recording(5 + i, 200, 1000.0 * (1 + i % 4))
        draw_recording_figure(sd, f"r{i}", tmp_path / "r.png")
        overview = figures._overview(10.0, 6.0, 100.0)
        assert len(overview.backgrounds) <= 2
        for kept in (overview.unit_axes, overview.rate_axes):
            assert sum(n for _, n in kept.values()) <= 300_000 or len(kept) == 1
        assert len(agg._glyphs) <= 50
    _fresh_process_state()


@pytest.mark.parametrize("deflate", ["installed", "zlib"])
def test_png_writer_round_trips_every_pixel(tmp_path, monkeypatch, deflate):
    import zlib

    from spikelab.report import agg
    from spikelab.report.agg import png_bytes

    if deflate == "zlib":  # as where isal is not installed
        monkeypatch.setattr(agg, "_deflate", zlib.compress)
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[10:20] = 255  # flat rows, as figures mostly are
    (tmp_path / "p.png").write_bytes(png_bytes(rgba))
    np.testing.assert_array_equal(png_pixels(tmp_path / "p.png"), rgba)
    with pytest.raises(ValueError, match="rows x columns x 4 uint8"):
        png_bytes(rgba[..., :3])


# ------------------------------------------------------------- text from learnt layouts
def _random_text(rng, n: int) -> str:
    # Printable ASCII (learnt), with ligatures ("fi", "ffl": laid out by matplotlib) and
    # characters outside ASCII (the same).
    pieces = [chr(c) for c in range(32, 127)] + ["fi", "ffl", "fl", "\u00e9", "\u00b5s"]
    return "".join(pieces[i] for i in rng.integers(0, len(pieces), n))


def test_learnt_text_layout_measures_as_matplotlib():
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    from spikelab.report.agg import GlyphCachingRenderer

    rng = np.random.default_rng(0)
    for dpi in (72, 100, 150):
        ours, stock = GlyphCachingRenderer(10, 10, dpi), RendererAgg(10, 10, dpi)
        for size in (7, 9, 11):
            for weight in ("normal", "bold"):
                prop = FontProperties(size=size, weight=weight)
                for _ in range(60):
                    s = _random_text(rng, int(rng.integers(1, 40)))
                    assert ours.get_text_width_height_descent(s, prop, False) == (
                        stock.get_text_width_height_descent(s, prop, False)
                    ), s


def test_learnt_text_layout_and_blended_text_draw_matplotlibs_pixels():
    """Text drawn from learnt pairs and blended by table equals Agg's drawing of it, on white,
    grey, noisy and coloured pixels, upright or not, black or not, inside the canvas or not."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    from spikelab.report.agg import GlyphCachingRenderer

    rng = np.random.default_rng(1)
    ours, stock = GlyphCachingRenderer(500, 60, 100), RendererAgg(500, 60, 100)
    for trial in range(300):
        prop = FontProperties(size=float(rng.choice([7, 9, 11, 30])))
        s = _random_text(rng, int(rng.integers(1, 40)))
        x, y = rng.uniform(-5, 20), rng.uniform(-5, 60)
        angle = float(rng.choice([0, 0, 0, 90, 30]))
        color = [(0, 0, 0, 1), (0, 0, 0, 1), (0.2, 0, 0, 1), (0, 0, 0, 0.5)][trial % 4]
        base = np.full((60, 500, 4), 255, np.uint8)
        background = trial // 4 % 4
        if background == 1:
            base[..., :3] = rng.integers(0, 256)
        elif background == 2:
            base[..., :3] = rng.integers(0, 256, (60, 500, 1))
        elif background == 3:
            base[..., 0] = 100
        for renderer in (ours, stock):
            np.copyto(np.asarray(renderer.buffer_rgba()), base)
            gc = renderer.new_gc()
            gc.set_foreground(color)
            renderer.draw_text(gc, x, y, s, prop, angle)
        np.testing.assert_array_equal(
            np.asarray(ours.buffer_rgba()), np.asarray(stock.buffer_rgba()), err_msg=repr(s)
        )


# ------------------------------------------------------------------ markers stamped by table
def _raster_axes(n_units: int, markersize: float, mew: float, marker: str = "|"):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    ax = fig.add_axes((0.1, 0.1, 0.85, 0.85))
    (line,) = ax.plot(
        [],
        [],
        linestyle="none",
        marker=marker,
        markersize=markersize,
        markeredgewidth=mew,
        color="black",
    )
    ax.set_ylim(-0.5, max(n_units, 1) - 0.5)
    return fig, ax, line


def _stamping_cases():
    """(name, units, times, unit of each spike, markersize, edge width, marker, stamped?)."""
    rng = np.random.default_rng(7)
    cases = []
    for trial in range(40):
        n = int(rng.integers(1, 60))
        size = float(rng.choice([1.0, 2.5, 4.4, 8.0]))
        mew = float(rng.choice([0.6, 0.6, 1.0, 2.3]))
        k = int(rng.integers(64, 3000))
        units = np.sort(rng.integers(0, n, k))
        times = rng.uniform(0.05, 9.95, k)
        if trial % 3 == 0:  # bursts: many spikes on the same pixel
            times = np.round(times, 1)
        times = np.concatenate([np.sort(times[units == u]) for u in range(n)])
        cases.append((f"random{trial}", n, times, units, size, mew, "|"))
    units = np.repeat(np.arange(8), 100)
    times = np.tile(np.linspace(0.5, 10.0, 100), 8)  # the last on the right edge
    cases += [
        ("unsorted_times", 8, times[::-1].copy(), units, 8.0, 0.6, "|"),
        ("rows_interleaved", 8, np.sort(times), np.tile(np.arange(8), 100), 8.0, 0.6, "|"),
        ("on_the_edges", 8, np.where(np.arange(800) % 100, times, 0.0), units, 8.0, 0.6, "|"),
        ("past_the_edges", 8, np.linspace(-0.2, 10.2, 800), units, 8.0, 0.6, "|"),
        ("rows_overlapping", 40, times, units * 2, 20.0, 0.6, "|"),
        ("rows_downwards", 8, times, 7 - units, 8.0, 0.6, "|"),
        (
            "rows_up_and_down",
            8,
            times,
            np.array([0, 3, 1, 4, 2, 5, 7, 6]).repeat(100),
            8.0,
            0.6,
            "|",
        ),
        ("filled_marker", 8, times, units, 6.0, 1.0, "o"),
        ("few", 8, times[:20], units[:20], 8.0, 0.6, "|"),
    ]
    return cases


@pytest.mark.parametrize("case", _stamping_cases(), ids=lambda case: case[0])
def test_stamped_markers_are_agg_s_pixels(case, monkeypatch):
    """Markers stamped by table equal Agg drawing them one by one (overlaps, bursts on one
    pixel, many marker sizes and widths); what cannot be stamped is drawn by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from spikelab.report.agg import GlyphCachingCanvas, GlyphCachingRenderer

    name, n, times, units, size, mew, marker = case
    stamped = []
    real = GlyphCachingRenderer._stamp_markers

    def spy(self, *args):
        stamped.append(real(self, *args))
        return stamped[-1]

    monkeypatch.setattr(GlyphCachingRenderer, "_stamp_markers", spy)
    fig, ax, line = _raster_axes(n, size, mew, marker)
    ax.set_xlim(0.0, 10.0)
    line.set_data(times, units)
    ours = GlyphCachingCanvas(fig)
    ours.draw()
    mine = np.asarray(ours.buffer_rgba()).copy()
    stock = FigureCanvasAgg(fig)
    stock.draw()
    np.testing.assert_array_equal(mine, np.asarray(stock.buffer_rgba()))
    drawn_by_agg = ("unsorted_times", "rows_interleaved", "rows_up_and_down", "few")
    expect_stamped = name not in drawn_by_agg
    assert (True in stamped) == expect_stamped, stamped


def test_the_first_rounds_drawing_gives_the_same_figure(tmp_path, monkeypatch):
    """bench_figures.py times the drawing before issue #16's later rounds by turning their
    additions off: the figure must be the same."""
    from spikelab.report import agg, figures

    sd = random_recording(23, 2500, 10_000.0, seed=12)
    draw_recording_figure(sd, "r", tmp_path / "now.png")
    for name in ("LEARN_LAYOUT", "BLEND_TEXT", "STAMP_MARKERS", "KEEP_FONT_HEIGHTS"):
        monkeypatch.setattr(agg, name, False)
    for name in ("QUICK_DRAW", "QUICK_AXIS"):
        monkeypatch.setattr(figures, name, False)
    draw_recording_figure(sd, "r", tmp_path / "round1.png")
    assert (tmp_path / "round1.png").read_bytes() == (tmp_path / "now.png").read_bytes()

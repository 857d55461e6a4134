"""One overview figure per recording: spike raster (or binned rate image) over the population rate.

A recording with few spikes and units is drawn as a raster, one thin tick per spike. A long or
dense one (more than ``max_tick_spikes`` spikes or ``max_tick_units`` units) is drawn as an
image of each unit's firing rate in time bins instead, so that a 10-million-spike recording
takes well under a second to draw and gives a PNG of a few hundred kB, not millions of ticks.
Under either, the population rate (all units' spikes per second) in the same bins.

matplotlib is imported inside :func:`draw_recording_figure` only, and drawn with the Agg canvas
directly (no pyplot), so this module is cheap to import. A process makes one figure (per size
and resolution) and draws every recording into it (:class:`_Overview`): what depends on the
layout only (the axes of a time span and number of units) is drawn once and restored, the
spines are drawn again from the paths they drew (:class:`_Replayed`), glyphs are rendered once
and text is laid out from what was learnt of the font and blended by table, the raster's ticks
are stamped by table (:mod:`spikelab.report.agg`), and the PNG is written by a quick encoder.
The rate axis tops at a round value (:func:`rate_axis_top`), so a batch has few rate axes. A
figure is then the same, pixel for pixel, as drawn in a fresh process; a small one costs well
under 10 ms of CPU instead of ~85 ms (``bench/bench_figures.py``). Not for use from several
threads at once (neither is matplotlib).
"""

from __future__ import annotations

import datetime
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spikelab.formats.atomic import atomic_file
from spikelab.spikedata.spikedata import SpikeData

__all__ = [
    "FigureError",
    "RecordingStats",
    "FigureResult",
    "recording_stats",
    "figure_title",
    "session_start_text",
    "choose_bin_ms",
    "rate_axis_top",
    "binned_counts",
    "population_counts",
    "draw_recording_figure",
    "draw_failure_figure",
]

#: Above this many spikes (or units) a recording is drawn as a rate image, not ticks.
MAX_TICK_SPIKES = 50_000
MAX_TICK_UNITS = 200
#: At most this many time bins: rate image columns, population rate steps.
MAX_BINS = 500
MAX_RATE_BINS = 200
_BLOCK_SPIKES = 4_000_000  # spikes binned at a time (bounds the temporary arrays)
#: Whether spines are drawn again from what they drew and unchanged limits are not set again
#: (False: as before issue #16's second round, for ``bench/bench_figures.py``; the same pixels).
QUICK_DRAW = True
#: Whether a new axis is drawn with what matplotlib computes more than once in its drawing
#: computed once (False: ``axis.draw`` as matplotlib does it; the same pixels).
QUICK_AXIS = True


class FigureError(ValueError):
    """A figure was asked for with arguments that cannot work (raised before any file opens)."""


@dataclass(frozen=True)
class RecordingStats:
    """What a recording holds.

    Attributes
    ----------
    n_units, n_spikes, n_empty_units : int
        Units, spikes over all units, and units without a spike.
    start_time_ms, duration_ms : float
        ``start_time`` and ``length`` of the recording (ms).
    mean_rate_Hz : float or None
        Mean firing rate per unit (Hz): spikes / units / duration; None without units or
        duration.
    """

    n_units: int
    n_spikes: int
    n_empty_units: int
    start_time_ms: float
    duration_ms: float
    mean_rate_Hz: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FigureResult:
    """A figure written: its path, how the spikes were drawn, bytes, seconds and the stats.

    ``mode`` is ``"ticks"`` (one tick per spike), ``"image"`` (binned rate image) or
    ``"empty"`` (no spikes to draw); ``bin_ms`` is the population rate's bin width (ms).
    """

    path: str
    mode: Literal["ticks", "image", "empty"]
    bytes: int
    seconds: float
    bin_ms: float
    stats: RecordingStats


def recording_stats(sd: SpikeData) -> RecordingStats:
    """Units, spikes, empty units, start (ms), duration (ms) and mean rate (Hz) of ``sd``."""
    counts = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
    n_spikes = int(counts.sum())
    duration_s = sd.length / 1000.0
    rate = n_spikes / sd.N / duration_s if sd.N and duration_s > 0 else None
    return RecordingStats(
        n_units=sd.N,
        n_spikes=n_spikes,
        n_empty_units=int(np.count_nonzero(counts == 0)),
        start_time_ms=float(sd.start_time),
        duration_ms=float(sd.length),
        mean_rate_Hz=rate,
    )


def choose_bin_ms(duration_ms: float, max_bins: int = MAX_BINS) -> float:
    """A round bin width (1, 2 or 5 x 10^k ms, at least 1 ms) giving at most ``max_bins`` bins."""
    if max_bins < 1:
        raise FigureError(f"max_bins must be >= 1, got {max_bins!r}")
    target = max(float(duration_ms), 0.0) / max_bins
    if target <= 1.0:
        return 1.0
    exp = math.floor(math.log10(target))
    for mantissa in (1.0, 2.0, 5.0, 10.0):
        width = mantissa * 10.0**exp
        if width >= target * (1 - 1e-12):
            return width
    return 10.0 ** (exp + 1)  # pragma: no cover - the loop always returns


def _blocks(sd: SpikeData, bin_ms: float, nb: int):
    """Yield ``(start, stop, sizes, bin index of every spike)`` for blocks of units.

    A block holds units until it reaches a few million spikes (at least one unit), which
    bounds the temporary arrays; units without spikes are skipped.
    """
    sizes = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
    start = 0
    while start < sd.N:
        cum = np.cumsum(sizes[start:])
        stop = start + max(1, int(np.searchsorted(cum, _BLOCK_SPIKES, side="right")))
        block = sizes[start:stop]
        if block.sum():
            times = np.concatenate(sd.train[start:stop])
            b = np.floor((times - sd.start_time) / bin_ms).astype(np.int64)
            np.clip(b, 0, nb - 1, out=b)
            yield start, stop, block, b
        start = stop


def binned_counts(sd: SpikeData, bin_ms: float) -> np.ndarray:
    """Spike counts per unit and bin, shape ``(N, n_bins)`` (int64).

    Bins are ``bin_ms`` (ms) wide from ``start_time`` (``sd.n_bins(bin_ms)`` of them); a spike
    at the very end counts in the last bin. Vectorised: one ``np.bincount`` per block of units.
    """
    nb = sd.n_bins(bin_ms)
    out = np.zeros((sd.N, nb), dtype=np.int64)
    for start, stop, sizes, b in _blocks(sd, bin_ms, nb):
        b += np.repeat(np.arange(stop - start, dtype=np.int64) * nb, sizes)
        out[start:stop] = np.bincount(b, minlength=(stop - start) * nb).reshape(-1, nb)
    return out


def population_counts(sd: SpikeData, bin_ms: float) -> np.ndarray:
    """Spike counts of all units together per bin of ``bin_ms`` (ms), shape ``(n_bins,)``."""
    nb = sd.n_bins(bin_ms)
    out = np.zeros(nb, dtype=np.int64)
    for _, _, _, b in _blocks(sd, bin_ms, nb):
        out += np.bincount(b, minlength=nb)
    return out


#: Tops of the population-rate axis: these times a power of ten (see :func:`rate_axis_top`).
RATE_TOPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def rate_axis_top(max_rate_Hz: float) -> float:
    """Top of the population-rate axis (spikes/s): the first of :data:`RATE_TOPS` times a power
    of ten at or above 1.05 x ``max_rate_Hz`` (at least 1). Round tops make few distinct rate
    axes in a batch, each drawn once per process and then reused (see :class:`_Overview`)."""
    need = max(float(max_rate_Hz) * 1.05, 1.0)
    decade = 10.0 ** math.floor(math.log10(need))
    for step in (*RATE_TOPS, 10.0):
        top = float(f"{step * decade:.12g}")  # 3.0 x 0.1 is 0.30000000000000004
        if top >= need:
            return top
    raise AssertionError("unreachable: 10 x decade > need")


def _format_ms(ms: float) -> str:
    """A duration or time for a title: ms below 1 s, s below 10 min, else min."""
    a = abs(ms)
    if a < 1000:
        return f"{ms:g} ms"
    if a < 600_000:
        return f"{ms / 1000:.4g} s"
    return f"{ms / 60_000:.4g} min"


def session_start_text(value: Any) -> str | None:
    """A session start time (ISO 8601 text or datetime) as title text, or None if unknown."""
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, str) and value.strip():
        return value.strip().replace("T", " ", 1)
    return None


def figure_title(name: str, st: RecordingStats, session_start_time: Any = None) -> str:
    """Two-line title: the name, then units (empty ones), spikes, duration and start time.

    ``session_start_time`` (ISO 8601 text or datetime), when known, follows the start time.
    """
    units = f"{st.n_units} unit{'s' if st.n_units != 1 else ''}"
    if st.n_empty_units:
        units += f" ({st.n_empty_units} empty)"
    session = session_start_text(session_start_time)
    return (
        f"{name}\n{units}, {st.n_spikes:,} spikes, duration {_format_ms(st.duration_ms)}, "
        f"start {_format_ms(st.start_time_ms)}" + (f" (session {session})" if session else "")
    )


def _check_args(name: Any, png_path: Any, **positive: Any) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise FigureError(f"name must be a non-empty string (the recording's name), got {name!r}")
    try:
        path = Path(os.fspath(png_path))
    except TypeError:
        raise FigureError(f"png_path must be a path, got {png_path!r}") from None
    if path.suffix.lower() != ".png":
        raise FigureError(f"{path}: the figure is a PNG; give a path ending in .png")
    for key, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise FigureError(f"{key} must be a number > 0, got {value!r}")
    return path


def _new_figure(width_in: float, height_in: float, dpi: float):
    """An Agg figure with a raster axes over a rate axes, and a narrow colorbar column.

    Margins are fixed in inches (no constrained layout: it would cost more than the drawing).
    """
    from matplotlib.figure import Figure

    from spikelab.report.agg import GlyphCachingCanvas

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    GlyphCachingCanvas(fig)
    grid = fig.add_gridspec(
        2,
        2,
        height_ratios=(3, 1),
        width_ratios=(60, 1),
        left=0.8 / width_in,
        right=1 - 0.55 / width_in,
        bottom=0.5 / height_in,
        top=1 - 0.85 / height_in,
        hspace=0.45 / height_in * 3,
        wspace=0.15 / width_in * 6,
    )
    ax_raster = fig.add_subplot(grid[0, 0])
    ax_rate = fig.add_subplot(grid[1, 0], sharex=ax_raster)
    cax = fig.add_subplot(grid[0, 1])
    fig.add_subplot(grid[1, 1]).set_axis_off()  # keeps both rows' x axes aligned
    return fig, ax_raster, ax_rate, cax


@dataclass(frozen=True)
class _Content:
    """Everything one recording's figure shows (computed before the figure is touched)."""

    mode: str
    n_units: int
    t_start: float  # s
    t_end: float  # s
    title: str
    raster_title: str
    ticks: tuple[np.ndarray, np.ndarray] | None  # (time s, unit index) of every spike
    rates: np.ndarray | None  # Hz per unit and bin (image mode)
    image_extent: tuple[float, float, float, float] | None
    vmax: float
    population: np.ndarray  # spikes/s per bin
    edges: np.ndarray  # s
    rate_bin_ms: float
    rate_top: float  # spikes/s at the top of the rate panel
    rate_title: str


class _Overview:
    """One figure and its artists, drawn again for each recording this process draws.

    Making a figure costs more than drawing it, so it is made once (per size and resolution)
    and each recording sets everything that varies: data, limits, ticks, titles, colour scale
    and which artists show. What depends on the layout only is drawn once and kept
    (matplotlib's blitting: the other artists are ``animated``, left out of ``canvas.draw()``
    and drawn over what is kept one by one, in the order a full draw uses):

    - the time axes and the rate panel's title, as a copy of the whole figure, per start, end
      and rate bin;
    - on it, the raster's unit axis per number of units, and the rate panel's axis per top
      rate (a whole number of spikes per bin: few values), each as the pixels it changes.

    Restoring them gives exactly the pixels drawing them would (the axes lie outside the
    panels, so the data drawn after them would not have covered them); the least recently
    used are dropped beyond :attr:`BACKGROUND_BYTES` and :attr:`AXIS_BYTES`. A new axis is
    drawn by matplotlib without the work it repeats within one axis (:func:`_draw_axis`).
    """

    #: Bytes of kept figures (RGBA: 2.4 MB at 1000 x 600 pixels, so 8 of that size).
    BACKGROUND_BYTES = 20_000_000
    #: Bytes of kept unit axes, and as many of kept rate axes (about 0.1 MB each).
    AXIS_BYTES = 20_000_000

    def __init__(self, width_in: float, height_in: float, dpi: float):
        from matplotlib.colors import PowerNorm

        self.dpi = dpi
        self.fig, self.ax, self.ax_rate, self.cax = _new_figure(width_in, height_in, dpi)
        self.canvas = self.fig.canvas
        ax, ax_rate = self.ax, self.ax_rate
        (self.ticks,) = ax.plot(
            [], [], linestyle="none", marker="|", markeredgewidth=0.6, color="black"
        )
        self.image = ax.imshow(
            np.zeros((1, 1)),
            aspect="auto",
            origin="lower",
            interpolation="antialiased",
            cmap="Greys",
            norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
        )
        colorbar = self.fig.colorbar(self.image, cax=self.cax)
        colorbar.set_label("rate (Hz)", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        self.no_spikes = ax.text(
            0.5, 0.5, "no spikes", transform=ax.transAxes, ha="center", va="center"
        )
        self.title = ax.set_title("", fontsize=9, y=1.0)  # y given: no search for room
        ax.set_ylabel("unit")
        ax.tick_params(labelbottom=False)
        self.stairs = ax_rate.stairs(
            [0.0], [0.0, 1.0], fill=True, color="tab:blue", alpha=0.8, linewidth=0
        )
        ax_rate.set_xlabel("time (s)")
        ax_rate.set_ylabel("spikes/s", fontsize=9)
        self.rate_title = ax_rate.set_title("", fontsize=9, y=1.0)
        self.suptitle = self.fig.suptitle("", fontsize=11, y=1 - 0.08 / height_in, va="top")
        # What each mode draws over the kept layout, in the order of a full draw.
        spines = [
            _Replayed(spine, axes) for axes in (ax, ax_rate) for spine in axes.spines.values()
        ]
        self.layers = {
            mode: [
                *{"ticks": [self.ticks], "image": [self.image], "empty": []}[mode],
                *spines[:4],
                *([self.no_spikes] if mode == "empty" else []),
                self.title,
                self.stairs,
                *spines[4:],
                *([self.cax] if mode == "image" else []),
                self.suptitle,
            ]
            for mode in ("ticks", "image", "empty")
        }
        kept = {ax.yaxis, ax_rate.yaxis}  # drawn once per layout (see _restore_layout)
        for artist in kept.union(*self.layers.values()):
            getattr(artist, "artist", artist).set_animated(True)
        self.limits: dict[str, Any] = {}  # the axes' limits (and unit ticks) last set
        self.backgrounds: dict[tuple, Any] = {}  # (start, end, rate title) -> (pixels, bytes)
        self.unit_axes: dict[tuple, Any] = {}  # (the same, units) -> (changed pixels, bytes)
        self.rate_axes: dict[tuple, Any] = {}  # (the same, top rate) -> (changed pixels, bytes)

    @staticmethod
    def _keep(cache: dict[tuple, Any], key: tuple, value: Any, size: int, limit: int) -> None:
        """Put ``value`` (``size`` bytes) last in ``cache``; drop the first beyond ``limit``."""
        cache[key] = (value, size)
        total = sum(n for _, n in cache.values())
        while total > limit and len(cache) > 1:
            total -= cache.pop(next(iter(cache)))[1]

    def _restore_layout(self, c: _Content, renderer) -> None:
        """Put the time axes, the unit axis and the rate axis of ``c`` in the canvas: each from
        what is kept, or drawn (and kept)."""
        pixels = np.asarray(self.canvas.buffer_rgba())
        key = (c.t_start, c.t_end, c.rate_title)
        kept = self.backgrounds.pop(key, None)
        if kept is None:
            self.canvas.draw()  # all but the animated artists
            background = pixels.copy()
        else:
            background = kept[0]
            np.copyto(pixels, background)
        self._keep(self.backgrounds, key, background, background.nbytes, self.BACKGROUND_BYTES)

        # Each axis as the pixels it changes on this background (so the two never mix).
        changes = []
        for cache, axis_key, axis in (
            (self.unit_axes, (*key, c.n_units), self.ax.yaxis),
            (self.rate_axes, (*key, c.rate_top), self.ax_rate.yaxis),
        ):
            kept = cache.pop(axis_key, None)
            if kept is None:
                _draw_axis(axis, renderer)
                change = _changed_pixels(pixels, background)
                rows, cols = change[0]
                pixels[rows, cols] = background[rows, cols]
            else:
                change = kept[0]
            size = change[1].nbytes + change[2].nbytes
            self._keep(cache, axis_key, change, size, self.AXIS_BYTES)
            changes.append(change)
        for (rows, cols), block, mask in changes:
            np.copyto(pixels[rows, cols], block, where=mask)

    def set_content(self, c: _Content) -> None:
        """Set every artist to show ``c``: data, limits, ticks, titles, which artists show."""
        from matplotlib.ticker import AutoLocator

        ax, ax_rate = self.ax, self.ax_rate
        n_rows = max(c.n_units, 1)
        shown = set(self.layers[c.mode])
        for artist in (self.ticks, self.image, self.no_spikes, self.cax):
            artist.set_visible(artist in shown)
        if c.ticks is not None:
            row_pt = ax.bbox.height * 72.0 / self.dpi / n_rows  # one unit's row, in points
            self.ticks.set_data(*c.ticks)
            self.ticks.set_markersize(max(1.0, min(0.8 * row_pt, 8.0)))
        if c.rates is not None:
            self.image.set_data(c.rates)
            self.image.set_extent(c.image_extent)
            self.image.norm.vmax = c.vmax  # the colorbar follows
        if not QUICK_DRAW:
            self.limits.clear()
        # Each limit set only when it changes: setting it again would change nothing but cost
        # ~0.2 ms (matplotlib's callbacks, shared axes, ticks).
        if self.limits.get("x") != (c.t_start, c.t_end):
            self.limits.pop("x", None)
            ax.set_xlim(c.t_start, c.t_end)
            self.limits["x"] = (c.t_start, c.t_end)
        if self.limits.get("units") != c.n_units:
            self.limits.pop("units", None)
            ax.set_ylim(-0.5, n_rows - 0.5)
            if c.n_units <= 20:
                ax.set_yticks(np.arange(c.n_units))
            else:
                locator = AutoLocator()
                locator.set_params(integer=True)
                ax.yaxis.set_major_locator(locator)
            self.limits["units"] = c.n_units
        if self.limits.get("rate") != c.rate_top:
            self.limits.pop("rate", None)
            ax_rate.set_ylim(0, c.rate_top)
            self.limits["rate"] = c.rate_top
        self.rate_title.set_text(c.rate_title)
        self.title.set_text(c.raster_title)
        self.stairs.set_data(c.population, c.edges)
        self.suptitle.set_text(c.title)

    def render(self, c: _Content) -> np.ndarray:
        """Draw ``c`` and return the figure's pixels (RGBA, rows from the top; a view)."""
        self.set_content(c)
        renderer = self.canvas.get_renderer()
        try:
            self._restore_layout(c, renderer)
            for artist in self.layers[c.mode]:
                artist.draw(renderer)
        finally:  # keep no recording's data in memory until the next one
            self.ticks.set_data([], [])
            self.image.set_data(np.zeros((1, 1)))
            self.stairs.set_data([0.0], [0.0, 1.0])
        return np.asarray(self.canvas.buffer_rgba())


class _Replayed:
    """An artist that draws at a place fixed by its axes' limits (a spine): drawn by
    matplotlib once per limits, then by giving the renderer the same paths again.

    ``draw`` records the renderer's ``draw_path`` calls of the artist's first drawing with
    these limits (the graphics context, a copy of the path, the transform frozen, the fill) and
    replays them later: the same calls draw the same pixels, without the ~0.1 ms of Python
    that places a spine from the limits and sets up its graphics context. The artist must
    draw with ``draw_path`` alone (a spine does) and change only with the limits.
    """

    #: Limits kept per artist (each a few small objects); the least recently used are dropped.
    MAX_KEPT = 256

    def __init__(self, artist: Any, axes: Any):
        self.artist, self.axes = artist, axes
        self.kept: dict[tuple, list] = {}

    def draw(self, renderer) -> None:
        if not QUICK_DRAW:
            self.artist.draw(renderer)
            return
        key = (id(renderer), self.axes.get_xlim(), self.axes.get_ylim())
        calls = self.kept.pop(key, None)
        if calls is None:
            calls = []
            draw_path = renderer.draw_path

            def record(gc, path, transform, rgbFace=None):
                calls.append((gc, path.deepcopy(), transform.frozen(), rgbFace))
                draw_path(gc, path, transform, rgbFace)

            renderer.draw_path = record
            try:
                self.artist.draw(renderer)
            finally:
                del renderer.draw_path
        else:
            for gc, path, transform, rgb_face in calls:
                renderer.draw_path(gc, path, transform, rgb_face)
        self.kept[key] = calls
        if len(self.kept) > self.MAX_KEPT:
            del self.kept[next(iter(self.kept))]


def _draw_axis(axis: Any, renderer: Any) -> None:
    """``axis.draw(renderer)``, with what matplotlib computes more than once while drawing an
    axis computed once: the ticks to draw (three times: to draw them, to place the axis label
    and for the spine's extent), the tick labels' boxes (twice) and each tick label's layout
    (to measure it, then to draw it). Nothing of the axis changes in between (only the
    axis label's position), so each repeat would give what the first gave."""
    if not QUICK_AXIS:
        axis.draw(renderer)
        return
    update_ticks, label_bboxes = axis._update_ticks, axis._get_ticklabel_bboxes
    first_ticks: list = []
    first_bboxes: dict[tuple, Any] = {}
    layouts: dict[tuple, Any] = {}
    patched: list = []

    def ticks_once():
        if not first_ticks:
            first_ticks.append(update_ticks())
            for tick in first_ticks[0]:
                for label in (tick.label1, tick.label2):
                    if "_get_layout" not in vars(label):
                        label._get_layout = _layout_once(label, layouts)
                        patched.append(label)
        return first_ticks[0]

    def bboxes_once(ticks, renderer):
        key = (id(ticks), id(renderer))
        if key not in first_bboxes:
            first_bboxes[key] = (ticks, label_bboxes(ticks, renderer))
        return first_bboxes[key][1]

    axis._update_ticks, axis._get_ticklabel_bboxes = ticks_once, bboxes_once
    try:
        axis.draw(renderer)
    finally:
        del axis._update_ticks, axis._get_ticklabel_bboxes
        for label in patched:
            del label._get_layout


def _layout_once(text: Any, layouts: dict[tuple, Any]):
    """``text._get_layout``, computed once per renderer, string and resolution (drawing the
    axis changes nothing else of ``text``)."""
    get_layout = type(text)._get_layout

    def layout(renderer):
        key = (id(text), id(renderer), text.get_text(), text.get_figure(root=True).dpi)
        if key not in layouts:
            layouts[key] = (renderer, get_layout(text, renderer))
        return layouts[key][1]

    return layout


def _changed_pixels(pixels: np.ndarray, before: np.ndarray):
    """``((rows, columns), block, mask)``: the smallest block of ``pixels`` holding every pixel
    that differs from ``before`` (slices), its pixels (a copy) and which of them differ."""
    if pixels.flags.c_contiguous and before.flags.c_contiguous:  # a pixel as one uint32
        changed = pixels.view(np.uint32)[..., 0] != before.view(np.uint32)[..., 0]
    else:
        changed = np.any(pixels != before, axis=2)
    # counting is ~15x quicker than any() along an axis; columns only within the rows changed
    rows = np.flatnonzero(np.count_nonzero(changed, axis=1))
    if not rows.size:
        region = (slice(0, 0), slice(0, 0))
    else:
        row_span = slice(int(rows[0]), int(rows[-1]) + 1)
        cols = np.flatnonzero(np.count_nonzero(changed[row_span], axis=0))
        region = (row_span, slice(int(cols[0]), int(cols[-1]) + 1))
    return region, pixels[region].copy(), changed[region][..., np.newaxis]


_OVERVIEWS: dict[tuple[float, float, float], _Overview] = {}


def _overview(width_in: float, height_in: float, dpi: float) -> _Overview:
    """This process's figure of that size and resolution (one kept: a job uses one size)."""
    key = (float(width_in), float(height_in), float(dpi))
    overview = _OVERVIEWS.get(key)
    if overview is None:
        _OVERVIEWS.clear()
        overview = _OVERVIEWS[key] = _Overview(*key)
    return overview


def _save_png(rgba: np.ndarray, path: Path) -> int:
    from spikelab.report.agg import png_bytes

    data = png_bytes(rgba)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _figure_content(
    sd: SpikeData,
    name: str,
    *,
    max_tick_spikes: int,
    max_tick_units: int,
    max_bins: int,
    max_rate_bins: int,
    session_start_time: Any,
) -> tuple[_Content, RecordingStats]:
    """What the figure of ``sd`` shows (see :func:`draw_recording_figure`), and its stats."""
    stats = recording_stats(sd)
    t_start = sd.start_time / 1000.0  # the axes are in s
    t_end = t_start + max(sd.length, 1.0) / 1000.0
    if stats.n_spikes == 0:
        mode = "empty"
    elif stats.n_spikes > max_tick_spikes or stats.n_units > max_tick_units:
        mode = "image"
    else:
        mode = "ticks"

    rate_bin_ms = choose_bin_ms(sd.length, int(max_rate_bins))
    population = population_counts(sd, rate_bin_ms) / (rate_bin_ms / 1000.0)
    n_rows = max(stats.n_units, 1)
    ticks = rates = extent = None
    vmax = 1.0
    if mode == "ticks":
        idces, times = _flat_spikes(sd)
        ticks = (times / 1000.0, idces)
        raster_title = f"spike raster, one tick per spike ({stats.n_spikes:,})"
    elif mode == "image":
        bin_ms = choose_bin_ms(sd.length, int(max_bins))
        rates = binned_counts(sd, bin_ms) / (bin_ms / 1000.0)  # Hz per unit and bin
        positive = rates[rates > 0]
        vmax = float(np.percentile(positive, 99)) if positive.size else 1.0
        extent = (t_start, t_start + rates.shape[1] * bin_ms / 1000.0, -0.5, n_rows - 0.5)
        raster_title = (
            f"firing rate per unit in {_format_ms(bin_ms)} bins "
            f"({stats.n_spikes:,} spikes, too many to draw one by one)"
        )
    else:
        raster_title = "spike raster"
    if session_start_time is None:
        session_start_time = sd.metadata.get("session_start_time")
    content = _Content(
        mode=mode,
        n_units=stats.n_units,
        t_start=t_start,
        t_end=t_end,
        title=figure_title(name, stats, session_start_time),
        raster_title=raster_title,
        ticks=ticks,
        rates=rates,
        image_extent=extent,
        vmax=vmax,
        population=population,
        # Regular bins; the last may reach past the end (clipped by the x limits).
        edges=t_start + np.arange(population.size + 1) * (rate_bin_ms / 1000.0),
        rate_bin_ms=rate_bin_ms,
        rate_top=rate_axis_top(float(population.max(initial=0.0))),
        rate_title=f"population rate, all units, {_format_ms(rate_bin_ms)} bins",
    )
    return content, stats


def draw_recording_figure(
    sd: SpikeData,
    name: str,
    png_path: str | os.PathLike,
    *,
    max_tick_spikes: int = MAX_TICK_SPIKES,
    max_tick_units: int = MAX_TICK_UNITS,
    max_bins: int = MAX_BINS,
    max_rate_bins: int = MAX_RATE_BINS,
    session_start_time: str | datetime.datetime | None = None,
    width_in: float = 10.0,
    height_in: float = 6.0,
    dpi: float = 100.0,
) -> FigureResult:
    """Draw the overview figure of ``sd`` to ``png_path`` (PNG, written atomically).

    Parameters
    ----------
    sd : SpikeData
        The recording (times in ms).
    name : str
        Recording name, the first line of the title (the second gives units, empty units,
        spikes, duration and start time).
    png_path : path
        Output file, ending in ``.png``; parent folders are created.
    max_tick_spikes, max_tick_units : int
        Up to these many spikes and units, one tick per spike; above either, a binned rate
        image (Hz per unit and bin).
    max_bins, max_rate_bins : int
        At most this many time bins for the rate image and for the population rate; a bin
        width is a round number of ms (:func:`choose_bin_ms`), at least 1 ms.
    session_start_time : str or datetime, optional
        Wall-clock start of the session (ISO 8601), shown after the start time; default:
        ``sd.metadata["session_start_time"]`` when it holds one.
    width_in, height_in : float
        Figure size (inches).
    dpi : float
        Resolution (dots per inch); 10 x 6 in at 100 dpi gives 1000 x 600 pixels.

    Returns
    -------
    FigureResult
        Path, mode (``ticks``, ``image`` or ``empty``), bytes, seconds, the population
        rate's bin width (ms) and the recording's :class:`RecordingStats`.
    """
    t0 = time.perf_counter()
    if not isinstance(sd, SpikeData):
        raise FigureError(f"sd must be a SpikeData, got {type(sd).__name__}")
    path = _check_args(
        name,
        png_path,
        max_tick_spikes=max_tick_spikes,
        max_tick_units=max_tick_units,
        max_bins=max_bins,
        max_rate_bins=max_rate_bins,
        width_in=width_in,
        height_in=height_in,
        dpi=dpi,
    )
    content, stats = _figure_content(
        sd,
        name,
        max_tick_spikes=max_tick_spikes,
        max_tick_units=max_tick_units,
        max_bins=max_bins,
        max_rate_bins=max_rate_bins,
        session_start_time=session_start_time,
    )
    size = _save_png(_overview(width_in, height_in, dpi).render(content), path)
    return FigureResult(
        path=os.fspath(path),
        mode=content.mode,
        bytes=size,
        seconds=time.perf_counter() - t0,
        bin_ms=content.rate_bin_ms,
        stats=stats,
    )


def draw_failure_figure(
    name: str,
    png_path: str | os.PathLike,
    message: str,
    *,
    width_in: float = 10.0,
    height_in: float = 6.0,
    dpi: float = 100.0,
) -> int:
    """Write a PNG that says ``name`` could not be drawn and why; return its size (bytes)."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = _check_args(name, png_path, width_in=width_in, height_in=height_in, dpi=dpi)
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    text = "\n".join(textwrap.wrap(str(message), 100)[:12])
    fig.text(0.5, 0.9, f"{name}: could not be read", ha="center", fontsize=13, color="darkred")
    fig.text(0.05, 0.8, text, ha="left", va="top", fontsize=9, family="monospace")
    canvas.draw()
    return _save_png(np.asarray(canvas.buffer_rgba()), path)


def _flat_spikes(sd: SpikeData) -> tuple[np.ndarray, np.ndarray]:
    """(unit index, time ms) of every spike, unit after unit (no sorting needed to draw)."""
    sizes = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
    times = np.concatenate(sd.train) if sd.N else np.zeros(0)
    return np.repeat(np.arange(sd.N, dtype=np.int64), sizes), times

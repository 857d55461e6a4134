"""One overview figure per recording: spike raster (or binned rate image) over the population rate.

A recording with few spikes and units is drawn as a raster, one thin tick per spike. A long or
dense one (more than ``max_tick_spikes`` spikes or ``max_tick_units`` units) is drawn as an
image of each unit's firing rate in time bins instead, so that a 10-million-spike recording
takes well under a second to draw and gives a PNG of a few hundred kB, not millions of ticks.
Under either, the population rate (all units' spikes per second) in the same bins.

matplotlib is imported inside :func:`draw_recording_figure` only, and drawn with the Agg canvas
directly (no pyplot, no global figure state), so this module is cheap to import.
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
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


def _save(fig, path: Path) -> int:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path.stat().st_size


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
    stats = recording_stats(sd)
    t_start = sd.start_time / 1000.0  # the axes are in s
    t_end = t_start + max(sd.length, 1.0) / 1000.0
    if stats.n_spikes == 0:
        mode = "empty"
    elif stats.n_spikes > max_tick_spikes or stats.n_units > max_tick_units:
        mode = "image"
    else:
        mode = "ticks"

    fig, ax, ax_rate, cax = _new_figure(width_in, height_in, dpi)
    n_rows = max(stats.n_units, 1)
    if mode == "ticks":
        idces, times = _flat_spikes(sd)
        row_pt = ax.bbox.height * 72.0 / dpi / n_rows  # height of one unit's row, in points
        ax.plot(
            times / 1000.0,
            idces,
            linestyle="none",
            marker="|",
            markersize=max(1.0, min(0.8 * row_pt, 8.0)),
            markeredgewidth=0.6,
            color="black",
        )
        cax.set_axis_off()
        ax.set_title(f"spike raster, one tick per spike ({stats.n_spikes:,})", fontsize=9)
    elif mode == "image":
        from matplotlib.colors import PowerNorm

        bin_ms = choose_bin_ms(sd.length, int(max_bins))
        rates = binned_counts(sd, bin_ms) / (bin_ms / 1000.0)  # Hz per unit and bin
        positive = rates[rates > 0]
        vmax = float(np.percentile(positive, 99)) if positive.size else 1.0
        image = ax.imshow(
            rates,
            aspect="auto",
            origin="lower",
            interpolation="antialiased",
            cmap="Greys",
            norm=PowerNorm(0.5, vmin=0.0, vmax=vmax),
            extent=(t_start, t_start + rates.shape[1] * bin_ms / 1000.0, -0.5, n_rows - 0.5),
        )
        colorbar = fig.colorbar(image, cax=cax)
        colorbar.set_label("rate (Hz)", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        ax.set_title(
            f"firing rate per unit in {_format_ms(bin_ms)} bins "
            f"({stats.n_spikes:,} spikes, too many to draw one by one)",
            fontsize=9,
        )
    else:
        cax.set_axis_off()
        ax.text(0.5, 0.5, "no spikes", transform=ax.transAxes, ha="center", va="center")
        ax.set_title("spike raster", fontsize=9)
    ax.set_xlim(t_start, t_end)
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_ylabel("unit")
    ax.tick_params(labelbottom=False)
    if stats.n_units <= 20:
        ax.set_yticks(np.arange(stats.n_units))
    else:
        ax.yaxis.get_major_locator().set_params(integer=True)

    # Population rate: regular bins; the last may reach past the end (clipped by the x limits).
    rate_bin_ms = choose_bin_ms(sd.length, int(max_rate_bins))
    population = population_counts(sd, rate_bin_ms) / (rate_bin_ms / 1000.0)
    edges = t_start + np.arange(population.size + 1) * (rate_bin_ms / 1000.0)
    ax_rate.stairs(population, edges, fill=True, color="tab:blue", alpha=0.8, linewidth=0)
    ax_rate.set_ylim(0, max(float(population.max(initial=0.0)) * 1.05, 1.0))
    ax_rate.set_xlabel("time (s)")
    ax_rate.set_ylabel("spikes/s", fontsize=9)
    ax_rate.set_title(f"population rate, all units, {_format_ms(rate_bin_ms)} bins", fontsize=9)
    if session_start_time is None:
        session_start_time = sd.metadata.get("session_start_time")
    title = figure_title(name, stats, session_start_time)
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / height_in, va="top")
    size = _save(fig, path)
    return FigureResult(
        path=os.fspath(path),
        mode=mode,
        bytes=size,
        seconds=time.perf_counter() - t0,
        bin_ms=rate_bin_ms,
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
    FigureCanvasAgg(fig)
    text = "\n".join(textwrap.wrap(str(message), 100)[:12])
    fig.text(0.5, 0.9, f"{name}: could not be read", ha="center", fontsize=13, color="darkred")
    fig.text(0.05, 0.8, text, ha="left", va="top", fontsize=9, family="monospace")
    return _save(fig, path)


def _flat_spikes(sd: SpikeData) -> tuple[np.ndarray, np.ndarray]:
    """(unit index, time ms) of every spike, unit after unit (no sorting needed to draw)."""
    sizes = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
    times = np.concatenate(sd.train) if sd.N else np.zeros(0)
    return np.repeat(np.arange(sd.N, dtype=np.int64), sizes), times

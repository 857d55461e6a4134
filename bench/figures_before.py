"""The report figure as drawn before issue #16, kept for ``bench_figures.py`` to time side by
side with :func:`spikelab.report.figures.draw_recording_figure`: a new matplotlib figure per
recording, saved with ``savefig`` (PIL's PNG encoder at its default level). Same arguments, same
result, same pixels.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import numpy as np

from spikelab.formats.atomic import atomic_file
from spikelab.report.figures import (
    MAX_BINS,
    MAX_RATE_BINS,
    MAX_TICK_SPIKES,
    MAX_TICK_UNITS,
    FigureError,
    FigureResult,
    _check_args,
    _flat_spikes,
    _format_ms,
    binned_counts,
    choose_bin_ms,
    figure_title,
    population_counts,
    recording_stats,
)
from spikelab.spikedata.spikedata import SpikeData


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

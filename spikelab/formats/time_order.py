"""Every spike of a recording in global time order, window by window.

Spike trains are time-sorted per unit; formats such as KiloSort/Phy want all spikes of all
units in one time-sorted sequence, with the unit of each. Sorting them at once needs several
arrays of every spike; here time windows of about :data:`WINDOW_SPIKES` spikes are gathered
from every unit and sorted alone (with 32-bit keys and 16-bit radix passes when the times are
integer samples), so memory stays bounded and the sort stays in cache. The order equals a
stable sort of the unit-major spikes by time: ties stay in unit order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from spikelab.formats.streaming import convert_pieces
from spikelab.formats.time_units import ms_to_unit

__all__ = ["WINDOW_SPIKES", "ascending_trains", "time_ordered"]

WINDOW_SPIKES = 1 << 17  # spikes per time window of the global sort (sorted in cache)


def ascending_trains(trains: list[np.ndarray]) -> list[np.ndarray]:
    """``trains`` with each unit in ascending order (a sorted copy of a unit that is not)."""
    return [t if _ascending(t) else np.sort(t) for t in trains]


def time_ordered(
    trains: list[np.ndarray], n: int, unit: str, fs: float, offset: int, *, ascending=False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All ``n`` spikes as (times in ``unit``, + ``offset`` for samples; int32 unit index), in
    the order of a stable sort of the unit-major spikes by time (ties in unit order).

    Yielded window by window (views of reused buffers): each time window gathers its spikes
    from every unit (unit-major) and is sorted alone. The spikes at a window's last time wait
    for the next window, which may hold more spikes at that time from lower units.
    """
    if not ascending:  # True: the caller passed :func:`ascending_trains`
        trains = ascending_trains(trains)
    bits = max(len(trains) - 1, 0).bit_length()
    packed = unit == "samples" and _packable(trains, fs, offset, bits)
    bounds = _window_bounds(trains, n)
    lo, last = bounds[:, 0], bounds.shape[1] - 1
    scratch = [np.zeros(0), np.zeros(0, dtype=np.int64)]
    for k in range(1, last + 1):
        hi = bounds[:, k]
        window = _gather(trains, lo, hi, unit, fs, offset, scratch)
        if window is None:
            continue
        times, index = _sort_packed(*window, bits) if packed else _sort_stable(*window)
        lo = hi
        if k < last:
            cut = int(np.searchsorted(times, times[-1]))
            lo = hi - np.bincount(index[cut:], minlength=len(trains))
            times, index = times[:cut], index[:cut]
        yield times, index


def _gather(
    trains: list[np.ndarray], lo, hi, unit: str, fs: float, offset: int, scratch: list
) -> tuple[np.ndarray, np.ndarray] | None:
    """The spikes ``trains[u][lo[u]:hi[u]]`` of all units, unit-major, as (times converted to
    ``unit``, + ``offset`` for samples; int32 unit index), or None when there is none.
    ``scratch`` holds the float64 and int64 buffers, grown here when too small."""
    active = np.flatnonzero(hi > lo)
    if not active.size:
        return None
    lens = (hi - lo)[active]
    size = int(lens.sum())
    if scratch[0].size < size:
        scratch[:] = np.empty(size), np.empty(size, dtype=np.int64)
    spans = zip(active.tolist(), lo[active].tolist(), hi[active].tolist(), strict=True)
    pieces = [trains[u][a:b] for u, a, b in spans]
    values = convert_pieces(pieces, unit, fs, *scratch, total=size)
    if unit == "samples" and offset:
        values += offset
    return values, np.repeat(active.astype(np.int32), lens)


def _ascending(t: np.ndarray) -> bool:
    return t.size < 2 or bool((t[1:] >= t[:-1]).all())


def _packable(trains: list[np.ndarray], fs: float, offset: int, bits: int) -> bool:
    """Whether every sample (+ offset) fits in 0 <= s < 2**(63 - bits), beside a unit index."""
    firsts = [t[0] for t in trains if t.size]
    if not firsts:
        return True
    last = max(t[-1] for t in trains if t.size)  # rounding is monotonic: extremes from extremes
    lo, hi = ms_to_unit([min(firsts), last], "samples", fs) + offset
    return lo >= 0 and hi < 1 << (63 - bits)


def _window_bounds(trains: list[np.ndarray], n: int, size: int | None = None) -> np.ndarray:
    """(N, W + 1) int64: unit u's spikes in time window k are ``trains[u][b[u, k]:b[u, k+1]]``.

    Windows hold about ``size`` spikes: their edges (ms) are quantiles of a subsample.
    """
    size = size or WINDOW_SPIKES
    count = -(-n // size)
    edges = np.zeros(0)
    if count > 1:
        step = max(1, n // (count * 64))
        sample = np.sort(np.concatenate([t[::step] for t in trains]))
        edges = np.unique(sample[np.arange(1, count) * sample.size // count])
    bounds = np.zeros((len(trains), edges.size + 2), dtype=np.int64)
    for u, t in enumerate(trains):
        bounds[u, 1:-1] = np.searchsorted(t, edges)
        bounds[u, -1] = t.size
    return bounds


def _sort_stable(values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, kind="stable")
    return values[order], index[order]


def _sort_packed(
    samples: np.ndarray, index: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort int64 ``samples`` (overwritten) with their unit ``index`` as one unsigned key
    ``(sample - lowest) << bits | unit``: the key order is (sample, unit), so any sort of the
    keys gives the stable order. 32-bit keys when the window's span allows (faster)."""
    low = int(samples.min())
    span = (int(samples.max()) - low + 1) << bits
    samples -= low
    samples <<= bits
    samples |= index
    keys = _radix_sort(samples.astype(np.uint32 if span <= 1 << 32 else np.uint64), span)
    index = (keys & ((1 << bits) - 1)).astype(np.int32)
    keys >>= bits
    samples[...] = keys
    samples += low
    return samples, index


def _radix_sort(keys: np.ndarray, span: int) -> np.ndarray:
    """Sorted unsigned ``keys`` (< ``span``), by 16-bit least-significant-digit passes:
    numpy's stable argsort of uint16 is a counting sort, far faster here than comparison
    sorts. ``keys`` is overwritten; the result is it or a new array."""
    other = np.empty_like(keys)
    digit = np.empty(keys.size, dtype=np.uint16)
    shift = 0
    while (span - 1) >> shift:
        np.right_shift(keys, shift, out=other)
        digit[...] = other  # the low 16 bits
        np.take(keys, np.argsort(digit, kind="stable"), out=other)
        keys, other = other, keys
        shift += 16
    return keys

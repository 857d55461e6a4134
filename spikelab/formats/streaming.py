"""Spike times streamed in blocks: the unit-major concatenation of every unit's spike times,
converted from ms and written block by block, so no full-size temporary is ever held."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from spikelab.formats.errors import ExportError
from spikelab.formats.time_units import TIME_UNITS

__all__ = [
    "BLOCK_SPIKES",
    "convert_pieces",
    "flat_blocks",
    "converted_blocks",
    "unit_index_blocks",
    "write_hdf5_block",
    "write_hdf5_times",
]

BLOCK_SPIKES = 1 << 19  # spikes per block when streaming flat arrays (4 MB of float64)


def convert_pieces(
    pieces: Sequence[np.ndarray],
    unit: str,
    fs_Hz: float | None,
    buf: np.ndarray,
    ints: np.ndarray,
    offset_ms: float = 0.0,
    total: int | None = None,
) -> np.ndarray:
    """The concatenation of ``pieces`` (float64 ms) converted to ``unit``, bit-identical to
    ``ms_to_unit(times - offset_ms, unit)`` (``offset_ms``: s only), built in ``buf``
    (float64) and, for samples, ``ints`` (int64); returns a view of one of them. ``total``:
    the number of spikes in ``pieces``, if known.

    Long pieces are converted as they are copied (one pass over the data); many short ones
    are copied first, then converted at once (a numpy call costs ~1 us per piece).
    """
    if unit not in TIME_UNITS:
        raise ExportError(f"unknown time unit {unit!r}")
    if total is None:
        total = sum(p.size for p in pieces)
    out = buf[:total]
    if len(pieces) * 4096 > total:
        if pieces:
            np.concatenate(pieces, out=out)
        _scale_ms(out, unit, fs_Hz, offset_ms, out)
    else:
        at = 0
        for piece in pieces:
            _scale_ms(piece, unit, fs_Hz, offset_ms, out[at : at + piece.size])
            at += piece.size
    if unit != "samples":
        return out
    values = ints[:total]
    values[...] = np.rint(out, out=out)  # the same unsafe cast as astype(np.int64)
    return values


def _scale_ms(src: np.ndarray, unit: str, fs_Hz, offset_ms: float, out: np.ndarray) -> None:
    """``out = src`` converted to s (``(src - offset_ms) / 1000``), ms, or samples before
    rounding (``src * fs_Hz / 1000``), with the operations of :func:`ms_to_unit`."""
    if unit == "s":
        if offset_ms:
            src = np.subtract(src, offset_ms, out=out)
        np.divide(src, 1000.0, out=out)
    elif unit == "samples":
        np.multiply(src, fs_Hz / 1000.0, out=out)
    elif src is not out:
        out[...] = src


def flat_blocks(
    trains: Sequence[np.ndarray], block: int | None = None
) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """Split the unit-major concatenation of ``trains`` into blocks of ``block`` spikes
    (default :data:`BLOCK_SPIKES`).

    Yields ``(start, pieces)``: ``pieces`` are ``(unit index, view)`` pairs in unit order whose
    concatenation is ``flat[start:start + sum of sizes]``. Every block but the last holds
    exactly ``block`` spikes; a unit longer than the room left is split; empty units add
    nothing and no empty block is yielded.
    """
    block = block or BLOCK_SPIKES
    start, size, pieces = 0, 0, []
    for unit, train in enumerate(trains):
        lo, n = 0, len(train)
        while lo < n:
            take = min(block - size, n - lo)
            pieces.append((unit, train[lo : lo + take]))
            lo += take
            size += take
            if size == block:
                yield start, pieces
                start, size, pieces = start + size, 0, []
    if pieces:
        yield start, pieces


def converted_blocks(
    trains: Sequence[np.ndarray],
    unit: str,
    fs_Hz: float | None = None,
    block: int | None = None,
    offset_ms: float = 0.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, values)``: ``ms_to_unit(np.concatenate(trains), unit, fs_Hz)[start:]``
    block by block (see :func:`flat_blocks`; ``offset_ms`` as in :func:`convert_pieces`),
    values bit-identical to :func:`ms_to_unit`.

    ``values`` lives in a buffer that the next block reuses, so the whole concatenation is
    never held in memory: write each block out before advancing.
    """
    buf = ints = None
    for start, pieces in flat_blocks(trains, block):
        if buf is None:  # the first block is the largest
            size = sum(p.size for _, p in pieces)
            buf = np.empty(size, dtype=np.float64)
            ints = np.empty(size if unit == "samples" else 0, dtype=np.int64)
        views = [p for _, p in pieces]
        yield start, convert_pieces(views, unit, fs_Hz, buf, ints, offset_ms)


def unit_index_blocks(
    trains: Sequence[np.ndarray], block: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, index)``: the unit index (int64) of every spike, unit-major, block by
    block like :func:`converted_blocks` (``index`` is a reused buffer)."""
    buf = None
    for start, pieces in flat_blocks(trains, block):
        if buf is None:
            buf = np.empty(sum(p.size for _, p in pieces), dtype=np.int64)
        size = 0
        for unit, piece in pieces:
            buf[size : size + piece.size] = unit
            size += piece.size
        yield start, buf[:size]


def write_hdf5_block(dset, start: int, values: np.ndarray) -> None:
    """``dset[start:start + values.size] = values`` for a 1-D h5py dataset, through h5py's
    low-level API (less overhead per call); ``values``: contiguous, of the dataset's dtype."""
    from h5py import h5s

    space = dset.id.get_space()
    space.select_hyperslab((start,), (values.size,))
    dset.id.write(h5s.create_simple((values.size,)), space, values)


def write_hdf5_times(dset, trains, unit: str, fs_Hz=None, offset_ms: float = 0.0) -> None:
    """Fill the 1-D dataset ``dset`` with the unit-major spike times converted to ``unit``
    (see :func:`converted_blocks`), block by block; blocks of a chunked dataset hold whole
    chunks, so no chunk is written twice."""
    block = BLOCK_SPIKES
    if dset.chunks:
        block = max(1, block // dset.chunks[0]) * dset.chunks[0]
    for start, values in converted_blocks(trains, unit, fs_Hz, block, offset_ms):
        write_hdf5_block(dset, start, values)

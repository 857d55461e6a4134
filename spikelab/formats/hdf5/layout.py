"""What an HDF5 file written by SpikeLab holds: the four styles, and the block sizes and limits
the writer and the reader share."""

__all__ = [
    "HDF5_STYLES",
    "RASTER_MAX_CELLS",
    "RASTER_BLOCK_BYTES",
    "RASTER_READ_MAX_BYTES",
    "RASTER_DECODE_SPIKES",
]

HDF5_STYLES = ("ragged", "raster", "group", "paired")
#: Default of ``raster_max_cells``: the largest raster (units x bins) the exporter writes.
RASTER_MAX_CELLS = 1 << 36
RASTER_BLOCK_BYTES = 32 * 1024 * 1024  # dense bytes per row block while writing
RASTER_DECODE_SPIKES = 1 << 27  # a raster read decodes at most this + 129 spikes per file byte
RASTER_READ_MAX_BYTES = 256 * 1024 * 1024  # dense bytes read at once before columns are split

"""The SpikeData class, importable as ``spikelab.spikedata.SpikeData``."""

from spikelab.spikedata.spikedata import InvalidSpikeDataError, SpikeData

__all__ = ["SpikeData", "InvalidSpikeDataError"]

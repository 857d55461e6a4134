"""Alias module: SpikeLab's docs name the class ``spikelab.spikedata.spike_data.SpikeData``."""

from spikelab.spikedata.spikedata import SpikeData

__all__ = ["SpikeData"]

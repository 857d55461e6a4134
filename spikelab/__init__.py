"""spikelab: export pickled SpikeData recordings to HDF5, NWB, KiloSort/Phy and pickle."""

__version__ = "0.2.0"


def __getattr__(name):
    # Lazy so that `import spikelab.data_loaders...` stays light.
    if name == "SpikeData":
        from spikelab.spikedata import SpikeData

        return SpikeData
    raise AttributeError(name)

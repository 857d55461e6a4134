"""Placeholder while the nwb module is being written (replaced in this session)."""


def _todo(*args, **kwargs):
    raise NotImplementedError("nwb exporter not written yet")


export_spikedata_to_nwb = load_spikedata_from_nwb = _todo

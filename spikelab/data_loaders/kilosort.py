"""Placeholder while the kilosort module is being written (replaced in this session)."""


def _todo(*args, **kwargs):
    raise NotImplementedError("kilosort exporter not written yet")


export_spikedata_to_kilosort = load_spikedata_from_kilosort = _todo

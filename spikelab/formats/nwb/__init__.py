"""NWB: :mod:`~spikelab.formats.nwb.write` (schema-valid NWB 2.x through pynwb),
:mod:`~spikelab.formats.nwb.read` (pynwb or h5py), the keyword checks in
:mod:`~spikelab.formats.nwb.options`, what SpikeLab keeps beyond the schema in
:mod:`~spikelab.formats.nwb.layout`, SpikeLab's non-NWB plain layout in
:mod:`~spikelab.formats.nwb.plain`, and the registry entry."""

from spikelab.formats.nwb.read import load_spikedata_from_nwb
from spikelab.formats.nwb.write import export_spikedata_to_nwb
from spikelab.formats.registry import Format, ResourceModel, pick

__all__ = ["export_spikedata_to_nwb", "load_spikedata_from_nwb", "FORMAT"]


class NWBFormat(Format):
    """An NWB file per recording (``results/nwb/<recording>.nwb``), read back through h5py
    (inputs of other writers through pynwb)."""

    name = "nwb"
    description = "NWB 2.x file (Units table), schema-valid, written by pynwb"
    extension = ".nwb"
    option_keys = (
        "spike_times_dataset",
        "spike_times_index_dataset",
        "group",
        "identifier",
        "session_description",
        "session_start_time",
        "subject_id",
        "species",
        "sex",
        "age",
        "lab",
        "institution",
        "experimenter",
        "electrode_location",
        "compression",
    )
    reader_keys = ("spike_times_dataset", "spike_times_index_dataset", "group")
    #: Per-recording NWB fields a sample sheet may carry (writer keywords).
    sheet_columns = (
        "subject_id",
        "species",
        "sex",
        "age",
        "session_start_time",
        "session_description",
        "electrode_location",
    )
    # pynwb adds ~150 MB to the interpreter; building the NWB objects takes twice as long.
    resources = ResourceModel(base_mem_mb=500, runtime_factor=2.0)

    def writer(self):
        return export_spikedata_to_nwb

    def reader(self):
        return load_spikedata_from_nwb

    def time_unit(self, options):
        return "s"

    def uses_fs(self, options):
        return True  # Units.resolution = 1/fs

    def writer_kwargs(self, options, recording, fs_Hz):
        """``{recording}`` in a text option becomes the recording's name."""
        kwargs = {
            k: v.replace("{recording}", recording) if isinstance(v, str) else v
            for k, v in options.items()
        }
        kwargs["fs_Hz"] = fs_Hz
        return kwargs

    def reader_kwargs(self, options, fs_Hz, *, pickle_loading=None):
        """Our own files are verified through h5py: it reads exactly what pynwb reads
        (``tests/test_nwb_readers_agree.py``; pynwb still opens every file in the tests) in
        about a fifth of the time."""
        return {**super().reader_kwargs(options, fs_Hz), "prefer_pynwb": False}

    def own_output_kwargs(self, written):
        """The reader skips its whole-file check when the file it opens is exactly
        ``written`` (see ``load_spikedata_from_nwb``'s ``own_output``)."""
        return {"own_output": written}

    input_suffixes = (".nwb",)
    input_keys = ("spike_times_dataset", "spike_times_index_dataset", "group")

    def input_kwargs(self, path, read_options, fs_Hz, default_fs_Hz, *, pickle_loading=None):
        return {**pick(read_options, self.input_keys), "prefer_pynwb": True}


FORMAT = NWBFormat()

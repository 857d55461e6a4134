# Input discovery, batching, targets and the helpers the rules call. All logic lives in
# spikelab.workflow; this file only wires the validated config to it.

from snakemake.exceptions import WorkflowError

from spikelab.workflow import WorkflowConfigError
from spikelab.workflow.batches import export_mem_mb, export_runtime_min, plan_batches
from spikelab.workflow.inputs import NAME_PATTERN, discover_recordings
from spikelab.workflow.targets import RESULTS, selected_targets, targets_from_config


wildcard_constraints:
    recording=NAME_PATTERN,


try:
    RECORDINGS = discover_recordings(config["inputs"])
    TARGETS = targets_from_config(config)
    SELECTED = selected_targets(config, TARGETS)
except WorkflowConfigError as exc:
    raise WorkflowError(str(exc)) from None

BATCHES = plan_batches(RECORDINGS, config["batch_size"])
CONDA_ENV = "../envs/spikelab.yaml"


def export_outputs(target, batch):
    """Output paths of one export job (folders flagged with directory())."""
    paths = [target.output(name) for name in batch.names]
    return [directory(p) for p in paths] if target.is_dir else paths


def exported_files(target, batch):
    """The same paths, as plain inputs of the verify job."""
    return [target.output(name) for name in batch.names]


def recordings_param(target, batch):
    """(name, sample-sheet fs_Hz) per recording; fs only where the target uses it."""
    return [(r.name, r.fs_Hz if target.uses_fs else None) for r in batch.recordings]


def fs_param(target):
    """The config's default fs_Hz (Hz) for targets that use a sampling rate, else None."""
    return config["fs_Hz"] if target.uses_fs else None


def verify_results(targets):
    """Every verify JSON of ``targets``."""
    return [t.verify_output(b.key) for t in targets for b in BATCHES]


def mem_mb_for(fmt):
    """Resource function: memory (MB) of a batch job of format ``fmt``, from its input sizes."""

    def mem_mb(wildcards, input, attempt):
        return export_mem_mb(fmt, input.size_files_mb, attempt)

    return mem_mb


def runtime_for(fmt):
    """Resource function: wall time (min) of a batch job of format ``fmt``."""

    def runtime(wildcards, input, attempt):
        return export_runtime_min(fmt, input.size_files_mb, attempt)

    return runtime

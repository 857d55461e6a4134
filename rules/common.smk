# Input discovery, batching, targets and the helpers the rules call. All logic lives in
# spikelab.workflow; this file only wires the validated config to it.

from snakemake.exceptions import WorkflowError

from spikelab.report.jobs import RESOURCES as FIGURE_RESOURCES, figure_params
from spikelab.s3 import S3LocationError, check_bucket, is_s3_url
from spikelab.workflow import WorkflowConfigError
from spikelab.workflow.batches import plan_batches
from spikelab.workflow.export import RecordingParams
from spikelab.workflow.inputs import NAME_PATTERN, discover_recordings
from spikelab.workflow.persistence import fit_metadata_cache
from spikelab.workflow.scheduling import coalesce_reevaluations
from spikelab.workflow.targets import (
    REPORT_TABLE,
    SUMMARY,
    VERIFIED,
    export_log,
    report_figure,
    report_stats,
    selected_targets,
    sources_list,
    targets_from_config,
)


wildcard_constraints:
    recording=NAME_PATTERN,


# Outputs on S3 (--default-storage-provider s3 --default-storage-prefix s3://bucket/prefix):
# the storage plugin would create a missing bucket silently; a typo should stop the run instead.
OUTPUT_PREFIX = (
    workflow.storage_settings.default_storage_prefix
    if workflow.storage_settings.default_storage_provider == "s3"
    else None
)

try:
    if OUTPUT_PREFIX:
        check_bucket(OUTPUT_PREFIX, what="--default-storage-prefix")
    RECORDINGS = discover_recordings(config["inputs"])
    TARGETS = targets_from_config(config)
    SELECTED = selected_targets(config, TARGETS)
except (WorkflowConfigError, S3LocationError) as exc:
    raise WorkflowError(str(exc)) from None

BATCHES = plan_batches(RECORDINGS, config["batch_size"])
CONDA_ENV = "../envs/spikelab.yaml"


# Snakemake's record cache holds a whole job's records (spikelab/workflow/persistence.py): a
# batch's export and figure jobs have one output per recording and the batch's JSON
fit_metadata_cache(max((len(b.recordings) for b in BATCHES), default=0) + 1)
# One pending wake-up of the scheduler at a time (spikelab/workflow/scheduling.py): else the
# rounds per second grow with every finished job
coalesce_reevaluations()


def input_files(batch):
    """Every file the readers of a batch's local inputs read (a KiloSort/Phy folder's files),
    flagged local() so that S3 outputs (a default storage provider) leave them local."""
    return [local(f) for r in batch.recordings for f in r.input_files]


def source_inputs(batch):
    """What a batch's jobs declare as input: the batch's list of sources (which depends on
    every input file: the sources__<batch> jobs); with inputs on S3, the s3:// URLs through
    Snakemake's S3 storage plugin, one per recording (each job gets its local copies).
    """
    if any(is_s3_url(p) for p in batch.paths):
        return [storage(p) if is_s3_url(p) else local(p) for p in batch.paths]
    return [sources_list(batch.key)]


def from_sources_list(batch):
    """True when the batch's jobs read their sources from the batch's list (local inputs),
    False when their inputs are the sources themselves (on S3, Snakemake's local copies).
    """
    return not any(is_s3_url(p) for p in batch.paths)


def export_outputs(target, batch):
    """Output paths of one export job (folders flagged with directory())."""
    paths = [target.output(name) for name in batch.names]
    return [directory(p) for p in paths] if target.is_dir else paths


def recordings_param(target, batch):
    """Per recording: its name, and the sample sheet's fs_Hz and writer options where the
    target uses them (so a sheet's subject columns re-run only the NWB exports)."""
    return [RecordingParams.for_target(target, r).as_params() for r in batch.recordings]


def pickle_loading_param():
    """How the jobs read pickles: the restricted loader unless the config opts in."""
    return {
        "trusted": config["trusted_pickles"],
        "allow_globals": sorted(config["allow_globals"]),
    }


def reads_fs(batch):
    """True when reading some input of the batch may take a sampling rate (times in samples)."""
    return any(r.reads_fs for r in batch.recordings)


def fs_param(target, batch):
    """The config's default fs_Hz (Hz) for targets that use a sampling rate or batches whose
    inputs may be read with one, else None (so the option re-runs only what it changes).
    """
    return config["fs_Hz"] if target.uses_fs or reads_fs(batch) else None


def sample_sheet_param(target):
    """Whether the recordings come from a sample sheet, for targets that need a sampling rate
    (the message of a missing one says where to give it), else None."""
    return bool(config["inputs"]["sample_sheet"]) if target.needs_fs else None


def verify_results(targets):
    """Every verify JSON of ``targets``."""
    return [t.verify_output(b.key) for t in targets for b in BATCHES]


def sheet_fs_param():
    """The sample sheet's fs_Hz (Hz) of each recording that has one, for the summary."""
    return {r.name: r.fs_Hz for r in RECORDINGS if r.fs_Hz is not None}


def declared_outputs_param():
    """What the listing of stale outputs needs to rebuild every path the rules declare (with
    spikelab.workflow.targets.declared_outputs, from the functions the rules use): recording
    names, batch keys, every defined target, and the local sources (never listed as stale).
    """
    return {
        "recordings": [r.name for r in RECORDINGS],
        "batches": [b.key for b in BATCHES],
        "targets": [t.as_params() for t in TARGETS],
        "sources": [r.path for r in RECORDINGS if not is_s3_url(r.path)],
    }


def mem_mb_for(model, batch):
    """Resource function: memory (MB) of a batch job with resource ``model`` (a format's or
    the report's). Input sizes come from discovery; asking Snakemake for
    ``input.size_files_mb`` instead costs a stat of every input of every job on each dry run
    (a third of `snakemake -n` at 10 000 recordings)."""
    sizes = batch.sizes_mb
    if sizes is None:  # not seen at discovery: let Snakemake measure

        def mem_mb(wildcards, input, attempt):
            return model.mem_mb(input.size_files_mb, attempt)

    else:

        def mem_mb(wildcards, attempt):
            return model.mem_mb(sizes, attempt)

    return mem_mb


def runtime_for(model, batch):
    """Resource function: wall time (min) of a batch job with resource ``model``."""
    sizes = batch.sizes_mb
    if sizes is None:

        def runtime(wildcards, input, attempt):
            return model.runtime_min(input.size_files_mb, attempt)

    else:

        def runtime(wildcards, attempt):
            return model.runtime_min(sizes, attempt)

    return runtime


# ----------------------------------------------------------------- report (rules/report.smk)
# `report(` at the start of a line is read as the report keyword, hence the other name.
from snakemake.io import report as flag_for_report


def report_figures(batch):
    """The batch's figures, flagged for the report: one category per recording."""
    return [
        flag_for_report(
            report_figure(name),
            caption="../report/figure.rst",
            category=name,
            labels={"recording": name, "figure": "raster and population rate"},
        )
        for name in batch.names
    ]


def report_recordings_param(batch):
    """Per recording: its name and the sample sheet's session_start_time (figure titles),
    and how to read an input other than a pickle."""
    return [
        figure_params(r.name, r.sheet_options, **RecordingParams.source_of(r))
        for r in batch.recordings
    ]


def report_all_stats():
    """Every batch's numbers: the input of the table."""
    return [report_stats(b.key) for b in BATCHES]


def report_outputs():
    """What the default target asks of the report: its table, whose inputs (each batch's numbers) bring
    in every figure job and so every figure. Not every figure by name: at 10 000 recordings
    Snakemake would look up the producer of each (seconds on every run)."""
    return list(rules.report_table.output)

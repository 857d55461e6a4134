"""Snakemake script: convert one batch of recordings with the writer of the rule's format and
verify each output against its source."""

from spikelab.workflow.batches import job_sources
from spikelab.workflow.export import run_export_job

run_export_job(
    target=snakemake.params.target,
    sources=job_sources(snakemake.input.sources, from_list=snakemake.params.sources_list),
    outputs=snakemake.output.files,
    recordings=snakemake.params.recordings,
    default_fs_Hz=snakemake.params.fs_Hz,
    on_bad_recording=snakemake.params.on_bad_recording,
    log_path=snakemake.log[0],
    pickle_loading=snakemake.params.pickle_loading,
    isolation=snakemake.params.isolation,
    mem_mb=snakemake.resources.mem_mb,
    verify_json=snakemake.output.json,
    batch=snakemake.params.batch,
    sample_sheet=snakemake.params.sample_sheet,
)

"""Snakemake script (rules list_stale, clean_stale): list or remove what in results/ belongs to
no current recording or target."""

from spikelab.workflow.stale import run_stale_job

run_stale_job(
    declared=snakemake.params.declared,
    log_path=snakemake.log[0],
    remove=snakemake.params.clean,
)

"""Snakemake script: fail the run, naming every bad output, unless all verified; name the
outputs in results/ that belong to no current recording or target."""

from spikelab.workflow.summary import run_check_job

run_check_job(
    snakemake.input[0],
    snakemake.output[0],
    snakemake.log[0],
    declared=snakemake.params.declared,
)

"""Snakemake script: fail the run, naming every bad output, unless all verified."""

from spikelab.workflow.summary import run_check_job

run_check_job(snakemake.input[0], snakemake.output[0], snakemake.log[0])

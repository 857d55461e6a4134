"""Snakemake script: tabulate every verify result in results/summary.tsv."""

from spikelab.workflow.summary import run_summary_job

run_summary_job(
    list(snakemake.input),
    snakemake.output[0],
    snakemake.log[0],
    default_fs_Hz=snakemake.params.fs_Hz,
    sheet_fs_Hz=snakemake.params.sheet_fs_Hz,
)

"""Snakemake script: one table row per recording, its numbers and every output's verify result."""

from spikelab.report.jobs import run_table_job

run_table_job(
    stats_jsons=list(snakemake.input.stats),
    summary_tsv=snakemake.input.summary,
    out_tsv=snakemake.output.tsv,
    out_html=snakemake.output.html,
    log_path=snakemake.log[0],
)

"""Snakemake script: draw the overview figure of every recording of one batch."""

from spikelab.report.jobs import run_figures_job
from spikelab.workflow.batches import job_sources

run_figures_job(
    recordings=snakemake.params.recordings,
    sources=job_sources(snakemake.input.sources, from_list=snakemake.params.sources_list),
    figures=snakemake.output.figures,
    stats_json=snakemake.output.stats,
    batch=snakemake.params.batch,
    on_bad_recording=snakemake.params.on_bad_recording,
    log_path=snakemake.log[0],
    pickle_loading=snakemake.params.pickle_loading,
    isolation=snakemake.params.isolation,
    mem_mb=snakemake.resources.mem_mb,
    default_fs_Hz=snakemake.params.fs_Hz,
)

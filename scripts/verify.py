"""Snakemake script: read one batch of outputs back and compare them with their sources."""

from spikelab.workflow.verify import run_verify_job

run_verify_job(
    target=snakemake.params.target,
    sources=snakemake.params.sources or snakemake.input.sources,  # inputs: S3 copies
    outputs=snakemake.input.outputs,
    recordings=snakemake.params.recordings,
    default_fs_Hz=snakemake.params.fs_Hz,
    batch=snakemake.params.batch,
    out_json=snakemake.output.json,
    log_path=snakemake.log[0],
    pickle_loading=snakemake.params.pickle_loading,
    isolation=snakemake.params.isolation,
    mem_mb=snakemake.resources.mem_mb,
)

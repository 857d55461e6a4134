"""Snakemake script: list a batch's recordings and input paths (the one input of its jobs)."""

from spikelab.workflow.batches import write_sources_list

write_sources_list(snakemake.params.sources, snakemake.output[0])

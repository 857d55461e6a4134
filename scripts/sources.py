"""Snakemake script: list a batch's input files (the one input of the batch's jobs)."""

from spikelab.workflow.batches import write_sources_list

write_sources_list(snakemake.input, snakemake.output[0])

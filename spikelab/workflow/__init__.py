"""The logic behind the Snakemake workflow, as plain Python that knows nothing of Snakemake.

- :mod:`~spikelab.workflow.config_check`: check the config against its schema, every problem
  on one line each, and fill in the defaults.
- :mod:`~spikelab.workflow.inputs`: find the recordings (a folder, a glob or a sample sheet),
  validate their names, resolve each recording's sampling rate.
- :mod:`~spikelab.workflow.targets`: the output targets (one per format, one per HDF5 style
  entry) built from the validated config; every format question goes to the format's entry
  in :mod:`spikelab.formats.registry`.
- :mod:`~spikelab.workflow.batches`: stable batches of recordings (one export job per batch
  and target).
- :mod:`~spikelab.workflow.export`: export one batch, logging one line per file written.
- :mod:`~spikelab.workflow.verify`: read every output back and compare it with its source.
- :mod:`~spikelab.workflow.summary`: the table of all recordings x targets, and the final check.
- :mod:`~spikelab.workflow.stale`: what in ``results/`` no rule declares any more; listed by the
  check, removed by the ``clean_stale`` rule.

What every job shares (logging, data faults, failure records, the per-recording loop) is in
:mod:`spikelab.jobs`. The Snakefile and ``rules/*.smk`` import from here; ``scripts/*.py`` only
unpack the ``snakemake`` object and call these functions.
"""


class WorkflowConfigError(ValueError):
    """The workflow config or its inputs cannot be used; raised before any job runs."""

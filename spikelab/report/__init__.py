"""Figures and tables that show what a recording holds, for ``snakemake --report``.

- :mod:`~spikelab.report.figures`: one overview PNG per recording (spike raster or binned rate
  image over the population rate) and the per-recording numbers shown in its title.
- :mod:`~spikelab.report.jobs`: the report's batch jobs (draw the figures of a batch of
  pickles; join their numbers with the workflow's verify summary into one table).

matplotlib is imported only inside the functions that draw.
"""

# Convert SpikeData pickles to HDF5, NWB, KiloSort/Phy and pickle, verify every output, and
# tabulate the results. See README.md; options in config.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/export.smk"
include: "rules/verify.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.summary.output,
        rules.check.output,
        report_outputs(),

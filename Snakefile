# Convert recordings (SpikeData pickles, NWB and HDF5 files, KiloSort/Phy folders) to HDF5, NWB,
# KiloSort/Phy and pickle, verify every output against its input, and tabulate the results.
# See README.md; options in config.yaml.

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version

from spikelab.workflow import WorkflowConfigError
from spikelab.workflow.check_report import install_check_report
from spikelab.workflow.config_check import check_config

min_version("9.0")


configfile: "config.yaml"


# Every problem of the config at once, one line each; fills in the schema's defaults.
try:
    CONFIG_WARNINGS = check_config(
        config, f"{workflow.basedir}/schemas/config.schema.yaml"
    )
except WorkflowConfigError as exc:
    raise WorkflowError(str(exc)) from None
if workflow.is_main_process:  # not again in each job of a cluster run
    for warning in CONFIG_WARNINGS:
        logger.warning(warning)

# When the check fails, its report (one line per bad recording) is what the terminal shows,
# in place of Snakemake's exception and error block for the check job.
CHECK_LOG = "logs/check.log"
install_check_report(logger, CHECK_LOG)


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

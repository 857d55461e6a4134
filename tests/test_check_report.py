"""The filter that shows the failed check's report in place of Snakemake's error block."""

from __future__ import annotations

import logging

from spikelab.workflow.check_report import CheckReportFilter, install_check_report


def _record(msg: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("snakemake.logging", logging.ERROR, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_the_check_error_block_becomes_its_report(tmp_path):
    log = tmp_path / "check.log"
    log.write_text("1 of 5 outputs failed, from 1 of 1 recordings:\n  a.pkl (a): ...\n")
    report_filter = CheckReportFilter(str(log))
    block = _record("Error in rule check, jobid: 8", event="job_error", rule_name="check")
    assert report_filter.filter(block)
    assert block.getMessage() == "1 of 5 outputs failed, from 1 of 1 recordings:\n  a.pkl (a): ..."
    assert block.event == "error"


def test_the_check_scripts_exception_is_dropped_and_others_pass(tmp_path):
    report_filter = CheckReportFilter(str(tmp_path / "check.log"))
    check_failed = _record(
        'RuleException:\nCalledProcessError in file "rules/verify.smk", line 25:\nCommand '
        "'set -euo pipefail;  python3 /w/.snakemake/scripts/tmpq4z8u2n2.check.py' returned "
        "non-zero exit status 1.",
        event="error",
        exception="RuleException",
    )
    assert not report_filter.filter(check_failed)
    export_failed = _record(
        'RuleException:\nCalledProcessError in file "rules/export.smk", line 30:\nCommand '
        "'set -euo pipefail;  python3 /w/.snakemake/scripts/tmpab.export.py' returned "
        "non-zero exit status 1.",
        event="error",
        exception="RuleException",
    )
    assert report_filter.filter(export_failed)
    other_block = _record(
        "Error in rule export_nwb__b1", event="job_error", rule_name="export_nwb__b1"
    )
    assert report_filter.filter(other_block) and other_block.event == "job_error"
    assert report_filter.filter(_record("plain message"))


def test_without_a_report_snakemakes_block_stays(tmp_path):
    report_filter = CheckReportFilter(str(tmp_path / "missing.log"))
    block = _record("Error in rule check, jobid: 8", event="job_error", rule_name="check")
    assert report_filter.filter(block) and block.event == "job_error"
    (tmp_path / "empty.log").write_text("")
    report_filter.log_path = str(tmp_path / "empty.log")
    assert report_filter.filter(block) and block.event == "job_error"


def test_installed_once_per_logger(tmp_path):
    logger = logging.getLogger("spikelab.test_check_report")
    first = install_check_report(logger, "a.log")
    second = install_check_report(logger, "b.log")
    assert first is second and second.log_path == "b.log"
    assert sum(isinstance(f, CheckReportFilter) for f in logger.filters) == 1

"""The failed check's report, in place of Snakemake's own error block for it.

When rule ``check`` fails (an output is not ok), Snakemake would print the job's exception
(``RuleException`` / ``CalledProcessError ... returned non-zero exit status 1``) and an
``Error in rule check`` block (``message: None``, jobid, input, output, log). The check's log
already says everything a user needs, one line per bad recording and fault. A filter on
Snakemake's logger drops the exception and turns the error block into that log's text, so
the terminal and Snakemake's own log file show the report and nothing else about the check.
Errors of every other rule pass unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

CHECK_RULE = "check"
"""Name of the rule whose failure is the run's verdict."""

# How Snakemake reports the failed script of rule ``check``: the job's temporary copy of
# scripts/check.py ("…/.snakemake/scripts/tmpab12cd.check.py") exited non-zero.
_CHECK_SCRIPT_FAILED = re.compile(r"\.check\.py'? returned non-zero exit status \d+")


class CheckReportFilter(logging.Filter):
    """Replace Snakemake's error records for the failed check by the check's report.

    ``log_path``: the check's log (the report itself), relative to the working directory.
    Records of other rules and every other message pass unchanged.
    """

    def __init__(self, log_path: str, rule: str = CHECK_RULE) -> None:
        super().__init__()
        self.log_path = log_path
        self.rule = rule

    def filter(self, record: logging.LogRecord) -> bool:
        event = str(getattr(record, "event", "") or "")
        if event == "error" and getattr(record, "exception", None) == "RuleException":
            return not _CHECK_SCRIPT_FAILED.search(str(record.msg))
        if event == "job_error" and getattr(record, "rule_name", None) == self.rule:
            report = self._report()
            if report is None:  # no report to show: leave Snakemake's block as it is
                return True
            record.msg, record.args = report, ()
            record.event = "error"  # printed as a plain error message, even with --quiet rules
        return True

    def _report(self) -> str | None:
        try:
            text = Path(self.log_path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None


def install_check_report(logger: logging.Logger, log_path: str) -> CheckReportFilter:
    """Add a :class:`CheckReportFilter` for ``log_path`` to ``logger`` (Snakemake's), once."""
    for existing in logger.filters:
        if isinstance(existing, CheckReportFilter):
            existing.log_path = log_path
            return existing
    report_filter = CheckReportFilter(log_path)
    logger.addFilter(report_filter)
    return report_filter

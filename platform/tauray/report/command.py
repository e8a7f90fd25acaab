"""``tauray report`` as a function: read the sweep, write the files, print the report."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tauray.report.build import ReportRequest, SweepReport, build_report
from tauray.report.files import write_report
from tauray.report.text import format_report

Echo = Callable[[str], None]

DEFAULT_OUTPUT = "tauray_reports"


def default_output(report: SweepReport) -> Path:
    """``tauray_reports/<sweep name>`` under the working directory."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", report.sweep.name).strip("-") or "sweep"
    return Path(DEFAULT_OUTPUT) / safe


def report_command(request: ReportRequest, *, echo: Echo = print, echo_error: Echo = print) -> int:
    """``tauray report``: read the sweep, write the files, print the report.

    Returns:
        0; 1 when no trial finished with a value of the objective (the table still prints).

    Raises:
        ValueError, ConnectionError: from :func:`build_report` (one line each).
    """
    report = build_report(request)
    folder = Path(request.output).expanduser() if request.output else default_output(report)
    files = write_report(report, folder)
    files.text = folder / "report.txt"
    text = format_report(report, request.top, files)
    files.text.write_text(text + "\n")
    echo(text)
    if report.best is None:
        echo_error(
            f"no trial of sweep {report.sweep.name} finished with a value of "
            f"{report.objective.metric}"
        )
        return 1
    return 0

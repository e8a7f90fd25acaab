"""``tauray report``: what a sweep found and what it cost, read back from MLflow.

The report reads only the tracking store (never Ray's result folders, which may be on another
machine or gone), through :mod:`tauray.layout`, the module the sweep driver writes through: the
sweep's parent run (params ``objective``, ``method``, ``workers_per_trial``, ...; tag
``tauray.kind = sweep``) and one child run per trial (tags ``tauray.trial_id``,
``tauray.trial_index``, ``tauray.status``, ``tauray.failure_reason``; the resolved
``train_loop_config`` as dotted params; every metric per epoch, the cumulative ``cost/*`` counters
included). Each child run becomes a :class:`~tauray.trials.TrialRecord` again, ranked by
:mod:`tauray.ranking` and shown by :mod:`tauray.tables`, so the report ranks and draws trials
exactly as the sweep's own summary and plots do. It imports nothing of the sweep driver
(:mod:`tauray.sweep`).

What it shows, in the terminal and as files in ``--output``:

- the top trials as a table: rank, status, objective(s), temperature mode and final τ, the
  sampled parameters, epochs and cost (worker-seconds, GPU- or CPU-seconds, samples seen);
- the best configuration as a ``tauray train --config`` file (``best_config.yaml``; for a
  multi-objective sweep also one file per Pareto-optimal trial under ``pareto/``);
- the objective against the temperature and the objective against the cost, as PNG files and as
  text scatter plots;
- for a multi-objective sweep (``tauray tune --objective A:max --objective B:min``) the Pareto
  front: the trials no other trial dominates, marked in the table and drawn in the trade-off
  picture. A single-objective sweep still reports each trial's cost, and the trade-off picture
  marks the trials that no other trial beats on both quality and cost.

One module per step: :mod:`~tauray.report.build` (reading and ranking),
:mod:`~tauray.report.text` (the terminal text), :mod:`~tauray.report.files` (the files) and
:mod:`~tauray.report.command` (``tauray report``).
"""

from tauray.report.build import (
    DEFAULT_TOP,
    ReportRequest,
    SweepReport,
    SweepRun,
    build_report,
    find_sweep,
    open_experiment,
    rank,
    read_trials,
)
from tauray.report.command import DEFAULT_OUTPUT, default_output, report_command
from tauray.report.files import ReportFiles, write_report
from tauray.report.text import cost_text, format_report, temperature_text, text_scatter

__all__ = [
    "DEFAULT_OUTPUT",
    "DEFAULT_TOP",
    "ReportFiles",
    "ReportRequest",
    "SweepReport",
    "SweepRun",
    "build_report",
    "cost_text",
    "default_output",
    "find_sweep",
    "format_report",
    "open_experiment",
    "rank",
    "read_trials",
    "report_command",
    "temperature_text",
    "text_scatter",
    "write_report",
]

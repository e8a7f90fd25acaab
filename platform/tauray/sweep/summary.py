"""What a finished (or interrupted) sweep found, as the text ``tauray tune`` prints.

The trials' table and the best trial are the report's (:mod:`tauray.tables`,
:mod:`tauray.ranking`): ``tauray report`` of the sweep shows the same ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from tauray.ranking import rank_trials
from tauray.run_file import changed_settings
from tauray.storage import StoragePath
from tauray.sweep.confirm import ConfirmationResult, result_lines
from tauray.sweep.plan import SweepPlan
from tauray.tables import trial_table
from tauray.trials import TrialRecord
from tauray.trials import format_number as _number


@dataclass
class SweepSummary:
    """What a finished sweep found and where everything is.

    Attributes:
        plan: the sweep that ran.
        records: every trial, in start order.
        counts: trials per status (``completed``, ``stopped``, ``failed``, ``running``).
        best: the best trial (None when no trial finished with a value of the objective).
        best_config: the best trial's full nested ``train_loop_config``.
        best_config_path: the YAML file holding it (``tauray train --config`` accepts it).
        experiment_id: MLflow experiment id.
        parent_run_id: MLflow run id of the sweep.
        best_run_id: MLflow run id of the best trial.
        champion: ``models:/<name>@champion`` and its version, when registered.
        plots: plot files written (name -> path) and skipped plots (name -> reason).
        tracking_errors: MLflow writes that failed (details in the log).
        elapsed_s: wall time of the sweep.
        interrupted: the sweep was stopped (Ctrl-C) with trials unfinished; Ray Tune saved its
            state in the sweep folder.
        sampler: the sampler's description; scheduler: the scheduler's.
        concurrency: trials run at once.
        confirmation: what the confirmation phase found (None without one).
        confirmation_note: why the sweep had no confirmation phase, when it was asked for.
    """

    plan: SweepPlan
    records: list[TrialRecord]
    counts: dict[str, int]
    best: TrialRecord | None
    best_config: dict[str, Any] | None
    best_config_path: StoragePath | None
    experiment_id: str
    parent_run_id: str
    best_run_id: str | None
    champion: tuple[str, str] | None
    plots: dict[str, StoragePath] = field(default_factory=dict)
    skipped_plots: dict[str, str] = field(default_factory=dict)
    tracking_errors: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    sampler: str = ""
    scheduler: str = ""
    concurrency: int = 1
    confirmation: ConfirmationResult | None = None
    confirmation_note: str | None = None


def format_summary(summary: SweepSummary) -> str:
    """The end-of-sweep report printed by ``tauray tune``."""
    plan = summary.plan
    objective = plan.objective
    counts = summary.counts
    total = sum(counts.values())
    minutes, seconds = divmod(int(summary.elapsed_s), 60)
    ended = "was interrupted after" if summary.interrupted else "finished in"
    unfinished = f", {counts['running']} unfinished" if counts["running"] else ""
    confirming = sum(1 for record in summary.records if record.confirms is not None)
    confirmation = f" ({confirming} of them confirmation runs)" if confirming else ""
    lines = [
        "",
        f"Sweep {plan.sweep_name} {ended} {minutes}m{seconds:02d}s: {total} trials{confirmation}, "
        f"{counts['completed']} completed, {counts['stopped']} stopped early, "
        f"{counts['failed']} failed{unfinished}.",
        "",
        trial_table(
            summary.records, plan.objectives, rank_trials(summary.records, plan.objectives)
        ),
    ]
    failed = [record for record in summary.records if record.status == "failed"]
    if failed:
        lines.append("")
        lines.extend(f"trial {record.index} failed: {record.error}" for record in failed)
    lines.append("")
    best = summary.best
    if best is None or summary.best_config is None:
        lines.append(f"No trial finished with a value of {objective.metric}.")
    else:
        if summary.confirmation is not None and summary.confirmation.champion_run is best:
            lines.append("The champion configuration's best run:")
        temperature = best.final_temperature()
        lines.append(
            f"Best trial: #{best.index} ({best.trial_id}), {objective.metric} = "
            f"{_number(best.value(objective.metric))} at epoch {best.epoch}/{best.planned_epochs}"
            + (
                f", τ {_number(temperature)} ({best.temperature_mode})"
                if temperature is not None
                else ""
            )
        )
        lines.append(
            f"Its configuration (settings that differ from the defaults; the full config is in "
            f"{summary.best_config_path}):"
        )
        lines.append(
            yaml.safe_dump(changed_settings(summary.best_config), sort_keys=False).rstrip()
        )
        lines.append(f"Train it: tauray train --config {summary.best_config_path}")
    if summary.confirmation is not None:
        lines.append("")
        lines.extend(result_lines(summary.confirmation))
    elif summary.confirmation_note is not None and not summary.interrupted:
        lines.append(summary.confirmation_note)
    if summary.champion is not None:
        uri, version = summary.champion
        lines.append(
            f"Champion model: {uri} (version {version}); "
            f"mlflow.pytorch.load_model({uri!r}) maps images to embeddings"
        )
    lines.append(
        f"MLflow: experiment {plan.experiment!r} (id {summary.experiment_id}), sweep run "
        f"{summary.parent_run_id}"
    )
    lines.append(f"  {plan.target.ui_hint(summary.experiment_id, summary.parent_run_id)}")
    if summary.plots:
        lines.append(f"Plots: {', '.join(str(path) for path in summary.plots.values())}")
    if summary.tracking_errors:
        lines.append(
            f"Warning: {summary.tracking_errors} MLflow write(s) failed; see the log above."
        )
    return "\n".join(lines)

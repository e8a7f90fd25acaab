"""What a finished (or interrupted) sweep found, as the text ``tauray tune`` prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from tauray.storage import StoragePath
from tauray.sweep.plan import SweepPlan, SweepRequest
from tauray.trials import TrialRecord, flatten
from tauray.trials import format_number as _number
from tauray_trainers.config import TrainConfig

if TYPE_CHECKING:
    from tauray_spaces import Objective


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


def best_config_yaml(config: Mapping[str, Any], request: SweepRequest, header: str) -> str:
    """A ``tauray train --config`` file: a comment header, the trial's resources and its full
    nested ``train_loop_config``."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    document = {
        "workers": request.workers_per_trial,
        "gpus_per_worker": request.gpus_per_worker,
        "cpus_per_worker": request.cpus_per_worker,
        "train_loop_config": dict(config),
    }
    return comment + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def changed_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a full config that differs from :class:`TrainConfig`'s defaults (+ method)."""
    defaults = flatten(TrainConfig().to_dict(), ".")
    changed: dict[str, Any] = {"method": config.get("method")}
    for key, value in flatten(dict(config), ".").items():
        if key != "method" and defaults.get(key, object()) != value:
            node = changed
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return changed


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Column headers: the last path segment, or the last two where the last is ambiguous."""
    last = [key.rsplit("/", 1)[-1] for key in keys]
    return {
        key: (key.split("/", key.count("/") - 1)[-1] if last.count(short) > 1 else short)
        for key, short in zip(keys, last, strict=True)
    }


def trial_table(records: Sequence[TrialRecord], objective: Objective, max_params: int = 8) -> str:
    """A compact text table of the trials: status, epochs, sampled parameters, objective, τ."""
    keys: list[str] = []
    for record in records:
        for key in record.sampled:
            if key not in keys:
                keys.append(key)
    shown = keys[:max_params]
    short = _short_names(shown)
    header = ["#", "status", "epochs", *[short[key] for key in shown], "τ end", objective.metric]
    rows = [header]
    for record in records:
        rows.append(
            [
                str(record.index),
                {"stopped": "stopped early", "running": "unfinished"}.get(
                    record.status, record.status
                ),
                f"{record.epoch}/{record.planned_epochs or '?'}",
                *[_number(record.sampled[key]) if key in record.sampled else "-" for key in shown],
                _number(record.final_temperature()) if record.status != "failed" else "-",
                _number(record.value(objective.metric)) if record.status != "failed" else "-",
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    if len(keys) > len(shown):
        lines.append(f"({len(keys) - len(shown)} more parameters per trial in MLflow)")
    return "\n".join(lines)


def format_summary(summary: SweepSummary) -> str:
    """The end-of-sweep report printed by ``tauray tune``."""
    plan = summary.plan
    objective = plan.objective
    counts = summary.counts
    total = sum(counts.values())
    minutes, seconds = divmod(int(summary.elapsed_s), 60)
    ended = "was interrupted after" if summary.interrupted else "finished in"
    unfinished = f", {counts['running']} unfinished" if counts["running"] else ""
    lines = [
        "",
        f"Sweep {plan.sweep_name} {ended} {minutes}m{seconds:02d}s: {total} trials, "
        f"{counts['completed']} completed, {counts['stopped']} stopped early, "
        f"{counts['failed']} failed{unfinished}.",
        "",
        trial_table(summary.records, objective),
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

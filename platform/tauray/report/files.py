"""``tauray report``, the files: run files of the best (and Pareto-optimal) trials, the
pictures, and ``report.json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tauray import layout
from tauray.report.build import SweepReport
from tauray.run_file import best_config_yaml
from tauray.trials import TrialRecord
from tauray.trials import format_number as _number
from tauray_trainers import metrics as names

COST_METRICS = (
    names.COST_WORKER_SECONDS,
    names.COST_GPU_SECONDS,
    names.COST_CPU_SECONDS,
    names.COST_SAMPLES_SEEN,
)


@dataclass
class ReportFiles:
    """Files :func:`write_report` wrote, and pictures it skipped (name -> reason)."""

    folder: Path
    best_config: Path | None = None
    pictures: dict[str, Path] = field(default_factory=dict)
    pareto_configs: list[Path] = field(default_factory=list)
    summary: Path | None = None
    text: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """The files written at the top of the folder."""
        found = [self.best_config, *self.pictures.values(), self.summary, self.text]
        return [path for path in found if path is not None]


def _config_yaml(report: SweepReport, record: TrialRecord, what: str) -> str:
    values = ", ".join(
        f"{each.metric} = {_number(record.value(each.metric))}" for each in report.objectives
    )
    header = (
        f"{what} of sweep {report.sweep.name} (trial {record.index}, {record.trial_id}, MLflow run "
        f"{report.run_ids.get(record.trial_id, '?')}): {values}\n"
        "Train it: tauray train --config THIS_FILE"
    )
    workers, gpus_per_worker, cpus_per_worker = layout.sweep_resources(report.sweep.params)
    return best_config_yaml(
        record.config or {},
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        header=header,
    )


def _summary(report: SweepReport) -> dict[str, Any]:
    def trial(record: TrialRecord) -> dict[str, Any]:
        return {
            "index": record.index,
            "trial_id": record.trial_id,
            "run_id": report.run_ids.get(record.trial_id),
            "status": record.status,
            "epoch": record.epoch,
            "planned_epochs": record.planned_epochs,
            "temperature_mode": record.temperature_mode,
            "final_temperature": record.final_temperature(),
            "sampled": record.sampled,
            "objectives": {o.metric: record.value(o.metric) for o in report.objectives},
            "cost": {metric: record.value(metric) for metric in COST_METRICS},
            "on_front": record.trial_id in report.front,
            "phase": record.phase,
            "error": record.error,
        }

    return {
        "experiment": report.experiment,
        "experiment_id": report.experiment_id,
        "tracking_uri": report.target.uri,
        "sweep": report.sweep.name,
        "sweep_run_id": report.sweep.run_id,
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in report.objectives],
        "objectives_source": report.objectives_source,
        "cost_metric": report.cost_metric,
        "best": report.best.trial_id if report.best else None,
        "ranked": [record.trial_id for record in report.ranked],
        "pareto_front": list(report.front),
        "cost_frontier": list(report.frontier),
        "trials": [trial(record) for record in report.records],
    }


def write_report(report: SweepReport, folder: str | Path) -> ReportFiles:
    """Write the best configuration, the pictures and ``report.json`` into ``folder``.

    Files: ``best_config.yaml`` (``tauray train --config``), ``pareto/trial-NNN.yaml`` per
    Pareto-optimal trial (multi-objective sweeps), ``objective_vs_temperature.png``,
    ``quality_vs_cost.png``, ``optimization_history.png``, ``pareto_front.png`` (two objectives
    that are not the trade-off's axes), ``report.json`` (every trial's values and costs).
    A picture that cannot be drawn is skipped with its reason.
    """
    from tauray import plots

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(folder=out)
    best = report.best
    if best is not None and best.config is not None:
        files.best_config = out / "best_config.yaml"
        files.best_config.write_text(_config_yaml(report, best, "Best trial"))
    if report.multi_objective:
        pareto_dir = out / "pareto"
        if pareto_dir.is_dir():  # a previous report of this sweep may have had another front
            for old in pareto_dir.glob("trial-*.yaml"):
                old.unlink()
        for record in report.ranked:
            if record.trial_id in report.front and record.config is not None:
                pareto_dir.mkdir(exist_ok=True)
                path = pareto_dir / f"trial-{record.index:03d}.yaml"
                path.write_text(_config_yaml(report, record, "Pareto-optimal trial"))
                files.pareto_configs.append(path)

    primary = report.objective
    pictures: dict[str, Callable[[], Any]] = {
        "objective_vs_temperature": lambda: plots.objective_vs_temperature(
            report.records,
            primary.metric,
            [
                plots.ConfirmedPoint(
                    row["temperature"],
                    row["mean"],
                    row["ci95_low"],
                    row["ci95_high"],
                    row["temperature_mode"],
                )
                for row in report.confirmation
            ],
        ),
        "optimization_history": lambda: plots.optimization_history(
            report.records, primary.metric, primary.mode
        ),
    }
    cost_metric = report.cost_metric
    if cost_metric is not None:
        metrics = {o.metric for o in report.objectives}
        axes_are_objectives = report.multi_objective and metrics == {primary.metric, cost_metric}
        pictures["quality_vs_cost"] = lambda: plots.quality_vs_cost(
            report.records,
            primary.metric,
            cost_metric,
            report.front if report.multi_objective else report.frontier,
            front_label="Pareto front"
            if report.multi_objective
            else "no other trial better and cheaper",
            staircase=axes_are_objectives or not report.multi_objective,
        )
    else:
        files.skipped["quality_vs_cost"] = "no trial recorded its cost (cost/* metrics)"
    if len(report.objectives) >= 2:
        second = report.objectives[1]
        if second.metric != cost_metric:  # else quality_vs_cost already shows these two axes
            pictures["pareto_front"] = lambda: plots.objective_pair(
                report.records, primary.metric, second.metric, report.front
            )
    for name, make in pictures.items():
        try:
            figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            files.skipped[name] = str(error)
            continue
        path = out / f"{name}.png"
        figure.savefig(path)
        files.pictures[name] = path
    files.summary = out / "report.json"
    files.summary.write_text(json.dumps(_summary(report), indent=2, allow_nan=False, default=str))
    return files

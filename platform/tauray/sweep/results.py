"""The sweep's results, written once Ray has stopped: the best configuration and its datasets,
the champion model, the plots and the parent run's metrics and description."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tauray import layout, tracking_models
from tauray.ranking import rank_trials
from tauray.run_file import best_config_yaml
from tauray.storage import StoragePath, local_folder
from tauray.sweep.confirm import ConfirmationPhase, budget_cut_text, confirmation_result
from tauray.sweep.describe import describe_sweep
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.mlflow_logger import MlflowTrialLogger
from tauray.sweep.plan import SweepPlan
from tauray.sweep.search import RecordingSpace
from tauray.sweep.summary import SweepSummary
from tauray.tracking import SweepRecorder

logger = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """What the search (and confirmation) left for the results: how it searched, whether it
    was interrupted, the confirmation phase or why there was none."""

    recording: RecordingSpace
    sampler: str
    scheduler: str
    concurrency: int
    interrupted: bool = False  # Ctrl-C: Ray Tune stopped early and saved its state
    confirmation: ConfirmationPhase | None = None
    confirmation_note: str | None = None  # why there was no confirmation phase


def write_results(
    plan: SweepPlan,
    recorder: SweepRecorder,
    parent_run_id: str,
    ledger: TrialLedger,
    mlflow_logger: MlflowTrialLogger,
    outcome: FitOutcome,
    *,
    interrupted: bool = False,
) -> SweepSummary:
    """The sweep's results: best config and datasets, champion, plots, the parent's metrics.

    An interrupted sweep only writes its best configuration so far (a local file): the parent
    run gets metrics, plots and the champion when the resumed sweep ends.
    """
    from tauray.plots import render_sweep_plots

    objective = plan.objective
    records = ledger.ordered()
    counts = ledger.counts()
    best = rank_trials(records, plan.objectives).best
    confirmation = None
    if outcome.confirmation is not None and not interrupted:
        confirmation = confirmation_result(
            records,
            outcome.confirmation,
            objective,
            cut=budget_cut_text(records, outcome.confirmation),
        )
        best = confirmation.champion_run or best  # the best run of the best mean
    sweep_dir = plan.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    errors_before = mlflow_logger.errors

    best_config = best.config if best is not None else None
    best_config_path: StoragePath | None = None
    champion: tuple[str, str] | None = None
    best_run_id = mlflow_logger.run_ids.get(best.trial_id) if best is not None else None
    metrics = layout.result_metrics(counts)
    if best is not None and best_config is not None:
        header = (
            f"Best trial{' so far' if interrupted else ''} of sweep {plan.sweep_name} "
            f"(trial {best.index}, {best.trial_id}): "
            f"{objective.metric} = {best.value(objective.metric):.6g}\n"
            "Train it: tauray train --config best_config.yaml"
        )
        text = best_config_yaml(
            best_config,
            workers=plan.request.workers_per_trial,
            gpus_per_worker=plan.request.gpus_per_worker,
            cpus_per_worker=plan.request.cpus_per_worker,
            header=header,
        )
        best_config_path = sweep_dir / layout.BEST_CONFIG_FILE
        best_config_path.write_text(text)
        metrics = layout.result_metrics(counts, objective.metric, best.value(objective.metric))

    def summary(**more: Any) -> SweepSummary:
        return SweepSummary(
            plan=plan,
            records=records,
            counts=counts,
            best=best,
            best_config=best_config,
            best_config_path=best_config_path,
            experiment_id=recorder.experiment_id,
            parent_run_id=parent_run_id,
            best_run_id=best_run_id,
            tracking_errors=mlflow_logger.errors,
            sampler=outcome.sampler,
            scheduler=outcome.scheduler,
            concurrency=outcome.concurrency,
            confirmation=confirmation,
            confirmation_note=outcome.confirmation_note,
            **more,
        )

    if interrupted:
        return summary(champion=None)
    if best is not None and best_config is not None:
        with mlflow_logger.guarded("log best_config.yaml and the best trial's datasets"):
            recorder.log_text(parent_run_id, text, layout.BEST_CONFIG_FILE)
            recorder.log_datasets(parent_run_id, best_config)
        model_uri = mlflow_logger.log_model(best) if plan.request.log_models else None
        if model_uri is not None:
            with mlflow_logger.guarded("register the champion model"):
                version = tracking_models.register_champion(recorder, model_uri, plan.model_name)
                champion = (
                    f"models:/{plan.model_name}@{layout.CHAMPION_ALIAS}",
                    str(version.version),
                )
    plots_dir = sweep_dir / layout.PLOTS_FOLDER
    with local_folder(plots_dir) as folder:  # on an object store: rendered here, uploaded
        plots = render_sweep_plots(
            records,
            objective.metric,
            objective.mode,
            outcome.recording.distributions,
            folder,
            seed=plan.request.seed,
            confirmed=confirmation.plot_points() if confirmation is not None else (),
        )
        if confirmation is not None and confirmation.champion is not None:
            metrics.update(layout.champion_metrics(confirmation.champion.stats))
        with mlflow_logger.guarded("log the sweep's results"):
            recorder.log_metrics(parent_run_id, metrics, step=0)
            if confirmation is not None:
                csv_text = confirmation.csv_text(mlflow_logger.run_ids)
                recorder.log_text(parent_run_id, csv_text, layout.CONFIRMATION_FILE)
                recorder.set_tags(parent_run_id, {layout.TAG_VERDICT: confirmation.verdict})
            recorder.log_artifacts(parent_run_id, list(plots.paths.values()), layout.PLOTS_FOLDER)
        with mlflow_logger.guarded("describe the sweep"):
            describe_sweep(recorder, plan, parent_run_id, records, best, best_run_id, champion)
    plot_paths = {name: plots_dir / path.name for name, path in plots.paths.items()}
    if mlflow_logger.errors > errors_before:
        logger.warning("some MLflow writes failed at the end of the sweep (see above)")
    return summary(champion=champion, plots=plot_paths, skipped_plots=dict(plots.skipped))

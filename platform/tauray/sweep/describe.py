"""What a finished sweep adds to MLflow for people reading it in the UI.

The parent run's best-so-far curve (:data:`tauray.ui_layout.OBJECTIVE_BEST_SO_FAR`, step = trial
index) and the Markdown descriptions of the parent run and the experiment
(:mod:`tauray.notes`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tauray import notes, ui_layout
from tauray.sweep.plan import SweepPlan
from tauray.tracking import SweepRecorder
from tauray.trials import TrialRecord, count_statuses


def describe_sweep(
    recorder: SweepRecorder,
    plan: SweepPlan,
    parent_run_id: str,
    records: Sequence[TrialRecord],
    best: TrialRecord | None,
    best_run_id: str | None,
    champion: tuple[str, str] | None,
) -> None:
    """Log the best-so-far curve and write the parent run's and the experiment's descriptions.

    A finished sweep resumed again (more trials) extends the curve; the descriptions are
    rewritten.

    Args:
        champion: the registered model's URI and version, if one was registered.
    """
    objective = plan.objective
    history = ui_layout.best_so_far(records, objective.metric, objective.mode)
    logged = recorder.last_step(parent_run_id, ui_layout.OBJECTIVE_BEST_SO_FAR)  # resumed again
    new = [(step, value) for step, value in history if logged is None or step > logged]
    recorder.log_metric_history(parent_run_id, ui_layout.OBJECTIVE_BEST_SO_FAR, new)
    outcome = notes.SweepOutcome(
        sweep_name=plan.sweep_name,
        space=plan.space.name,
        method=str(plan.fixed_config.get("method", plan.space.method)),
        metric=objective.metric,
        mode=objective.mode,
        experiment_id=recorder.experiment_id,
        parent_run_id=parent_run_id,
        counts=count_statuses(records),
        best=best,
        best_run_id=best_run_id,
        best_run_name=recorder.client.get_run(best_run_id).info.run_name if best_run_id else None,
        champion=champion,
    )
    recorder.set_tags(parent_run_id, {notes.NOTE_TAG: notes.sweep_note(outcome)})
    recorder.describe_experiment(notes.experiment_note(outcome))

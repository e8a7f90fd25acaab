"""The sweep driver's MLflow logger: a Ray Tune callback that records every trial as a child run.

What it writes is :mod:`tauray.layout`'s; how it writes is :class:`tauray.tracking.SweepRecorder`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from tauray import layout, tracking_models, ui_layout
from tauray.layout import models as model_layout
from tauray.sweep.ledger import TrialLedger
from tauray.tracking import SweepRecorder
from tauray.trials import INFEASIBLE, TrialRecord, epoch_metrics, result_step

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from tauray.sweep.plan import SweepPlan
    from tauray_trainers.models import ExportedModel

logger = logging.getLogger(__name__)


def _load_embedding_model(checkpoint_path: str) -> ExportedModel:
    import ray.train

    from tauray_trainers.models import load_embedding_model

    checkpoint = ray.train.Checkpoint(path=checkpoint_path)
    with checkpoint.as_directory() as directory:
        exported, _ = load_embedding_model(directory)
    return exported


class MlflowTrialLogger(Callback):
    """Ray Tune callback that writes every trial to MLflow as a child run of the sweep.

    Runs in the sweep driver only. Put it after the :class:`~tauray.sweep.ledger.TrialLedger` in
    ``RunConfig(callbacks=[...])``: it reads the ledger's records. Tracking problems are logged
    and counted (:attr:`errors`) instead of stopping the sweep: the training is the expensive
    part, the tracking can be repaired.

    Args:
        recorder: the sweep's MLflow writer.
        ledger: the sweep's trial records.
        parent_run_id: the sweep's parent run.
        space: the search space's name (tag ``tauray.space``).
        log_models: log the model of each trial that runs all its epochs (from its last
            checkpoint); the sweep adds the best trial's if ASHA stopped it early.
        objective: the sweep's objective ``(metric, mode)``: each trial also logs
            ``objective/best`` and ``objective/at_first_rung`` (:mod:`tauray.ui_layout`).
        first_rung: the early-stopping scheduler's first rung in epochs (None: no early stopping).
    """

    def __init__(
        self,
        recorder: SweepRecorder,
        ledger: TrialLedger,
        parent_run_id: str,
        space: str,
        *,
        log_models: bool = True,
        objective: tuple[str, str] | None = None,
        first_rung: int | None = None,
    ) -> None:
        self.recorder = recorder
        self.ledger = ledger
        self.parent_run_id = parent_run_id
        self.space = space
        self.log_models = log_models
        self.objective = objective
        self.first_rung = first_rung
        self.run_ids: dict[str, str] = {}
        self.model_uris: dict[str, str] = {}
        # Per trial, per metric: the last step MLflow has. Loaded from MLflow the first time
        # this process sees a trial whose run existed before (a resumed sweep), so epochs a
        # restarted trial re-reports are never logged twice.
        self._last_step: dict[str, dict[str, int]] = {}
        #: Child runs of trials the sweep lost, ended when the sweep ended (see
        #: :meth:`SweepRecorder.end_lost_runs`).
        self.lost_run_ids: list[str] = []
        self.errors = 0

    @classmethod
    def for_plan(
        cls, plan: SweepPlan, recorder: SweepRecorder, ledger: TrialLedger, parent_run_id: str
    ) -> MlflowTrialLogger:
        """The logger of a planned sweep: its space, objective, first rung and model logging."""
        from tauray.sweep.search import early_stopping_rung

        return cls(
            recorder,
            ledger,
            parent_run_id,
            plan.space.name,
            log_models=plan.request.log_models,
            objective=(plan.objective.metric, plan.objective.mode),
            first_rung=early_stopping_rung(plan),
        )

    @contextlib.contextmanager
    def guarded(self, what: str, trial_id: str | None = None) -> Iterator[None]:
        """Run an MLflow write; if it fails, log why, count it in :attr:`errors` and go on
        (a tracking hiccup never costs the sweep its training)."""
        try:
            yield
        except Exception:
            self.errors += 1
            if trial_id is None:
                logger.exception("MLflow: could not %s", what)
            else:
                logger.exception("MLflow: could not %s for trial %s", what, trial_id)

    def _run_id(self, trial: Trial) -> str:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is not None:
            if trial.trial_id not in self._last_step:  # known from a restored sweep's state
                # Running again in this session: an interrupted sweep ended the run as KILLED.
                self.recorder.reopen_run(run_id)
                self._last_step[trial.trial_id] = self.recorder.last_steps(run_id)
            return run_id
        record = self.ledger.record_for(trial)
        run_id, created = self.recorder.start_trial_run(
            self.parent_run_id,
            trial.trial_id,
            run_name=layout.trial_run_name(record, self._confirmed_index(record)),
            params=layout.trial_params(record),
            tags=layout.trial_tags(
                record,
                self.space,
                self.run_ids.get(record.confirms) if record.confirms else None,
            ),
        )
        if created and record.config:
            self.recorder.log_text(
                run_id, ui_layout.config_yaml(record.config), ui_layout.CONFIG_FILE
            )
            self.recorder.log_datasets(run_id, record.config)
        # A restored sweep continues after the epochs already logged.
        self._last_step[trial.trial_id] = {} if created else self.recorder.last_steps(run_id)
        self.run_ids[trial.trial_id] = run_id
        return run_id

    def _confirmed_index(self, record: TrialRecord) -> int | None:
        repeated = self.ledger.records.get(record.confirms) if record.confirms else None
        return repeated.index if repeated is not None else None

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        with self.guarded("create the run", trial.trial_id):
            self._run_id(trial)

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        with self.guarded("log metrics", trial.trial_id):
            run_id = self._run_id(trial)
            if result.get(INFEASIBLE):
                return  # worst values for the searcher, not measurements
            step = result_step(result)
            last = self._last_step.setdefault(trial.trial_id, {})
            reported = epoch_metrics(result)
            if self.objective is not None:
                metric, mode = self.objective
                history = self.ledger.record_for(trial).history.get(metric, [])
                reported.update(ui_layout.objective_progress(history, mode, self.first_rung, step))
            # Only epochs MLflow does not have yet: a trial restarted from its checkpoint
            # (worker lost, sweep resumed) re-reports the epochs after that checkpoint.
            values = {key: value for key, value in reported.items() if step > last.get(key, -1)}
            if values:
                self.recorder.log_metrics(run_id, values, step)
                last.update(dict.fromkeys(values, step))

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        with self.guarded("create the run", trial.trial_id):
            self._run_id(trial)
        if record.infeasible:
            self.fail(record)
            return
        self.finish(record)

    def finish(self, record: TrialRecord) -> None:
        """End a trial's run that ended without error: its status, its model, FINISHED.

        Called for every completed or early-stopped trial, including those the sweep's time
        budget stopped (Ray Tune ends the sweep without a completion event for them). A trial
        that ran all its epochs logs its model; an early-stopped one only if it turns out to be
        the best (:meth:`log_model`, called at the end of the sweep), and is renamed
        ``... stopped@<epoch>`` and tagged ``tauray.stopped_at_epoch``.
        """
        run_id = self.run_ids.get(record.trial_id)
        if run_id is None:
            return
        with self.guarded("finish the run", record.trial_id):
            if self.log_models and record.status == "completed":
                self.log_model(record)
            self.recorder.set_tags(run_id, layout.ended_tags(record))
            if record.status == "stopped":
                name = layout.trial_run_name(record, self._confirmed_index(record))
                self.recorder.set_tags(run_id, ui_layout.stopped_tags(record.epoch))
                self.recorder.rename_run(run_id, ui_layout.stopped_run_name(name, record.epoch))
            self.recorder.end_run(run_id, "FINISHED")

    def log_model(self, record: TrialRecord) -> str | None:
        """Log a trial's embedding model from its last checkpoint; return the model URI.

        The model is named after the trial (:func:`tauray.layout.models.trial_model_name`) and
        carries the run's final metrics (:func:`tauray.tracking_models.link_final_metrics`).
        Returns the URI logged before, if any; None (and a ``tauray.model_error`` tag on the
        run) when the trial has no checkpoint or the model cannot be exported.
        """
        if record.trial_id in self.model_uris:
            return self.model_uris[record.trial_id]
        run_id = self.run_ids.get(record.trial_id)
        if run_id is None or not record.checkpoint_path:
            return None
        try:
            model_uri = tracking_models.log_model(
                self.recorder,
                run_id,
                _load_embedding_model(record.checkpoint_path),
                name=model_layout.trial_model_name(record, self._confirmed_index(record)),
            )
        except Exception as error:
            self.errors += 1
            logger.exception("MLflow: could not log the model of trial %s", record.trial_id)
            with self.guarded("tag the model error", record.trial_id):
                self.recorder.set_tags(run_id, layout.model_error_tags(error))
            return None
        self.model_uris[record.trial_id] = model_uri
        with self.guarded("tag the model", record.trial_id):
            self.recorder.set_tags(run_id, layout.model_tags(model_uri))
        if record.config:
            with self.guarded("link the final metrics to the model", record.trial_id):
                objective = self.objective[0] if self.objective is not None else None
                tracking_models.link_final_metrics(
                    self.recorder, run_id, model_uri, record.config, objective
                )
        return model_uri

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        with self.guarded("record the failure", trial.trial_id):
            self._run_id(trial)
        self.fail(record)

    def fail(self, record: TrialRecord) -> None:
        """End a failed (or infeasible: out of memory) trial's run: reason, kind, FAILED."""
        run_id = self.run_ids.get(record.trial_id)
        if run_id is None:
            return
        with self.guarded("record the failure", record.trial_id):
            self.recorder.set_tags(run_id, layout.failure_tags(record))
            self.recorder.end_run(run_id, "FAILED")

    def interrupt(self, records: Sequence[TrialRecord]) -> None:
        """End the runs of trials an interrupted sweep left unfinished as KILLED.

        Their ``tauray.status`` stays ``running``; ``tauray tune --resume`` reopens the runs
        and continues them after the epochs they have.
        """
        for record in records:
            run_id = self.run_ids.get(record.trial_id)
            if run_id is None or record.finished:
                continue
            with self.guarded("end the interrupted run", record.trial_id):
                self.recorder.end_run(run_id, "KILLED")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """End child runs of trials this sweep does not know (lost by a killed driver); the
        ledger knows the trials of the sweep's earlier phase, which this Tuner does not."""
        known = [trial.trial_id for trial in trials] + list(self.ledger.records)
        with self.guarded("end the runs of lost trials", "-"):
            self.lost_run_ids.extend(self.recorder.end_lost_runs(self.parent_run_id, known))

    def get_state(self) -> dict[str, Any] | None:
        return {"run_ids": dict(self.run_ids), "model_uris": dict(self.model_uris)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids.update(state.get("run_ids", {}))
        self.model_uris.update(state.get("model_uris", {}))

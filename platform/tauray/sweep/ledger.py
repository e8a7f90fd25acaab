"""The sweep driver's trial ledger: Ray Tune's trial events turned into :class:`TrialRecord` s.

:class:`TrialLedger` is a Ray Tune callback in the driver process: it turns the stream of trial
events (start, every epoch's result, completion, error) into one
:class:`~tauray.trials.TrialRecord` per trial. The MLflow logger, the progress printer, the plots
and the final summary read these records; Ray Tune saves them with the experiment state, so a
resumed sweep has them again.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from tauray.trials import (
    CHECKPOINT_PATH,
    INFEASIBLE,
    INFEASIBLE_BATCH_SIZE,
    PHASE_CONFIRM,
    TrialRecord,
    count_statuses,
    epoch_metrics,
    failure_reason,
    resolve_train_loop_config,
    result_step,
    sampled_key,
    sampled_train_loop_config,
)
from tauray_trainers.config import flatten

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


def _error_text(trial: Trial) -> str | None:
    """The error text Ray Tune stored for a failed trial (None when there is none to read)."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            return Path(path).read_text(errors="replace")
        return trial.get_error()
    except Exception:  # no storage context, or storage we cannot reach
        logger.debug("no error text for trial %s", trial.trial_id, exc_info=True)
        return None


class TrialLedger(Callback):
    """Ray Tune callback that keeps a :class:`TrialRecord` per trial in the sweep driver.

    Put it first in ``RunConfig(callbacks=[...])``: callbacks run in list order, and the MLflow
    logger and the progress printer read the records this one updates.

    Args:
        fixed_config: the sweep's fixed nested ``train_loop_config`` (merged under each trial's
            sampled values to get the config the workers train with).
    """

    def __init__(self, fixed_config: Mapping[str, Any]) -> None:
        self.fixed_config = copy.deepcopy(dict(fixed_config))
        self.records: dict[str, TrialRecord] = {}
        # Sampled values (as :func:`sampled_key`) of the confirmation runs -> the search trial
        # each repeats: a trial with these values is a confirmation run.
        self.confirmations: dict[str, str] = {}

    def expect_confirmations(self, confirmations: Mapping[str, str]) -> None:
        """Mark the trials that will start with these sampled values (:func:`sampled_key`) as
        confirmation runs of the search trial each maps to."""
        self.confirmations.update(confirmations)

    # ---- queries -----------------------------------------------------------------------------

    def ordered(self) -> list[TrialRecord]:
        """Records in the order the trials started."""
        return sorted(self.records.values(), key=lambda record: record.index)

    def counts(self) -> dict[str, int]:
        """How many trials are running, completed, stopped early and failed."""
        return count_statuses(self.records.values())

    def stop_unfinished(self) -> list[TrialRecord]:
        """Mark trials still running as stopped early (the sweep's time budget ended them)."""
        stopped = [record for record in self.ordered() if record.status == "running"]
        for record in stopped:
            record.status = "stopped"
        return stopped

    # ---- Tune events -------------------------------------------------------------------------

    def record_for(self, trial: Trial) -> TrialRecord:
        """The record of ``trial``, created on first sight (also after a sweep restore)."""
        record = self.records.get(trial.trial_id)
        if record is None:
            sampled = sampled_train_loop_config(trial.config)
            try:
                config: dict[str, Any] | None = resolve_train_loop_config(
                    self.fixed_config, trial.config
                )
                config_error = None
            except (ValueError, TypeError) as error:
                config, config_error = None, str(error)
            record = TrialRecord(
                trial_id=trial.trial_id,
                index=len(self.records) + 1,
                sampled=flatten(sampled),
                config=config,
                config_error=config_error,
            )
            confirms = self.confirmations.get(sampled_key(record.sampled))
            if confirms is not None:
                record.phase, record.confirms = PHASE_CONFIRM, confirms
            self.records[trial.trial_id] = record
        return record

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.record_for(trial)
        record.status = "running"

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        record = self.record_for(trial)
        if result.get(INFEASIBLE):
            record.status = "failed"
            record.infeasible = True
            record.error = str(result[INFEASIBLE])
            batch = result.get(INFEASIBLE_BATCH_SIZE)
            record.oom_batch_size = int(batch) if isinstance(batch, (int, float)) else None
            return  # the worst values it carries are for the searcher, not the trial's metrics
        self._absorb(record, result)

    @staticmethod
    def _absorb(record: TrialRecord, result: Mapping[str, Any]) -> None:
        step = result_step(result)
        record.epoch = max(record.epoch, step)
        for key, value in epoch_metrics(result).items():
            record.metrics[key] = value
            history = record.history.setdefault(key, [])
            if not history or history[-1][0] < step:  # an epoch reported again: once
                history.append((step, value))
        checkpoint = result.get(CHECKPOINT_PATH)
        if isinstance(checkpoint, str) and checkpoint:
            record.checkpoint_path = checkpoint

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        """A checkpoint Ray Tune saved for the trial (an in-trial run reports its checkpoints to
        Ray Tune; a Ray Train run's arrive as ``checkpoint_path`` in its results instead)."""
        from tauray.storage import checkpoint_uri

        path = checkpoint_uri(checkpoint)  # on an object store: its URI, not a bucket path
        if path:
            self.record_for(trial).checkpoint_path = path

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.record_for(trial)
        if record.infeasible:
            return
        # A restored trial whose last epoch reached Ray Tune before the driver died completes
        # without a new report: Tune's restored last result still has that epoch.
        last = getattr(trial, "last_result", None)
        if isinstance(last, Mapping) and result_step(last) > record.epoch:
            self._absorb(record, last)
        planned = record.planned_epochs
        record.status = (
            "completed" if planned is not None and record.epoch >= planned else "stopped"
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.record_for(trial)
        record.status = "failed"
        record.error = record.config_error or failure_reason(_error_text(trial))

    # ---- sweep restore -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any] | None:
        """The records, saved by Ray Tune with the experiment state (restored on ``--resume``)."""
        return {"records": [dataclasses.asdict(record) for record in self.ordered()]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Bring back the records of a restored sweep (finished trials get no new events)."""
        for raw in state.get("records", []):
            record = TrialRecord(**raw)
            record.history = {
                key: [(int(step), float(value)) for step, value in pairs]
                for key, pairs in record.history.items()
            }
            self.records[record.trial_id] = record

"""What runs in a Ray Tune trial actor: one trial, trained in the actor or by Ray Train.

:func:`tauray_trial` is the sweep's function trainable. A one-worker trial trains in the trial
actor itself (:mod:`tauray.sweep.in_trial`); a trial with several workers is a DDP job and runs as a
Ray Train ``TorchTrainer`` worker group, the same path ``tauray train`` takes, whose reports
the trial forwards to Ray Tune (:func:`tauray.training.fit_forwarding_reports`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray import tune

from tauray.sweep.signals import CurveSignal
from tauray.trials import INFEASIBLE, INFEASIBLE_BATCH_SIZE, resolve_train_loop_config
from tauray_trainers.config import build_config

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from tauray.cluster import ClusterInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSetup:
    """What every trial driver gets bound (``tune.with_parameters``), never searched.

    Attributes:
        fixed_config: the sweep's fixed nested ``train_loop_config``.
        workers: Ray Train workers per trial.
        gpus_per_worker: GPUs per worker.
        cpus_per_worker: CPUs per worker.
        train_storage: where the trials' Ray Train runs keep checkpoints.
        tracking_uri: the absolute MLflow tracking URI, exported to the workers as
            ``MLFLOW_TRACKING_URI`` (they never write to it: only the sweep driver does).
        max_failures: Ray Train worker-group restarts per trial (from the last checkpoint).
        in_trial: train in the trial actor itself (:mod:`tauray.sweep.in_trial`) instead of a
            Ray Train worker group; only for one worker (several workers are a DDP job: Ray
            Train).
        objectives: ``(metric, mode)`` of every objective: an out-of-memory trial reports the
            worst value of each (-inf for ``max``, +inf for ``min``) so the searcher learns
            that its region is infeasible.
        predict_final: add the first objective's value predicted for the last epoch to each
            report (``--early-signal curve``, :class:`~tauray.sweep.signals.CurveSignal`).
    """

    fixed_config: dict[str, Any]
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    train_storage: str
    tracking_uri: str | None = None
    max_failures: int = 0
    objectives: tuple[tuple[str, str], ...] = ()
    in_trial: bool = False
    predict_final: bool = False

    def __post_init__(self) -> None:
        if self.in_trial and self.workers != 1:
            raise ValueError(
                f"in-trial training runs one worker, got {self.workers}: a trial with several "
                "workers is a DDP job and runs as a Ray Train worker group"
            )


THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
"""Seconds Ray Tune waits for a trial's function to return before it reuses the trial's actor."""


def tauray_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable: train a one-worker trial in this actor
    (:mod:`tauray.sweep.in_trial`), or run the trial as a Ray Train job whose reports it
    forwards.

    The Train run is named after the trial id (unique in the sweep, stable across a restore, so
    a restored trial resumes its own checkpoints).

    Args:
        config: Tune's trial config, ``{"train_loop_config": {...sampled values...}}``.
        setup: the sweep's bound infrastructure.

    A trial that runs out of memory does not raise: it reports
    :data:`~tauray.trials.INFEASIBLE` (the reason, naming the batch size) with the worst value of
    every objective, so Optuna records the point as a very bad one (TPE then samples away from
    it; a failed trial would be ignored by TPE) and the ledger and MLflow record the trial as
    failed, kind ``out_of_memory``, with the batch size.

    Raises:
        ValueError: the sampled values and fixed settings make an invalid trainer config.
        ray.train.TrainingFailedError: training failed (the worker's error is inside).
    """
    from tauray.tracking import TRACKING_URI_ENV
    from tauray.training import (
        build_trainer,
        fit_forwarding_reports,
        is_out_of_memory,
        queue_reports_callback,
        report_queue,
    )

    train_loop_config = resolve_train_loop_config(setup.fixed_config, config)
    derive = None
    if setup.predict_final and setup.objectives:
        epochs = build_config(train_loop_config).epochs
        derive = CurveSignal(setup.objectives[0][0], epochs).add
    if setup.in_trial:
        try:
            from tauray.sweep.in_trial import run_in_trial  # torch: only trial actors need it

            # Ray Tune resets this actor for the next trial once this function has returned,
            # waiting TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s by default) for it, and fails the
            # next trial if that is too short (a loaded machine, a slow last checkpoint).
            os.environ.setdefault(THREAD_TIMEOUT_ENV, "120")
            run_in_trial(
                train_loop_config,
                cpus_per_worker=setup.cpus_per_worker,
                gpus_per_worker=setup.gpus_per_worker,
                derive=derive,
            )
        except Exception as error:
            if not (setup.objectives and is_out_of_memory(error)):
                raise
            _report_infeasible(error, train_loop_config, setup)
        return
    reports = report_queue(maxsize=1)
    try:  # the queue goes whatever happens, an invalid config included
        trainer = build_trainer(
            train_loop_config,
            workers=setup.workers,
            gpus_per_worker=setup.gpus_per_worker,
            cpus_per_worker=setup.cpus_per_worker,
            run_name=tune.get_context().get_trial_id(),
            storage_path=setup.train_storage,
            callbacks=[queue_reports_callback(reports, derive=derive, checkpoints=True)],
            max_failures=setup.max_failures,
            worker_env={TRACKING_URI_ENV: setup.tracking_uri} if setup.tracking_uri else None,
        )
        result, forwarded = fit_forwarding_reports(trainer, reports, tune.report)
        # A trial restored after its last epoch's checkpoint was saved but before Ray Tune got
        # that epoch's report trains nothing more and reports nothing: forward the Train run's
        # last metrics (the ledger and MLflow skip an epoch they already have).
        if not forwarded and result.metrics:
            tune.report(dict(result.metrics))
    except Exception as error:
        if not (setup.objectives and is_out_of_memory(error)):
            raise
        _report_infeasible(error, train_loop_config, setup)
    finally:
        reports.shutdown()


def _report_infeasible(
    error: BaseException, train_loop_config: Mapping[str, Any], setup: TrialSetup
) -> None:
    """Report an out-of-memory trial to Ray Tune: the reason and the worst objective values."""
    from tauray.training import describe_failure

    reason = f"infeasible: {describe_failure(error)}"
    logger.warning("trial %s: %s", tune.get_context().get_trial_id(), reason)
    worst = {
        metric: (-math.inf if mode == "max" else math.inf) for metric, mode in setup.objectives
    }
    tune.report(
        {
            **worst,
            INFEASIBLE: reason,
            INFEASIBLE_BATCH_SIZE: _per_worker_batch(train_loop_config, setup.workers),
        }
    )


def trial_resources(
    setup: TrialSetup, info: ClusterInfo
) -> dict[str, float] | tune.PlacementGroupFactory:
    """What one trial reserves: a driver's share; when it trains in its actor, also its
    worker's, in the same bundle."""
    from tauray.cluster import driver_resources
    from tauray.sweep.in_trial import in_trial_resources

    driver = driver_resources(info)
    if not setup.in_trial:
        return driver
    return in_trial_resources(
        driver,
        cpus_per_worker=setup.cpus_per_worker,
        gpus_per_worker=setup.gpus_per_worker,
    )


def _per_worker_batch(train_loop_config: Mapping[str, Any], workers: int) -> int:
    """The per-worker batch size of a trial config (what ran out of memory)."""
    global_batch = train_loop_config.get("global_batch_size")
    if isinstance(global_batch, int) and workers > 0:
        return global_batch // workers
    return int(train_loop_config["batch_size_per_worker"])


def trial_name(trial: Trial) -> str:
    """Ray Tune trial (and folder) name: ``trial_<id>`` instead of the long config string."""
    return f"trial_{trial.trial_id}"

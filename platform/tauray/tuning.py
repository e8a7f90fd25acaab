"""Sweeps: Ray Tune + Optuna over DDP trials, every trial and model tracked in MLflow.

A sweep is one ``ray.tune.Tuner``:

- each trial runs :func:`tauray_trial`, a Tune *function trainable*. By default it trains in the
  trial actor itself, with one kept rank worker per further CPU worker (:mod:`tauray.in_trial`:
  no process start or import per trial once Ray Tune reuses the actor); with ``--trial-runner
  ray-train``, and always for several GPU workers, it builds a Ray Train ``TorchTrainer`` for the
  trial's ``train_loop_config`` (named after the trial id, so a sweep restore resumes the same
  Train run) and forwards every epoch's report to Tune with ``TuneReportCallback`` (Ray Train
  V2's supported way to run Train inside Tune);
- the sweep's folder (Ray Tune's state, checkpoints, the request ``--resume`` reads, the time
  spent, the best config, the plots) is a local folder or an object store's URI
  (:mod:`tauray.storage`);
- the search algorithm is ``OptunaSearch`` over the space's define-by-run function with a seeded
  multivariate, grouped TPE sampler (conditional parameters), the space's baselines
  (``points_to_evaluate``) first;
- early stopping is ASHA on the epoch counter by default (HyperBand or none selectable);
- trials never take a CPU for their driver (:mod:`tauray.cluster`), and as many run at once as
  the cluster's CPUs/GPUs allow;
- a trial that raises (an error, a non-finite loss, out of memory) is recorded as failed with its
  reason and the sweep goes on.

Infrastructure (storage path, resources, the fixed settings) is bound to the trainable with
``tune.with_parameters``; the search space only ever sees ``train_loop_config/...`` names. Only
this driver process writes to MLflow (:mod:`tauray.tracking`).

Entry points: :func:`plan_sweep` validates a :class:`SweepRequest` without starting Ray (a bad
``--set`` or an unreachable tracking server fails in about a second), :func:`run_sweep` runs
it and returns a :class:`SweepSummary`, :func:`format_summary` prints it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from ray import tune

from tauray.storage import StoragePath, local_folder, location, write_text_atomic
from tauray.trials import (
    INFEASIBLE,
    INFEASIBLE_BATCH_SIZE,
    TrialLedger,
    TrialRecord,
    flatten,
    resolve_train_loop_config,
    result_step,
)
from tauray.trials import format_number as _number
from tauray_trainers import metrics as names
from tauray_trainers.config import TrainConfig, build_config

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from tauray.cluster import ClusterInfo
    from tauray.tracking import TrackingTarget
    from tauray_spaces import Objective, SearchSpace

logger = logging.getLogger(__name__)

SCHEDULERS = ("asha", "hyperband", "none")
DEFAULT_TRIALS = 10
DEFAULT_STORAGE = "tauray_results"
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

Echo = Callable[[str], None]


# ---- the request and its validation ----------------------------------------------------------


@dataclass(frozen=True)
class SweepRequest:
    """What the user asked for (the ``tauray tune`` options), before validation.

    Args:
        space: a built-in space's name or a YAML space file.
        experiment: MLflow experiment name (default ``tauray-<space>``).
        trials: number of trials (default 10 unless only a time budget is given).
        time_budget_s: stop starting trials and stop running ones after this many seconds of
            Ray Tune (a resumed sweep gets what its earlier sessions left).
        workers_per_trial: workers (DDP ranks) per trial.
        gpus_per_worker: GPUs per worker (0: CPU training).
        cpus_per_worker: CPUs per worker.
        scheduler: ``asha`` (default), ``hyperband`` or ``none``.
        tracking_uri: MLflow tracking URI (else ``MLFLOW_TRACKING_URI``, else local SQLite).
        address: a running Ray cluster (else a local Ray is started and stopped).
        overrides: ``key=value`` settings pinned for every trial (``--set``); a key the space
            samples becomes a constant.
        storage_path: where Ray Tune and Ray Train keep results and checkpoints.
        seed: seed of the TPE sampler (the trainer's own seed is the config's ``seed``).
        objectives: ``metric:mode`` texts overriding the space's objective(s); the first one
            drives early stopping and the champion.
        model_name: registered model name of the champion (default: the experiment name).
        num_cpus: CPUs of a local Ray (default: all of this machine's).
        num_gpus: GPUs of a local Ray (default: autodetected).
        max_concurrent_trials: cap on trials at once (default: what the cluster fits).
        log_models: log the model of every trial that runs all its epochs, and the best
            trial's (the champion needs it).
        verbose: keep Ray Tune's own tables and error tracebacks (default: tauray's progress
            lines only; failures still print their one-line reason).
        max_failures: restarts of a trial's Ray Train worker group from the trial's last
            checkpoint when a worker fails (Ray Train's ``FailureConfig``; 0: a trial fails at
            its first error). Ray Train cannot tell a lost worker process from an error in the
            training code, so a deterministic error (non-finite loss, out of memory) is retried
            too and fails again. A trial trained in its trial actor is restarted by Ray Tune's
            ``FailureConfig`` instead, with the same count.
        trial_runner: ``in-trial`` (default): train each trial inside its Ray Tune trial
            actor, with one helper actor per further CPU worker, all kept for the next trial
            (:mod:`tauray.in_trial`: no process to start and nothing to import per trial);
            ``ray-train``: a Ray Train worker group per trial. Trials with several GPU workers
            always use Ray Train.
    """

    space: str
    experiment: str | None = None
    trials: int | None = None
    time_budget_s: float | None = None
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    scheduler: str = "asha"
    tracking_uri: str | None = None
    address: str | None = None
    overrides: tuple[str, ...] = ()
    storage_path: str | None = None
    seed: int = 0
    objectives: tuple[str, ...] = ()
    model_name: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    max_concurrent_trials: int | None = None
    log_models: bool = True
    verbose: bool = False
    max_failures: int = 0
    trial_runner: str = "in-trial"


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep, ready to run (nothing started yet).

    Attributes:
        request: what was asked.
        space: the search space with ``--set`` applied.
        fixed_config: the nested ``train_loop_config`` settings every trial shares.
        objectives: what the sweep optimises (the first drives early stopping and the champion).
        target: the MLflow tracking target (absolute URI).
        experiment: MLflow experiment name.
        sweep_name: unique name of this sweep (Ray Tune experiment folder, MLflow parent run).
        storage_path: where Ray Tune / Ray Train results go: an absolute local folder or an
            object store's URI (:class:`~tauray.storage.RemotePath`).
        model_name: registered model name of the champion.
        epochs: epochs per trial (the early-stopping horizon).
        num_samples: trials to run (-1: until the time budget is spent).
    """

    request: SweepRequest
    space: SearchSpace
    fixed_config: dict[str, Any]
    objectives: tuple[Objective, ...]
    target: TrackingTarget
    experiment: str
    sweep_name: str
    storage_path: StoragePath
    model_name: str
    epochs: int
    num_samples: int

    @property
    def objective(self) -> Objective:
        """The primary objective."""
        return self.objectives[0]

    @property
    def sweep_dir(self) -> StoragePath:
        """Ray Tune's folder for this sweep (trial results, best config, plots)."""
        return self.storage_path / self.sweep_name


def parse_objective(text: str) -> Objective:
    """``val/knn_top1:max`` -> ``Objective("val/knn_top1", "max")``.

    Raises:
        ValueError: without ``:max``/``:min``, or with an empty metric.
    """
    from tauray_spaces import Objective

    metric, sep, mode = text.rpartition(":")
    if not sep or not metric.strip() or mode not in ("max", "min"):
        raise ValueError(f"objective {text!r} must look like METRIC:max or METRIC:min")
    return Objective(metric.strip(), mode)  # type: ignore[arg-type]


def _safe_name(text: str) -> str:
    return _NAME_SAFE.sub("-", text).strip("-") or "sweep"


def _absolute_data_root(config: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Make a relative ``data.root`` absolute: local Ray workers run in other directories."""
    root = config.get("data", {}).get("root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        config = {**config, "data": {**config["data"], "root": str((cwd / root).resolve())}}
    return config


TRIAL_RUNNERS = ("in-trial", "ray-train")
"""Where a trial trains: in its Ray Tune trial actor (:mod:`tauray.in_trial`) or Ray Train."""


def runs_in_trial(request: SweepRequest) -> bool:
    """Whether the request's trials train in their trial actors: asked for, and not several
    GPU workers (those need Ray Train's NCCL and device set-up)."""
    return request.trial_runner == "in-trial" and (
        request.workers_per_trial == 1 or not request.gpus_per_worker
    )


def storage_location(storage_path: str | None, base: Path) -> StoragePath:
    """Where sweeps keep their folders: ``--storage-path`` (default ``./tauray_results``) as an
    absolute local path below ``base``, or an object store's URI (``s3://bucket/prefix``)."""
    return location(storage_path or DEFAULT_STORAGE, base)


def plan_sweep(
    request: SweepRequest,
    *,
    cwd: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_tracking: bool = True,
    now: _dt.datetime | None = None,
) -> SweepPlan:
    """Validate a request without starting Ray: every mistake fails here, in about a second.

    Args:
        request: the sweep request.
        cwd: directory for relative paths and the embedded MLflow default (default: cwd).
        environ: environment for ``MLFLOW_TRACKING_URI`` (default: ``os.environ``).
        check_tracking: probe the tracking server (``/health``) before returning.
        now: the time that names the sweep (default: now).

    Raises:
        ValueError: an invalid option, space, ``--set`` or config (one line naming it).
        ConnectionError: the tracking server does not answer.
    """
    from tauray.tracking import check_tracking_reachable, resolve_tracking_target
    from tauray_spaces import get_space

    base = Path(cwd).resolve() if cwd is not None else Path.cwd()
    if request.scheduler not in SCHEDULERS:
        raise ValueError(
            f"--scheduler {request.scheduler!r} is not one of: {', '.join(SCHEDULERS)}"
        )
    if request.trials is not None and request.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {request.trials}")
    if request.time_budget_s is not None and not request.time_budget_s > 0:
        raise ValueError(f"--time-budget must be > 0 seconds, got {request.time_budget_s}")
    if request.workers_per_trial < 1:
        raise ValueError(f"--workers-per-trial must be >= 1, got {request.workers_per_trial}")
    if request.gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, got {request.gpus_per_worker}")
    if request.cpus_per_worker < 0:
        raise ValueError(f"--cpus-per-worker must be >= 0, got {request.cpus_per_worker}")
    if request.max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {request.max_failures}")
    if request.trial_runner not in TRIAL_RUNNERS:
        raise ValueError(
            f"--trial-runner {request.trial_runner!r} is not one of: {', '.join(TRIAL_RUNNERS)}"
        )
    if request.max_concurrent_trials is not None and request.max_concurrent_trials < 1:
        raise ValueError(
            f"--max-concurrent-trials must be >= 1, got {request.max_concurrent_trials}"
        )

    space = get_space(request.space)
    if request.overrides:
        space = space.with_overrides(list(request.overrides))
    fixed = dict(space.fixed)
    if request.address is None:
        fixed = _absolute_data_root(fixed, base)
    config = build_config(fixed)  # a bad --set fails here, before Ray starts
    for point in space.points_to_evaluate:
        build_config(space.trial_config(point))

    objectives = (
        tuple(parse_objective(text) for text in request.objectives)
        if request.objectives
        else tuple(space.objectives)
    )
    if not objectives:
        raise ValueError(f"search space {space.name!r} names no objective")

    target = resolve_tracking_target(request.tracking_uri, cwd=base, environ=environ)
    if check_tracking:
        check_tracking_reachable(target)

    experiment = request.experiment or f"tauray-{space.name}"
    if not experiment.strip():
        raise ValueError("--experiment is empty")
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    storage = storage_location(request.storage_path, base)
    if request.trials is not None:
        num_samples = request.trials
    elif request.time_budget_s is not None:
        num_samples = -1
    else:
        num_samples = DEFAULT_TRIALS
    return SweepPlan(
        request=request,
        space=space,
        fixed_config=fixed,
        objectives=objectives,
        target=target,
        experiment=experiment,
        sweep_name=f"{_safe_name(experiment)}-{stamp}",
        storage_path=storage,
        model_name=request.model_name or _safe_name(experiment),
        epochs=config.epochs,
        num_samples=num_samples,
    )


# ---- resuming an interrupted sweep -------------------------------------------------------------

#: The request of a sweep, saved in its folder when it starts (what ``--resume`` re-plans from).
SWEEP_FILE = "tauray_sweep.json"
_TUNER_STATE = "tuner.pkl"  # Ray Tune's own file in every experiment folder


def save_sweep_request(plan: SweepPlan) -> Path:
    """Write the sweep's request, name, working directory and tracking URI to its folder."""
    request = dataclasses.asdict(plan.request)
    document = {
        "request": {key: list(v) if isinstance(v, tuple) else v for key, v in request.items()},
        "sweep_name": plan.sweep_name,
        "experiment": plan.experiment,
        "tracking_uri": plan.target.uri,
        "cwd": str(Path.cwd()),
    }
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    path = plan.sweep_dir / SWEEP_FILE
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return path


def find_sweep_dir(
    target: str, *, storage_path: str | None = None, cwd: str | Path | None = None
) -> StoragePath:
    """The folder of the sweep ``--resume`` names: a path or URI, or a sweep name under the
    storage path.

    Raises:
        ValueError: no such folder, or it holds no sweep tauray started.
    """
    base = Path(cwd).resolve() if cwd is not None else Path.cwd()
    storage = storage_location(storage_path, base)
    candidates = [location(target, base), storage / target]
    for candidate in candidates:
        if (candidate / SWEEP_FILE).is_file():
            if not (candidate / _TUNER_STATE).is_file():
                raise ValueError(
                    f"--resume {target!r}: {candidate} holds no Ray Tune state ({_TUNER_STATE}); "
                    "the sweep was interrupted before its first trial started: run it again"
                )
            return candidate.resolve()
    looked = " and ".join(str(candidate) for candidate in candidates)
    raise ValueError(
        f"--resume {target!r}: no tauray sweep folder (with {SWEEP_FILE}) at {looked}; pass the "
        "folder `tauray tune` printed, or the sweep's name with --storage-path"
    )


def plan_resume(
    target: str,
    *,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool | None = None,
    cwd: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_tracking: bool = True,
) -> SweepPlan:
    """Re-plan an interrupted sweep from its folder (``tauray tune --resume``).

    The sweep keeps its name, folder, space, settings and tracking URI; ``tracking_uri``,
    ``address``, ``num_cpus`` and ``verbose`` may be given anew (the tracking server or the Ray
    head may have moved).

    Raises:
        ValueError: no sweep folder, or its saved request is no longer valid.
        ConnectionError: the tracking server does not answer.
    """
    sweep_dir = find_sweep_dir(target, storage_path=storage_path, cwd=cwd)
    document = json.loads((sweep_dir / SWEEP_FILE).read_text())
    saved = dict(document["request"])
    for key, value in list(saved.items()):
        if isinstance(value, list):
            saved[key] = tuple(value)
    known = {item.name for item in dataclasses.fields(SweepRequest)}
    request = SweepRequest(**{key: value for key, value in saved.items() if key in known})
    request = dataclasses.replace(
        request,
        tracking_uri=tracking_uri or document.get("tracking_uri") or request.tracking_uri,
        address=address if address is not None else request.address,
        num_cpus=num_cpus if num_cpus is not None else request.num_cpus,
        verbose=request.verbose if verbose is None else verbose,
    )
    plan = plan_sweep(
        request,
        cwd=document.get("cwd") or cwd,
        environ=environ,
        check_tracking=check_tracking,
    )
    return dataclasses.replace(
        plan,
        sweep_name=sweep_dir.name,
        storage_path=sweep_dir.parent,
        experiment=document.get("experiment") or plan.experiment,
    )


# ---- the trial ---------------------------------------------------------------------------------


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
        in_trial: train in the trial actor itself (as rank 0, with helper actors for further
            CPU workers, :mod:`tauray.in_trial`) instead of a Ray Train worker group.
        objectives: ``(metric, mode)`` of every objective: an out-of-memory trial reports the
            worst value of each (-inf for ``max``, +inf for ``min``) so the searcher learns
            that its region is infeasible.
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


THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
"""Seconds Ray Tune waits for a trial's function to return before it reuses the trial's actor."""


def tauray_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable: train one trial in this actor (:mod:`tauray.in_trial`) or as
    a Ray Train job whose reports it forwards.

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
    from tauray.training import build_trainer, is_out_of_memory

    train_loop_config = resolve_train_loop_config(setup.fixed_config, config)
    if setup.in_trial:
        try:
            from tauray.in_trial import run_in_trial

            # Ray Tune resets this actor for the next trial once this function has returned,
            # waiting TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s by default) for it, and fails the
            # next trial if that is too short (a loaded machine, a slow last checkpoint).
            os.environ.setdefault(THREAD_TIMEOUT_ENV, "120")
            run_in_trial(
                train_loop_config,
                workers=setup.workers,
                cpus_per_worker=setup.cpus_per_worker,
                gpus_per_worker=setup.gpus_per_worker,
            )
        except Exception as error:
            if not (setup.objectives and is_out_of_memory(error)):
                raise
            _report_infeasible(error, train_loop_config, setup)
        return
    trainer = build_trainer(
        train_loop_config,
        workers=setup.workers,
        gpus_per_worker=setup.gpus_per_worker,
        cpus_per_worker=setup.cpus_per_worker,
        run_name=tune.get_context().get_trial_id(),
        storage_path=setup.train_storage,
        callbacks=[_tune_report_with_uri()],
        max_failures=setup.max_failures,
        worker_env={TRACKING_URI_ENV: setup.tracking_uri} if setup.tracking_uri else None,
    )
    # A trial restored after its last epoch's checkpoint was saved but before Ray Tune got that
    # epoch's report trains nothing more and reports nothing: then forward the Train run's last
    # metrics (the ledger and MLflow skip an epoch they already have). Only then: while a Train
    # run reports, Ray Tune forwards each report from another thread of this actor, and a
    # report from here as well can leave the trial waiting forever (seen under load).
    run_dir = location(setup.train_storage) / tune.get_context().get_trial_id()
    already_trained = last_checkpoint_epoch(run_dir) >= build_config(train_loop_config).epochs
    try:
        result = trainer.fit()
        if already_trained and result.metrics:
            tune.report(dict(result.metrics))
    except Exception as error:
        if not (setup.objectives and is_out_of_memory(error)):
            raise
        _report_infeasible(error, train_loop_config, setup)


class _CheckpointAt:
    """What ``TuneReportCallback`` reads of a checkpoint: where it is."""

    def __init__(self, path: str) -> None:
        self.path = path


def _tune_report_with_uri() -> Any:
    """``TuneReportCallback`` that reports a checkpoint on an object store by its URI (Ray's
    own reports the path inside the bucket, which no other process could open)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from tauray.storage import checkpoint_uri

    class TuneReportWithUri(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
            uri = checkpoint_uri(checkpoint) if checkpoint else None
            super().after_report(run_context, metrics, _CheckpointAt(uri) if uri else None)

    return TuneReportWithUri()


def last_checkpoint_epoch(run_dir: StoragePath) -> int:
    """The highest epoch among a Train run's ``checkpoint_epoch_<NNNN>`` folders (0: none)."""
    epochs = [
        int(match.group(1))
        for path in (run_dir.glob("checkpoint_epoch_*") if run_dir.is_dir() else ())
        if (match := re.fullmatch(r"checkpoint_epoch_(\d+)", path.name))
    ]
    return max(epochs, default=0)


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
    """What one trial reserves: a driver's share; when it trains in its actor, also one
    bundle per worker (the first one shared with the driver)."""
    from tauray.cluster import driver_resources
    from tauray.in_trial import in_trial_resources

    driver = driver_resources(info)
    if not setup.in_trial:
        return driver
    return in_trial_resources(
        driver,
        workers=setup.workers,
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


# ---- search algorithm and scheduler ----------------------------------------------------------


class RecordingSpace:
    """The space's define-by-run function, remembering each parameter's Optuna distribution.

    Ray Tune's ``OptunaSearch`` calls it once per trial; the distributions it collects let the
    sweep rebuild an Optuna study of the finished trials for the importance plot.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.distributions: dict[str, Any] = {}

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        constants = self.space.define(trial)
        try:
            self.distributions.update(trial.distributions)
        except AttributeError:  # a trial object without distributions: plots only lose one
            pass
        return constants


def sampler_description(num_samples: int, concurrency: int, seed: int) -> tuple[Any, str]:
    """The TPE sampler for a sweep and a one-line description of it (for MLflow).

    Multivariate + grouped TPE models the conditional parameters jointly (Optuna's advice for
    define-by-run spaces). Startup trials are random: Optuna's default is 10, which would make a
    small sweep purely random, so a third of the budget is used, between 2 and 10. With
    concurrent trials the constant liar keeps TPE from proposing the same point twice.
    """
    import optuna

    startup = 10 if num_samples < 0 else max(2, min(10, num_samples // 3))
    liar = concurrency > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            seed=seed,
            n_startup_trials=startup,
            constant_liar=liar,
        )
    text = (
        f"TPESampler(multivariate=True, group=True, seed={seed}, n_startup_trials={startup}, "
        f"constant_liar={liar})"
    )
    return sampler, text


def build_searcher(plan: SweepPlan, concurrency: int) -> tuple[Any, RecordingSpace, str]:
    """``OptunaSearch`` over the plan's space; returns ``(searcher, recording, description)``."""
    from ray.tune.search.optuna import OptunaSearch

    recording = RecordingSpace(plan.space)
    sampler, description = sampler_description(plan.num_samples, concurrency, plan.request.seed)
    metric: str | list[str]
    mode: str | list[str]
    if len(plan.objectives) == 1:
        metric, mode = plan.objective.metric, plan.objective.mode
    else:
        metric = [o.metric for o in plan.objectives]
        mode = [o.mode for o in plan.objectives]
    searcher = OptunaSearch(
        space=recording,
        metric=metric,
        mode=mode,
        points_to_evaluate=[dict(point) for point in plan.space.points_to_evaluate] or None,
        sampler=sampler,
        study_name=plan.sweep_name,
    )
    return searcher, recording, description


def longest_warmup(plan: SweepPlan) -> float:
    """Epochs of the longest warm-up any trial of the sweep can have.

    Counts the learning-rate warm-up (``optimizer.warmup_epochs``), a scheduled τ's warm-up
    (``temperature.warmup_epochs``) and DINO's teacher-temperature warm-up, from the fixed
    settings or, for a parameter the space samples, the top of its range. (A learnable τ's
    frozen start is not a warm-up of the model: the encoder trains at full rate meanwhile.)
    """
    fields = (
        "optimizer/warmup_epochs",
        "temperature/warmup_epochs",
        "dino/teacher_temperature_warmup_epochs",
    )
    config = build_config(plan.fixed_config)
    longest = 0.0
    for key in fields:
        section, name = key.split("/")
        longest = max(longest, float(getattr(getattr(config, section), name)))
    for spec in plan.space.parameter_specs:
        if spec.key in fields and spec.high is not None:
            longest = max(longest, float(spec.high))
    return longest


def first_rung(plan: SweepPlan) -> int:
    """ASHA's grace period in epochs: the first point where trials are compared.

    One epoch for trials shorter than ten epochs, two from ten on, and always at least one
    epoch past :func:`longest_warmup` (but never beyond half the trial, so that a rung can
    still stop something). Measured with ``benchmarks/search_efficiency.py``: after a 1-epoch
    learning-rate warm-up, kNN top-1 at epoch 1 was 0.11-0.17 for every τ in [0.02, 1] and
    did not rank them, while the final values spread from 0.17 to 0.38.
    """
    base = 1 if plan.epochs < 10 else 2
    past_warmup = math.floor(longest_warmup(plan)) + 1
    return max(1, min(max(base, past_warmup), plan.epochs // 2))


def build_scheduler(plan: SweepPlan) -> tuple[Any, str]:
    """The early-stopping scheduler and its description.

    ``asha``: asynchronous successive halving (Li et al., MLSys 2020). Trials are compared at
    rungs of ``grace_period * 3**k`` epochs and those below the top third stop. The grace
    period is one epoch for short trials, two from ten epochs on, and never ends inside a
    warm-up (:func:`first_rung`): during the learning-rate warm-up (or a τ warm-up) the
    metric does not rank the settings yet.

    ``hyperband``: asynchronous HyperBand from the same paper, i.e. ASHA over several brackets
    whose first rung sits at ``grace_period * 3**s`` (s = 0, 1, ...), so trials that are slow
    starters get a bracket that waits longer before judging them. Ray Tune's synchronous
    ``HyperBandScheduler`` is not used: it pauses trials until a bracket is full, which a
    sequential searcher under a concurrency limit never fills (measured here: 6 trials of 9
    epochs, 2 at a time, and it stopped none).

    Both use the trainer's ``epoch`` counter, which a restarted trial does not inflate.

    A multi-objective sweep runs every trial to the end (no early stopping, whatever
    ``--scheduler`` says): ASHA ranks trials on one metric only, and a trial it stops would be
    told to Optuna with truncated values of every objective -- a cost objective (worker-seconds,
    samples seen) is always better when truncated, so early-stopped trials would crowd the
    Pareto front with points that were never trained to the end.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    metric, mode = plan.objective.metric, plan.objective.mode
    epochs = plan.epochs
    if len(plan.objectives) > 1:
        if plan.request.scheduler != "none":
            logger.info("multi-objective sweep: no early stopping (--scheduler ignored)")
        return FIFOScheduler(), "none (multi-objective: every trial runs all its epochs)"
    if plan.request.scheduler == "none" or epochs < 2:
        return FIFOScheduler(), "none (every trial runs all its epochs)"
    grace, factor = first_rung(plan), 3
    brackets = 1
    if plan.request.scheduler == "hyperband":
        brackets = max(1, math.floor(math.log(epochs / grace, factor) + 1e-9) + 1)
    scheduler = AsyncHyperBandScheduler(
        time_attr=names.EPOCH,
        metric=metric,
        mode=mode,
        max_t=epochs,
        grace_period=grace,
        reduction_factor=factor,
        brackets=brackets,
    )
    name = "ASHA" if plan.request.scheduler == "asha" else "async HyperBand"
    text = (
        f"{name}(time_attr={names.EPOCH}, max_t={epochs}, grace_period={grace}, "
        f"reduction_factor={factor}"
    )
    return scheduler, text + (f", brackets={brackets})" if brackets > 1 else ")")


# ---- live progress ---------------------------------------------------------------------------


CLOCK_FILE = "tauray_clock.json"
"""How long Ray Tune has run a sweep, over all its sessions (in the sweep's folder)."""

MIN_RESUMED_BUDGET_S = 1.0
"""Ray Tune's time budget for a resumed sweep whose budget is already spent: it then stops the
unfinished trials at once, and they end as stopped by the time budget."""


def spent_tune_seconds(sweep_dir: StoragePath) -> float:
    """Seconds Ray Tune ran the sweep in ``sweep_dir`` in earlier sessions (0 when unknown)."""
    try:
        return float(json.loads((sweep_dir / CLOCK_FILE).read_text())["tune_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class SweepClock(tune.Callback):
    """Keeps :data:`CLOCK_FILE` up to date while Ray Tune runs (every few seconds, and at the
    end): a resumed sweep's time budget is what earlier sessions left of it, even when the
    driver was killed (it then loses at most :attr:`every_s` seconds).

    Args:
        sweep_dir: the sweep's folder.
        earlier_s: seconds of earlier sessions (:func:`spent_tune_seconds`).
        every_s: how often to write the file.
    """

    def __init__(
        self, sweep_dir: StoragePath, earlier_s: float = 0.0, every_s: float = 5.0
    ) -> None:
        self.path = sweep_dir / CLOCK_FILE
        self.earlier_s = earlier_s
        self.every_s = every_s
        self.started = time.monotonic()
        self._written = -math.inf

    def seconds(self) -> float:
        """Seconds Ray Tune has run this sweep so far, this session included."""
        return self.earlier_s + time.monotonic() - self.started

    def save(self) -> None:
        """Write the total now (atomically: a kill mid-write leaves the previous value)."""
        self._written = time.monotonic()
        with contextlib.suppress(OSError):
            write_text_atomic(self.path, json.dumps({"tune_seconds": round(self.seconds(), 3)}))

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() - self._written >= self.every_s:
            self.save()


class ProgressPrinter(tune.Callback):
    """One line per trial event (start, epoch, end) and a running tally; no Ray tables.

    Put it after the :class:`~tauray.trials.TrialLedger`, whose records it reads.
    """

    def __init__(self, ledger: TrialLedger, objective: Objective, echo: Echo) -> None:
        self.ledger = ledger
        self.objective = objective
        self.echo = echo
        self.start = time.monotonic()
        self._printed: dict[str, int] = {}

    def line(self, text: str) -> None:
        """Print ``text`` after the time since the sweep started."""
        elapsed = int(time.monotonic() - self.start)
        self.echo(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}")

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        params = "  ".join(f"{key}={_number(value)}" for key, value in record.sampled.items())
        self.line(f"trial {record.index:3d} started   {params}")

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        record = self.ledger.record_for(trial)
        step = result_step(result)
        if record.infeasible or step <= self._printed.get(trial.trial_id, 0):
            return  # an epoch reported again (a restored trial's last one) is printed once
        self._printed[trial.trial_id] = step
        parts = [f"epoch {record.epoch}/{record.planned_epochs or '?'}"]
        for key in (self.objective.metric, names.TRAIN_LOSS, names.TRAIN_TEMPERATURE):
            if key in result:
                label = "τ" if key == names.TRAIN_TEMPERATURE else key
                parts.append(f"{label} {_number(result[key])}")
        self.line(f"trial {record.index:3d} " + "  ".join(parts))

    def _tally(self) -> str:
        counts = self.ledger.counts()
        done = counts["completed"] + counts["stopped"] + counts["failed"]
        return (
            f"{done} done: {counts['completed']} completed, {counts['stopped']} stopped early, "
            f"{counts['failed']} failed; {counts['running']} running"
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        if record.infeasible:
            self.line(
                f"trial {record.index:3d} FAILED (infeasible): {record.error}  ({self._tally()})"
            )
            return
        value = record.value(self.objective.metric)
        word = "completed" if record.status == "completed" else "stopped early"
        self.line(
            f"trial {record.index:3d} {word} at epoch {record.epoch}/"
            f"{record.planned_epochs or '?'}  {self.objective.metric} {_number(value)}  "
            f"({self._tally()})"
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        self.line(
            f"trial {record.index:3d} FAILED at epoch {record.epoch}: {record.error}  "
            f"({self._tally()})"
        )


# ---- placement groups of stopped trials --------------------------------------------------------


class OrphanedPlacementGroupReaper(tune.Callback):
    """Free the resources of Ray Train runs whose trial Ray Tune stopped.

    When Tune stops a trial (ASHA at a rung or at the last epoch, the time budget), it ends the
    trial's actor, and with it the Ray Train controller that actor owns, before the controller
    can remove its workers' placement group. Ray Train V2 leaves that to a detached
    ``PlacementGroupCleaner`` that asks the Ray state API whether the controller is alive; the
    state API needs the dashboard, and it cannot tell which cluster to ask when several local
    Ray instances run on one machine. Then the placement group keeps its CPUs/GPUs until Ray
    shuts down and later trials wait for them forever (measured here: the second trial of a
    1-CPU sweep never started).

    This callback runs in the sweep driver and, every ``interval_s`` seconds and when the sweep
    ends, removes placement groups of this job whose creating actor is dead (never detached
    ones, never another job's). It reads the placement-group table from the GCS through Ray's
    internal state accessor (the public ``placement_group_table`` omits the creator); if that
    is unavailable it logs once and does nothing.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.removed = 0
        self._last = 0.0
        self._disabled = False

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.reap()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.reap()

    def reap(self) -> int:
        """Remove the orphaned placement groups now; return how many were removed."""
        if self._disabled:
            return 0
        try:
            import ray
            from ray._private.state import state
            from ray.core.generated import gcs_pb2
            from ray.util.placement_group import PlacementGroup, remove_placement_group

            job_id = ray.get_runtime_context().get_job_id()
            table = state._connect_and_get_accessor().get_placement_group_table()
        except Exception:
            self._disabled = True
            logger.warning(
                "cannot read Ray's placement-group table; resources of stopped trials are left "
                "to Ray Train's PlacementGroupCleaner",
                exc_info=True,
            )
            return 0
        removed = 0
        for raw in table:
            entry = gcs_pb2.PlacementGroupTableData.FromString(raw)
            creator = ray.ActorID(entry.creator_actor_id)
            if (
                entry.state == gcs_pb2.PlacementGroupTableData.REMOVED
                or entry.is_detached
                or creator.is_nil()
                or not entry.creator_actor_dead
                or ray.JobID(entry.creator_job_id).hex() != job_id
            ):
                continue
            group_id = ray.PlacementGroupID(entry.placement_group_id)
            try:
                remove_placement_group(PlacementGroup(group_id))
            except Exception:  # removed meanwhile by Ray Train's own cleaner
                logger.debug("placement group %s already gone", group_id.hex(), exc_info=True)
                continue
            removed += 1
            logger.info("freed placement group %s of a stopped trial", group_id.hex())
        self.removed += removed
        return removed


# ---- running it --------------------------------------------------------------------------------

# Ray Tune's legacy output engine at verbosity 0 prints no tables; failed trials' tracebacks
# are left out (the ledger records each failure's one-line reason and prints it).
_QUIET_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
_QUIET_TUNE_MESSAGES = (
    "Trials did not complete",
    "Trial task failed",
    "Wrote the latest version of all result files",
    "Failed to fetch metrics for",  # a trial the time budget stopped before its first epoch
    "Reached timeout of",  # the time budget: the progress lines say which trials it stopped
    # Ctrl-C: tauray says what happens and how to resume (Ray's hint names Tuner.restore).
    "Stop signal received",
    "Experiment has been interrupted",
)
# Filters apply to records of the logger they are attached to, not to its children's.
_QUIET_TUNE_LOGGERS = (
    "ray",  # ray.tune.stopper.timeout logs to it
    "ray.tune",
    "ray.tune.tune",
    "ray.tune.execution.tune_controller",
    "ray.tune.analysis.experiment_analysis",
)


class _DropMessages(logging.Filter):
    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextlib.contextmanager
def quiet_ray_tune(enabled: bool = True) -> Iterator[None]:
    """Leave the terminal to tauray's progress lines while Ray Tune runs, then restore.

    Switches Ray Tune to its legacy output engine (silent at verbosity 0), stops it printing
    each failed trial's traceback (:class:`~tauray.trials.TrialLedger` keeps the reason),
    drops Tune's end-of-run file and failure notices and Optuna's per-study info lines.
    """
    if not enabled:
        yield
        return
    import optuna

    saved_env = {key: os.environ.get(key) for key in _QUIET_TUNE_ENV}
    os.environ.update(_QUIET_TUNE_ENV)
    message_filter = _DropMessages(_QUIET_TUNE_MESSAGES)
    loggers = [logging.getLogger(name) for name in _QUIET_TUNE_LOGGERS]
    for each in loggers:
        each.addFilter(message_filter)
    optuna_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_verbosity)
        for each in loggers:
            each.removeFilter(message_filter)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---- Ctrl-C ------------------------------------------------------------------------------------

_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@dataclass
class _Interruption:
    """Whether Ctrl-C or SIGTERM stopped Ray Tune's loop (see :func:`graceful_ctrl_c`)."""

    requested: bool = False


def _not_running_yet(signum: int, frame: Any) -> None:
    """SIGUSR1 before Ray Tune's loop installs its own handler: stop like Ctrl-C."""
    raise KeyboardInterrupt


_STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""The signals that stop a sweep gracefully, and how the announcement names each."""


@contextlib.contextmanager
def graceful_ctrl_c(announce: Callable[[str], None]) -> Iterator[_Interruption]:
    """Ctrl-C or SIGTERM while ``Tuner.fit`` runs: the first one stops the sweep after Ray
    Tune saved its state, a second one stops at once; the yielded object says whether it
    happened.

    Ray Tune handles SIGINT itself (ends its loop, saves the experiment state, stops the
    trials, returns normally) but does not say that it did, and it does not handle SIGTERM,
    which is how a sweep is usually stopped from outside: ``tauray jobs stop`` (Ray's job
    supervisor sends SIGTERM, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``), a deleted
    Kubernetes pod (SIGTERM, then SIGKILL after the grace period), ``kill``. Here Tune's own
    SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``) and tauray's handles both
    signals: it records the request, announces it, and stops Tune's loop the way Tune's handler
    would (Tune listens for SIGUSR1 too, with the same handler). Before Tune's loop has started,
    and for a second signal, it raises ``KeyboardInterrupt``. Ray's own processes block SIGINT,
    so a Ctrl-C sent to the terminal's whole process group reaches only this driver.

    Signal handlers can only be set in the main thread; elsewhere this does nothing (and Ray
    Tune does not handle SIGINT either).

    Args:
        announce: called with a one-line message when the first signal arrives.
    """
    state = _Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_stop_signal(signum: int, frame: Any) -> None:
        stop_tune = signal.getsignal(signal.SIGUSR1)
        if state.requested or stop_tune is _not_running_yet or not callable(stop_tune):
            state.requested = True
            raise KeyboardInterrupt
        state.requested = True
        announce(
            f"{_STOP_SIGNALS[signum]}: stopping the sweep "
            "after Ray Tune saves its state (press Ctrl-C again to stop at once)"
        )
        stop_tune(signal.SIGUSR1, frame)

    saved_env = os.environ.get(_TUNE_SIGINT_ENV)
    saved = {signum: signal.signal(signum, on_stop_signal) for signum in _STOP_SIGNALS}
    saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _not_running_yet)
    os.environ[_TUNE_SIGINT_ENV] = "1"
    try:
        yield state
    finally:
        # None: a handler set outside Python; the default is the closest one can restore.
        for signum, handler in saved.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if saved_env is None:
            os.environ.pop(_TUNE_SIGINT_ENV, None)
        else:
            os.environ[_TUNE_SIGINT_ENV] = saved_env


def _write_stderr(text: str) -> None:
    """Write one line to stderr from a signal handler (no buffered stream: it may be mid-write)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{text}\n".encode())


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


def _sweep_params(plan: SweepPlan) -> dict[str, Any]:
    from tauray.tracking import code_version

    request = plan.request
    return {
        "space": plan.space.name,
        "space_source": plan.space.source or plan.space.name,
        "method": plan.fixed_config.get("method", plan.space.method),
        "objective": ",".join(f"{o.metric}:{o.mode}" for o in plan.objectives),
        "trials": plan.num_samples if plan.num_samples > 0 else "until time budget",
        "time_budget_s": request.time_budget_s,
        "epochs": plan.epochs,
        "workers_per_trial": request.workers_per_trial,
        "gpus_per_worker": request.gpus_per_worker,
        "cpus_per_worker": request.cpus_per_worker,
        "seed": request.seed,
        "overrides": " ".join(request.overrides) or "none",
        "storage_path": str(plan.sweep_dir),
        "code_version": code_version(),
    }


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


def run_sweep(
    plan: SweepPlan,
    *,
    echo: Echo = print,
    ledger_factory: Callable[[Mapping[str, Any]], TrialLedger] = TrialLedger,
    resume: bool = False,
) -> SweepSummary:
    """Run a planned sweep to the end and return its summary.

    Starts (and stops) a local Ray unless the request names an address; writes the MLflow
    parent run, a child run per trial, the models, the plots and the champion.

    With ``resume`` (a plan from :func:`plan_resume`), Ray Tune restores the sweep from its
    folder (finished trials kept, unfinished ones restarted from their last checkpoint, the
    Optuna study and the trial ledger restored from the experiment state) and the MLflow parent
    run that carries the folder's tag continues; trials keep their child runs. At its end, a
    child run of a trial Ray Tune does not know (a killed driver created it before Tune saved
    the trial) is ended as lost (:meth:`~tauray.tracking.SweepRecorder.end_lost_runs`).

    Ctrl-C or SIGTERM while Ray Tune runs (:func:`graceful_ctrl_c`) stops the sweep once Tune
    saved its state: the summary says ``interrupted``, the parent run and the unfinished trials'
    runs end as KILLED (the parent tagged ``tauray.status = interrupted`` and the resume
    command), and the parent gets no results yet. A second signal raises ``KeyboardInterrupt``
    at once.

    Args:
        plan: from :func:`plan_sweep` (or :func:`plan_resume`).
        echo: where progress lines go.
        ledger_factory: builds the trial ledger from the fixed config (tests may wrap it).
        resume: continue the interrupted sweep in ``plan.sweep_dir``.

    Raises:
        ValueError: one trial cannot fit the cluster.
        ConnectionError: the Ray cluster at the requested address cannot be reached.
        KeyboardInterrupt: a second Ctrl-C, or one before or after Ray Tune's loop (the parent
            run is ended as KILLED, tagged ``interrupted``).
    """
    from tauray.tracking import (
        TAG_BEST_RUN,
        TAG_BEST_TRIAL,
        TAG_RESUME_COMMAND,
        TAG_RESUMED,
        TAG_SPACE,
        TAG_STATUS,
        TAG_STORAGE,
        TAG_SWEEP,
        SweepRecorder,
        best_params,
        tracking_scope,
    )

    request = plan.request
    started = time.monotonic()
    with tracking_scope(plan.target):
        recorder = SweepRecorder(plan.target, plan.experiment)
        parent_run_id = (
            recorder.find_sweep_run(str(plan.sweep_dir), plan.sweep_name) if resume else None
        )
        if parent_run_id is not None:
            recorder.reopen_run(parent_run_id)
            recorder.set_tags(
                parent_run_id,
                {TAG_RESUMED: _dt.datetime.now().isoformat(), TAG_STATUS: "running"},
            )
            echo(f"resuming sweep {plan.sweep_name} from {plan.sweep_dir}")
        else:
            if resume:
                logger.warning(
                    "no MLflow run of sweep %s found; recording it in a new one", plan.sweep_name
                )
            else:
                save_sweep_request(plan)
            parent_run_id = recorder.start_sweep_run(
                plan.sweep_name,
                params=_sweep_params(plan),
                tags={
                    TAG_SWEEP: plan.sweep_name,
                    TAG_SPACE: plan.space.name,
                    TAG_STORAGE: str(plan.sweep_dir),
                    TAG_STATUS: "running",
                },
            )
        echo(
            f"sweep {plan.sweep_name}: space {plan.space.name}, "
            f"{_budget_text(plan)}, {request.workers_per_trial} worker(s) per trial"
        )
        echo(f"MLflow: {plan.target.uri}, experiment {plan.experiment!r}, run {parent_run_id}")
        interrupted_tags = {TAG_STATUS: "interrupted", TAG_RESUME_COMMAND: resume_hint(plan)}
        status = "FAILED"
        try:
            with quiet_ray_tune(enabled=not request.verbose):
                with _ray_session(request) as info:
                    ledger, mlflow_logger, outcome = _fit(
                        plan, info, recorder, parent_run_id, echo, ledger_factory, restore=resume
                    )
                    fitted = time.monotonic()
                finishing = time.monotonic()
                logger.info("Ray stopped in %.1f s", finishing - fitted)
                if mlflow_logger.lost_run_ids:
                    echo(
                        f"MLflow: ended {len(mlflow_logger.lost_run_ids)} run(s) of trials lost "
                        "when an earlier driver stopped before Ray Tune saved them (tagged "
                        "tauray.status=lost; not trials of this sweep)"
                    )
                # Ray Tune returns normally after a Ctrl-C; trials it left running are unfinished.
                interrupted = outcome.interrupted or ledger.counts()["running"] > 0
                if interrupted:
                    mlflow_logger.interrupt(ledger.ordered())
                summary = _finish(
                    plan,
                    recorder,
                    parent_run_id,
                    ledger,
                    mlflow_logger,
                    outcome,
                    interrupted=interrupted,
                )
                logger.info("results written in %.1f s", time.monotonic() - finishing)
            summary.elapsed_s = time.monotonic() - started
            summary.interrupted = interrupted
            if interrupted:
                # The parent run gets the sweep's results when the resumed sweep ends (MLflow
                # params are write-once: a best trial logged now could not change later).
                recorder.set_tags(parent_run_id, interrupted_tags)
                status = "KILLED"
                return summary
            recorder.set_tags(
                parent_run_id,
                {
                    TAG_BEST_TRIAL: summary.best.trial_id if summary.best else "",
                    TAG_BEST_RUN: summary.best_run_id or "",
                    TAG_STATUS: "finished",
                },
            )
            if summary.best is not None:
                recorder.log_params(parent_run_id, best_params(summary.best))
            status = "FINISHED"
            return summary
        except KeyboardInterrupt:
            status = "KILLED"
            with contextlib.suppress(Exception):
                recorder.set_tags(parent_run_id, interrupted_tags)
            raise
        finally:
            recorder.end_run(parent_run_id, status)  # type: ignore[arg-type]


def resume_hint(plan: SweepPlan) -> str:
    """The command that continues the sweep (``tauray tune --resume <its folder>``)."""
    return f"tauray tune --resume {plan.sweep_dir}"


def interrupted_message(plan: SweepPlan) -> str:
    """The one line ``tauray tune`` prints when a sweep was interrupted: how to continue it."""
    if (plan.sweep_dir / _TUNER_STATE).is_file():
        return (
            f"sweep {plan.sweep_name} was interrupted; Ray Tune saved its state in "
            f"{plan.sweep_dir}: continue it with `{resume_hint(plan)}`"
        )
    return (
        f"sweep {plan.sweep_name} was interrupted before Ray Tune saved any state; nothing to "
        "resume: run it again"
    )


def _ray_session(request: SweepRequest) -> contextlib.AbstractContextManager[ClusterInfo]:
    """:func:`tauray.cluster.ray_session` for a sweep.

    Without ``--verbose`` the workers' own output (Ray Train's start-up lines, rank 0's epoch
    lines) stays in Ray's log files: the progress printer shows each trial's epochs.

    A local Ray gets its dashboard: Ray Train's ``PlacementGroupCleaner`` (one per trial) asks
    the state API, which the dashboard serves, whether its controller is still alive. Without
    it, every cleaner of a trial that Tune stopped keeps polling (an idle Python process) until
    Ray shuts down. :class:`OrphanedPlacementGroupReaper` frees the resources either way.
    """
    from tauray.cluster import ray_session

    return ray_session(
        request.address,
        num_cpus=request.num_cpus,
        num_gpus=request.num_gpus,
        include_dashboard=True,
        log_to_driver=request.verbose,
    )


def _budget_text(plan: SweepPlan) -> str:
    parts = []
    if plan.num_samples > 0:
        parts.append(f"{plan.num_samples} trials")
    if plan.request.time_budget_s is not None:
        parts.append(f"time budget {plan.request.time_budget_s:g} s")
    parts.append(f"{plan.epochs} epochs each")
    return ", ".join(parts)


@dataclass
class _FitOutcome:
    recording: RecordingSpace
    sampler: str
    scheduler: str
    concurrency: int
    interrupted: bool = False  # Ctrl-C: Ray Tune stopped early and saved its state


def _fit(
    plan: SweepPlan,
    info: ClusterInfo,
    recorder: Any,
    parent_run_id: str,
    echo: Echo,
    ledger_factory: Callable[[Mapping[str, Any]], TrialLedger],
    *,
    restore: bool = False,
) -> tuple[TrialLedger, Any, _FitOutcome]:
    from tauray.cluster import max_concurrent_trials
    from tauray.tracking import MlflowTrialLogger

    request = plan.request
    in_trial = runs_in_trial(request)
    concurrency = max_concurrent_trials(
        info, request.workers_per_trial, request.gpus_per_worker, request.cpus_per_worker
    )
    if request.max_concurrent_trials is not None:
        concurrency = min(concurrency, request.max_concurrent_trials)
    if plan.num_samples > 0:
        concurrency = min(concurrency, plan.num_samples)
    searcher, recording, sampler_text = build_searcher(plan, concurrency)
    scheduler, scheduler_text = build_scheduler(plan)
    run_params = {
        "sampler": sampler_text,
        "scheduler": scheduler_text,
        "max_concurrent_trials": concurrency,
        "cluster_cpus": info.cpus,
        "cluster_gpus": info.gpus,
        "ray_address": info.address or "local",
        "max_failures": request.max_failures,
        "trial_runner": "in-trial" if in_trial else "ray-train",
    }
    if restore:  # MLflow params are write-once: the first session's values stay
        try:
            recorder.log_params(parent_run_id, run_params)
        except Exception:
            logger.info("resumed sweep: the parent run keeps its first session's params")
    else:
        recorder.log_params(parent_run_id, run_params)
    echo(
        f"Ray: {info.cpus:g} CPUs, {info.gpus:g} GPUs ({'local' if info.local else info.address}); "
        f"up to {concurrency} trial(s) at once; {scheduler_text}"
    )
    ledger = ledger_factory(plan.fixed_config)
    mlflow_logger = MlflowTrialLogger(
        recorder, ledger, parent_run_id, plan.space.name, log_models=request.log_models
    )
    progress = ProgressPrinter(ledger, plan.objective, echo)
    setup = TrialSetup(
        fixed_config=plan.fixed_config,
        workers=request.workers_per_trial,
        gpus_per_worker=request.gpus_per_worker,
        cpus_per_worker=request.cpus_per_worker,
        train_storage=str(plan.sweep_dir / "train"),
        tracking_uri=plan.target.uri,
        max_failures=request.max_failures,
        objectives=tuple((o.metric, o.mode) for o in plan.objectives),
        in_trial=in_trial,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tauray_trial, setup=setup), trial_resources(setup, info)
    )
    # A resumed sweep gets what earlier sessions left of its time budget (Ray Tune would
    # start the whole budget again).
    spent_s = spent_tune_seconds(plan.sweep_dir) if restore else 0.0
    budget = request.time_budget_s
    budget_left = None if budget is None else max(budget - spent_s, MIN_RESUMED_BUDGET_S)
    if restore and budget is not None:
        echo(
            f"time budget: {budget_left:.0f} s left of {budget:g} s "
            f"({spent_s:.0f} s spent in earlier sessions)"
        )
    clock = SweepClock(plan.sweep_dir, spent_s)
    # New callbacks go last: Ray Tune restores callback states by position.
    callbacks = [ledger, mlflow_logger, progress, OrphanedPlacementGroupReaper(), clock]
    if restore:
        tuner = tune.Tuner.restore(
            str(plan.sweep_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        # The restored Tuner carries unpickled copies of the first session's callbacks; put
        # this session's in their place (same types, same order), so Ray Tune restores the
        # ledger's and the MLflow logger's saved state into the objects this driver reads.
        tuner._local_tuner.get_run_config().callbacks = callbacks
        tuner._local_tuner._tune_config.time_budget_s = budget_left
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=plan.num_samples,
                max_concurrent_trials=concurrency,
                time_budget_s=budget_left,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
                # In-trial runs: a finished trial's actor (its rank workers, their imports and
                # process group, its CUDA context) takes the next trial. Not for Ray Train
                # runs: stopping such a trial early does not stop its worker group, so its
                # actor cannot be reset and must be ended.
                reuse_actors=in_trial,
            ),
            run_config=tune.RunConfig(
                name=plan.sweep_name,
                storage_path=str(plan.storage_path),
                callbacks=callbacks,
                # Ray Train restarts a worker group itself; an in-trial run has only Ray Tune.
                failure_config=tune.FailureConfig(
                    max_failures=request.max_failures if in_trial else 0, fail_fast=False
                ),
                verbose=0,
            ),
        )
    fit_started = time.monotonic()
    try:
        with graceful_ctrl_c(_write_stderr) as interruption:
            tuner.fit()
    finally:
        clock.save()
    logger.info("Ray Tune ran for %.1f s", time.monotonic() - fit_started)
    if (
        not interruption.requested
        and budget_left is not None
        and time.monotonic() - fit_started >= budget_left
    ):
        # Ray Tune ends a sweep at its time budget without completion events for the trials
        # still running: they were stopped early, like ASHA's, and keep what they reported.
        for record in ledger.stop_unfinished():
            progress.line(
                f"trial {record.index:3d} stopped by the time budget at epoch {record.epoch}"
            )
            mlflow_logger.finish(record)
    outcome = _FitOutcome(
        recording, sampler_text, scheduler_text, concurrency, interrupted=interruption.requested
    )
    return ledger, mlflow_logger, outcome


def _finish(
    plan: SweepPlan,
    recorder: Any,
    parent_run_id: str,
    ledger: TrialLedger,
    mlflow_logger: Any,
    outcome: _FitOutcome,
    *,
    interrupted: bool = False,
) -> SweepSummary:
    """The sweep's results: best config file, champion, plots, and the parent run's metrics.

    An interrupted sweep only writes its best configuration so far (a local file): the parent
    run gets metrics, plots and the champion when the resumed sweep ends.
    """
    from tauray.plots import render_sweep_plots

    objective = plan.objective
    records = ledger.ordered()
    counts = ledger.counts()
    best = ledger.best(objective.metric, objective.mode)
    sweep_dir = plan.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    errors_before = mlflow_logger.errors

    best_config = best.config if best is not None else None
    best_config_path: StoragePath | None = None
    champion: tuple[str, str] | None = None
    best_run_id = mlflow_logger.run_ids.get(best.trial_id) if best is not None else None
    metrics: dict[str, float] = {
        "trials/completed": counts["completed"],
        "trials/stopped_early": counts["stopped"],
        "trials/failed": counts["failed"],
    }
    if best is not None and best_config is not None:
        header = (
            f"Best trial{' so far' if interrupted else ''} of sweep {plan.sweep_name} "
            f"(trial {best.index}, {best.trial_id}): "
            f"{objective.metric} = {best.value(objective.metric):.6g}\n"
            "Train it: tauray train --config best_config.yaml"
        )
        text = best_config_yaml(best_config, plan.request, header)
        best_config_path = sweep_dir / "best_config.yaml"
        best_config_path.write_text(text)
        metrics[f"best/{objective.metric}"] = best.value(objective.metric) or float("nan")

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
            **more,
        )

    if interrupted:
        return summary(champion=None)
    if best is not None and best_config is not None:
        try:
            recorder.log_text(parent_run_id, text, "best_config.yaml")
        except Exception:
            mlflow_logger.errors += 1
            logger.exception("MLflow: could not log best_config.yaml")
        model_uri = mlflow_logger.log_model(best) if plan.request.log_models else None
        if model_uri is not None:
            try:
                version = recorder.register_champion(model_uri, plan.model_name)
                champion = (f"models:/{plan.model_name}@champion", str(version.version))
            except Exception:
                mlflow_logger.errors += 1
                logger.exception("MLflow: could not register the champion model")
    plots_dir = sweep_dir / "plots"
    with local_folder(plots_dir) as folder:  # on an object store: rendered here, uploaded
        plots = render_sweep_plots(
            records,
            objective.metric,
            objective.mode,
            outcome.recording.distributions,
            folder,
            seed=plan.request.seed,
        )
        try:
            recorder.log_metrics(parent_run_id, metrics, step=0)
            recorder.log_artifacts(parent_run_id, list(plots.paths.values()), "plots")
        except Exception:
            mlflow_logger.errors += 1
            logger.exception("MLflow: could not log the sweep's results")
    plot_paths = {name: plots_dir / path.name for name, path in plots.paths.items()}
    if mlflow_logger.errors > errors_before:
        logger.warning("some MLflow writes failed at the end of the sweep (see above)")
    return summary(champion=champion, plots=plot_paths, skipped_plots=dict(plots.skipped))


# ---- commands ----------------------------------------------------------------------------------

DEMO_EXPERIMENT = "tauray-demo"
DEMO_SPACE = "simclr-temperature"
DEMO_TRIALS = 10
DEMO_OVERRIDES: tuple[str, ...] = ()
DEMO_TIME_BUDGET_S = 270.0
DEMO_INTRO = (
    f"tauray demo: up to {DEMO_TRIALS} trials of the {DEMO_SPACE} space (SimCLR's temperature: "
    "fixed, learnable or a cosine schedule, with learning rate, weight decay and batch size) on "
    "the bundled cluttered digits, one CPU worker per trial, ASHA early stopping, every trial "
    f"in MLflow. About 5 minutes: the search stops after {DEMO_TIME_BUDGET_S / 60:g} minutes "
    "if the trials have not all finished by then."
)


def demo_request(*, tracking_uri: str | None = None, verbose: bool = False) -> SweepRequest:
    """The ``tauray demo`` sweep: about 5 minutes on 2 CPU cores, wherever it runs.

    Ten trials of six epochs (two at a time, one CPU worker each, ASHA stopping most after one
    or three epochs) and a 4.5-minute time budget, so that Ray's start, the search and the
    final writes take about 5 minutes: on a fast or idle machine the trials end first, on a
    busy one the budget does. The README has measured timings.
    """
    return SweepRequest(
        space=DEMO_SPACE,
        experiment=DEMO_EXPERIMENT,
        trials=DEMO_TRIALS,
        time_budget_s=DEMO_TIME_BUDGET_S,
        workers_per_trial=1,
        scheduler="asha",
        tracking_uri=tracking_uri,
        overrides=DEMO_OVERRIDES,
        seed=0,
        verbose=verbose,
    )


def _run_and_summarise(plan: SweepPlan, *, echo: Echo, echo_error: Echo, resume: bool) -> int:
    """Run a planned sweep, print its summary, and return the CLI exit code.

    Interrupted (Ctrl-C): the summary so far, then one line on stderr saying how to continue
    (:func:`interrupted_message`), exit code 130.
    """
    try:
        summary = run_sweep(plan, echo=echo, resume=resume)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside Ray Tune's loop
        echo_error(interrupted_message(plan))
        return 130
    echo(format_summary(summary))
    if summary.interrupted:
        echo_error(interrupted_message(plan))
        return 130
    if summary.best is None:
        echo_error(
            f"no trial of sweep {plan.sweep_name} finished with a value of {plan.objective.metric}"
        )
        return 1
    return 0


def sweep_command(request: SweepRequest, *, echo: Echo = print, echo_error: Echo = print) -> int:
    """``tauray tune``: validate (before Ray starts), run, print the summary.

    Returns:
        0; 1 when no trial finished with a value of the objective; 130 when interrupted.

    Raises:
        ValueError, ConnectionError: from :func:`plan_sweep` / :func:`run_sweep`.
    """
    plan = plan_sweep(request)
    return _run_and_summarise(plan, echo=echo, echo_error=echo_error, resume=False)


def resume_command(
    target: str,
    *,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool | None = None,
    echo: Echo = print,
    echo_error: Echo = print,
) -> int:
    """``tauray tune --resume``: continue an interrupted sweep, print the summary.

    Returns:
        As :func:`sweep_command`.

    Raises:
        ValueError, ConnectionError: from :func:`plan_resume` / :func:`run_sweep`.
    """
    plan = plan_resume(
        target,
        tracking_uri=tracking_uri,
        storage_path=storage_path,
        address=address,
        num_cpus=num_cpus,
        verbose=verbose,
    )
    return _run_and_summarise(plan, echo=echo, echo_error=echo_error, resume=True)


# ---- the summary -------------------------------------------------------------------------------


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

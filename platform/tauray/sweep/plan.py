"""The sweep request and its validation: everything a user can get wrong fails here, before Ray.

:func:`plan_sweep` turns a :class:`SweepRequest` (the ``tauray tune`` options) into a
:class:`SweepPlan` without starting Ray: a bad ``--set``, an unknown space or an unreachable
tracking server fails in about a second.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tauray.layout import parse_objective
from tauray.storage import StoragePath, check_storage_path, location
from tauray.sweep.signals import SIGNAL_OBJECTIVE, EarlySignal, parse_signal
from tauray_trainers.config import build_config, check_resources
from tauray_trainers.metrics import objective_metrics

if TYPE_CHECKING:
    from tauray.tracking import TrackingTarget
    from tauray_spaces import Objective, SearchSpace

SCHEDULERS = ("asha", "hyperband", "none")
SAMPLERS = ("tpe", "random")
"""The samplers a sweep can use (``--sampler``): Optuna's TPE, or its random sampler."""
DEFAULT_TRIALS = 10
DEFAULT_CONFIRM_TOP = 3
DEFAULT_CONFIRM_SEEDS = 2
DEFAULT_STORAGE = "tauray_results"
DEFAULT_EARLY_SIGNAL = SIGNAL_OBJECTIVE
MAX_SEED = 2**32 - 1
"""The largest sampler seed: Optuna's samplers seed NumPy, which takes 0 to 2**32 - 1."""
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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
        trial_runner: ``in-trial`` (default): a one-worker trial trains inside its Ray Tune
            trial actor, which Ray Tune hands to the next trial (:mod:`tauray.sweep.in_trial`:
            no process to start and nothing to import per trial); ``ray-train``: a Ray Train
            worker group for every trial. Trials with several workers are DDP jobs and always
            run as Ray Train worker groups.
        sampler: ``tpe`` (default: multivariate, grouped TPE) or ``random`` (Optuna's
            ``RandomSampler``, a baseline).
        confirm_top: after the search, train the this many best distinct configurations
            again (:mod:`tauray.sweep.confirm`); 0: no confirmation phase.
        confirm_seeds: fresh seeds per confirmed configuration.
        early_signal: what early stopping compares at its rungs (:mod:`tauray.sweep.signals`):
            ``objective``, ``curve`` or ``METRIC:MODE``.
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
    sampler: str = "tpe"
    confirm_top: int = DEFAULT_CONFIRM_TOP
    confirm_seeds: int = DEFAULT_CONFIRM_SEEDS
    early_signal: str = DEFAULT_EARLY_SIGNAL


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
    def early_signal(self) -> EarlySignal:
        """What early stopping compares (the primary objective's metric and mode by default)."""
        objective = self.objectives[0]
        method = str(self.fixed_config.get("method", self.space.method))
        return parse_signal(
            self.request.early_signal,
            (objective.metric, objective.mode),
            objective_metrics(method),
        )

    @property
    def objective(self) -> Objective:
        """The primary objective."""
        return self.objectives[0]

    @property
    def sweep_dir(self) -> StoragePath:
        """Ray Tune's folder for this sweep (trial results, best config, plots)."""
        return self.storage_path / self.sweep_name


def _safe_name(text: str) -> str:
    return _NAME_SAFE.sub("-", text).strip("-") or "sweep"


def _absolute_data_root(config: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Make a relative ``data.root`` absolute: local Ray workers run in other directories."""
    root = config.get("data", {}).get("root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        config = {**config, "data": {**config["data"], "root": str((cwd / root).resolve())}}
    return config


TRIAL_RUNNERS = ("in-trial", "ray-train")
"""Where a one-worker trial trains: in its Ray Tune trial actor or as a Ray Train job."""


def runs_in_trial(request: SweepRequest) -> bool:
    """Whether the request's trials train in their trial actors: asked for, and one worker (a
    trial with several workers is a DDP job: a Ray Train worker group)."""
    return request.trial_runner == "in-trial" and request.workers_per_trial == 1


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

    Nothing is created and nothing started until the whole request is valid: options, space,
    ``--set``, objectives (metrics the method reports), the storage path (writable, or an object
    store's URI), the Ray address (something answers) or the local Ray's size (one trial fits),
    and the tracking store.

    Args:
        request: the sweep request.
        cwd: directory for relative paths and the embedded MLflow default (default: cwd).
        environ: environment for ``MLFLOW_TRACKING_URI`` and ``RAY_ADDRESS`` (a running
            cluster: the local-fit check is then left to the cluster) (default: ``os.environ``).
        check_tracking: probe the tracking server (``/health``) before returning.
        now: the time that names the sweep (default: now).

    Raises:
        ValueError: an invalid option, space, ``--set``, config, objective, storage path, or a
            trial bigger than the local Ray (one line naming it).
        ConnectionError: the tracking server or the Ray cluster does not answer.
    """
    from tauray.cluster import check_address, check_local_fit
    from tauray.tracking import check_tracking_reachable, resolve_tracking_target
    from tauray_spaces import check_objectives, get_space

    base = Path(cwd).resolve() if cwd is not None else Path.cwd()
    if request.scheduler not in SCHEDULERS:
        raise ValueError(
            f"--scheduler {request.scheduler!r} is not one of: {', '.join(SCHEDULERS)}"
        )
    if request.sampler not in SAMPLERS:
        raise ValueError(f"--sampler {request.sampler!r} is not one of: {', '.join(SAMPLERS)}")
    if request.trials is not None and request.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {request.trials}")
    if request.time_budget_s is not None and not request.time_budget_s > 0:
        raise ValueError(f"--time-budget must be > 0 seconds, got {request.time_budget_s}")
    check_resources(
        request.workers_per_trial,
        request.gpus_per_worker,
        request.cpus_per_worker,
        names=("--workers-per-trial", "--gpus-per-worker", "--cpus-per-worker"),
    )
    if request.max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {request.max_failures}")
    if request.trial_runner not in TRIAL_RUNNERS:
        raise ValueError(
            f"--trial-runner {request.trial_runner!r} is not one of: {', '.join(TRIAL_RUNNERS)}"
        )
    if request.confirm_top < 0:
        raise ValueError(
            f"--confirm-top must be >= 0 (0: no confirmation phase), got {request.confirm_top}"
        )
    if request.confirm_seeds < 1:
        raise ValueError(f"--confirm-seeds must be >= 1, got {request.confirm_seeds}")
    if request.max_concurrent_trials is not None and request.max_concurrent_trials < 1:
        raise ValueError(
            f"--max-concurrent-trials must be >= 1, got {request.max_concurrent_trials}"
        )
    if not 0 <= request.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, {MAX_SEED}] (2**32 - 1), got {request.seed}")
    if request.num_cpus is not None and request.num_cpus < 1:
        raise ValueError(f"--num-cpus must be >= 1, got {request.num_cpus}")
    if request.num_gpus is not None and request.num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {request.num_gpus}")
    for option, name in (
        ("--experiment", request.experiment),
        ("--model-name", request.model_name),
    ):
        if name is not None and not name.strip():
            raise ValueError(f"{option} {name!r} is empty; give a name or leave the option out")

    space = get_space(request.space)
    if request.overrides:
        space = space.with_overrides(list(request.overrides))
    fixed = dict(space.fixed)
    if request.address is None:
        fixed = _absolute_data_root(fixed, base)
    config = build_config(fixed)  # a bad --set fails here, before Ray starts
    for point in space.points_to_evaluate:
        build_config(space.trial_config(point))

    if request.objectives:
        objectives = check_objectives(
            [parse_objective(text) for text in request.objectives],
            space.method,
            lambda index: f"--objective {request.objectives[index]!r}: metric",
        )
    else:
        objectives = tuple(space.objectives)
    if not objectives:
        raise ValueError(f"search space {space.name!r} names no objective")
    primary = (objectives[0].metric, objectives[0].mode)
    # a bad one fails here
    parse_signal(request.early_signal, primary, objective_metrics(space.method))

    storage_text = DEFAULT_STORAGE if request.storage_path is None else request.storage_path
    check_storage_path(storage_text, "--storage-path", base)
    if request.address is not None:
        check_address(request.address)
    elif not (os.environ if environ is None else environ).get("RAY_ADDRESS"):
        check_local_fit(
            request.num_cpus,
            request.num_gpus,
            request.workers_per_trial,
            request.gpus_per_worker,
            request.cpus_per_worker,
        )
    target = resolve_tracking_target(request.tracking_uri, cwd=base, environ=environ)
    if check_tracking:
        check_tracking_reachable(target)

    experiment = request.experiment or f"tauray-{space.name}"
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

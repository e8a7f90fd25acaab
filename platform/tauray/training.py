"""One training job on Ray Train: build the ``TorchTrainer``, run it, follow its epochs.

:func:`build_trainer` is shared by ``tauray train`` and the sweep driver (which calls it from a
Ray Tune function trainable that forwards its reports to Ray Tune); :func:`run_training` is
``tauray train``: it reads the run's config (a YAML file, ``--set`` overrides), validates it
before Ray starts, runs the job on a local Ray or a running cluster, prints one line per epoch,
records it in MLflow as a sweep trial is recorded (:mod:`tauray.training_record`) and returns
the final metrics and checkpoint path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tauray.run_file import load_run_file
from tauray_trainers import metrics as names
from tauray_trainers.config import (
    TrainConfig,
    apply_overrides,
    build_config,
    check_resources,
    per_worker_batch_size,
)
from tauray_trainers.failures import is_out_of_memory as trainer_out_of_memory

if TYPE_CHECKING:
    from tauray.training_record import TrainingRunRecord

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "tauray_results"

# Key metrics of the one-line-per-epoch progress, in display order.
PROGRESS_METRICS: tuple[tuple[str, str], ...] = (
    (names.TRAIN_LOSS, "loss"),
    (names.TRAIN_TEMPERATURE, "τ"),
    (names.TRAIN_TEACHER_TEMPERATURE, "τ_teacher"),
    (names.TRAIN_LR, "lr"),
    (names.VAL_KNN_TOP1, "knn@1"),
    (names.VAL_LINEAR_TOP1, "linear@1"),
    (names.VAL_ZEROSHOT_TOP1, "zero-shot@1"),
    (names.VAL_RECALL_AT_1, "R@1"),
    (names.PERF_SAMPLES_PER_SECOND, "samples/s"),
)


class TrainingFailed(RuntimeError):
    """The training job failed; the message is the workers' root error in one line."""


@dataclass(frozen=True)
class RunRequest:
    """A validated training job: the config and where/how it runs."""

    config: TrainConfig
    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


@dataclass(frozen=True)
class TrainingOutcome:
    """What ``tauray train`` reports at the end."""

    metrics: dict[str, Any]
    checkpoint_path: str | None
    run_path: str


# ---- the trainer --------------------------------------------------------------------------------


def _storage_uri(storage_path: str | Path) -> str:
    """Ray's ``storage_path``: an object store's URI as given, a local path made absolute."""
    from tauray.storage import location

    return str(location(storage_path))


def build_trainer(
    train_loop_config: Mapping[str, Any] | TrainConfig,
    *,
    workers: int,
    gpus_per_worker: float,
    run_name: str,
    storage_path: str | Path,
    callbacks: Sequence[Any] = (),
    max_failures: int = 0,
    cpus_per_worker: float = 1,
    worker_env: Mapping[str, str] | None = None,
) -> Any:
    """A Ray Train V2 ``TorchTrainer`` running :func:`tauray_trainers.loop.train_fn_per_worker`.

    The config is validated here (unknown keys, a global batch that does not divide by
    ``workers``) so a bad run fails before any worker starts. Workers use NCCL when each has a
    whole GPU, gloo otherwise (several ranks sharing one GPU cannot use NCCL).

    Args:
        train_loop_config: the training config (dict or ``TrainConfig``).
        workers: number of DDP workers.
        gpus_per_worker: GPUs reserved per worker (0 = CPU training).
        run_name: Ray Train run name; must be unique per run (reusing it resumes that run).
        storage_path: where checkpoints and results go (shared storage on multi-node clusters).
        callbacks: ``ray.train.UserCallback`` instances (the sweep's trial queues its reports).
        max_failures: worker-group restarts from the latest checkpoint before giving up.
        cpus_per_worker: CPUs reserved per worker.
        worker_env: extra environment variables for the workers.

    Returns:
        ``ray.train.torch.TorchTrainer``; ``.fit()`` runs it.

    Raises:
        ValueError: invalid config, resources or names.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from tauray_trainers.loop import train_fn_per_worker

    config = build_config(train_loop_config)
    check_resources(workers, gpus_per_worker, cpus_per_worker)
    per_worker_batch_size(config, workers)
    if not run_name or "/" in run_name:
        raise ValueError(f"run_name must be a non-empty name without '/', got {run_name!r}")
    if max_failures < -1:
        raise ValueError(f"max_failures must be >= -1 (-1 = unlimited), got {max_failures}")
    resources: dict[str, float] = {"CPU": float(cpus_per_worker)}
    if gpus_per_worker > 0:
        resources["GPU"] = float(gpus_per_worker)
    backend = "nccl" if gpus_per_worker >= 1 else "gloo"
    run_config = ray.train.RunConfig(
        name=run_name,
        storage_path=_storage_uri(storage_path),
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.checkpoint.keep),
        callbacks=list(callbacks),
        worker_runtime_env={"env_vars": dict(worker_env)} if worker_env else None,
    )
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config.to_dict(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        torch_config=TorchConfig(backend=backend),
        run_config=run_config,
    )


# ---- failures -----------------------------------------------------------------------------------


def worker_errors(error: BaseException) -> list[BaseException]:
    """The root exceptions behind a failed ``fit()`` (one per failed worker, rank order).

    Unwraps ``WorkerGroupError.worker_failures``, ``ControllerError.controller_failure``,
    Ray's ``RayTaskError.cause`` and ``__cause__`` chains.
    """
    pending: list[BaseException] = [error]
    roots: list[BaseException] = []
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, Mapping) and failures:
            pending.extend(failures[rank] for rank in sorted(failures))
            continue
        inner = getattr(current, "controller_failure", None) or getattr(current, "cause", None)
        if isinstance(inner, BaseException):
            pending.append(inner)
            continue
        if current.__cause__ is not None:
            pending.append(current.__cause__)
            continue
        roots.append(current)
    return roots


def is_out_of_memory(error: BaseException) -> bool:
    """True when a failed run ran out of device memory (a trial to mark infeasible): one of the
    workers' root errors is, by the trainer's one rule (:mod:`tauray_trainers.failures`)."""
    return any(trainer_out_of_memory(root) for root in worker_errors(error) or [error])


def describe_failure(error: BaseException) -> str:
    """One line naming the first worker's root error (type and message)."""
    roots = worker_errors(error) or [error]
    root = roots[0]
    message = " ".join(str(root).split())
    lines = [line for line in str(root).splitlines() if line.strip()]
    # A RayTaskError's text is a traceback; its last line is "Type: message".
    if lines and ("Traceback" in lines[0] or lines[0].startswith("ray::")):
        message = lines[-1].strip()
        return message
    return f"{type(root).__name__}: {message}"


# ---- progress -----------------------------------------------------------------------------------


def format_metrics(metrics: Mapping[str, Any], *, epochs: int | None = None) -> str:
    """One progress line: ``epoch 3/10  loss 4.1234  τ 0.1  knn@1 0.4123 ...``."""
    epoch = metrics.get(names.EPOCH)
    parts = [f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"]
    for key, label in PROGRESS_METRICS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key == names.PERF_SAMPLES_PER_SECOND:
                parts.append(f"{label} {value:.0f}")
            elif key == names.TRAIN_LR:
                parts.append(f"{label} {value:.3g}")
            else:
                parts.append(f"{label} {value:.4f}")
    return "  ".join(parts)


def report_queue(maxsize: int = 0) -> Any:
    """A ``ray.util.queue.Queue`` (its actor takes no CPU) that a Train run's controller puts its
    reports on for this process (:func:`queue_reports_callback`, :func:`fit_forwarding_reports`).
    With ``maxsize`` 1 the controller waits for each report to be taken, so the workers run at
    most one report ahead of the reader (a sweep: what ASHA stops is stopped within an epoch)."""
    from ray.util.queue import Queue

    return Queue(maxsize=maxsize, actor_options={"num_cpus": 0})


def queue_reports_callback(
    target: Any,
    *,
    derive: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    checkpoints: bool = False,
) -> Any:
    """A Ray Train callback that puts rank 0's metrics of every report on ``target`` (a
    :func:`report_queue`). It runs in Ray Train's controller process.

    Args:
        target: the queue.
        derive: returns the metrics with more added (a sweep's predicted final objective).
        checkpoints: add a reported checkpoint's URI under ``checkpoint_path`` (on an object
            store its URI, not the path inside the bucket, which no other process could open).
    """
    from ray.train import UserCallback

    from tauray.storage import checkpoint_uri
    from tauray.trials import CHECKPOINT_PATH

    class _QueueReports(UserCallback):
        def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
            if not metrics:
                return
            reported = dict(derive(metrics[0]) if derive else metrics[0])
            if checkpoints and checkpoint:
                reported[CHECKPOINT_PATH] = checkpoint_uri(checkpoint)
            target.put(reported)

    return _QueueReports()


def fit_forwarding_reports(
    trainer: Any, reports: Any, forward: Callable[[dict[str, Any]], Any]
) -> tuple[Any, int]:
    """``trainer.fit()`` in a helper thread while this thread hands each report the run queues
    (:func:`queue_reports_callback` on ``reports``) to ``forward``, the last one before this
    returns; the run's result and the number of reports forwarded.

    The helper queues ``None`` once ``fit`` has returned, behind every report, so nothing is
    left behind. (Ray's ``TuneReportCallback`` has Ray Tune's own thread take the reports while
    the trial's function returns; on a loaded machine Ray Tune ended a 3-epoch trial on epoch
    2's report.)

    Raises:
        BaseException: whatever ``trainer.fit()`` raised, or ``forward``.
    """
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error
        finally:
            # Gone only when the reader has stopped reading (a stopped trial's actor ends).
            with contextlib.suppress(Exception):
                reports.put(None)

    threading.Thread(target=fit, name="tauray-train-fit", daemon=True).start()
    forwarded = 0
    while (metrics := reports.get()) is not None:
        forward(metrics)
        forwarded += 1
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], forwarded


# ---- tauray train -------------------------------------------------------------------------------


def prepare_run(
    *,
    method: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
) -> RunRequest:
    """Merge file, ``--method`` and ``--set`` into a validated run (nothing starts).

    Precedence: the file, then ``method``, then ``overrides`` (``key=value``, dotted keys);
    command-line resources win over the file's run-level keys.

    Raises:
        ValueError: any invalid key, value, batch split or resource.
        FileNotFoundError: the config file does not exist.
    """
    tree, run_keys = load_run_file(config_path)
    if method is not None:
        tree["method"] = method
    tree = apply_overrides(tree, list(overrides))
    config = build_config(tree)
    workers_given = workers is not None
    gpus_given = gpus_per_worker is not None
    cpus_given = cpus_per_worker is not None
    workers = workers if workers is not None else run_keys.get("workers", 1)
    gpus = gpus_per_worker if gpus_per_worker is not None else run_keys.get("gpus_per_worker", 0)
    cpus = cpus_per_worker if cpus_per_worker is not None else run_keys.get("cpus_per_worker", 1)
    given = {"workers": workers_given, "gpus_per_worker": gpus_given, "cpus_per_worker": cpus_given}
    names = tuple(
        f"--{key.replace('_', '-')}" if flag else f"config file {str(config_path)!r}: {key}"
        for key, flag in given.items()
    )
    check_resources(workers, gpus, cpus, names=names)  # type: ignore[arg-type]
    per_worker_batch_size(config, workers)
    return RunRequest(config, workers, float(gpus), float(cpus))


def default_run_name(config: TrainConfig) -> str:
    """``train-<method>-<YYYYmmdd-HHMMSS>``: unique enough for interactive runs."""
    return f"train-{config.method}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def _guarded(action: Callable[..., Any], *args: Any) -> Any:
    """Run an MLflow write; if it fails, log why and go on (training matters more)."""
    try:
        return action(*args)
    except Exception:
        logger.exception("MLflow: could not record the training run")
        return None


def check_run_options(
    request: RunRequest,
    *,
    address: str | None = None,
    storage_path: str | Path | None = None,
    run_name: str | None = None,
    max_failures: int = 0,
    num_cpus: int | None = None,
) -> None:
    """Refuse, before anything is created or started, options no run could use.

    Raises:
        ValueError: a bad run name, storage path, address or ``max_failures``, or a job that
            does not fit the local Ray (one line naming the option and the value).
        ConnectionError: nothing answers at ``address``.
    """
    from tauray.cluster import check_address, check_local_fit
    from tauray.storage import check_storage_path

    if run_name is not None and (
        not run_name.strip() or run_name.strip(".") == "" or "/" in run_name or "\\" in run_name
    ):
        raise ValueError(
            f"--name {run_name!r} is not a run name: give a non-empty name without '/' "
            "(it names a folder under --storage-path)"
        )
    if max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {max_failures}")
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    check_storage_path(storage_path if storage_path is not None else DEFAULT_STORAGE)
    if address is not None:
        check_address(address)
    elif not os.environ.get("RAY_ADDRESS"):
        check_local_fit(
            num_cpus, None, request.workers, request.gpus_per_worker, request.cpus_per_worker
        )


def _fit(
    request: RunRequest,
    *,
    address: str | None,
    storage_path: str | Path | None,
    run_name: str | None,
    max_failures: int,
    num_cpus: int | None,
    verbose: bool,
    echo: Callable[[str], None],
    record: TrainingRunRecord | None,
) -> tuple[Any, float]:
    """Run the job on Ray, echoing (and recording) each epoch; return its result and start."""
    from tauray.cluster import max_concurrent_trials, ray_session

    config = request.config
    storage = _storage_uri(storage_path or DEFAULT_STORAGE)
    name = run_name or default_run_name(config)
    local_cpus = num_cpus if address is None else None
    with ray_session(address, num_cpus=local_cpus, log_to_driver=verbose) as info:
        fit_info = info
        if not info.driver_resource:
            # tauray train's driver is this process: it reserves nothing on the cluster.
            fit_info = dataclasses.replace(info, driver_resource=True)
        max_concurrent_trials(
            fit_info, request.workers, request.gpus_per_worker, request.cpus_per_worker
        )
        progress = report_queue()
        trainer = build_trainer(
            config,
            workers=request.workers,
            gpus_per_worker=request.gpus_per_worker,
            cpus_per_worker=request.cpus_per_worker,
            run_name=name,
            storage_path=storage,
            callbacks=[queue_reports_callback(progress)],
            max_failures=max_failures,
        )
        echo(
            f"training {config.method} ({config.model.backbone}) for {config.epochs} epochs on "
            f"{request.workers} worker(s) [{'local Ray' if info.local else info.address}]"
        )

        def forward(metrics: dict[str, Any]) -> None:
            echo(format_metrics(metrics, epochs=config.epochs))
            if record is not None:
                _guarded(record.epoch, metrics)

        started = time.monotonic()
        try:
            result, _ = fit_forwarding_reports(trainer, progress, forward)
        except Exception as error:
            raise TrainingFailed(f"training failed: {describe_failure(error)}") from error
        finally:
            progress.shutdown()
    return result, started


def run_training(
    request: RunRequest,
    *,
    address: str | None = None,
    storage_path: str | Path | None = None,
    run_name: str | None = None,
    max_failures: int = 0,
    num_cpus: int | None = None,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
    record: TrainingRunRecord | None = None,
) -> TrainingOutcome:
    """Run one training job and print its progress, one line per epoch.

    A local Ray is started (and stopped) unless ``address`` names a running cluster. The job
    must fit the cluster: a run that could never be scheduled is an error, not a hang.

    Args:
        request: the validated run (:func:`prepare_run`).
        address: a running cluster (None: local Ray).
        storage_path: results folder (default ``./tauray_results``).
        run_name: Ray Train run name (default: :func:`default_run_name`).
        max_failures: restarts from the latest checkpoint on worker failure.
        num_cpus: CPUs of the local Ray (default: all of this machine).
        verbose: show the workers' own output (Ray Train's start-up, rank 0's log lines).
        echo: where progress lines go.
        record: the run's MLflow run (:class:`tauray.training_record.TrainingRunRecord`): it
            gets every epoch's metrics, then the model, and is ended however training ends.

    Raises:
        ValueError: a bad run name, storage path, address or ``max_failures``
            (:func:`check_run_options`), or a job that does not fit the cluster.
        ConnectionError: nothing answers at ``address``.
        TrainingFailed: the job failed (the message names the workers' root error).
    """
    check_run_options(
        request,
        address=address,
        storage_path=storage_path,
        run_name=run_name,
        max_failures=max_failures,
        num_cpus=num_cpus,
    )
    try:
        result, started = _fit(
            request,
            address=address,
            storage_path=storage_path,
            run_name=run_name,
            max_failures=max_failures,
            num_cpus=num_cpus,
            verbose=verbose,
            echo=echo,
            record=record,
        )
    except TrainingFailed as error:
        if record is not None:
            _guarded(record.fail, str(error).removeprefix("training failed: "))
        raise
    except KeyboardInterrupt:
        if record is not None:
            _guarded(record.fail, "interrupted", "KILLED")
        raise
    except Exception as error:
        if record is not None:
            _guarded(record.fail, f"{type(error).__name__}: {error}")
        raise
    metrics = dict(result.metrics or {})
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    echo(f"finished in {time.monotonic() - started:.0f} s")
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, float):
            echo(f"  {key}: {value:.6g}")
        elif isinstance(value, (int, str)):
            echo(f"  {key}: {value}")
    echo(f"checkpoint: {checkpoint}")
    if record is not None:
        model_uri = _guarded(record.finish, checkpoint)
        echo(f"MLflow run {record.run_id}: {record.ui_hint()}")
        if model_uri:
            echo(f"model: {model_uri} (mlflow.pytorch.load_model maps raw images to embeddings)")
    return TrainingOutcome(metrics=metrics, checkpoint_path=checkpoint, run_path=result.path)

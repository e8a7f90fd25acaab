"""The per-worker training loop that Ray Train runs under DDP (Ray Train V2 ``TorchTrainer``).

``train_fn_per_worker(config)`` is what a ``ray.train.torch.TorchTrainer`` runs on every worker.
It builds the typed config first, then data, model, optimizer, restores the latest checkpoint
(``ray.train.get_checkpoint()``) and trains epoch by epoch, reporting metrics (names in
:mod:`tauray_trainers.metrics`) with ``ray.train.report`` after every epoch and a checkpoint
(:mod:`tauray_trainers.checkpointing`) every ``checkpoint.every_epochs`` and at the last epoch.
The loop is generic: a :class:`~tauray_trainers.models.ContrastiveMethod` supplies the loss, the
per-step hooks and the embeddings, so nothing here branches on the method.

The parts live beside it: :mod:`~tauray_trainers.optimization` (optimizer, LR schedule,
precision), :mod:`~tauray_trainers.data.worker_loaders`, :mod:`~tauray_trainers.epoch` (training
and evaluating one epoch), :mod:`~tauray_trainers.checkpointing`, :mod:`~tauray_trainers.seeding`,
:mod:`~tauray_trainers.failures` (the errors it raises) and :mod:`~tauray_trainers.faults` (fault
injection, off unless ``TAURAY_INJECT_FAILURE`` is set).

Exact resume: every epoch's random state is derived from ``(seed, epoch, rank)`` and the data's
shuffling from ``(seed, epoch)``, the checkpoint holds model, optimizer, LR schedule, τ and
counters; a resumed run reports the same metrics as an uninterrupted one.

The Ray-specific part is one small class (:class:`RayTrainRuntime`); :class:`LocalRuntime` runs
the same loop in a plain process (world size 1, or a ``torch.distributed`` group started by the
caller), which the tests and the overhead benchmark use. This is the only module of
``tauray_trainers`` that imports ``ray.train``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tauray_trainers import distributed, faults
from tauray_trainers import metrics as names
from tauray_trainers.checkpointing import (
    CostCounters,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)
from tauray_trainers.config import TrainConfig, build_config, per_worker_batch_size
from tauray_trainers.data.worker_loaders import Loaders, build_loaders, set_epoch
from tauray_trainers.epoch import account_cost, epoch_metrics, evaluate, train_one_epoch
from tauray_trainers.failures import NonFiniteLossError, TrialOutOfMemoryError
from tauray_trainers.faults import FAULT_INJECTION_ENV
from tauray_trainers.models import ContrastiveMethod, build_model
from tauray_trainers.optimization import Precision, build_optimizer, resolve_precision
from tauray_trainers.seeding import epoch_seed, seed_everything

logger = logging.getLogger(__name__)


class WorkerRuntime:
    """What the loop needs from its surroundings: rank, device, DDP, reporting, the resume point."""

    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")

    def prepare_model(
        self, module: nn.Module, *, find_unused_parameters: bool = False
    ) -> nn.Module:
        """Move ``module`` to the device and wrap it in DDP when there are several ranks."""
        raise NotImplementedError

    def resources_per_worker(self) -> dict[str, float]:
        """Resources reserved by each worker (``CPU``, ``GPU``), for the cost counters."""
        raise NotImplementedError

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        raise NotImplementedError

    def restore(self) -> contextlib.AbstractContextManager[Path | None]:
        raise NotImplementedError


class RayTrainRuntime(WorkerRuntime):
    """The loop inside a Ray Train V2 worker (``ray.train.*``)."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.world_size = context.get_world_size()
        self.rank = context.get_world_rank()
        device = ray.train.torch.get_device()
        self.device = device[0] if isinstance(device, list) else device

    def prepare_model(
        self, module: nn.Module, *, find_unused_parameters: bool = False
    ) -> nn.Module:
        return ray.train.torch.prepare_model(
            module,
            move_to_device=self.device,
            parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters},
        )

    def resources_per_worker(self) -> dict[str, float]:
        assigned = ray.get_runtime_context().get_assigned_resources()
        return {
            "CPU": float(assigned.get("CPU", 0.0)),
            "GPU": float(assigned.get("GPU", 0.0)),
        }

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(
            metrics, checkpoint=checkpoint, checkpoint_dir_name=name if checkpoint else None
        )

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)


class LocalRuntime(WorkerRuntime):
    """The loop in a plain process: world size 1, or the caller's ``torch.distributed`` group.

    Args:
        device: where to train (default: CUDA device ``rank`` if available, else CPU).
        checkpoint_root: where rank 0 copies each reported checkpoint (``<root>/<name>``).
        resume_from: a checkpoint directory to resume from.
    """

    def __init__(
        self,
        *,
        device: torch.device | str | None = None,
        checkpoint_root: str | Path | None = None,
        resume_from: str | Path | None = None,
    ) -> None:
        self.world_size = distributed.world_size()
        self.rank = distributed.rank()
        if device is None:
            device = f"cuda:{self.rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root else None
        self.resume_from = Path(resume_from) if resume_from else None
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def prepare_model(
        self, module: nn.Module, *, find_unused_parameters: bool = False
    ) -> nn.Module:
        module = module.to(self.device)
        if self.world_size == 1:
            return module
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )

    def resources_per_worker(self) -> dict[str, float]:
        return {"CPU": 1.0, "GPU": 1.0 if self.device.type == "cuda" else 0.0}

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None and self.checkpoint_root is not None:
            target = self.checkpoint_root / name
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.checkpoints.append(target)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        yield self.resume_from


@dataclass
class Setup:
    """Everything :func:`run_worker` builds before the first epoch."""

    config: TrainConfig
    loaders: Loaders
    method: ContrastiveMethod
    batch_size: int
    steps_per_epoch: int
    precision: Precision


def setup_run(config: TrainConfig, runtime: WorkerRuntime) -> Setup:
    """Data, loaders and the randomly initialised method (identical on every rank)."""
    batch_size = per_worker_batch_size(config, runtime.world_size)
    precision = resolve_precision(config.precision, runtime.device)
    seed_everything(config.seed)
    loaders = build_loaders(config, batch_size, rank=runtime.rank, world_size=runtime.world_size)
    steps_per_epoch = len(loaders.train)
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training split ({len(loaders.bundle.train)} samples) is smaller than one "
            f"global batch ({batch_size * runtime.world_size}); lower the batch size"
        )
    seed_everything(config.seed)
    method = build_model(config, loaders.bundle, steps_per_epoch=steps_per_epoch)
    method.to(runtime.device)
    return Setup(config, loaders, method, batch_size, steps_per_epoch, precision)


def run_worker(raw_config: Mapping[str, Any] | TrainConfig, runtime: WorkerRuntime) -> list[dict]:
    """Train, evaluate, report and checkpoint on one worker; returns the reported metrics.

    Raises:
        ValueError: unknown/invalid config keys (before anything is built), bad batch sizes.
        NonFiniteLossError: the loss is not finite.
        TrialOutOfMemoryError: the device ran out of memory.
    """
    config = build_config(raw_config)
    attempt_start = time.monotonic()
    setup = setup_run(config, runtime)
    method, loaders = setup.method, setup.loaders
    world = runtime.world_size
    global_batch = setup.batch_size * world
    optimizer, lr_schedule = build_optimizer(
        method, config, global_batch_size=global_batch, steps_per_epoch=setup.steps_per_epoch
    )
    grad_scaler = torch.amp.GradScaler("cuda") if setup.precision.grad_scaler else None
    state = TrainingState()
    with runtime.restore() as directory:
        if directory is not None:
            state = load_checkpoint(
                directory,
                method=method,
                optimizer=optimizer,
                lr_schedule=lr_schedule,
                grad_scaler=grad_scaler,
                config=config,
                steps_per_epoch=setup.steps_per_epoch,
            )
            if runtime.rank == 0:
                logger.info("resumed from %s after epoch %d", directory, state.epoch)
    base_cost = CostCounters(**asdict(state.cost))
    resources = runtime.resources_per_worker()
    model = runtime.prepare_model(method, find_unused_parameters=method.may_leave_parameters_unused)
    before_step = faults.fault_from_environment(
        rank=runtime.rank,
        batch_size=setup.batch_size,
        steps_per_epoch=setup.steps_per_epoch,
        seed=config.seed,
    )
    reports: list[dict] = []
    for epoch_index in range(state.epoch, config.epochs):
        epoch = epoch_index + 1
        seed_everything(epoch_seed(config.seed, epoch_index, runtime.rank))
        set_epoch(loaders.train, epoch_index)
        stats = train_one_epoch(
            model,
            optimizer,
            lr_schedule,
            loaders.train,
            epoch=epoch,
            state=state,
            precision=setup.precision,
            grad_scaler=grad_scaler,
            grad_clip_norm=config.optimizer.grad_clip_norm,
            device=runtime.device,
            world_size=world,
            batch_size=setup.batch_size,
            before_step=before_step,
        )
        state.epoch = epoch
        metrics = epoch_metrics(epoch, stats, method, state)
        metrics[names.DIST_STATE_DIVERGENCE] = distributed.state_divergence(method)
        distributed.synchronize_buffers(method)
        last = epoch == config.epochs
        if last or epoch == 1 or epoch % config.eval.every_epochs == 0:
            # The linear probe runs at evaluations only: at the first, the last, and those on a
            # multiple of its own period; in between its last value is reported again.
            probe = last or epoch == 1 or epoch % config.eval.linear_probe_every_epochs == 0
            with setup.precision.autocast(runtime.device):
                fresh = evaluate(method, loaders, config, runtime.device, with_linear_probe=probe)
            state.last_eval = {**state.last_eval, **fresh}
        metrics.update(state.last_eval)
        state.cost.samples_seen += stats.samples
        metrics.update(
            account_cost(state.cost, base_cost, time.monotonic() - attempt_start, world, resources)
        )
        with tempfile.TemporaryDirectory(prefix="tauray-ckpt-") as scratch:
            checkpoint_dir = None
            if runtime.rank == 0 and (last or epoch % config.checkpoint.every_epochs == 0):
                checkpoint_dir = save_checkpoint(
                    Path(scratch),
                    method=method,
                    optimizer=optimizer,
                    lr_schedule=lr_schedule,
                    grad_scaler=grad_scaler,
                    state=state,
                    config=config,
                    bundle=loaders.bundle,
                    steps_per_epoch=setup.steps_per_epoch,
                    world_size=world,
                    metrics=metrics,
                )
            runtime.report(metrics, checkpoint_dir, f"checkpoint_epoch_{epoch:04d}")
        reports.append(metrics)
        if runtime.rank == 0:
            logger.info(
                "epoch %d/%d loss %.4f τ %.4g %s",
                epoch,
                config.epochs,
                stats.loss,
                metrics[names.TRAIN_TEMPERATURE],
                " ".join(f"{k} {v:.4f}" for k, v in state.last_eval.items()),
            )
    return reports


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The function a ``ray.train.torch.TorchTrainer`` runs on each worker (Ray Train V2).

    Args:
        config: the run's ``train_loop_config`` (a nested dict :func:`build_config` accepts).

    Raises:
        ValueError: unknown or invalid config keys, named with the valid ones.
        NonFiniteLossError: a non-finite loss (names the step and the temperature).
        TrialOutOfMemoryError: CUDA out of memory (carries the batch size).
    """
    run_worker(config, RayTrainRuntime())


def evaluate_untrained(
    raw_config: Mapping[str, Any] | TrainConfig, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Validation metrics of the method at its random initialisation (the learning baseline).

    Runs in this process without Ray (world size 1). The weights are the ones a training run
    with the same seed starts from, so "trained minus untrained" measures what training bought.
    """
    config = build_config(raw_config)
    runtime = LocalRuntime(device=device)
    if runtime.world_size != 1:
        raise ValueError("evaluate_untrained runs in a single process (no process group)")
    setup = setup_run(config, runtime)
    return evaluate(setup.method, setup.loaders, config, runtime.device)


def train_locally(
    raw_config: Mapping[str, Any] | TrainConfig,
    *,
    device: torch.device | str | None = None,
    checkpoint_root: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> list[dict]:
    """Run the loop in this process (or on each rank of a started process group), no Ray.

    Returns the metrics of every epoch; with ``checkpoint_root`` each checkpoint is copied
    there as ``checkpoint_epoch_<NNNN>``.
    """
    runtime = LocalRuntime(device=device, checkpoint_root=checkpoint_root, resume_from=resume_from)
    return run_worker(raw_config, runtime)


# Besides the loop's own names, what the platform imports from here: the errors a run raises,
# the batch split it validates with, and the fault-injection setting its tests use.
__all__: Sequence[str] = (
    "FAULT_INJECTION_ENV",
    "LocalRuntime",
    "NonFiniteLossError",
    "RayTrainRuntime",
    "Setup",
    "TrialOutOfMemoryError",
    "WorkerRuntime",
    "evaluate_untrained",
    "per_worker_batch_size",
    "run_worker",
    "setup_run",
    "train_fn_per_worker",
    "train_locally",
)

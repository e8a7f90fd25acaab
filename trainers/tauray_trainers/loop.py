"""The per-worker training loop that Ray Train runs under DDP (Ray Train V2 ``TorchTrainer``).

``train_fn_per_worker(config)`` is what a ``ray.train.torch.TorchTrainer`` runs on every worker.
It builds the typed config first, then data, model, optimizer, restores the latest checkpoint
(``ray.train.get_checkpoint()``) and trains epoch by epoch, reporting metrics (names in
:mod:`tauray_trainers.metrics`) with ``ray.train.report`` after every epoch and a checkpoint
(layout in :mod:`tauray_trainers.models.checkpoint`) every ``checkpoint.every_epochs`` and at the
last epoch. The loop is generic: a :class:`~tauray_trainers.models.ContrastiveMethod` supplies
the loss, the per-step hooks and the embeddings, so nothing here branches on the method.

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
import math
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from tauray_trainers import distributed
from tauray_trainers import metrics as names
from tauray_trainers.config import OptimizerConfig, TrainConfig, build_config
from tauray_trainers.models import ContrastiveMethod, build_model
from tauray_trainers.models.checkpoint import read_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)

# Test hook: "epoch=K,marker=PATH" makes every rank raise once, halfway through epoch K (1-based),
# unless PATH.rank<r> exists (it is created first, so a restarted worker group passes).
# ",action=kill" SIGKILLs the worker process instead (the marker holds its pid; ",rank=R" limits
# it to one rank); ",action=oom,min_batch=N" raises TrialOutOfMemoryError on every run whose
# per-worker batch is >= N (no marker needed).
FAULT_INJECTION_ENV = "TAURAY_INJECT_FAILURE"

# Buffers that legitimately differ between ranks until synchronised (batch-norm statistics).
_PER_RANK_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ---- errors -------------------------------------------------------------------------------------


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; names the step, the epoch and the temperature."""

    def __init__(self, step: int, epoch: int, temperature: float, loss: float) -> None:
        self.step = step
        self.epoch = epoch
        self.temperature = temperature
        self.loss = loss
        super().__init__(
            f"non-finite loss ({loss}) at step {step} (epoch {epoch}) with temperature "
            f"{temperature:.6g}; lower optimizer.lr, raise temperature.value / temperature.min, "
            "set optimizer.grad_clip_norm or use precision=fp32"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.epoch, self.temperature, self.loss))


class TrialOutOfMemoryError(RuntimeError):
    """The device ran out of memory at this batch size (the platform marks the trial infeasible)."""

    def __init__(
        self, batch_size_per_worker: int, global_batch_size: int, device: str, detail: str = ""
    ) -> None:
        self.batch_size_per_worker = batch_size_per_worker
        self.global_batch_size = global_batch_size
        self.device = device
        self.detail = detail
        super().__init__(
            f"out of memory on {device} with batch_size_per_worker={batch_size_per_worker} "
            f"(global batch {global_batch_size}); use a smaller batch, loss.chunk_size, or "
            f"precision=bf16. {detail}".strip()
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.batch_size_per_worker, self.global_batch_size, self.device, self.detail),
        )


class InjectedFailure(RuntimeError):
    """Raised by the fault-injection test hook (``TAURAY_INJECT_FAILURE``)."""


# ---- configuration helpers ----------------------------------------------------------------------


def per_worker_batch_size(config: TrainConfig, world_size: int) -> int:
    """The per-worker batch: ``global_batch_size / world_size`` if given, else the config's.

    Raises:
        ValueError: ``global_batch_size`` not divisible by ``world_size`` or below 2 per worker.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if config.global_batch_size is None:
        return config.batch_size_per_worker
    if config.global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size={config.global_batch_size} is not divisible by the "
            f"{world_size} workers; use a multiple of {world_size} or set batch_size_per_worker"
        )
    per_worker = config.global_batch_size // world_size
    if per_worker < 2:
        raise ValueError(
            f"global_batch_size={config.global_batch_size} over {world_size} workers leaves "
            f"{per_worker} sample(s) per worker; at least 2 are needed"
        )
    return per_worker


def scaled_learning_rate(optimizer: OptimizerConfig, global_batch_size: int) -> float:
    """``optimizer.lr`` scaled by the global batch relative to ``base_batch_size``.

    ``linear``: lr x B / B0 (Goyal et al. 2017); ``sqrt``: lr x sqrt(B / B0) (suited to
    Adam-type optimizers); ``none``: lr.
    """
    ratio = global_batch_size / optimizer.base_batch_size
    if optimizer.lr_scaling == "linear":
        return optimizer.lr * ratio
    if optimizer.lr_scaling == "sqrt":
        return optimizer.lr * math.sqrt(ratio)
    return optimizer.lr


class WarmupCosine:
    """LR multiplier per optimizer step: linear warm-up, then cosine decay to ``min_ratio``.

    Step ``s < W`` gets ``(s + 1) / W``; after warm-up the multiplier follows
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with ``p = (s - W) / (S - W)``
    clipped to [0, 1] (Loshchilov & Hutter 2017, without restarts).

    Raises:
        ValueError: negative warm-up, ``total_steps`` < 1 or ``min_ratio`` outside [0, 1].
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    method: ContrastiveMethod,
    config: TrainConfig,
    *,
    global_batch_size: int,
    steps_per_epoch: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW or SGD+momentum over the method's parameter groups, with a per-step LR schedule.

    Learnable τ has its own group (its lr multiplier, no weight decay); biases, norms and
    embeddings get no weight decay.
    """
    opt = config.optimizer
    lr = scaled_learning_rate(opt, global_batch_size)
    groups = method.parameter_groups(lr, opt.weight_decay)
    if opt.name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr)
    elif opt.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=opt.momentum)
    else:  # pragma: no cover - the config's Literal rules this out
        raise ValueError(f"optimizer.name={opt.name!r}; choose one of adamw, sgd")
    total_steps = steps_per_epoch * config.epochs
    schedule = WarmupCosine(
        round(opt.warmup_epochs * steps_per_epoch), total_steps, opt.min_lr_ratio
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass(frozen=True)
class Precision:
    """Mixed precision in effect: the autocast dtype (None = fp32) and whether to scale grads."""

    autocast_dtype: torch.dtype | None
    grad_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """AMP settings for ``precision`` on ``device``: bf16/fp16 on CUDA only, fp32 elsewhere."""
    if precision == "fp32":
        return Precision(None, False)
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"precision={precision!r}; choose one of fp32, bf16, fp16")
    if device.type != "cuda":
        logger.warning("precision=%s needs a GPU; training in fp32 on %s", precision, device)
        return Precision(None, False)
    if precision == "bf16":
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


# ---- randomness ---------------------------------------------------------------------------------


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for ``(seed, epoch, rank)``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- where the loop runs ------------------------------------------------------------------------


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


# ---- state and counters -------------------------------------------------------------------------


@dataclass
class CostCounters:
    """Cumulative cost of a trial: resources reserved x wall seconds, and samples processed."""

    worker_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    samples_seen: int = 0


@dataclass
class TrainingState:
    """Progress that a checkpoint carries from one attempt to the next."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps completed
    cost: CostCounters = field(default_factory=CostCounters)
    last_eval: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultInjection:
    """Test hook: halfway through ``epoch`` (1-based), once per rank: raise, or SIGKILL the
    worker process (``action="kill"``); or raise out-of-memory for large batches (``"oom"``)."""

    epoch: int
    marker: Path
    action: str = "raise"
    rank: int | None = None
    min_batch: int = 0

    @classmethod
    def from_env(cls) -> FaultInjection | None:
        text = os.environ.get(FAULT_INJECTION_ENV, "").strip()
        if not text:
            return None
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        try:
            injection = cls(
                int(fields["epoch"]),
                Path(fields.get("marker", "")),
                fields.get("action", "raise"),
                int(fields["rank"]) if "rank" in fields else None,
                int(fields.get("min_batch", 0)),
            )
        except (KeyError, ValueError):
            injection = None
        if (
            injection is None
            or injection.action not in ("raise", "kill", "oom")
            or (injection.action != "oom" and "marker" not in fields)
        ):
            raise ValueError(
                f"{FAULT_INJECTION_ENV}={text!r}; expected 'epoch=<int>,marker=<path>' with "
                "optional ',action=raise|kill|oom', ',rank=<int>', ',min_batch=<int>'"
            )
        return injection

    def maybe_fail(
        self, epoch: int, step_in_epoch: int, steps: int, rank: int, batch_size: int = 0
    ) -> None:
        if epoch != self.epoch or step_in_epoch != steps // 2:
            return
        if self.rank is not None and rank != self.rank:
            return
        if self.action == "oom":
            if batch_size >= self.min_batch:
                raise TrialOutOfMemoryError(batch_size, batch_size, "injected", "(test hook)")
            return
        marker = Path(f"{self.marker}.rank{rank}")
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFailure(
            f"injected failure in epoch {epoch}, step {step_in_epoch} (rank {rank})"
        )


# ---- data ---------------------------------------------------------------------------------------


@dataclass
class Loaders:
    """The per-rank loaders of one run (evaluation loaders are disjoint shards)."""

    train: Any
    train_eval: Any
    val: Any
    val_pairs: Any
    bundle: Any


class _ViewPairs(Dataset):
    """``(cat([view_a, view_b]) [2C, H, W], index)``: one tensor so one pass embeds both views."""

    def __init__(self, pairs: Dataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        view_a, view_b = self.pairs[index]
        return torch.cat([view_a, view_b], dim=0), index


def validation_pairs(bundle: Any, seed: int) -> Dataset:
    """Two SimCLR-augmented views of every validation image, fixed across epochs.

    The positive pairs on which image-only methods' alignment is measured (the same pairs every
    epoch: augmentations seeded by ``(seed, 0, index)``; no flips, which would change digits).
    """
    from tauray_trainers.data.transforms import simclr_transform
    from tauray_trainers.data.views import TwoViews

    transform = simclr_transform(
        bundle.image_size, bundle.channels, bundle.mean, bundle.std, flip=False
    )
    pairs = TwoViews(bundle.val.source, transform, seed)
    pairs.set_epoch(0)
    return _ViewPairs(pairs)


def build_loaders(config: TrainConfig, batch_size: int, runtime: WorkerRuntime) -> Loaders:
    """Data bundle and loaders: training shards with ``drop_last``, disjoint evaluation shards."""
    from tauray_trainers.data import build_data, make_eval_loader, make_loader

    bundle = build_data(config)
    train = make_loader(
        bundle.train,
        batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=runtime.rank,
        world_size=runtime.world_size,
        workers=config.data.loader_workers,
    )

    def eval_loader(dataset: Dataset) -> Any:
        return make_eval_loader(
            dataset,
            batch_size,
            rank=runtime.rank,
            world_size=runtime.world_size,
            workers=config.data.loader_workers,
        )

    return Loaders(
        train=train,
        train_eval=eval_loader(bundle.train_eval),
        val=eval_loader(bundle.val),
        val_pairs=eval_loader(validation_pairs(bundle, config.seed)),
        bundle=bundle,
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) list/tuple/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def _set_epoch(loader: Any, epoch: int) -> None:
    for obj in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


# ---- one epoch ----------------------------------------------------------------------------------


@dataclass
class EpochStats:
    """What one epoch of training measured (loss averaged over steps and ranks)."""

    loss: float
    steps: int
    samples: int  # over all ranks
    seconds: float
    lr: float  # learning rate of the epoch's last step (first parameter group)


def _unwrap(model: nn.Module) -> ContrastiveMethod:
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore[return-value]


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    loader: Any,
    *,
    epoch: int,
    state: TrainingState,
    precision: Precision,
    grad_scaler: torch.amp.GradScaler | None,
    grad_clip_norm: float | None,
    device: torch.device,
    world_size: int,
    rank: int,
    batch_size: int,
    fault: FaultInjection | None = None,
) -> EpochStats:
    """One pass over the training shard; advances ``state.global_step``.

    Args:
        model: the method, DDP-wrapped when ``world_size`` > 1.
        epoch: the 1-based epoch number (for errors and the fault hook).
        batch_size: per-worker batch (for the OOM error).

    Raises:
        NonFiniteLossError: the loss is NaN/inf (names the step and the temperature).
        TrialOutOfMemoryError: the device ran out of memory.
    """
    method = _unwrap(model)
    model.train()
    steps = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    last_lr = float(optimizer.param_groups[0]["lr"])
    start = time.perf_counter()
    for step_in_epoch, batch in enumerate(loader):
        if fault is not None:
            fault.maybe_fail(epoch, step_in_epoch, steps, rank, batch_size)
        batch = to_device(batch, device)
        step = state.global_step
        optimizer.zero_grad(set_to_none=True)
        try:
            with precision.autocast(device):
                loss, stats = model(batch, step)
            if not bool(torch.isfinite(loss.detach())):
                temperature = float(stats.get("temperature", float("nan")))
                raise NonFiniteLossError(step, epoch, temperature, float(loss.detach()))
            if grad_scaler is not None:
                grad_scaler.scale(loss).backward()
                grad_scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip_norm is not None:
                params = [p for group in optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
            if grad_scaler is not None:
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                optimizer.step()
        except torch.OutOfMemoryError as error:
            raise TrialOutOfMemoryError(
                batch_size, batch_size * world_size, str(device), str(error).splitlines()[0]
            ) from error
        last_lr = float(optimizer.param_groups[0]["lr"])
        lr_schedule.step()
        method.after_optimizer_step(step)
        state.global_step += 1
        loss_sum += loss.detach().double()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    mean_loss = distributed.all_reduce_mean(loss_sum / max(steps, 1))
    return EpochStats(
        loss=float(mean_loss),
        steps=steps,
        samples=steps * batch_size * world_size,
        seconds=seconds,
        lr=last_lr,
    )


# ---- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    method: ContrastiveMethod,
    loaders: Loaders,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Validation metrics gathered over every rank (the same numbers on each rank).

    - kNN top-1 of validation images against the training images (weighted kNN on the
      method's normalised embeddings; skipped for unlabelled data);
    - uniformity of the validation embeddings and alignment of positive pairs (Wang & Isola
      2020): image–caption pairs for CLIP, two augmented views of each validation image
      (:func:`validation_pairs`) for image-only methods;
    - CLIP: zero-shot top-1 with the class prompts, recall@1/@5 (mean of image→text and
      text→image; identical captions count as matches).
    """
    from tauray_trainers import evaluation

    was_training = method.training
    method.eval()
    try:
        bundle = loaders.bundle
        val_features, val_labels = evaluation.extract_features(
            method.embed_images, loaders.val, device
        )
        result = {names.VAL_UNIFORMITY: evaluation.uniformity(val_features)}
        if bundle.num_classes > 0:
            train_features, train_labels = evaluation.extract_features(
                method.embed_images, loaders.train_eval, device
            )
            result[names.VAL_KNN_TOP1] = evaluation.knn_top1(
                train_features,
                train_labels,
                val_features,
                val_labels,
                k=config.eval.knn_k,
                temperature=config.eval.knn_temperature,
                num_classes=bundle.num_classes,
            )
        if method.supports_text:
            text_features = evaluation.extract_text_features(
                method.embed_texts, loaders.val, device
            )
            tokens = evaluation.extract_text_features(lambda t: t, loaders.val, device)
            recall = evaluation.recall_at_k(
                val_features, text_features, (1, 5), groups=evaluation.caption_groups(tokens)
            )
            result[names.VAL_RECALL_AT_1] = recall["mean@1"]
            result[names.VAL_RECALL_AT_5] = recall["mean@5"]
            result[names.VAL_ALIGNMENT] = evaluation.alignment(val_features, text_features)
            if bundle.num_classes > 0 and bundle.class_prompts:
                classes = method.class_text_embeddings(bundle.class_prompts, device)
                result[names.VAL_ZEROSHOT_TOP1] = evaluation.zeroshot_top1(
                    val_features, classes, val_labels
                )
        else:
            channels = int(bundle.channels)

            def embed_pair(stacked: torch.Tensor) -> torch.Tensor:
                views = torch.cat([stacked[:, :channels], stacked[:, channels:]], dim=0)
                return torch.cat(method.embed_images(views).chunk(2, dim=0), dim=1)

            pairs, _ = evaluation.extract_features(embed_pair, loaders.val_pairs, device)
            first, second = pairs.chunk(2, dim=1)
            result[names.VAL_ALIGNMENT] = evaluation.alignment(first, second)
        return {key: float(value) for key, value in result.items()}
    finally:
        method.train(was_training)


# ---- cross-rank consistency ---------------------------------------------------------------------


@torch.no_grad()
def state_divergence(module: nn.Module) -> float:
    """Largest spread across ranks of a fingerprint of each parameter and shared buffer.

    Zero when every rank holds identical weights (student, teacher, τ) and identical shared
    buffers (the DINO center); batch-norm statistics, which are per rank until synchronised,
    are left out. 0.0 without a process group.
    """
    if not distributed.is_distributed():
        return 0.0
    prints = []
    for name, tensor in module.state_dict().items():
        if name.endswith(_PER_RANK_BUFFERS) or not tensor.is_floating_point():
            continue
        flat = tensor.detach().double().flatten()
        weights = torch.cos(
            torch.arange(flat.numel(), dtype=torch.float64, device=flat.device) * 0.7548776662
        )
        prints.append(torch.stack([(flat * weights).sum(), flat.abs().sum()]))
    if not prints:
        return 0.0
    mine = torch.cat(prints).unsqueeze(0)
    every = distributed.gather_no_grad(mine)  # [W, 2T]
    spread = every.max(dim=0).values - every.min(dim=0).values
    return float(spread.max())


@torch.no_grad()
def synchronize_buffers(module: nn.Module) -> None:
    """Broadcast rank 0's buffers (batch-norm statistics, ...) so every rank evaluates alike."""
    if not distributed.is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


# ---- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(
    directory: Path,
    *,
    method: ContrastiveMethod,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler | None,
    state: TrainingState,
    config: TrainConfig,
    bundle: Any,
    steps_per_epoch: int,
    world_size: int,
    metrics: dict[str, Any],
) -> Path:
    """Write everything a resume needs (layout: :mod:`tauray_trainers.models.checkpoint`)."""
    return write_checkpoint(
        directory,
        {
            "config": config.to_dict(),
            "data": {
                "channels": int(bundle.channels),
                "image_size": int(bundle.image_size),
                "num_classes": int(bundle.num_classes),
                "class_names": list(bundle.class_names),
            },
            "steps_per_epoch": steps_per_epoch,
            "epoch": state.epoch,
            "global_step": state.global_step,
            "sampler_epoch": state.epoch,
            "world_size": world_size,
            "model": method.state_dict(),
            "temperature": method.temperature.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
            "rng": {"scheme": "epoch_seed(seed, epoch, rank)", "seed": config.seed},
            "cost": asdict(state.cost),
            "metrics": dict(metrics),
        },
    )


def load_checkpoint(
    directory: Path,
    *,
    method: ContrastiveMethod,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler | None,
    config: TrainConfig,
    steps_per_epoch: int,
) -> TrainingState:
    """Restore a checkpoint written by :func:`save_checkpoint` into the built objects.

    Raises:
        ValueError: the checkpoint belongs to a run with a different method or schedule length.
    """
    saved = read_checkpoint(directory)
    saved_config = build_config(saved["config"])
    if saved_config.method != config.method:
        raise ValueError(
            f"checkpoint {directory} is a {saved_config.method} run, this run is {config.method}"
        )
    if int(saved["steps_per_epoch"]) != steps_per_epoch:
        raise ValueError(
            f"checkpoint {directory} has {saved['steps_per_epoch']} steps per epoch, this run "
            f"{steps_per_epoch}: resume with the same data, batch size and number of workers"
        )
    method.load_state_dict(saved["model"])
    method.temperature.load_state_dict(saved["temperature"])
    optimizer.load_state_dict(saved["optimizer"])
    lr_schedule.load_state_dict(saved["lr_schedule"])
    if grad_scaler is not None and saved["grad_scaler"] is not None:
        grad_scaler.load_state_dict(saved["grad_scaler"])
    metrics = saved["metrics"]
    last_eval = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
    return TrainingState(
        epoch=int(saved["epoch"]),
        global_step=int(saved["global_step"]),
        cost=CostCounters(**saved["cost"]),
        last_eval=last_eval,
    )


# ---- the whole loop -----------------------------------------------------------------------------


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
    loaders = build_loaders(config, batch_size, runtime)
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


def _epoch_metrics(
    epoch: int,
    stats: EpochStats,
    method: ContrastiveMethod,
    state: TrainingState,
) -> dict[str, float]:
    temperature = method.temperature.stats()
    result = {
        names.EPOCH: epoch,
        names.STEP: state.global_step,
        names.TRAIN_LOSS: stats.loss,
        names.TRAIN_TEMPERATURE: float(temperature["temperature"]),
        names.TRAIN_TEMPERATURE_AT_BOUND: float(temperature["at_bound_fraction"]),
        names.TRAIN_LR: stats.lr,
        names.PERF_SAMPLES_PER_SECOND: stats.samples / max(stats.seconds, 1e-9),
    }
    schedules = method.schedule_stats(max(state.global_step - 1, 0))
    if "teacher_temperature" in schedules:
        result[names.TRAIN_TEACHER_TEMPERATURE] = float(schedules["teacher_temperature"])
    return result


def _account_cost(
    cost: CostCounters,
    base: CostCounters,
    elapsed: float,
    world_size: int,
    resources: Mapping[str, float],
) -> dict[str, float]:
    """Update ``cost`` to ``base`` (earlier attempts) plus this attempt's reserved seconds."""
    cost.worker_seconds = base.worker_seconds + elapsed * world_size
    cost.gpu_seconds = base.gpu_seconds + elapsed * world_size * resources.get("GPU", 0.0)
    cost.cpu_seconds = base.cpu_seconds + elapsed * world_size * resources.get("CPU", 0.0)
    return {
        names.COST_WORKER_SECONDS: cost.worker_seconds,
        names.COST_GPU_SECONDS: cost.gpu_seconds,
        names.COST_CPU_SECONDS: cost.cpu_seconds,
        names.COST_SAMPLES_SEEN: cost.samples_seen,
    }


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
    fault = FaultInjection.from_env()
    reports: list[dict] = []
    for epoch_index in range(state.epoch, config.epochs):
        epoch = epoch_index + 1
        seed_everything(epoch_seed(config.seed, epoch_index, runtime.rank))
        _set_epoch(loaders.train, epoch_index)
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
            rank=runtime.rank,
            batch_size=setup.batch_size,
            fault=fault,
        )
        state.epoch = epoch
        metrics = _epoch_metrics(epoch, stats, method, state)
        metrics[names.DIST_STATE_DIVERGENCE] = state_divergence(method)
        synchronize_buffers(method)
        last = epoch == config.epochs
        if last or epoch == 1 or epoch % config.eval.every_epochs == 0:
            with setup.precision.autocast(runtime.device):
                state.last_eval = evaluate(method, loaders, config, runtime.device)
        metrics.update(state.last_eval)
        state.cost.samples_seen += stats.samples
        metrics.update(
            _account_cost(state.cost, base_cost, time.monotonic() - attempt_start, world, resources)
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


__all__: Sequence[str] = (
    "FAULT_INJECTION_ENV",
    "InjectedFailure",
    "LocalRuntime",
    "NonFiniteLossError",
    "RayTrainRuntime",
    "TrialOutOfMemoryError",
    "WarmupCosine",
    "build_optimizer",
    "evaluate",
    "evaluate_untrained",
    "load_checkpoint",
    "per_worker_batch_size",
    "resolve_precision",
    "run_worker",
    "save_checkpoint",
    "scaled_learning_rate",
    "train_fn_per_worker",
    "train_locally",
    "train_one_epoch",
)

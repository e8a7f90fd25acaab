"""One epoch of a run on one rank: train over the shard, evaluate, and the epoch's metrics.

Nothing here knows where the loop runs (Ray Train, a trial actor, a plain process): the caller
passes the device, rank and world size. Metric names come from :mod:`tauray_trainers.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tauray_trainers import distributed, evaluation, linear_probe
from tauray_trainers import metrics as names
from tauray_trainers.checkpointing import CostCounters, TrainingState
from tauray_trainers.config import TrainConfig
from tauray_trainers.data.worker_loaders import Loaders, to_device
from tauray_trainers.failures import NonFiniteLossError, TrialOutOfMemoryError, is_out_of_memory
from tauray_trainers.faults import StepHook
from tauray_trainers.models import ContrastiveMethod
from tauray_trainers.optimization import Precision


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
    batch_size: int,
    before_step: StepHook | None = None,
) -> EpochStats:
    """One pass over the training shard; advances ``state.global_step``.

    Args:
        model: the method, DDP-wrapped when ``world_size`` > 1.
        epoch: the 1-based epoch number (for errors and ``before_step``).
        batch_size: per-worker batch (for the out-of-memory error).
        before_step: called with ``(epoch, step_in_epoch)`` before each step (fault injection,
            :mod:`tauray_trainers.faults`).

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
        if before_step is not None:
            before_step(epoch, step_in_epoch)
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
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if isinstance(error, TrialOutOfMemoryError) or not is_out_of_memory(error):
                raise
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


@torch.no_grad()
def evaluate(
    method: ContrastiveMethod,
    loaders: Loaders,
    config: TrainConfig,
    device: torch.device,
    *,
    with_linear_probe: bool = True,
) -> dict[str, float]:
    """Validation metrics gathered over every rank (the same numbers on each rank).

    - kNN top-1 of validation images against the training images (weighted kNN on the
      method's normalised embeddings; skipped for unlabelled data);
    - with ``with_linear_probe``, linear-probe top-1 on the same embeddings
      (:func:`~tauray_trainers.linear_probe.linear_probe_top1`; labelled data with at least
      two classes);
    - uniformity of the validation embeddings and alignment of positive pairs (Wang & Isola
      2020), the embeddings' effective rank (RankMe, Garrido et al. 2023), and the pairs'
      InfoNCE at one fixed τ (:func:`~tauray_trainers.evaluation.pair_infonce`): image–caption
      pairs for CLIP, two augmented views of each validation image
      (:func:`~tauray_trainers.data.worker_loaders.validation_pairs`) for image-only methods;
    - CLIP: zero-shot top-1 with the class prompts, recall@1/@5 (mean of image→text and
      text→image; identical captions count as matches).
    """
    was_training = method.training
    method.eval()
    try:
        bundle = loaders.bundle
        val_features, val_labels = evaluation.extract_features(
            method.embed_images, loaders.val, device
        )
        result = {
            names.VAL_UNIFORMITY: evaluation.uniformity(val_features),
            names.VAL_EFFECTIVE_RANK: evaluation.effective_rank(val_features),
        }
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
            if with_linear_probe and bundle.num_classes >= 2:
                result[names.VAL_LINEAR_TOP1] = linear_probe.linear_probe_top1(
                    train_features,
                    train_labels,
                    val_features,
                    val_labels,
                    num_classes=bundle.num_classes,
                    weight_decay=config.eval.linear_probe_weight_decay,
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
            result[names.VAL_INFONCE_AT_REFERENCE] = evaluation.pair_infonce(
                val_features, text_features
            )
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
            result[names.VAL_INFONCE_AT_REFERENCE] = evaluation.pair_infonce(first, second)
        return {key: float(value) for key, value in result.items()}
    finally:
        method.train(was_training)


def epoch_metrics(
    epoch: int,
    stats: EpochStats,
    method: ContrastiveMethod,
    state: TrainingState,
) -> dict[str, float]:
    """The training metrics of ``epoch``: loss, τ, learning rate, throughput."""
    temperature = method.temperature.stats()
    result = {
        names.EPOCH: epoch,
        names.GLOBAL_STEP: state.global_step,
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


def account_cost(
    cost: CostCounters,
    base: CostCounters,
    elapsed: float,
    world_size: int,
    resources: Mapping[str, float],
) -> dict[str, float]:
    """Update ``cost`` to ``base`` (earlier attempts) plus this attempt's reserved seconds.

    ``cost/gpu_seconds`` is reported only by runs that reserve GPUs (or carried some from an
    earlier attempt): on CPUs it would be a column of zeros in every MLflow view."""
    cost.worker_seconds = base.worker_seconds + elapsed * world_size
    cost.gpu_seconds = base.gpu_seconds + elapsed * world_size * resources.get("GPU", 0.0)
    cost.cpu_seconds = base.cpu_seconds + elapsed * world_size * resources.get("CPU", 0.0)
    result = {
        names.COST_WORKER_SECONDS: cost.worker_seconds,
        names.COST_CPU_SECONDS: cost.cpu_seconds,
        names.COST_SAMPLES_SEEN: cost.samples_seen,
    }
    if cost.gpu_seconds > 0 or resources.get("GPU", 0.0) > 0:
        result[names.COST_GPU_SECONDS] = cost.gpu_seconds
    return result

"""Optimizer, learning-rate schedule and mixed precision of a training run.

Pure functions of the config (and the device): no process group, no Ray. The loop builds
these once per run; durations in the config are epochs, converted to optimizer steps here.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import torch

from tauray_trainers.config import OptimizerConfig, TrainConfig
from tauray_trainers.models import ContrastiveMethod

logger = logging.getLogger(__name__)


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

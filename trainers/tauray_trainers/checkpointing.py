"""What a run's checkpoint carries from one attempt to the next, and writing and reading it.

The file layout is :mod:`tauray_trainers.models.checkpoint`'s; this module decides the contents:
model, τ, optimizer, LR schedule, grad scaler, counters and the last metrics, everything an exact
resume needs (the random state is re-derived from ``(seed, epoch, rank)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tauray_trainers.config import TrainConfig, build_config
from tauray_trainers.data.build import DataBundle, raw_images
from tauray_trainers.models import ContrastiveMethod
from tauray_trainers.models.checkpoint import read_checkpoint, write_checkpoint
from tauray_trainers.models.export import EXAMPLE_IMAGES


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


def save_checkpoint(
    directory: Path,
    *,
    method: ContrastiveMethod,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler | None,
    state: TrainingState,
    config: TrainConfig,
    bundle: DataBundle,
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
                "name": bundle.name,
                "mean": [float(value) for value in bundle.mean],
                "std": [float(value) for value in bundle.std],
                "examples": raw_images(bundle.val, bundle.image_size, EXAMPLE_IMAGES)[0],
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

"""The typed, frozen training configuration every worker builds first thing.

A run's configuration is a nested dict (from YAML, ``--set key=value`` or a search space's
``train_loop_config/...`` paths; Ray Train hands it to each worker as its ``train_loop_config``,
hence :data:`TRAIN_LOOP_CONFIG`). :func:`build_config` turns it into a :class:`TrainConfig`;
unknown keys and invalid values raise one ``ValueError`` whose message names the key, the bad
value and what is allowed. Nothing mutates a config after it is built (use
:func:`with_overrides` to derive a new one).

Durations are in epochs (floats allowed); the loop converts them to optimizer steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tauray_trainers.config.paths import deep_merge

#: The name of the training config inside a run's or a trial's config (Ray Train's
#: ``train_loop_config``); search spaces name their parameters ``train_loop_config/<key>``.
TRAIN_LOOP_CONFIG = "train_loop_config"

Method = Literal["simclr", "clip", "dino"]


class _Section(BaseModel):
    # inf and nan are never a setting: a bound such as ``gt=0`` lets inf through, and nan
    # compares false with every bound.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    name: Literal["digits", "digits-cluttered", "cifar10", "stl10", "imagefolder", "manifest"] = (
        Field("digits-cluttered", description="Data set. The digits variants are bundled.")
    )
    root: str | None = Field(None, description="Local folder (or manifest file) for real data.")
    download: bool = Field(False, description="Download torchvision data sets into root.")
    image_size: int = Field(32, ge=8, le=1024, description="Side of the square model input.")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_train_samples: int | None = Field(None, ge=1, description="Cap for quick runs.")
    max_val_samples: int | None = Field(None, ge=1)
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank.")
    horizontal_flip: bool | None = Field(
        None,
        description="Random horizontal flips in training augmentations. None: on, except for "
        "the digits data sets (a mirrored digit is another glyph).",
    )
    crop_min_scale: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Smallest area share of SimCLR/CLIP random resized crops (augmentation "
        "strength; CLIP's only augmentation). None: 0.5 for the digits data sets (the digit "
        "covers a fifth of a cluttered canvas; smaller crops often miss it), 0.2 otherwise.",
    )
    seed: int = Field(0, description="Seed of the bundled data's generation and split.")


class ModelConfig(_Section):
    backbone: Literal["small_cnn", "resnet18", "resnet50", "vit_tiny"] = "small_cnn"
    pretrained_weights: str | None = Field(
        None, description="Local path of backbone weights (nothing is downloaded)."
    )
    embedding_dim: int = Field(128, ge=2, description="Projection (shared space) dimension.")
    hidden_dim: int = Field(512, ge=2, description="Projection head hidden width.")
    text_width: int = Field(128, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    context_length: int = Field(48, ge=4, description="Byte tokens per caption.")
    dino_out_dim: int = Field(1024, ge=2, description="DINO head output (prototype) count.")


class OptimizerConfig(_Section):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, description="Learning rate at base_batch_size.")
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    warmup_epochs: float = Field(1.0, ge=0.0, description="Linear LR warm-up length.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Cosine floor as lr fraction.")
    grad_clip_norm: float | None = Field(None, gt=0.0)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Scale lr by (global batch / base_batch_size) or its square root."
    )
    base_batch_size: int = Field(256, ge=1)


class TemperatureConfig(_Section):
    """Temperature τ of the contrastive softmax (for DINO: the student's, see DinoConfig)."""

    mode: Literal["fixed", "learnable", "scheduled"] = "fixed"
    value: float = Field(
        0.1,
        gt=0.0,
        description="Fixed τ, the initial τ when learnable (CLIP: 0.07), or the end of a "
        "linear warm-up. SimCLR works best around 0.1-0.5 with small batches.",
    )
    min: float = Field(0.01, gt=0.0, description="Lower clamp (learnable) / cosine τ_min.")
    max: float = Field(1.0, gt=0.0, description="Upper clamp (learnable) / cosine τ_max.")
    lr_multiplier: float = Field(1.0, gt=0.0, description="Learnable τ's lr multiplier.")
    frozen_epochs: float = Field(0.0, ge=0.0, description="Learnable τ held still at first.")
    schedule: Literal["constant", "linear_warmup", "step", "cosine"] = "cosine"
    start: float | None = Field(None, gt=0.0, description="linear_warmup: τ at step 0.")
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear_warmup length.")
    period_epochs: float | None = Field(
        None, gt=0.0, description="cosine: full period (τ_max→τ_min→τ_max); None = whole run."
    )
    step_epochs: float = Field(1.0, gt=0.0, description="step: epochs between decays.")
    gamma: float = Field(0.5, gt=0.0, description="step: multiplicative factor per decay.")

    @model_validator(mode="after")
    def _bounds(self) -> TemperatureConfig:
        if self.min >= self.max:
            raise ValueError(f"temperature.min ({self.min}) must be < temperature.max ({self.max})")
        if self.mode == "learnable" and not self.min <= self.value <= self.max:
            raise ValueError(
                f"temperature.value ({self.value}) must lie in "
                f"[temperature.min, temperature.max] = [{self.min}, {self.max}] when learnable"
            )
        return self


class LossConfig(_Section):
    name: Literal["infonce", "sigmoid"] = Field(
        "infonce", description="CLIP only: InfoNCE (ClipLoss) or pairwise sigmoid (SigLipLoss)."
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description="Tiled loss: logits held at once are two chunk_size x chunk_size blocks.",
    )
    sigmoid_bias: float = Field(-10.0, description="Initial learnable bias of the sigmoid loss.")
    positives: Literal["groups", "pairs"] = Field(
        "groups",
        description="CLIP only. groups: every caption of an image's caption group is a positive "
        "(UniCL, Yang et al. 2022): for captions made from class names the class, so the other "
        "captions of the class in the batch are not pushed away as negatives; for a data set's "
        "own captions, identical texts. pairs: only the image's own caption (CLIP's loss). "
        "With class captions, pairs leaves about B/C false negatives per row (C classes).",
    )


class DinoConfig(_Section):
    num_global_crops: Literal[2] = 2
    num_local_crops: int = Field(4, ge=0, le=16)
    local_crop_size: int = Field(16, ge=8)
    student_temperature: float = Field(0.1, gt=0.0)
    teacher_temperature: float = Field(
        0.04,
        gt=0.0,
        description="Final teacher temperature. Above 0.07 training tends to be unstable "
        "(DINO, Caron et al. 2021).",
    )
    teacher_temperature_start: float = Field(0.04, gt=0.0)
    teacher_temperature_warmup_epochs: float = Field(0.0, ge=0.0)
    teacher_momentum: float = Field(0.996, ge=0.0, lt=1.0, description="EMA start; → 1.")
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)


class EvalConfig(_Section):
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0.0)
    every_epochs: int = Field(1, ge=1)
    linear_probe_every_epochs: int = Field(
        1,
        ge=1,
        description="Fit the linear probe (val/linear_top1) at the evaluations (every_epochs) "
        "of epoch 1, the last epoch and every multiple of this many epochs; other epochs repeat "
        "its last value. On the bundled digits it "
        "costs 3-6% of an epoch's training (tauray_trainers.linear_probe); raise it for large "
        "training splits or when it is not the objective.",
    )
    linear_probe_weight_decay: float = Field(
        1e-3, gt=0.0, description="L2 penalty of the linear probe on standardised embeddings."
    )


class CheckpointConfig(_Section):
    every_epochs: int = Field(1, ge=1)
    keep: int = Field(2, ge=1)


class TrainConfig(_Section):
    method: Method = "simclr"
    epochs: int = Field(10, ge=1)
    seed: int = 0
    batch_size_per_worker: int = Field(64, ge=2)
    global_batch_size: int | None = Field(
        None,
        ge=2,
        description="If set, overrides batch_size_per_worker: global / workers (must divide).",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="AMP on GPU only.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    temperature: TemperatureConfig = TemperatureConfig()
    loss: LossConfig = LossConfig()
    dino: DinoConfig = DinoConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _allowed_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    for part in path[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _one_line(error: ValidationError, model: type[BaseModel]) -> str:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "<config>"
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, loc))
        return f"unknown config key {key!r}; valid keys here: {allowed}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return f"invalid config: {message}"
    shown = repr(first.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"invalid config value {key}={shown}: {message}"


def build_config(raw: Mapping[str, Any] | TrainConfig | None = None) -> TrainConfig:
    """Build the frozen config from a nested dict.

    Raises:
        ValueError: one line naming the key, the bad value and what is allowed.
    """
    if isinstance(raw, TrainConfig):
        return raw
    if raw is not None and not isinstance(raw, Mapping):
        raise TypeError(f"config must be a mapping, got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(dict(raw or {}))
    except ValidationError as error:
        raise ValueError(_one_line(error, TrainConfig)) from None


def with_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A new config from ``config`` with nested ``overrides`` merged in."""
    return build_config(deep_merge(config.to_dict(), overrides))


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

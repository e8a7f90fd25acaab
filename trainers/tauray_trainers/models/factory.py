"""Build any method from the typed config, and load an embedding model from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch

from tauray_trainers.config import TemperatureConfig, TrainConfig, build_config
from tauray_trainers.metrics import TRAIN_TEMPERATURE
from tauray_trainers.models.backbones import build_backbone, load_pretrained_weights
from tauray_trainers.models.base import ContrastiveMethod
from tauray_trainers.models.checkpoint import read_checkpoint
from tauray_trainers.models.export import ExportedModel, ModelCard
from tauray_trainers.temperature import build_teacher_temperature, build_temperature

logger = logging.getLogger(__name__)


class DataSpec(Protocol):
    """What a model needs to know about the data (a ``DataBundle`` satisfies it)."""

    channels: int
    image_size: int


def dino_student_temperature_config(config: TrainConfig) -> TemperatureConfig:
    """The student τ configuration of a DINO run.

    DINO's student temperature is the run's ``temperature`` section (so fixed, learnable and
    scheduled τ and the sweeps that tune ``temperature.value`` apply to DINO too).
    ``dino.student_temperature`` is accepted as an alias of ``temperature.value``: when only
    one of the two differs from its default, that one wins.

    Raises:
        ValueError: both were changed from their defaults to different values.
    """
    alias = config.dino.student_temperature
    value = config.temperature.value
    alias_default = type(config.dino).model_fields["student_temperature"].default
    value_default = type(config.temperature).model_fields["value"].default
    if alias == value or alias == alias_default:
        return config.temperature
    if value != value_default:
        raise ValueError(
            f"dino.student_temperature={alias} conflicts with temperature.value={value}; "
            "for DINO the student temperature is temperature.value (set only one of them)"
        )
    return config.temperature.model_copy(update={"value": alias})


def build_model(
    config: TrainConfig | dict[str, Any],
    data: DataSpec,
    *,
    steps_per_epoch: int,
) -> ContrastiveMethod:
    """Build the method object (model + loss + temperature) the loop drives.

    Args:
        config: the typed config (or a dict :func:`build_config` accepts).
        data: the data's ``channels`` and ``image_size`` (a ``DataBundle`` works).
        steps_per_epoch: optimizer steps per epoch on each rank (schedules are per step).

    Raises:
        ValueError: invalid sizes or combinations (e.g. text width not divisible by heads).
        FileNotFoundError: ``model.pretrained_weights`` does not exist.
    """
    from tauray_trainers.losses import ClipLoss, DINOLoss, NTXentLoss, SigLipLoss

    config = build_config(config)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total_steps = steps_per_epoch * config.epochs
    model_cfg = config.model
    backbone = build_backbone(
        model_cfg.backbone, in_channels=int(data.channels), image_size=int(data.image_size)
    )
    if model_cfg.pretrained_weights:
        load_pretrained_weights(backbone, model_cfg.pretrained_weights)

    if config.method == "simclr":
        from tauray_trainers.models.heads import ProjectionHead
        from tauray_trainers.models.simclr import SimCLR

        temperature = build_temperature(config.temperature, steps_per_epoch, total_steps)
        head = ProjectionHead(backbone.feature_dim, model_cfg.hidden_dim, model_cfg.embedding_dim)
        return SimCLR(backbone, head, temperature, NTXentLoss(chunk_size=config.loss.chunk_size))

    if config.method == "clip":
        from tauray_trainers.data import ByteTokenizer
        from tauray_trainers.models.clip import CLIP
        from tauray_trainers.models.text import TextTransformer

        tokenizer = ByteTokenizer(context_length=model_cfg.context_length)
        text = TextTransformer(
            vocab_size=tokenizer.vocab_size,
            context_length=model_cfg.context_length,
            width=model_cfg.text_width,
            layers=model_cfg.text_layers,
            heads=model_cfg.text_heads,
            pad_id=int(getattr(tokenizer, "pad_id", 0)),
        )
        temperature = build_temperature(config.temperature, steps_per_epoch, total_steps)
        if config.loss.name == "sigmoid":
            loss = SigLipLoss()
        else:
            loss = ClipLoss(chunk_size=config.loss.chunk_size)
        return CLIP(
            backbone,
            text,
            embedding_dim=model_cfg.embedding_dim,
            temperature=temperature,
            loss=loss,
            loss_kind=config.loss.name,
            sigmoid_bias=config.loss.sigmoid_bias,
            tokenizer=tokenizer,
            positives=config.loss.positives,
        )

    if config.method == "dino":
        from tauray_trainers.models.dino import DINO
        from tauray_trainers.models.heads import DINOHead

        dino = config.dino
        temperature = build_temperature(
            dino_student_temperature_config(config), steps_per_epoch, total_steps
        )
        head = DINOHead(
            backbone.feature_dim,
            model_cfg.hidden_dim,
            model_cfg.embedding_dim,
            model_cfg.dino_out_dim,
        )
        return DINO(
            backbone,
            head,
            temperature=temperature,
            loss=DINOLoss(model_cfg.dino_out_dim, center_momentum=dino.center_momentum),
            teacher_temperature=build_teacher_temperature(dino, steps_per_epoch),
            momentum_start=dino.teacher_momentum,
            total_steps=total_steps,
            num_global_crops=dino.num_global_crops,
        )

    raise ValueError(f"method={config.method!r}; choose one of simclr, clip, dino")


class _SavedDataSpec:
    def __init__(self, channels: int, image_size: int) -> None:
        self.channels = channels
        self.image_size = image_size


def load_embedding_model(checkpoint_dir: str | Path) -> tuple[ExportedModel, TrainConfig]:
    """Load a training checkpoint as a self-contained embedding model.

    Args:
        checkpoint_dir: a checkpoint directory written by the training loop (the folder a
            ``ray.train.Checkpoint`` points to, holding ``checkpoint.pt``).

    Returns:
        ``(exported, config)``: the :class:`ExportedModel` (an eval-mode CPU
        :class:`EmbeddingModel` mapping raw images ``[N, C, H, W]``, uint8 or float in [0, 1],
        to L2-normalised embeddings ``[N, D]``: SimCLR the encoder's features, CLIP the image
        tower in the shared space (and text through ``embed_text``), DINO the teacher's
        features; the checkpoint's validation images as float ``[K, C, H, W]``; its
        :class:`ModelCard`) and the run's config.

    Raises:
        FileNotFoundError: no checkpoint in ``checkpoint_dir``.
        ValueError: the checkpoint's format is not understood, or its data section lacks the
            normalisation statistics or example images a self-contained model needs.
    """
    state = read_checkpoint(checkpoint_dir)
    config = build_config(state["config"])
    data = state["data"]
    missing = [key for key in ("mean", "std", "examples") if key not in data]
    if missing:
        raise ValueError(
            f"checkpoint {str(checkpoint_dir)!r} has no data {', '.join(missing)}: a model "
            "without the training data's normalisation cannot embed raw images; train it again"
        )
    spec = _SavedDataSpec(int(data["channels"]), int(data["image_size"]))
    # The checkpoint holds the weights: never read pretrained_weights again.
    config_no_weights = config.model_copy(
        update={"model": config.model.model_copy(update={"pretrained_weights": None})}
    )
    method = build_model(config_no_weights, spec, steps_per_epoch=int(state["steps_per_epoch"]))
    method.load_state_dict(state["model"])
    model = method.embedding_model(
        mean=tuple(data["mean"]), std=tuple(data["std"]), image_size=spec.image_size
    )
    example = data["examples"].float() / 255.0
    with torch.no_grad():
        embedding_dim = int(model(example[:1]).shape[-1])
    temperature = state["metrics"].get(TRAIN_TEMPERATURE)
    card = ModelCard(
        method=config.method,
        backbone=config.model.backbone,
        data_set=str(data.get("name") or config.data.name),
        image_size=spec.image_size,
        channels=spec.channels,
        mean=tuple(float(value) for value in data["mean"]),
        std=tuple(float(value) for value in data["std"]),
        temperature=float(temperature) if temperature is not None else float("nan"),
        temperature_mode=config.temperature.mode,
        embedding_dim=embedding_dim,
        embeds_text=model.text_encoder is not None,
    )
    return ExportedModel(model=model, example=example, card=card), config

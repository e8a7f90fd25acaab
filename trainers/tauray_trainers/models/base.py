"""The one interface the training loop drives, whatever the method.

The loop never asks which method it runs: it calls ``model(batch, step)`` (through DDP) for the
loss, ``after_optimizer_step(step)`` after each optimizer step (temperature clamping, the DINO
teacher's EMA), ``embed_images`` for kNN evaluation and, when ``supports_text`` is true,
``embed_texts``/``class_text_embeddings`` for zero-shot and retrieval metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tauray_trainers.models.export import EmbeddingModel
from tauray_trainers.temperature import Temperature

# Parameter names containing one of these never get weight decay (besides biases and norms).
_NO_DECAY_MARKERS = ("embedding", "class_token", "bias")


class ContrastiveMethod(nn.Module, ABC):
    """Base class of SimCLR, CLIP and DINO: a model, its loss and its temperature.

    ``forward(batch, step) -> (loss, stats)`` is the training loss, so that DDP's forward hooks
    run (calling any other method through a DDP wrapper would skip gradient synchronisation).
    ``stats`` holds detached 0-dim tensors (e.g. ``temperature``).
    """

    method_name: ClassVar[str]
    supports_text: ClassVar[bool] = False

    def __init__(self, temperature: Temperature) -> None:
        super().__init__()
        self.temperature = temperature

    @abstractmethod
    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of one per-rank batch at optimizer step ``step``."""

    def training_loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same as calling the module; for single-process use without DDP."""
        return self(batch, step)

    @abstractmethod
    def image_encoder(self) -> nn.Module:
        """The module whose (unnormalised) output is this method's image embedding."""

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]`` used for kNN evaluation and export."""
        return F.normalize(self.image_encoder()(images).float(), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` (methods with a text tower only)."""
        raise NotImplementedError(f"{self.method_name} has no text tower")

    def class_text_embeddings(
        self, class_prompts: Sequence[str | Sequence[str]], device: torch.device
    ) -> torch.Tensor:
        """One normalised text embedding per class (methods with a text tower only)."""
        raise NotImplementedError(f"{self.method_name} has no text tower")

    @property
    def may_leave_parameters_unused(self) -> bool:
        """True when a trainable parameter can be absent from a step's graph.

        A learnable τ held frozen for its first steps is returned detached; DDP must then be
        told to look for unused parameters (``find_unused_parameters=True``).
        """
        return bool(self.temperature.learnable and getattr(self.temperature, "frozen_steps", 0))

    def after_optimizer_step(self, step: int) -> None:
        """Called once after every optimizer step: clamps a learnable temperature."""
        self.temperature.after_optimizer_step(step)

    def schedule_stats(self, step: int) -> dict[str, float]:
        """Scheduled quantities at ``step`` worth reporting (e.g. DINO's teacher temperature)."""
        return {}

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: decayed weights, undecayed biases/norms/embeddings, then τ's own.

        Args:
            lr: the (scaled) base learning rate.
            weight_decay: decay of the weight matrices.
        """
        temperature_groups = self.temperature.parameter_groups(lr)
        own = {id(p) for group in temperature_groups for p in group["params"]}
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not param.requires_grad or id(param) in own:
                continue
            if param.ndim <= 1 or any(marker in name for marker in _NO_DECAY_MARKERS):
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
            *temperature_groups,
        ]
        return [group for group in groups if group["params"]]

    def text_encoder(self) -> nn.Module | None:
        """The module mapping tokens ``[N, L]`` to (unnormalised) text embeddings, if any."""
        return None

    def embedding_model(
        self, *, mean: Sequence[float], std: Sequence[float], image_size: int
    ) -> EmbeddingModel:
        """A frozen eval-mode copy of the path from raw images (and text) to embeddings.

        Args:
            mean: per-channel mean the training data was normalised with.
            std: per-channel standard deviation it was normalised with.
            image_size: the side the model was trained at.
        """
        text = self.text_encoder()
        return EmbeddingModel(
            self.image_encoder(),
            mean=mean,
            std=std,
            image_size=image_size,
            text_encoder=text,
            tokenizer=getattr(self, "tokenizer", None) if text is not None else None,
        )

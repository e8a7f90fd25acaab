"""A trained model as a user holds it: raw images (and, for CLIP, strings) in, embeddings out.

The training loop feeds its encoders images normalised with the training data's per-channel mean
and standard deviation. A model that expects that input is unusable without numbers recorded
nowhere else: measured on the cluttered digits (mean 0.2765, std 0.1586), a sweep's champion
fed ``[0, 1]`` pixels scored kNN top-1 0.2423 instead of its 0.4318. :class:`EmbeddingModel`
therefore owns the whole path from pixels to embeddings: dtype handling (uint8 in [0, 255] or
float in [0, 1]), the normalisation, the encoder and the L2 normalisation; a CLIP model also
owns its text tower and tokenizer (:meth:`EmbeddingModel.embed_text`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Real validation images a checkpoint carries as the exported model's input example.
EXAMPLE_IMAGES = 4


@dataclass(frozen=True)
class ModelCard:
    """What an exported model is: how it was trained and what it expects.

    Attributes:
        method: ``simclr``, ``clip`` or ``dino``.
        backbone: the image encoder's architecture (``small_cnn``, ``resnet18``, ...).
        data_set: the training data set's name.
        image_size: side of the square input images, in pixels.
        channels: input channels (1 or 3).
        mean: per-channel mean the model subtracts (pixels in [0, 1]).
        std: per-channel standard deviation the model divides by.
        temperature: τ at the end of training.
        temperature_mode: ``fixed``, ``learnable`` or ``scheduled``.
        embedding_dim: length of the embeddings the model returns.
        embeds_text: whether :meth:`EmbeddingModel.embed_text` works (CLIP).
    """

    method: str
    backbone: str
    data_set: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    temperature: float
    temperature_mode: str
    embedding_dim: int
    embeds_text: bool


def _frozen_copy(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module).cpu().eval()
    for param in clone.parameters():
        param.requires_grad_(False)
    return clone


class EmbeddingModel(nn.Module):
    """Images as a user holds them -> L2-normalised embeddings; CLIP: strings too.

    ``forward(images)`` takes ``[N, C, H, W]`` at the trained size, either uint8 in [0, 255]
    (scaled by 1/255) or floating point in [0, 1], normalises with the training data's
    per-channel ``mean``/``std`` (what the evaluation transform did) and returns the encoder's
    output L2-normalised, float32 ``[N, D]``.

    Args:
        encoder: ``normalised images [N, C, H, W] -> [N, D]``; copied, frozen, eval mode.
        mean: per-channel mean of the training images in [0, 1] (C values).
        std: per-channel standard deviation (C positive values).
        image_size: the side the encoder was trained at.
        text_encoder: ``tokens [N, L] -> [N, D]`` (CLIP's text tower and projection), or None.
        tokenizer: ``list[str] -> tokens [N, L]`` for ``text_encoder``.

    Raises:
        ValueError: ``mean``/``std`` of different lengths, a non-positive std, a text encoder
            without a tokenizer.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        text_encoder: nn.Module | None = None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(
                f"mean and std need one value per channel each, got {tuple(mean)} and {tuple(std)}"
            )
        if any(value <= 0 for value in std):
            raise ValueError(f"std values must be positive, got {tuple(std)}")
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("text_encoder and tokenizer go together: pass both or neither")
        self.encoder = _frozen_copy(encoder)
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))
        self.channels = len(mean)
        self.image_size = int(image_size)
        self.text_encoder = None if text_encoder is None else _frozen_copy(text_encoder)
        self.tokenizer = tokenizer
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[0, 255]`` or float ``[0, 1]`` images -> the encoder's normalised float input.

        Raises:
            TypeError: ``images`` is not a tensor, or not uint8/floating point.
            ValueError: not ``[N, C, H, W]`` with this model's channels and size.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        expected = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"(N x C x H x W at the trained size), got {list(images.shape)}"
            )
        if images.dtype == torch.uint8:
            pixels = images.float() / 255.0
        elif images.is_floating_point():
            pixels = images.float()
        else:
            raise TypeError(
                f"images must be uint8 in [0, 255] or floating point in [0, 1], got {images.dtype}"
            )
        return (pixels - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(self.preprocess(images)).float(), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` in the images' space (CLIP models only).

        Zero-shot classification: embed one prompt per class (``"a photo of the digit 3"``),
        then each image's class is the row of highest cosine similarity.

        Raises:
            ValueError: the model has no text tower (SimCLR, DINO), or ``texts`` is empty.
        """
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this model embeds images only: only CLIP models embed text")
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("texts is empty: pass a string or a list of strings")
        device = self.mean.device
        tokens = self.tokenizer(batch).to(device)
        return F.normalize(self.text_encoder(tokens).float(), dim=-1)


@dataclass(frozen=True)
class ExportedModel:
    """A checkpoint turned into what tauray logs: the model, real example images, its card.

    Attributes:
        model: the :class:`EmbeddingModel` (CPU, eval mode, frozen).
        example: a few real validation images, float32 ``[K, C, H, W]`` in [0, 1].
        card: what the model is (:class:`ModelCard`).
    """

    model: EmbeddingModel
    example: torch.Tensor
    card: ModelCard

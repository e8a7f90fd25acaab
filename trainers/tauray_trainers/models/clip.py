"""CLIP: an image tower and a text tower projected into one space (Radford et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tauray_trainers.models.backbones import Backbone
from tauray_trainers.models.base import ContrastiveMethod
from tauray_trainers.models.text import TextTransformer
from tauray_trainers.temperature import Temperature


class CLIP(ContrastiveMethod):
    """CLIP (Radford et al., ICML 2021) with the InfoNCE or the sigmoid (SigLIP) loss.

    With ``loss_kind="sigmoid"`` (Zhai et al., ICCV 2023) the model owns the learnable bias b of
    ``sigmoid(sim / τ + b)``; τ always comes from the temperature module. With
    ``positives="groups"`` the batch's caption groups go to the loss, which then counts every
    image-caption pair of a group as a positive (UniCL, Yang et al., CVPR 2022).

    Early training on small data: on the cluttered digits (batch 64, τ 0.1, warm-up 1 epoch)
    the text tower's outputs collapse to nearly one point within about 20 steps (mean caption
    cosine 0.63 at initialisation, 0.997 after; the ten class embeddings' cosine 0.96 -> 1.000)
    and the loss sits at ln B, where the image tower gets almost no gradient, until class
    structure grows back: 2-3 epochs of 22 steps with caption groups and crop-only
    augmentation, 5-7 without them. Anything that cuts the steps per run (batch 128: 11 per
    epoch) or deepens the collapse (no LR warm-up; τ 0.03) can keep a short run on that plateau
    (zero-shot top-1 near chance).

    Args:
        backbone: image encoder ``[N, C, H, W] -> [N, F]``.
        text: text tower ``tokens [N, L] -> [N, W]``.
        embedding_dim: shared space dimension D.
        temperature: the τ module.
        loss: ``ClipLoss`` or ``SigLipLoss``.
        loss_kind: ``"infonce"`` or ``"sigmoid"``.
        sigmoid_bias: initial b (SigLIP uses -10).
        tokenizer: maps a list of strings to ``[N, L]`` token ids (for class prompts).
        positives: ``"groups"`` or ``"pairs"`` (only the pairs (i, i); the batch's groups are
            ignored).

    Batch: ``(images [B, C, H, W], tokens [B, L], groups [B])``; ``groups`` (int) is needed
    only with ``positives="groups"`` (further items are ignored).

    Raises:
        ValueError: an unknown ``loss_kind`` or ``positives``; in ``forward``, a batch without
            groups when ``positives="groups"``.
    """

    method_name: ClassVar[str] = "clip"
    supports_text: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Backbone,
        text: TextTransformer,
        *,
        embedding_dim: int,
        temperature: Temperature,
        loss: nn.Module,
        loss_kind: str,
        sigmoid_bias: float,
        tokenizer: Callable[[list[str]], torch.Tensor],
        positives: str = "groups",
    ) -> None:
        super().__init__(temperature)
        if loss_kind not in ("infonce", "sigmoid"):
            raise ValueError(f"loss.name={loss_kind!r}; choose one of infonce, sigmoid")
        if positives not in ("groups", "pairs"):
            raise ValueError(f"loss.positives={positives!r}; choose one of groups, pairs")
        self.positives = positives
        self.backbone = backbone
        self.image_projection = nn.Linear(backbone.feature_dim, embedding_dim, bias=False)
        self.text = text
        self.text_projection = nn.Linear(text.width, embedding_dim, bias=False)
        self.loss = loss
        self.loss_kind = loss_kind
        self.tokenizer = tokenizer
        if loss_kind == "sigmoid":
            self.logit_bias = nn.Parameter(torch.tensor(float(sigmoid_bias)))
        else:
            self.logit_bias = None

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, tokens = batch[0], batch[1]
        groups = None
        if self.positives == "groups":
            if len(batch) < 3:
                raise ValueError(
                    "loss.positives='groups' needs batches of (images, tokens, groups); this "
                    f"batch has {len(batch)} items (use loss.positives=pairs without groups)"
                )
            groups = batch[2]
        image_emb = self.image_projection(self.backbone(images)).float()
        text_emb = self.text_projection(self.text(tokens)).float()
        tau = self.temperature(step)
        stats = {"temperature": tau.detach()}
        if self.logit_bias is None:
            loss = self.loss(image_emb, text_emb, temperature=tau, groups=groups)
        else:
            loss = self.loss(
                image_emb, text_emb, temperature=tau, bias=self.logit_bias, groups=groups
            )
            stats["sigmoid_bias"] = self.logit_bias.detach()
        return loss, stats

    def image_encoder(self) -> nn.Module:
        return nn.Sequential(self.backbone, self.image_projection)

    def text_encoder(self) -> nn.Module:
        return nn.Sequential(self.text, self.text_projection)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text(tokens)).float(), dim=-1)

    @torch.no_grad()
    def class_text_embeddings(
        self, class_prompts: Sequence[str | Sequence[str]], device: torch.device
    ) -> torch.Tensor:
        """Prompt-ensembled class embeddings (CLIP sec. 3.1.4): mean of normalised templates.

        Args:
            class_prompts: per class, one prompt or a list of templated prompts.
            device: where to run the text tower.

        Returns:
            ``[num_classes, D]``, L2-normalised.
        """
        rows = []
        for prompts in class_prompts:
            texts = [prompts] if isinstance(prompts, str) else list(prompts)
            if not texts:
                raise ValueError("every class needs at least one prompt")
            embeddings = self.embed_texts(self.tokenizer(texts).to(device))
            rows.append(F.normalize(embeddings.mean(dim=0), dim=-1))
        return torch.stack(rows)

"""SimCLR: encoder + projection head trained with NT-Xent (Chen et al. 2020)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tauray_trainers.losses import NTXentLoss
from tauray_trainers.models.backbones import Backbone
from tauray_trainers.models.base import ContrastiveMethod
from tauray_trainers.models.heads import ProjectionHead
from tauray_trainers.temperature import Temperature


class SimCLR(ContrastiveMethod):
    """SimCLR (Chen et al., ICML 2020): two augmented views, NT-Xent over the global batch.

    The two views go through the encoder in one batch (batch-norm statistics over both), the loss
    is computed on the projections, and kNN evaluation uses the normalised encoder features (the
    representation before the head, as in the paper).

    Args:
        backbone: image encoder ``[N, C, H, W] -> [N, F]``.
        head: projection ``[N, F] -> [N, D]``.
        temperature: the τ module.
        loss: an ``NTXentLoss`` (negatives gathered from every rank).

    Batch: ``(view_a [B, C, H, W], view_b [B, C, H, W])`` (extra items, e.g. labels, ignored).
    """

    method_name: ClassVar[str] = "simclr"

    def __init__(
        self,
        backbone: Backbone,
        head: ProjectionHead,
        temperature: Temperature,
        loss: NTXentLoss,
    ) -> None:
        super().__init__(temperature)
        self.backbone = backbone
        self.head = head
        self.loss = loss

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view_a, view_b = batch[0], batch[1]
        n = view_a.shape[0]
        projections = self.head(self.backbone(torch.cat([view_a, view_b], dim=0))).float()
        tau = self.temperature(step)
        loss = self.loss(projections[:n], projections[n:], temperature=tau)
        return loss, {"temperature": tau.detach()}

    def image_encoder(self) -> nn.Module:
        return self.backbone

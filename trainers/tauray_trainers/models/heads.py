"""Projection heads: SimCLR's MLP head and DINO's head with normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR's non-linear projection g(h) = W2 ReLU(BN(W1 h)) (Chen et al. 2020, sec. 2.1).

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: hidden width.
        out_dim: projection dimension (where the contrastive loss is applied).

    Shapes: ``[N, in_dim] -> [N, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix).

    A 3-layer MLP (GELU) to an L2-normalised bottleneck, then a bias-free linear layer whose
    rows (the prototypes) are L2-normalised too: the original's weight-normalised last layer with
    its norm fixed to 1. Outputs are logits over ``out_dim`` prototypes, to be divided by the
    student or teacher temperature inside the loss.

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: MLP hidden width.
        bottleneck_dim: normalised bottleneck dimension.
        out_dim: number of prototypes K.

    Shapes: ``[N, in_dim] -> [N, out_dim]`` with values in [-1, 1].
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        bottleneck = F.normalize(self.mlp(features), dim=-1)
        return F.linear(bottleneck, F.normalize(self.prototypes, dim=-1))

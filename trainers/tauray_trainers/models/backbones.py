"""Image backbones: a small CNN, torchvision ResNet-18/50 and a tiny torchvision ViT.

Every backbone maps ``[N, C, H, W]`` images to ``[N, feature_dim]`` features and exposes
``feature_dim``. ResNets get CIFAR-style stems for small inputs (a 3x3 stride-1 first convolution
and no max-pool, as in SimCLR's CIFAR-10 experiments, Chen et al. 2020, appendix B.9); the ViT
interpolates its position embedding so DINO's smaller local crops go through the same weights.
Nothing is downloaded: optional weights come from a local file (:func:`load_pretrained_weights`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.vision_transformer import VisionTransformer

logger = logging.getLogger(__name__)

BACKBONES = ("small_cnn", "resnet18", "resnet50", "vit_tiny")

# Inputs up to this side get the CIFAR-style ResNet stem (3x3 conv, stride 1, no max-pool).
SMALL_IMAGE_MAX_SIDE = 64


class Backbone(nn.Module):
    """Base class: ``forward(images [N, C, H, W]) -> features [N, feature_dim]``."""

    feature_dim: int


class SmallCNN(Backbone):
    """Four 3x3 conv blocks with batch norm and global average pooling, for 8-64 px images.

    Args:
        in_channels: image channels C.
        width: channels of the first block; later blocks use 2x and 4x.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(in_channels, width, 1),
            block(width, 2 * width, 2),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


class ResNetBackbone(Backbone):
    """torchvision ResNet without its classifier, with a stem suited to the image size.

    Args:
        depth: 18 or 50.
        in_channels: image channels C.
        image_size: input side; up to ``SMALL_IMAGE_MAX_SIDE`` the stem is a 3x3 stride-1
            convolution without max-pool, above it torchvision's 7x7 stride-2 stem is kept.
    """

    def __init__(self, depth: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        builders = {18: resnet18, 50: resnet50}
        if depth not in builders:
            raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
        net = builders[depth](weights=None)
        if image_size <= SMALL_IMAGE_MAX_SIDE:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class ViTBackbone(Backbone):
    """torchvision ``VisionTransformer`` (ViT-Tiny sizes) returning the class token.

    ViT-Tiny: 12 layers, 3 heads, width 192, MLP 768 (Touvron et al. 2021, DeiT). Inputs of any
    side divisible by the patch size are accepted: the patch part of the position embedding is
    bicubically interpolated to the input grid (as DINO does for its local crops).

    Args:
        in_channels: image channels C.
        image_size: the side the position embedding is laid out for.
        patch_size: patch side; must divide ``image_size``. Default: ``image_size // 8``
            (an 8x8 grid) but at least 2.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        patch_size: int | None = None,
        *,
        num_layers: int = 12,
        num_heads: int = 3,
        hidden_dim: int = 192,
        mlp_dim: int = 768,
    ) -> None:
        super().__init__()
        patch = patch_size or max(2, image_size // 8)
        if image_size % patch:
            raise ValueError(
                f"vit_tiny needs data.image_size divisible by the patch size {patch}, "
                f"got image_size={image_size}"
            )
        vit = VisionTransformer(
            image_size=image_size,
            patch_size=patch,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
        )
        if in_channels != 3:
            vit.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch, stride=patch)
            fan_in = in_channels * patch * patch
            nn.init.trunc_normal_(vit.conv_proj.weight, std=math.sqrt(1 / fan_in))
            nn.init.zeros_(vit.conv_proj.bias)
        vit.heads = nn.Identity()
        self.vit = vit
        self.patch_size = patch
        self.grid = image_size // patch
        self.feature_dim = hidden_dim

    def _position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        pos = self.vit.encoder.pos_embedding  # [1, 1 + grid*grid, D]
        if grid_h == self.grid and grid_w == self.grid:
            return pos
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"vit_tiny input side must be divisible by patch size {self.patch_size}, "
                f"got {h}x{w}"
            )
        x = self.vit.conv_proj(images).flatten(2).transpose(1, 2)  # [N, h*w/p^2, D]
        x = torch.cat([self.vit.class_token.expand(n, -1, -1), x], dim=1)
        encoder = self.vit.encoder
        x = encoder.dropout(
            x + self._position_embedding(h // self.patch_size, w // self.patch_size)
        )
        x = encoder.ln(encoder.layers(x))
        return x[:, 0]


def build_backbone(name: str, *, in_channels: int, image_size: int) -> Backbone:
    """Build a randomly initialised backbone by name.

    Args:
        name: one of ``BACKBONES``.
        in_channels: image channels C of the data.
        image_size: input side H = W.

    Raises:
        ValueError: unknown ``name`` or non-positive sizes.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if name == "small_cnn":
        return SmallCNN(in_channels)
    if name == "resnet18":
        return ResNetBackbone(18, in_channels, image_size)
    if name == "resnet50":
        return ResNetBackbone(50, in_channels, image_size)
    if name == "vit_tiny":
        return ViTBackbone(in_channels, image_size)
    raise ValueError(f"model.backbone={name!r} is not known; choose one of {', '.join(BACKBONES)}")


_WRAPPER_KEYS = ("state_dict", "model", "backbone", "module")
_PREFIXES = ("module.", "backbone.", "encoder.", "net.")


def _unwrap_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, Mapping):
        raise ValueError(f"model.pretrained_weights={str(path)!r} holds no state dict")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def load_pretrained_weights(backbone: Backbone, path: str | Path) -> None:
    """Load backbone weights from a local file (a state dict, possibly wrapped or prefixed).

    Keys may carry ``module.``/``backbone.``/``encoder.`` prefixes and may be torchvision's own
    names (``conv1.weight``) or ours (``net.conv1.weight``). Tensors whose shape does not match
    (e.g. an ImageNet 7x7 stem for our 3x3 one, or a classifier) are skipped and logged.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no tensors matching the backbone.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_weights={str(path)!r}: no such file")
    state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    own = backbone.state_dict()
    matched: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        candidates = [key]
        stripped = key
        for prefix in _PREFIXES:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
                candidates.append(stripped)
        for inner in ("net.", "vit.", "features."):
            candidates += [inner + c for c in list(candidates)]
        target = next((c for c in candidates if c in own), None)
        if target is None or own[target].shape != value.shape:
            skipped.append(key)
            continue
        matched[target] = value
    if not matched:
        raise ValueError(
            f"model.pretrained_weights={str(path)!r}: none of its {len(state)} tensors match the "
            f"{type(backbone).__name__} backbone"
        )
    backbone.load_state_dict(matched, strict=False)
    logger.info(
        "loaded %d/%d backbone tensors from %s (skipped %d: %s)",
        len(matched),
        len(own),
        path,
        len(skipped),
        ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
    )

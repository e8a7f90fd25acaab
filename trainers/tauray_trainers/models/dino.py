"""DINO: self-distillation with an EMA teacher and multi-crop (Caron et al. 2021)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from tauray_trainers.models.backbones import Backbone
from tauray_trainers.models.base import ContrastiveMethod
from tauray_trainers.models.heads import DINOHead
from tauray_trainers.temperature import ScheduledTemperature, Temperature


def teacher_momentum(step: int, *, start: float, total_steps: int) -> float:
    """DINO's EMA momentum: cosine from ``start`` at step 0 to 1 at ``total_steps``.

    ``m(s) = 1 - (1 - start) * (1 + cos(pi * s / S)) / 2`` (Caron et al. 2021, sec. 3.1).

    Raises:
        ValueError: ``step`` negative, ``total_steps`` < 1 or ``start`` outside [0, 1).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"dino.teacher_momentum must lie in [0, 1), got {start}")
    progress = min(step, total_steps) / total_steps
    return 1.0 - (1.0 - start) * (1.0 + math.cos(math.pi * progress)) / 2.0


class _Network(nn.Module):
    """Backbone followed by the DINO head."""

    def __init__(self, backbone: Backbone, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def _multi_crop(network: nn.Module, crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Run consecutive crops of equal resolution as one batch; return per-crop outputs."""
    outputs: list[torch.Tensor] = []
    start = 0
    while start < len(crops):
        end = start + 1
        while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
            end += 1
        merged = network(torch.cat(list(crops[start:end]), dim=0)).float()
        outputs.extend(merged.chunk(end - start, dim=0))
        start = end
    return outputs


class DINO(ContrastiveMethod):
    """DINO (Caron et al., ICCV 2021): a student matches an EMA teacher across crops.

    The student sees every crop (2 global + ``num_local_crops`` local), the teacher only the
    global ones. The teacher is updated by EMA after every optimizer step with a momentum going
    from ``momentum_start`` to 1 on a cosine; the teacher temperature warms up linearly. The
    student temperature is the τ module; the center lives in the ``DINOLoss`` (all-reduced, so
    identical on every rank). kNN evaluation uses the teacher's backbone features.

    Args:
        backbone: image encoder of the student (the teacher starts as a copy).
        head: the student's ``DINOHead``.
        temperature: the student τ module.
        loss: a ``DINOLoss`` with ``out_dim`` equal to the head's.
        teacher_temperature: the teacher τ schedule (warm-up, then constant).
        momentum_start: EMA momentum at step 0.
        total_steps: steps of the whole run (the momentum reaches 1 there).

    Batch: a list of crops ``[B, C, H, W]`` (globals first), or ``(crops, ...)``.
    """

    method_name: ClassVar[str] = "dino"

    def __init__(
        self,
        backbone: Backbone,
        head: DINOHead,
        *,
        temperature: Temperature,
        loss: nn.Module,
        teacher_temperature: ScheduledTemperature,
        momentum_start: float,
        total_steps: int,
        num_global_crops: int = 2,
    ) -> None:
        super().__init__(temperature)
        self.student = _Network(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.loss = loss
        self.teacher_temperature = teacher_temperature
        self.momentum_start = momentum_start
        self.total_steps = total_steps
        self.num_global_crops = num_global_crops
        teacher_momentum(0, start=momentum_start, total_steps=total_steps)  # validates

    def momentum(self, step: int) -> float:
        """The EMA momentum used after optimizer step ``step``."""
        return teacher_momentum(step, start=self.momentum_start, total_steps=self.total_steps)

    @staticmethod
    def _crops(batch: Any) -> list[torch.Tensor]:
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], (list, tuple)):
            batch = batch[0]
        if not isinstance(batch, (list, tuple)) or not all(
            isinstance(crop, torch.Tensor) for crop in batch
        ):
            raise TypeError("a DINO batch must be a list of crop tensors [B, C, H, W]")
        return list(batch)

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        crops = self._crops(batch)
        if len(crops) < self.num_global_crops:
            raise ValueError(
                f"DINO needs at least {self.num_global_crops} global crops, got {len(crops)}"
            )
        student_out = _multi_crop(self.student, crops)
        with torch.no_grad():
            teacher_out = _multi_crop(self.teacher, crops[: self.num_global_crops])
        tau = self.temperature(step)
        teacher_tau = self.teacher_temperature(step)  # 0-dim, no gradient
        loss = self.loss(
            student_out,
            teacher_out,
            student_temperature=tau,
            teacher_temperature=teacher_tau,
        )
        return loss, {"temperature": tau.detach()}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Clamp τ, then ``teacher = m * teacher + (1 - m) * student``, ``m = momentum(step)``."""
        super().after_optimizer_step(step)
        m = self.momentum(step)
        teacher = [p.data for p in self.teacher.parameters()]
        student = [p.data for p in self.student.parameters()]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1.0 - m)

    def schedule_stats(self, step: int) -> dict[str, float]:
        return {"teacher_temperature": self.teacher_temperature.value_at(step)}

    def image_encoder(self) -> nn.Module:
        return self.teacher.backbone

"""DINO's self-distillation loss with a centred, sharpened teacher.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from tauray_trainers import distributed
from tauray_trainers.losses._checks import Scalar, as_scalar_tensor, compute_dtype

logger = logging.getLogger(__name__)

__all__ = ["DINOLoss"]


def _check_outputs(name: str, outputs: object, out_dim: int) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor) or not isinstance(outputs, Sequence) or not outputs:
        raise TypeError(
            f"{name} must be a non-empty list of (batch, {out_dim}) tensors, one per crop, "
            f"got {type(outputs).__name__}"
        )
    checked = []
    for index, output in enumerate(outputs):
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            raise TypeError(f"{name}[{index}] must be a floating point tensor, got {output!r:.80}")
        if output.dim() != 2 or output.shape[1] != out_dim or output.shape[0] < 1:
            raise ValueError(
                f"{name}[{index}] must have shape (batch >= 1, out_dim={out_dim}), "
                f"got {tuple(output.shape)}"
            )
        checked.append(output)
    return checked


class DINOLoss(nn.Module):
    """Cross-entropy between a centred, sharpened teacher and the student, over crop pairs.

    Each teacher (global) crop ``q`` is compared with every student crop ``v != q``;
    the loss is the mean over those pairs and over the global batch of
    ``-sum_k softmax((t_q - c) / τ_t)_k * log_softmax(s_v / τ_s)_k``. Student crop ``i`` must
    be the same view as teacher crop ``i`` for ``i < len(teacher_outputs)`` (global crops
    first, then local crops, as in the paper).

    The center ``c`` (a buffer, so it is in ``state_dict``) is an exponential moving average of
    the teacher outputs' batch mean; the mean is all-reduced over ranks, so every rank holds the
    identical center. It is updated under no_grad after the loss has used the old center, and
    only in training mode (``loss.eval()`` leaves it alone).

    Temperatures come in on every call (scheduling is the caller's job, see
    :func:`tauray_trainers.temperature.linear_warmup` for the usual teacher warm-up from 0.04 to
    0.07). A teacher temperature above about 0.07 tends to make training collapse.

    Under DDP each rank returns ``W / N_global`` times the sum of its samples' losses, so the mean
    over ranks is the full-batch loss and each rank's gradient is W times the single-process
    gradient of its rows.

    Args:
        out_dim: size K of the heads' outputs (number of prototypes).
        center_momentum: EMA momentum of the center, in [0, 1).

    Raises:
        ValueError: if ``out_dim`` < 1 or ``center_momentum`` is outside [0, 1).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, center_momentum: float = 0.9) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be an int >= 1, got {out_dim!r}")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1), got {center_momentum!r}")
        self.out_dim = out_dim
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, center_momentum={self.center_momentum}"

    def forward(
        self,
        student_outputs: Sequence[torch.Tensor],
        teacher_outputs: Sequence[torch.Tensor],
        student_temperature: Scalar,
        teacher_temperature: Scalar,
    ) -> torch.Tensor:
        """Loss of one step; updates the center afterwards (training mode).

        Args:
            student_outputs: one ``(n_local, out_dim)`` tensor per crop (global crops first).
            teacher_outputs: one ``(n_local, out_dim)`` tensor per global crop (no gradient is
                taken through them).
            student_temperature: τ_s (DINO: 0.1), float > 0 or 0-dim tensor.
            teacher_temperature: τ_t (DINO: 0.04 warming up to 0.07), float > 0 or 0-dim tensor.

        Returns:
            0-dim tensor: this rank's share of the global loss.

        Raises:
            TypeError / ValueError: on malformed outputs or a temperature that is not > 0.
        """
        students = _check_outputs("student_outputs", student_outputs, self.out_dim)
        teachers = _check_outputs("teacher_outputs", teacher_outputs, self.out_dim)
        n_local = students[0].shape[0]
        for name, outputs in (("student_outputs", students), ("teacher_outputs", teachers)):
            for index, output in enumerate(outputs):
                if output.shape[0] != n_local:
                    raise ValueError(
                        f"{name}[{index}] has {output.shape[0]} rows; every crop needs the "
                        f"same batch ({n_local})"
                    )
        if len(students) == 1 and len(teachers) == 1:
            raise ValueError(
                f"need at least one (teacher crop, other student crop) pair, got "
                f"{len(teachers)} teacher and {len(students)} student crops"
            )
        dtype = compute_dtype(students[0])
        reference = students[0].to(dtype)
        student_scale = as_scalar_tensor(
            student_temperature, "student_temperature", reference
        ).reciprocal()

        with torch.no_grad():
            teacher_scale = as_scalar_tensor(
                teacher_temperature, "teacher_temperature", reference
            ).reciprocal()
            center = self.center.to(dtype)
            targets = [
                torch.softmax((t.detach().to(dtype) - center) * teacher_scale, dim=-1)
                for t in teachers
            ]
            # Sum of teacher outputs and the local row count, reduced over ranks in one call.
            stats = torch.cat(
                [
                    torch.stack([t.detach().to(dtype) for t in teachers]).sum(dim=(0, 1)),
                    reference.new_tensor([float(n_local)]),
                ]
            )
            stats = distributed.all_reduce_sum(stats)
            n_global = stats[-1]

        per_sample = reference.new_zeros(n_local)
        pairs = 0
        for student_index, student in enumerate(students):
            log_probs = torch.log_softmax(student.to(dtype) * student_scale, dim=-1)
            for teacher_index, target in enumerate(targets):
                if teacher_index == student_index:
                    continue
                per_sample = per_sample - (target * log_probs).sum(dim=-1)
                pairs += 1
        loss = per_sample.sum() * (distributed.world_size() / (n_global * pairs))

        if self.training:
            with torch.no_grad():
                batch_center = stats[:-1] / (n_global * len(teachers))
                self.center.mul_(self.center_momentum).add_(
                    batch_center.to(self.center.dtype)[None, :], alpha=1 - self.center_momentum
                )
        return loss

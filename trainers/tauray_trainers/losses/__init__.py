"""Contrastive and self-distillation losses, exact under DDP and usable without it.

Every loss takes its temperature as an argument on each call (a float or a 0-dim tensor that may
require grad); none owns or schedules it (see :mod:`tauray_trainers.temperature`). Cross-rank
exchange goes through :mod:`tauray_trainers.distributed`; without a process group the losses are
ordinary single-process losses.
"""

from tauray_trainers.losses.dino import DINOLoss
from tauray_trainers.losses.infonce import ClipLoss, NTXentLoss, logsumexp_rows_and_columns
from tauray_trainers.losses.siglip import SigLipLoss

__all__ = ["ClipLoss", "DINOLoss", "NTXentLoss", "SigLipLoss", "logsumexp_rows_and_columns"]

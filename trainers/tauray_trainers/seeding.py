"""Seeds of a run: every epoch's random state derives from ``(seed, epoch, rank)``.

That is what makes resume exact: a run restarted from its checkpoint after epoch K reseeds
epoch K+1 exactly as the uninterrupted run did.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for ``(seed, epoch, rank)``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

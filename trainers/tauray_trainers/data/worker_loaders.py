"""The loaders one rank of a run trains and evaluates on.

Training shards every rank's share of the shuffled training set into full batches
(``drop_last``: the all-gather losses need equal batches on every rank); evaluation loaders are
disjoint shards that :func:`tauray_trainers.evaluation.extract_features` gathers back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from tauray_trainers.config import TrainConfig
from tauray_trainers.data.build import DataBundle, build_data
from tauray_trainers.data.loaders import make_eval_loader, make_loader
from tauray_trainers.data.transforms import simclr_transform
from tauray_trainers.data.views import TwoViews


@dataclass
class Loaders:
    """The per-rank loaders of one run (evaluation loaders are disjoint shards)."""

    train: Any
    train_eval: Any
    val: Any
    val_pairs: Any
    bundle: DataBundle


class _ViewPairs(Dataset):
    """``(cat([view_a, view_b]) [2C, H, W], index)``: one tensor so one pass embeds both views."""

    def __init__(self, pairs: Dataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        view_a, view_b = self.pairs[index]
        return torch.cat([view_a, view_b], dim=0), index


def validation_pairs(bundle: DataBundle, seed: int) -> Dataset:
    """Two SimCLR-augmented views of every validation image, fixed across epochs.

    The positive pairs on which image-only methods' alignment is measured (the same pairs every
    epoch: augmentations seeded by ``(seed, 0, index)``; no flips, which would change digits).
    """
    transform = simclr_transform(
        bundle.image_size, bundle.channels, bundle.mean, bundle.std, flip=False
    )
    pairs = TwoViews(bundle.val.source, transform, seed)
    pairs.set_epoch(0)
    return _ViewPairs(pairs)


def build_loaders(config: TrainConfig, batch_size: int, *, rank: int, world_size: int) -> Loaders:
    """Data bundle and this rank's loaders of ``batch_size`` samples per batch.

    Args:
        config: the run's config (data set, seed, loader workers).
        batch_size: the per-worker batch.
        rank, world_size: this rank and the number of ranks sharing the data.
    """
    bundle = build_data(config)
    train = make_loader(
        bundle.train,
        batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=rank,
        world_size=world_size,
        workers=config.data.loader_workers,
    )

    def eval_loader(dataset: Dataset) -> Any:
        return make_eval_loader(
            dataset,
            batch_size,
            rank=rank,
            world_size=world_size,
            workers=config.data.loader_workers,
        )

    return Loaders(
        train=train,
        train_eval=eval_loader(bundle.train_eval),
        val=eval_loader(bundle.val),
        val_pairs=eval_loader(validation_pairs(bundle, config.seed)),
        bundle=bundle,
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) list/tuple/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's sampler and data set which epoch starts (shuffling, augmentations)."""
    for obj in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)

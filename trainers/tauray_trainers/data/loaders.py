"""Data loaders for training and rank-aware evaluation.

Training (:func:`make_loader`) always uses a :class:`EpochDistributedSampler` (a
``torch.utils.data.DistributedSampler``), also at world size 1: shuffling is then a pure function
of ``(seed, epoch)`` and the sampler's ``set_epoch`` also selects the dataset's augmentations of
that epoch. With ``drop_last=True`` on sampler and loader every rank takes the same number of steps
with full batches, which the all-gather losses' label offsets (``rank * batch``) rely on. Ray
Train's ``prepare_data_loader`` keeps a loader whose sampler is a ``DistributedSampler``.

Call ``loader.sampler.set_epoch(epoch)`` before every epoch, or every epoch repeats epoch 0's
order and augmentations.

Evaluation (:func:`make_eval_loader`) gives each rank an equal, unshuffled shard
(``DistributedSampler(shuffle=False, drop_last=False)``, whose padding repeats a few samples);
:func:`tauray_trainers.evaluation.extract_features` gathers the shards and drops the repeats, so
every rank holds exactly the single-process result.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)


class EpochDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` whose ``set_epoch`` also calls ``dataset.set_epoch`` if present."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        set_dataset_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(epoch)


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_rank(rank: int, world_size: int) -> None:
    _positive_int("world_size", world_size)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    rank: int,
    world_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A training loader over this rank's shard.

    Args:
        dataset: the training dataset (``DataBundle.train``).
        batch_size: samples per step on this rank (``batch_size_per_worker``).
        shuffle: reshuffle every epoch (seeded by ``seed + epoch``, same on every rank).
        drop_last: drop the tail that does not fill a batch on every rank (use True for training:
            equal, full batches on all ranks).
        seed: shuffling seed, shared by all ranks.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of training processes.
        workers: loader worker processes (0 = load in the training process).
        pin_memory: pin batches for faster host-to-GPU copies.

    Returns:
        A ``DataLoader`` whose ``sampler`` is an :class:`EpochDistributedSampler`.

    Raises:
        ValueError: on invalid sizes or ranks, or if ``drop_last`` would leave no step.
    """
    _positive_int("batch_size", batch_size)
    _check_rank(rank, world_size)
    _positive_int("workers", workers, minimum=0)
    sampler = EpochDistributedSampler(
        dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=shuffle,
        seed=int(seed),
        drop_last=drop_last,
    )
    if drop_last and sampler.num_samples < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {sampler.num_samples} samples each of "
            f"{world_size} rank(s) holds ({len(dataset)} in all): no full batch to train on"
        )
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
    )


def make_eval_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    rank: int,
    world_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """An evaluation loader: this rank's unshuffled shard, nothing dropped.

    Feed it to :func:`tauray_trainers.evaluation.extract_features`, which restores the full set in
    index order on every rank.

    Args:
        dataset: ``DataBundle.val`` or ``DataBundle.train_eval``.
        batch_size: samples per forward pass.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes.
        workers: loader worker processes.
        pin_memory: pin batches for faster host-to-GPU copies.

    Raises:
        ValueError: on invalid sizes or ranks.
    """
    _positive_int("batch_size", batch_size)
    _check_rank(rank, world_size)
    _positive_int("workers", workers, minimum=0)
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=workers,
        pin_memory=pin_memory,
    )

"""Cross-rank exchange for the losses, the evaluation and the loop: the one module that calls
c10d.

Every function here also works without an initialised process group (or with one rank): it then
acts as the identity, so the losses run unchanged in a single-process script.

The autograd all-gather follows the exact recipe for contrastive losses under DDP: the forward
concatenates every rank's rows, the backward *sums* the gradient of the gathered tensor over ranks
and hands each rank the slice of its own rows. Each rank's loss then differentiates the sum of all
ranks' losses with respect to its rows, which is W times the gradient of their mean; DDP's
gradient averaging turns that into exactly the full-batch gradient. (An average in the backward,
as in DisCo-CLIP, or a no-grad gather with only the local slot differentiable, as in open_clip's
default mode, give 1/W of it.)

Shards may differ in size (the last batch of an epoch without ``drop_last``): rows are padded to
the largest shard for the collective and the padding is removed again, in both directions.

For the loop: :func:`state_divergence` measures whether the ranks still hold the same model,
:func:`synchronize_buffers` makes them evaluate with rank 0's batch-norm statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "all_gather_with_grad",
    "all_reduce_mean",
    "all_reduce_sum",
    "gather_no_grad",
    "gather_sizes",
    "is_distributed",
    "rank",
    "state_divergence",
    "synchronize_buffers",
    "world_size",
]

# torch >= 2.14 names the single-tensor collectives *_single; older releases *_tensor.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

REDUCE_SCATTER_PIECE_BYTES = 4 * 2**20
"""Largest input of one reduce-scatter call in :func:`all_gather_with_grad`'s backward."""

# Buffers that legitimately differ between ranks until synchronised (batch-norm statistics).
_PER_RANK_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def is_distributed(group: Any = None) -> bool:
    """True when a process group is initialised and has more than one rank."""
    return world_size(group) > 1


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (the default group when None); 1 without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def rank(group: Any = None) -> int:
    """This process's rank in ``group`` (the default group when None); 0 without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank(group)


def gather_sizes(
    local_size: int, device: torch.device | str = "cpu", group: Any = None
) -> list[int]:
    """Every rank's ``local_size`` in rank order (one tiny all-gather; ``[local_size]`` alone).

    Args:
        local_size: this rank's number of rows (>= 0).
        device: where the exchanged counter lives (CUDA for NCCL, CPU for gloo).
        group: process group; the default group when None.

    Raises:
        ValueError: if ``local_size`` is negative.
    """
    if local_size < 0:
        raise ValueError(f"local_size must be >= 0, got {local_size}")
    size = world_size(group)
    if size == 1:
        return [int(local_size)]
    mine = torch.tensor([local_size], dtype=torch.int64, device=device)
    every = torch.empty(size, dtype=torch.int64, device=device)
    _all_gather_single(every, mine, group=group)
    return [int(v) for v in every.tolist()]


def _check_sizes(sizes: Sequence[int], group: Any, local_rows: int) -> list[int]:
    sizes = [int(s) for s in sizes]
    if len(sizes) != world_size(group):
        raise ValueError(
            f"sizes must list one row count per rank ({world_size(group)}), got {len(sizes)}"
        )
    if sizes[rank(group)] != local_rows:
        raise ValueError(
            f"sizes[{rank(group)}] = {sizes[rank(group)]} does not match this rank's "
            f"{local_rows} rows"
        )
    return sizes


def _gather_padded(x: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 (no autograd); shards may differ in size."""
    world = len(sizes)
    largest = max(sizes)
    x = x.contiguous()
    if all(s == largest for s in sizes):
        out = torch.empty((world * largest, *x.shape[1:]), dtype=x.dtype, device=x.device)
        _all_gather_single(out, x, group=group)
        return out
    padded = x.new_zeros((largest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = torch.empty((world * largest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    _all_gather_single(out, padded, group=group)
    return torch.cat([out[r * largest : r * largest + s] for r, s in enumerate(sizes)])


def _reduce_scatter_padded(
    grad: torch.Tensor, sizes: list[int], rank_: int, group: Any
) -> torch.Tensor:
    """Sum ``grad`` (rows of all ranks) over ranks and return this rank's rows.

    Works through pieces of at most :data:`REDUCE_SCATTER_PIECE_BYTES` (all ranks' rows of one
    piece together): gloo's reduce-scatter copies its whole input into one flat buffer, so one
    call on ``grad`` would hold a second full-size copy of it; pieces bound that copy, and the
    layout with padding that uneven shards need, to the piece size.
    """
    world, largest = len(sizes), max(sizes)
    row_numel = math.prod(grad.shape[1:])
    piece = max(1, REDUCE_SCATTER_PIECE_BYTES // max(1, world * row_numel * grad.element_size()))
    piece = min(piece, largest)
    starts = [sum(sizes[:r]) for r in range(world)]
    mine = grad.new_empty((largest, *grad.shape[1:]))
    flat = grad.new_empty(world * piece * row_numel)
    for first in range(0, largest, piece):
        count = min(piece, largest - first)
        laid_out = flat[: world * count * row_numel].view(world, count, *grad.shape[1:])
        for r, size in enumerate(sizes):
            present = max(0, min(count, size - first))
            laid_out[r, :present] = grad[starts[r] + first : starts[r] + first + present]
            laid_out[r, present:] = 0
        _reduce_scatter_single(
            mine[first : first + count], laid_out.view(world * count, *grad.shape[1:]), group=group
        )
    return mine[: sizes[rank_]]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums over ranks and keeps the local slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], group: Any) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.group = group
        ctx.rank = rank(group)
        return _gather_padded(x, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _reduce_scatter_padded(grad, ctx.sizes, ctx.rank, ctx.group), None, None


def all_gather_with_grad(
    x: torch.Tensor, sizes: Sequence[int] | None = None, group: Any = None
) -> torch.Tensor:
    """Concatenate every rank's rows in rank order, with exact gradients.

    The backward sums the gathered tensor's gradient over ranks and returns each rank's own
    slice, so the gradient a rank receives for its rows is the gradient of the *sum* of all
    ranks' losses. Without a process group (or with one rank) this is the identity.

    Args:
        x: this rank's rows, shape ``(n_local, *rest)``; ``rest`` must agree across ranks.
        sizes: every rank's ``n_local`` in rank order, if already known (saves one tiny
            collective); exchanged with :func:`gather_sizes` when None.
        group: process group; the default group when None.

    Returns:
        Tensor of shape ``(sum(sizes), *rest)``.

    Raises:
        ValueError: if ``x`` has no dimensions or ``sizes`` disagrees with ``x``.
    """
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (rows to gather), got a 0-dim tensor")
    if not is_distributed(group):
        return x
    sizes = _check_sizes(
        gather_sizes(x.shape[0], x.device, group) if sizes is None else sizes, group, x.shape[0]
    )
    return _AllGatherWithGrad.apply(x, sizes, group)


@torch.no_grad()
def gather_no_grad(
    x: torch.Tensor, sizes: Sequence[int] | None = None, group: Any = None
) -> torch.Tensor:
    """Concatenate every rank's rows in rank order, without autograd (for evaluation).

    Shards may differ in size; any dtype the backend supports (e.g. int64 labels) works.

    Args:
        x: this rank's rows, shape ``(n_local, *rest)``.
        sizes: every rank's ``n_local`` if known; exchanged when None.
        group: process group; the default group when None.

    Returns:
        Tensor of shape ``(sum(sizes), *rest)``, detached; ``x.detach()`` on one rank.

    Raises:
        ValueError: if ``x`` has no dimensions or ``sizes`` disagrees with ``x``.
    """
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (rows to gather), got a 0-dim tensor")
    if not is_distributed(group):
        return x.detach()
    sizes = _check_sizes(
        gather_sizes(x.shape[0], x.device, group) if sizes is None else sizes, group, x.shape[0]
    )
    return _gather_padded(x.detach(), sizes, group)


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Element-wise sum over ranks, as a new tensor (``x`` is left alone; no autograd).

    Args:
        x: any shape, identical on every rank.
        group: process group; the default group when None.
    """
    out = x.detach().clone()
    if is_distributed(group):
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Element-wise mean over ranks, as a new tensor (no autograd).

    Useful for logging a loss, or averaging the gradient of a parameter that lives outside the
    DDP-wrapped module (e.g. a learnable temperature):
    ``p.grad.copy_(all_reduce_mean(p.grad))``.

    Args:
        x: floating point, any shape, identical on every rank.
        group: process group; the default group when None.

    Raises:
        TypeError: if ``x`` is not floating point (a mean of integers would truncate).
    """
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"all_reduce_mean needs a floating point tensor, got dtype {x.dtype}")
    out = all_reduce_sum(x, group)
    return out / world_size(group) if is_distributed(group) else out


@torch.no_grad()
def state_divergence(module: nn.Module) -> float:
    """Largest spread across ranks of a fingerprint of each parameter and shared buffer.

    Zero when every rank holds identical weights (student, teacher, τ) and identical shared
    buffers (the DINO center); batch-norm statistics, which are per rank until synchronised,
    are left out. 0.0 without a process group.
    """
    if not is_distributed():
        return 0.0
    prints = []
    for name, tensor in module.state_dict().items():
        if name.endswith(_PER_RANK_BUFFERS) or not tensor.is_floating_point():
            continue
        flat = tensor.detach().double().flatten()
        weights = torch.cos(
            torch.arange(flat.numel(), dtype=torch.float64, device=flat.device) * 0.7548776662
        )
        prints.append(torch.stack([(flat * weights).sum(), flat.abs().sum()]))
    if not prints:
        return 0.0
    mine = torch.cat(prints).unsqueeze(0)
    every = gather_no_grad(mine)  # [W, 2T]
    spread = every.max(dim=0).values - every.min(dim=0).values
    return float(spread.max())


@torch.no_grad()
def synchronize_buffers(module: nn.Module) -> None:
    """Broadcast rank 0's buffers (batch-norm statistics, ...) so every rank evaluates alike."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)

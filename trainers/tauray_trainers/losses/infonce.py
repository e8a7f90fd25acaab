"""InfoNCE losses with all-gathered negatives: CLIP's symmetric loss and SimCLR's NT-Xent.

Both are exact under DDP (see :mod:`tauray_trainers.distributed`): with W ranks, the mean over
ranks of the returned losses is the single-process loss on the concatenated batch, each rank's
embedding gradient is W times the single-process gradient of its rows (DDP's averaging then gives
the full-batch gradient), and the temperature gradient averaged over ranks is the single-process
one.

How a rank computes its share. Rank r holds n_r image rows a_r and text rows b_r of a global batch
of N pairs and gathers all N text rows B (with gradient). One similarity block
S_r = a_r B^T / τ (n_r x N) serves both directions:

- image→text: the log-sum-exp of each of its rows is complete on this rank;
- text→image: each rank reduces its rows of every column to a partial log-sum-exp; the W partial
  vectors (length N) are gathered with gradient and combined, and rank r keeps the columns of its
  own texts.

Rank r returns ``W / (2N) * (sum of its rows' and its columns' cross-entropies)``. Compared with
gathering both modalities and forming two n_r x N blocks (open_clip's ``local_loss`` mode), this
does half the matrix products and gathers one modality.

Tiled path (``chunk_size=k``): the log-sum-exps are computed over column tiles of k keys with an
online log-sum-exp, and the backward recomputes each tile, so no more than ``n_local x k``
similarities (and a few same-sized temporaries) exist at once; memory is linear in the global
batch. Gradients match the untiled path to float64 round-off.
"""

from __future__ import annotations

import logging
import typing
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from tauray_trainers import distributed
from tauray_trainers.losses._checks import (
    Scalar,
    check_chunk_size,
    check_embeddings,
    check_same_shape,
    logit_scale,
    normalize,
)
from tauray_trainers.losses._groups import check_groups, group_sums

logger = logging.getLogger(__name__)

__all__ = ["ClipLoss", "NTXentLoss", "logsumexp_rows_and_columns"]


def _mask_self(scores: torch.Tensor, self_offset: int, column_start: int) -> None:
    """Set ``scores[i, self_offset + i - column_start] = -inf`` where that column is present."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    columns = rows + (self_offset - column_start)
    keep = (columns >= 0) & (columns < scores.shape[1])
    scores[rows[keep], columns[keep]] = float("-inf")


class _TiledLogSumExp(torch.autograd.Function):
    """Row (and optionally column) log-sum-exp of ``queries @ keys.T`` in column tiles."""

    @staticmethod
    def forward(
        ctx: Any,
        queries: torch.Tensor,
        keys: torch.Tensor,
        chunk_size: int,
        self_offset: int | None,
        with_columns: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = queries.new_full((queries.shape[0],), float("-inf"))
        columns = keys.new_empty((keys.shape[0] if with_columns else 0,))
        for start in range(0, keys.shape[0], chunk_size):
            stop = min(start + chunk_size, keys.shape[0])
            scores = queries @ keys[start:stop].T
            if self_offset is not None:
                _mask_self(scores, self_offset, start)
            if with_columns:
                torch.logsumexp(scores, dim=0, out=columns[start:stop])
            rows = torch.logaddexp(rows, torch.logsumexp(scores, dim=1))
        ctx.save_for_backward(queries, keys, rows, columns)
        ctx.set_materialize_grads(False)
        ctx.chunk_size = chunk_size
        ctx.self_offset = self_offset
        ctx.with_columns = with_columns
        return rows, columns

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_rows: torch.Tensor | None, grad_columns: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        queries, keys, rows, columns = ctx.saved_tensors
        use_columns = ctx.with_columns and grad_columns is not None
        grad_queries = torch.zeros_like(queries)
        grad_keys = torch.empty_like(keys)
        for start in range(0, keys.shape[0], ctx.chunk_size):
            stop = min(start + ctx.chunk_size, keys.shape[0])
            key_tile = keys[start:stop]
            scores = queries @ key_tile.T
            if ctx.self_offset is not None:
                _mask_self(scores, ctx.self_offset, start)
            # d rows_i / d s_ij = softmax over row i; d columns_j / d s_ij = softmax over column j.
            if grad_rows is not None:
                weights = torch.sub(scores, rows[:, None]).exp_().mul_(grad_rows[:, None])
                if use_columns:
                    scores.sub_(columns[None, start:stop]).exp_()
                    weights.addcmul_(scores, grad_columns[None, start:stop])
            elif use_columns:
                weights = scores.sub_(columns[None, start:stop]).exp_()
                weights.mul_(grad_columns[None, start:stop])
            else:
                weights = scores.zero_()
            grad_queries.addmm_(weights, key_tile)
            torch.mm(weights.T, queries, out=grad_keys[start:stop])
        return grad_queries, grad_keys, None, None, None


def logsumexp_rows_and_columns(
    queries: torch.Tensor,
    keys: torch.Tensor,
    chunk_size: int | None = None,
    self_offset: int | None = None,
    with_columns: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-sum-exp over the rows (and columns) of ``queries @ keys.T``, optionally tiled.

    The building block of the InfoNCE losses; exposed for custom losses. With ``chunk_size``
    the product is formed ``k`` key columns at a time in the forward and again in the backward
    (custom autograd), holding at most ``len(queries) x k`` scores.

    Args:
        queries: ``(m, D)``, already multiplied by the logit scale ``1/τ``.
        keys: ``(M, D)``.
        chunk_size: column tile width ``k``; None computes the full ``(m, M)`` block.
        self_offset: when set, score ``(i, self_offset + i)`` is excluded (a view and itself).
        with_columns: also return the log-sum-exp of each column over these ``m`` rows.

    Returns:
        ``(rows, columns)``: shapes ``(m,)`` and ``(M,)``; ``columns`` is None unless requested.

    Raises:
        ValueError: on a bad ``chunk_size`` or mismatched dimensions.
    """
    chunk_size = check_chunk_size(chunk_size)
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            "queries and keys must be (m, D) and (M, D) with the same D, got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if chunk_size is None:
        scores = queries @ keys.T
        if self_offset is not None:
            rows = torch.arange(scores.shape[0], device=scores.device)
            scores = scores.index_put((rows, rows + self_offset), scores.new_tensor(float("-inf")))
        columns = torch.logsumexp(scores, dim=0) if with_columns else None
        return torch.logsumexp(scores, dim=1), columns
    rows, columns = _TiledLogSumExp.apply(queries, keys, chunk_size, self_offset, with_columns)
    return rows, (columns if with_columns else None)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE of CLIP over the global batch (image→text and text→image, averaged).

    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    ICML 2021. Similarity is cosine (rows are L2-normalised here) divided by the temperature.

    Args:
        chunk_size: None for the plain path; ``k`` for the tiled path that holds at most
            ``n_local x k`` similarities at once (forward and backward). A few thousand keeps
            matrix products efficient while memory stays linear in the global batch.

    Call:
        ``loss(image_emb, text_emb, temperature=t, groups=g)`` with ``image_emb`` and
        ``text_emb`` of shape ``(n_local, D)`` (row i of each is a pair), ``t`` a float > 0 or a
        0-dim tensor (learnable τ keeps its gradient) and ``g`` None or int ``(n_local,)``.
        Without groups only the pairs (i, i) are positives (CLIP). With groups every pair of the
        global batch whose rows share a group id is a positive and each row's (and column's)
        target is uniform over its group (UniCL, Yang et al. CVPR 2022; see
        :mod:`tauray_trainers.losses._groups`): captions made from class names describe every
        image of their class. Returns a 0-dim tensor: this rank's share, whose mean over ranks
        is the loss of the whole global batch.

    Raises:
        TypeError / ValueError: on a bad ``chunk_size``, embeddings that are not paired
            ``(n, D)`` floating point tensors, a temperature that is not > 0, or groups that are
            not integers with one id per row.
    """

    def __init__(self, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = check_chunk_size(chunk_size)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        temperature: Scalar,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_embeddings("image_emb", image_emb)
        check_embeddings("text_emb", text_emb)
        check_same_shape("image_emb", image_emb, "text_emb", text_emb)
        if groups is not None:
            groups = check_groups(groups, image_emb.shape[0], image_emb.device)
        images, texts = normalize(image_emb), normalize(text_emb)
        scale = logit_scale(temperature, images)
        queries = images * scale

        world = distributed.world_size()
        n_local = images.shape[0]
        sizes = distributed.gather_sizes(n_local, images.device)
        total = sum(sizes)
        offset = sum(sizes[: distributed.rank()])
        all_texts = distributed.all_gather_with_grad(texts, sizes)

        rows, partial_columns = logsumexp_rows_and_columns(
            queries, all_texts, self.chunk_size, with_columns=True
        )
        columns = typing.cast(torch.Tensor, partial_columns)
        if world > 1:
            # (W, N) partial column log-sum-exps; gradient flows back to every rank's rows.
            partials = distributed.all_gather_with_grad(columns[None, :], [1] * world)
            columns = torch.logsumexp(partials, dim=0)
        if groups is None:
            positives = (queries * texts).sum(dim=1)
        else:
            # Rows and columns share one positive term: the group's mean text (see _groups).
            all_groups = distributed.gather_no_grad(groups, sizes)
            sums, counts = group_sums(all_texts, all_groups, groups)
            positives = (queries * sums).sum(dim=1) / counts
        own_columns = columns[offset : offset + n_local]
        summed = rows.sum() + own_columns.sum() - 2.0 * positives.sum()
        return summed * (world / (2.0 * total))


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent: each of the 2N views against its positive and the other 2N-2 views.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020. Cosine similarity (rows are L2-normalised here) divided by the temperature; the
    mean over all 2N views of the global batch.

    Args:
        chunk_size: None for the plain path; ``k`` for the tiled path holding at most
            ``2 n_local x k`` similarities at once.

    Call:
        ``loss(z_a, z_b, temperature=t)`` with the two views' embeddings of shape
        ``(n_local, D)`` (row i of each comes from the same sample) and ``t`` a float > 0 or a
        0-dim tensor. Returns this rank's share (mean over ranks = the global loss).

    Raises:
        TypeError / ValueError: as :class:`ClipLoss`.
    """

    def __init__(self, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = check_chunk_size(chunk_size)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, temperature: Scalar) -> torch.Tensor:
        check_embeddings("z_a", z_a)
        check_embeddings("z_b", z_b)
        check_same_shape("z_a", z_a, "z_b", z_b)
        views_a, views_b = normalize(z_a), normalize(z_b)
        scale = logit_scale(temperature, views_a)
        views = torch.cat([views_a, views_b])

        world = distributed.world_size()
        sizes = distributed.gather_sizes(views_a.shape[0], views.device)
        total_views = 2 * sum(sizes)
        offset = 2 * sum(sizes[: distributed.rank()])
        all_views = distributed.all_gather_with_grad(views, [2 * s for s in sizes])

        rows, _ = logsumexp_rows_and_columns(
            views * scale, all_views, self.chunk_size, self_offset=offset
        )
        positives = (views_a * views_b).sum(dim=1) * scale  # each pair is used twice
        summed = rows.sum() - 2.0 * positives.sum()
        return summed * (world / total_views)

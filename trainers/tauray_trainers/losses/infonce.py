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

Tiled path (``chunk_size=k``): similarities are formed one ``k x k`` block at a time (a tile of
k keys, a block of k query rows) in the forward and again in the backward, which recomputes
them. Row log-sum-exps are combined online over key tiles, partial column log-sum-exps over
query blocks, and the positive pairs' similarities are read from the blocks that hold them. At
most two blocks exist at once (scores, and the backward's weights made in place in a reused
buffer); everything else is linear in the batch and allocated once: per rank the N x D gathered
keys, their gradient, the n x D query gradient and a few vectors. The queries are never copied:
the rows of each block are scaled by 1/(τ |a_i|) instead of forming normalised or scaled image
copies. Measured with ``benchmarks/loss_memory_breakdown.py`` (16,384 pairs on 2 gloo ranks,
D = 512, k = 1024): the backward's peak is 88 MiB of torch allocations per rank, the gathered
texts (32) + their gradient (32) + the image gradient (16) + two blocks (8); tiles of
n_local x k (32 MiB each, three alive in the backward) with normalised, scaled and positive-pair
copies kept by autograd peak at 240 MiB there. Gradients match the untiled path to float64
round-off.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterator
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
    compute_dtype,
    logit_scale,
    normalize_rows,
    row_dots,
    scaled_inverse_norms,
)
from tauray_trainers.losses._groups import check_groups, group_sums

logger = logging.getLogger(__name__)

__all__ = ["ClipLoss", "NTXentLoss", "logsumexp_rows_and_columns"]


def _block_entries(
    columns: torch.Tensor, row_start: int, row_stop: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For block rows ``row_start:row_stop`` and columns ``start:stop``: each row's entry of
    ``columns`` as an index into the block (clamped into range) and whether it lies inside.

    Indices and masks instead of boolean selection keep the block loop free of device syncs.
    """
    index = columns[row_start:row_stop] - start
    inside = (index >= 0) & (index < stop - start)
    return index.clamp_(0, stop - start - 1)[:, None], inside


def _logsumexp(scores: torch.Tensor, dim: int, work: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(scores, dim)`` with its one block-sized temporary in ``work``."""
    maxes = scores.amax(dim=dim, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0.0)  # all -inf: log(0) = -inf, as torch
    torch.sub(scores, maxes, out=work).exp_()
    return work.sum(dim=dim).log_().add_(maxes.squeeze(dim))


class _Blocks:
    """The block scores ``row_scale[i] * queries[i] . keys[j]`` of one tiled pass, formed one
    ``k x k`` block at a time into a reused buffer (at most two such buffers exist)."""

    def __init__(
        self,
        queries: torch.Tensor,
        row_scale: torch.Tensor | None,
        keys: torch.Tensor,
        chunk_size: int,
        self_offset: int | None,
    ) -> None:
        self.queries, self.row_scale, self.keys = queries, row_scale, keys
        self.chunk_size = chunk_size
        self.self_columns: torch.Tensor | None = None
        if self_offset is not None:
            self.self_columns = self_offset + torch.arange(queries.shape[0], device=queries.device)
        size = min(chunk_size, queries.shape[0]) * min(chunk_size, keys.shape[0])
        self.buffers = [queries.new_empty(size), queries.new_empty(size)]

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(row_start, row_stop, start, stop)``: key tiles outer, query blocks inner."""
        k = self.chunk_size
        for start in range(0, self.keys.shape[0], k):
            stop = min(start + k, self.keys.shape[0])
            for row_start in range(0, self.queries.shape[0], k):
                yield row_start, min(row_start + k, self.queries.shape[0]), start, stop

    def buffer(self, which: int, rows: int, columns: int) -> torch.Tensor:
        return self.buffers[which][: rows * columns].view(rows, columns)

    def scores(self, row_start: int, row_stop: int, start: int, stop: int) -> torch.Tensor:
        out = self.buffer(0, row_stop - row_start, stop - start)
        torch.mm(self.queries[row_start:row_stop], self.keys[start:stop].T, out=out)
        if self.row_scale is not None:
            out.mul_(self.row_scale[row_start:row_stop, None])
        if self.self_columns is not None:
            index, inside = _block_entries(self.self_columns, row_start, row_stop, start, stop)
            kept = out.gather(1, index).masked_fill_(inside[:, None], float("-inf"))
            out.scatter_(1, index, kept)
        return out


def _accumulate_gradients(
    blocks: _Blocks,
    row_terms: tuple[torch.Tensor, torch.Tensor | None],
    column_terms: tuple[torch.Tensor, torch.Tensor | None],
    picked_terms: tuple[torch.Tensor | None, torch.Tensor | None],
    unscaled: torch.Tensor | None,
    grad_keys: torch.Tensor | None,
) -> None:
    """The backward's block loop: per block, the score gradient ``weights`` (in place in the
    second block buffer), then ``unscaled += weights @ key_tile`` and
    ``grad_keys += (row_scale * weights)^T @ query_block``.

    ``row_terms`` and ``column_terms`` are (log-sum-exps, their gradient or None);
    ``picked_terms`` is (picked columns, their gradient or None).
    """
    (rows, grad_rows), (columns, grad_columns) = row_terms, column_terms
    positive_columns, grad_picked = picked_terms
    queries, keys, row_scale = blocks.queries, blocks.keys, blocks.row_scale
    for row_start, row_stop, start, stop in blocks:
        scores = blocks.scores(row_start, row_stop, start, stop)
        # d rows_i / d s_ij = softmax over row i; d columns_j / d s_ij = softmax over column j.
        weights = blocks.buffer(1, row_stop - row_start, stop - start)
        if grad_rows is not None:
            torch.sub(scores, rows[row_start:row_stop, None], out=weights).exp_()
            weights.mul_(grad_rows[row_start:row_stop, None])
            if grad_columns is not None:
                scores.sub_(columns[None, start:stop]).exp_()
                weights.addcmul_(scores, grad_columns[None, start:stop])
        elif grad_columns is not None:
            torch.sub(scores, columns[None, start:stop], out=weights).exp_()
            weights.mul_(grad_columns[None, start:stop])
        else:
            weights.zero_()
        if positive_columns is not None and grad_picked is not None:
            index, inside = _block_entries(positive_columns, row_start, row_stop, start, stop)
            added = grad_picked[row_start:row_stop].masked_fill(~inside, 0.0)
            weights.scatter_add_(1, index, added[:, None])
        if unscaled is not None:
            unscaled[row_start:row_stop].addmm_(weights, keys[start:stop])
        if grad_keys is not None:
            if row_scale is not None:
                weights.mul_(row_scale[row_start:row_stop, None])
            grad_keys[start:stop].addmm_(weights.T, queries[row_start:row_stop])


class _TiledScores(torch.autograd.Function):
    """Row and column log-sum-exps, and picked entries, of ``diag(row_scale) queries keys^T``.

    Forward and backward form the scores one ``k x k`` block at a time (the backward
    recomputes them) and never hold more than two blocks. The backward accumulates into
    three preallocated results: the gradients of the queries (``m x D``), of the keys
    (``M x D``) and of the row scales (``m``); the per-block weights are formed in place in the
    block buffers. With ``row_scale`` the queries need not be normalised or scaled copies: the
    scale of row ``i`` multiplies its block rows, and its gradient is ``queries[i] . G[i]``
    where ``G = weights @ keys`` is the unscaled query gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        queries: torch.Tensor,
        row_scale: torch.Tensor | None,
        keys: torch.Tensor,
        positive_columns: torch.Tensor | None,
        chunk_size: int,
        self_offset: int | None,
        with_columns: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        blocks = _Blocks(queries, row_scale, keys, chunk_size, self_offset)
        rows = queries.new_full((queries.shape[0],), float("-inf"))
        columns = keys.new_full((keys.shape[0] if with_columns else 0,), float("-inf"))
        picked = queries.new_zeros((queries.shape[0] if positive_columns is not None else 0,))
        for row_start, row_stop, start, stop in blocks:
            scores = blocks.scores(row_start, row_stop, start, stop)
            if positive_columns is not None:
                index, inside = _block_entries(positive_columns, row_start, row_stop, start, stop)
                part = picked[row_start:row_stop]
                part.add_(scores.gather(1, index).squeeze(1).masked_fill_(~inside, 0.0))
            work = blocks.buffer(1, row_stop - row_start, stop - start)
            part = rows[row_start:row_stop]
            torch.logaddexp(part, _logsumexp(scores, 1, work), out=part)
            if with_columns:
                part = columns[start:stop]
                torch.logaddexp(part, _logsumexp(scores, 0, work), out=part)
        ctx.save_for_backward(queries, row_scale, keys, positive_columns, rows, columns)
        ctx.set_materialize_grads(False)
        ctx.chunk_size = chunk_size
        ctx.self_offset = self_offset
        ctx.with_columns = with_columns
        return rows, columns, picked

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        grad_rows: torch.Tensor | None,
        grad_columns: torch.Tensor | None,
        grad_picked: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        queries, row_scale, keys, positive_columns, rows, columns = ctx.saved_tensors
        use_columns = ctx.with_columns and grad_columns is not None
        use_picked = positive_columns is not None and grad_picked is not None
        want_queries, want_scale, want_keys = ctx.needs_input_grad[:3]
        want_scale = want_scale and row_scale is not None
        # G = weights @ keys; the query gradient is row_scale * G.
        unscaled = torch.zeros_like(queries) if (want_queries or want_scale) else None
        grad_keys = torch.zeros_like(keys) if want_keys else None
        blocks = _Blocks(queries, row_scale, keys, ctx.chunk_size, ctx.self_offset)
        _accumulate_gradients(
            blocks,
            (rows, grad_rows),
            (columns, grad_columns if use_columns else None),
            (positive_columns, grad_picked if use_picked else None),
            unscaled,
            grad_keys,
        )
        del blocks  # its two block buffers go before the last (m,) reduction
        grad_scale = None
        if want_scale:
            grad_scale = row_dots(queries, unscaled)
        grad_queries = None
        if want_queries:
            grad_queries = unscaled if row_scale is None else unscaled.mul_(row_scale[:, None])
        return grad_queries, grad_scale, grad_keys, None, None, None, None


def _reductions(
    queries: torch.Tensor,
    row_scale: torch.Tensor | None,
    keys: torch.Tensor,
    chunk_size: int | None,
    self_offset: int | None = None,
    positive_columns: torch.Tensor | None = None,
    with_columns: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Row log-sum-exps, column log-sum-exps and entries ``(i, positive_columns[i])`` of
    ``S = diag(row_scale) queries keys^T`` (``row_scale`` None: ones), with ``S[i, self_offset
    + i]`` excluded; tiled (custom backward) or through autograd on the whole block."""
    if chunk_size is not None:
        rows, columns, picked = _TiledScores.apply(
            queries, row_scale, keys, positive_columns, chunk_size, self_offset, with_columns
        )
        return (
            rows,
            columns if with_columns else None,
            picked if positive_columns is not None else None,
        )
    if row_scale is not None:
        queries = queries * row_scale[:, None]  # one (m, D) copy, not a second (m, M) block
    scores = queries @ keys.T
    if self_offset is not None:
        rows = torch.arange(scores.shape[0], device=scores.device)
        scores = scores.index_put((rows, rows + self_offset), scores.new_tensor(float("-inf")))
    columns = torch.logsumexp(scores, dim=0) if with_columns else None
    picked = None
    if positive_columns is not None:
        picked = (queries * keys[positive_columns]).sum(dim=1)
    return torch.logsumexp(scores, dim=1), columns, picked


def logsumexp_rows_and_columns(
    queries: torch.Tensor,
    keys: torch.Tensor,
    chunk_size: int | None = None,
    self_offset: int | None = None,
    with_columns: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-sum-exp over the rows (and columns) of ``queries @ keys.T``, optionally tiled.

    The building block of the InfoNCE losses; exposed for custom losses. With ``chunk_size``
    the product is formed one ``k x k`` block at a time in the forward and again in the
    backward (custom autograd), holding at most two such blocks.

    Args:
        queries: ``(m, D)``, already multiplied by the logit scale ``1/τ``.
        keys: ``(M, D)``.
        chunk_size: tile width ``k``; None computes the full ``(m, M)`` block.
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
    rows, columns, _ = _reductions(queries, None, keys, chunk_size, self_offset, None, with_columns)
    return rows, columns


class ClipLoss(nn.Module):
    """Symmetric InfoNCE of CLIP over the global batch (image→text and text→image, averaged).

    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    ICML 2021. Similarity is cosine (rows are L2-normalised here) divided by the temperature.

    Args:
        chunk_size: None for the plain path; ``k`` for the tiled path that holds at most two
            ``k x k`` blocks of similarities at once (forward and backward). A thousand or a
            few keeps matrix products efficient while memory stays linear in the global batch.

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
        # Images are not normalised as a copy: their similarity rows are scaled by 1/(τ |a_i|).
        images = image_emb.to(compute_dtype(image_emb))
        row_scale = scaled_inverse_norms(images, logit_scale(temperature, images))
        texts = normalize_rows(text_emb)

        world = distributed.world_size()
        n_local = images.shape[0]
        sizes = distributed.gather_sizes(n_local, images.device)
        total = sum(sizes)
        offset = sum(sizes[: distributed.rank()])
        all_texts = distributed.all_gather_with_grad(texts, sizes)
        del texts  # only the gathered copy is needed from here on

        own = torch.arange(offset, offset + n_local, device=images.device)
        rows, partial_columns, picked = _reductions(
            images,
            row_scale,
            all_texts,
            self.chunk_size,
            positive_columns=own if groups is None else None,
            with_columns=True,
        )
        columns = typing.cast(torch.Tensor, partial_columns)
        if groups is None:
            positives = typing.cast(torch.Tensor, picked)
        else:
            # Rows and columns share one positive term: the group's mean text (see _groups).
            all_groups = distributed.gather_no_grad(groups, sizes)
            sums, counts = group_sums(all_texts, all_groups, groups)
            positives = row_scale * (images * sums).sum(dim=1) / counts
        if world > 1:
            # (W, N) partial column log-sum-exps; gradient flows back to every rank's rows.
            partials = distributed.all_gather_with_grad(columns[None, :], [1] * world)
            columns = torch.logsumexp(partials, dim=0)
        own_columns = columns[offset : offset + n_local]
        summed = rows.sum() + own_columns.sum() - 2.0 * positives.sum()
        return summed * (world / (2.0 * total))


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent: each of the 2N views against its positive and the other 2N-2 views.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020. Cosine similarity (rows are L2-normalised here) divided by the temperature; the
    mean over all 2N views of the global batch.

    Args:
        chunk_size: None for the plain path; ``k`` for the tiled path holding at most two
            ``k x k`` blocks of similarities at once.

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
        raw = torch.cat([z_a, z_b]).to(compute_dtype(z_a))
        row_scale = scaled_inverse_norms(raw, logit_scale(temperature, raw))
        views = normalize_rows(raw)

        world = distributed.world_size()
        n_local = z_a.shape[0]
        sizes = distributed.gather_sizes(n_local, views.device)
        total_views = 2 * sum(sizes)
        offset = 2 * sum(sizes[: distributed.rank()])
        all_views = distributed.all_gather_with_grad(views, [2 * s for s in sizes])
        del views  # only the gathered copy is needed from here on

        # Local view i's positive is view (i + n) mod 2n of the same rank.
        local = torch.arange(2 * n_local, device=raw.device)
        partners = offset + (local + n_local) % (2 * n_local)
        rows, _, picked = _reductions(
            raw, row_scale, all_views, self.chunk_size, offset, positive_columns=partners
        )
        summed = rows.sum() - typing.cast(torch.Tensor, picked).sum()
        return summed * (world / total_views)

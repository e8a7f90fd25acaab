"""Evaluation metrics of learned embeddings, and rank-aware feature extraction.

The metric functions are pure functions of full (already gathered) tensors, so every rank that
calls them with the output of :func:`extract_features` computes the same number:

* :func:`knn_top1`: weighted k-nearest-neighbour top-1 accuracy on L2-normalised features, as in
  DINO (Caron et al. 2021; after Wu et al. 2018): the k most similar training features vote for
  their label with weight ``exp(similarity / temperature)``.
* :func:`zeroshot_top1`: CLIP zero-shot classification (Radford et al. 2021): each image takes the
  class whose (template-averaged) text embedding is most similar.
* :func:`recall_at_k`: image-to-text and text-to-image retrieval recall@k of paired embeddings.
* :func:`alignment` and :func:`uniformity`: Wang & Isola 2020, "Understanding Contrastive
  Representation Learning through Alignment and Uniformity on the Hypersphere".

:func:`extract_features` runs a model over an evaluation loader on every rank and gathers the
shards (:func:`tauray_trainers.distributed.gather_no_grad`), dropping the samples a
``DistributedSampler`` repeats to even out shards, and restoring dataset order, so each rank holds
exactly what one process running the whole split would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler

from tauray_trainers.data.loaders import make_eval_loader
from tauray_trainers.distributed import gather_no_grad, gather_sizes, world_size

logger = logging.getLogger(__name__)

__all__ = [
    "alignment",
    "as_labels",
    "as_matrix",
    "caption_groups",
    "class_embeddings",
    "effective_rank",
    "extract_features",
    "extract_text_features",
    "knn_top1",
    "make_eval_loader",
    "pair_infonce",
    "recall_at_k",
    "uniformity",
    "zeroshot_top1",
]

# Largest similarity block (rows x columns) held at once by the chunked metrics.
_MAX_BLOCK_ELEMENTS = 1 << 24


def as_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` checked to be an ``[N, D]`` float tensor with N >= 1 (half precisions as float32).

    Raises:
        TypeError, ValueError: naming ``name`` and what it got.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape [N, D] with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _normalized(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(as_matrix(name, x), dim=1)


def as_labels(name: str, labels: torch.Tensor, count: int) -> torch.Tensor:
    """``labels`` checked to be ``count`` integer class indices, as int64.

    Raises:
        TypeError, ValueError: naming ``name`` and what it got.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {labels.dtype}")
    return labels.long()


def _rows_per_chunk(columns: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, min(4096, _MAX_BLOCK_ELEMENTS // max(columns, 1)))


@torch.no_grad()
def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int | None = None,
) -> float:
    """Weighted kNN top-1 accuracy (DINO's protocol, Caron et al. 2021).

    Features are L2-normalised; each validation feature's ``k`` most cosine-similar training
    features vote for their labels with weights ``exp(similarity / temperature)``.

    Args:
        train_features: ``[N, D]`` memory bank (the training split without augmentation).
        train_labels: ``[N]`` int labels in ``[0, num_classes)``.
        val_features: ``[M, D]`` queries.
        val_labels: ``[M]`` int labels.
        k: neighbours (clipped to ``N``). DINO uses 20.
        temperature: vote temperature; smaller trusts the nearest neighbours more. DINO: 0.07.
        num_classes: number of classes.
        chunk_size: validation rows per similarity block (default: bounded to about 16M entries).

    Returns:
        The share of validation samples whose vote winner is their label, in [0, 1].

    Raises:
        ValueError: on mismatched shapes, labels outside ``[0, num_classes)``, ``k`` < 1 or
            ``temperature`` <= 0.
        TypeError: on non-tensor or wrongly typed inputs.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    train = _normalized("train_features", train_features)
    val = _normalized("val_features", val_features)
    if train.shape[1] != val.shape[1]:
        raise ValueError(
            f"train_features and val_features differ in dimension: {train.shape[1]} vs "
            f"{val.shape[1]}"
        )
    train_labels = as_labels("train_labels", train_labels, train.shape[0]).to(train.device)
    val_labels = as_labels("val_labels", val_labels, val.shape[0]).to(val.device)
    for name, labels in (("train_labels", train_labels), ("val_labels", val_labels)):
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, "
                f"{int(labels.max())}]"
            )
    neighbours = min(k, train.shape[0])
    val = val.to(train.dtype)
    correct = 0
    rows = _rows_per_chunk(train.shape[0], chunk_size)
    for start in range(0, val.shape[0], rows):
        similarity = val[start : start + rows] @ train.T
        top, index = similarity.topk(neighbours, dim=1)
        # Shifting by the row maximum leaves the vote winner unchanged and avoids overflow.
        weights = ((top - top[:, :1]) / temperature).exp()
        votes = torch.zeros(top.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, train_labels[index], weights)
        correct += int((votes.argmax(dim=1) == val_labels[start : start + rows]).sum())
    return correct / val.shape[0]


def class_embeddings(text_embeddings: torch.Tensor) -> torch.Tensor:
    """One embedding per class from per-template ones: ``[C, T, D] -> [C, D]``.

    Each template embedding is normalised, averaged over templates and normalised again (CLIP's
    prompt ensembling). ``[C, D]`` input is only normalised.

    Raises:
        ValueError: if the input is not 2-D or 3-D.
    """
    if text_embeddings.dim() == 3:
        per_template = text_embeddings
        if per_template.dtype in (torch.float16, torch.bfloat16):
            per_template = per_template.float()
        averaged = F.normalize(per_template, dim=-1).mean(dim=1)
        return F.normalize(averaged, dim=-1)
    return _normalized("class_text_embeddings", text_embeddings)


@torch.no_grad()
def zeroshot_top1(
    image_embeddings: torch.Tensor,
    class_text_embeddings: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """Zero-shot top-1 accuracy (CLIP, Radford et al. 2021).

    Args:
        image_embeddings: ``[N, D]``.
        class_text_embeddings: ``[C, D]`` (one per class, e.g. averaged over the class's
            prompts) or ``[C, T, D]`` (per template; averaged here, see
            :func:`class_embeddings`).
        labels: ``[N]`` int labels in ``[0, C)``.

    Returns:
        The share of images whose most cosine-similar class is their label.

    Raises:
        ValueError: on mismatched shapes or labels outside ``[0, C)``.
    """
    if class_text_embeddings.dim() not in (2, 3):
        raise ValueError(
            "class_text_embeddings must be [C, D] or [C, T, D], got "
            f"{tuple(class_text_embeddings.shape)}"
        )
    images = _normalized("image_embeddings", image_embeddings)
    classes = class_embeddings(class_text_embeddings).to(images.device, images.dtype)
    if classes.shape[1] != images.shape[1]:
        raise ValueError(
            f"image and class text embeddings differ in dimension: {images.shape[1]} vs "
            f"{classes.shape[1]}"
        )
    labels = as_labels("labels", labels, images.shape[0]).to(images.device)
    if int(labels.min()) < 0 or int(labels.max()) >= classes.shape[0]:
        raise ValueError(
            f"labels must lie in [0, {classes.shape[0]}), got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    predictions = (images @ classes.T).argmax(dim=1)
    return float((predictions == labels).double().mean())


def _hits(
    queries: torch.Tensor,
    keys: torch.Tensor,
    groups: torch.Tensor,
    ks: Sequence[int],
    chunk_size: int | None,
) -> dict[int, int]:
    """For each k, how many queries rank a positive key within the top k (ties count against)."""
    hits = dict.fromkeys(ks, 0)
    rows = _rows_per_chunk(keys.shape[0], chunk_size)
    for start in range(0, queries.shape[0], rows):
        scores = queries[start : start + rows] @ keys.T
        positive = groups[start : start + rows, None] == groups[None, :]
        best_positive = scores.masked_fill(~positive, -math.inf).amax(dim=1, keepdim=True)
        rank = ((scores >= best_positive) & ~positive).sum(dim=1)
        for k in ks:
            hits[k] += int((rank < k).sum())
    return hits


@torch.no_grad()
def recall_at_k(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    ks: Iterable[int] = (1, 5),
    *,
    groups: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Image-to-text and text-to-image retrieval recall@k of paired embeddings.

    Image ``i`` is paired with text ``i``. A retrieval is correct when a text of the image's group
    (by default only text ``i``; pass ``groups`` when several images share an identical caption,
    as with class-template captions) ranks within the top ``k``; a wrong candidate whose score
    ties the best correct one counts as ranked ahead, so a collapsed model (all embeddings equal)
    scores 0, not 1.

    Args:
        image_embeddings: ``[N, D]``.
        text_embeddings: ``[N, D]``, row ``i`` describes image ``i``.
        ks: the cut-offs, each >= 1.
        groups: optional int ``[N]``: texts ``j`` with ``groups[j] == groups[i]`` also match image
            ``i`` (and images likewise match text ``i``). :func:`caption_groups` makes them from
            token rows.
        chunk_size: query rows per similarity block.

    Returns:
        A flat dict: ``"i2t@k"``, ``"t2i@k"`` and their mean ``"mean@k"`` for each k, in [0, 1].
        (The loop reports ``mean@1`` / ``mean@5`` as ``val/recall_at_1`` / ``val/recall_at_5``.)

    Raises:
        ValueError: on mismatched shapes or a k < 1.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be non-empty integers >= 1, got {ks}")
    images = _normalized("image_embeddings", image_embeddings)
    texts = _normalized("text_embeddings", text_embeddings).to(images.device, images.dtype)
    if texts.shape != images.shape:
        raise ValueError(
            f"image and text embeddings must have the same shape, got {tuple(images.shape)} and "
            f"{tuple(texts.shape)}"
        )
    count = images.shape[0]
    if groups is None:
        groups = torch.arange(count, device=images.device)
    else:
        groups = as_labels("groups", groups, count).to(images.device)
    image_to_text = _hits(images, texts, groups, ks, chunk_size)
    text_to_image = _hits(texts, images, groups, ks, chunk_size)
    result: dict[str, float] = {}
    for k in ks:
        result[f"i2t@{k}"] = image_to_text[k] / count
        result[f"t2i@{k}"] = text_to_image[k] / count
        result[f"mean@{k}"] = (result[f"i2t@{k}"] + result[f"t2i@{k}"]) / 2
    return result


def caption_groups(tokens: torch.Tensor) -> torch.Tensor:
    """Group ids of token rows: rows with identical tokens share an id (``[N, L] -> [N]``)."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [N, L], got {tuple(tokens.shape)}")
    return torch.unique(tokens, dim=0, return_inverse=True)[1]


@torch.no_grad()
def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2) -> float:
    """Alignment of positive pairs, ``E ||f(x) - f(y)||^alpha`` (Wang & Isola 2020).

    Lower is better; rows are L2-normalised first.

    Args:
        x: ``[N, D]`` embeddings.
        y: ``[N, D]`` embeddings of their positives (row ``i`` pairs with ``x[i]``).
        alpha: distance exponent (> 0); the paper uses 2.

    Raises:
        ValueError: on mismatched shapes or ``alpha`` <= 0.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    a = _normalized("x", x)
    b = _normalized("y", y).to(a.device, a.dtype)
    if a.shape != b.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return float((a - b).norm(dim=1).pow(alpha).mean())


REFERENCE_TEMPERATURE = 0.1
"""The one τ at which :func:`pair_infonce` scores every trial, whatever τ the trial trains with."""

REFERENCE_PAIRS = 2048
"""At most this many positive pairs (the first ones) make :func:`pair_infonce`'s matrix."""


@torch.no_grad()
def pair_infonce(
    x: torch.Tensor,
    y: torch.Tensor,
    temperature: float = REFERENCE_TEMPERATURE,
    *,
    max_pairs: int = REFERENCE_PAIRS,
) -> float:
    """Symmetric InfoNCE of positive pairs at a fixed temperature (van den Oord et al. 2018).

    Row ``i`` of ``x`` is the positive of row ``i`` of ``y`` and every other row is a negative,
    in both directions (x -> y and y -> x, averaged). Scored at one common temperature, it compares
    embeddings trained with different τ on the same scale, which the training loss (at each
    trial's own τ) cannot. Lower is better; rows are L2-normalised first.

    Args:
        x: ``[N, D]`` embeddings.
        y: ``[N, D]`` embeddings of their positives.
        temperature: the fixed τ (> 0).
        max_pairs: only the first ``max_pairs`` pairs are scored (an ``N x N`` matrix).

    Raises:
        ValueError: on mismatched shapes, fewer than 2 pairs, or ``temperature`` <= 0.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    a = _normalized("x", x)[:max_pairs]
    b = _normalized("y", y).to(a.device, a.dtype)[:max_pairs]
    if a.shape != b.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"pair_infonce needs at least 2 pairs, got {a.shape[0]}")
    logits = a @ b.T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    return float(loss)


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """RankMe, ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum(s)`` over the singular values
    ``s`` of the ``[N, D]`` embeddings (Garrido et al., "RankMe", ICML 2023).

    Between 1 (every embedding on one line) and ``min(N, D)`` (the spectrum flat): how many
    dimensions the representation really uses, which tracks downstream accuracy without labels.
    Computed in float64 (the small singular values decide the entropy's tail).

    Raises:
        ValueError: ``x`` is not two-dimensional or has no rows.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"effective_rank needs [N, D] embeddings with N >= 1, got {tuple(x.shape)}"
        )
    singular = torch.linalg.svdvals(x.detach().to(torch.float64))
    total = singular.sum()
    if not total > 0:
        return 1.0
    p = singular / total + 1e-12  # the paper's epsilon, so an exact zero adds nothing
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def uniformity(x: torch.Tensor, t: float = 2, *, chunk_size: int | None = None) -> float:
    """Uniformity, ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` (Wang & Isola 2020).

    Lower (more negative) is more uniform; rows are L2-normalised first. Computed in row chunks
    with a running log-sum-exp, so memory stays bounded for large ``N``.

    Args:
        x: ``[N, D]`` embeddings, N >= 2.
        t: the Gaussian potential's scale (> 0); the paper uses 2.
        chunk_size: rows per distance block.

    Raises:
        ValueError: if ``N`` < 2 or ``t`` <= 0.
    """
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t!r}")
    points = _normalized("x", x)
    count = points.shape[0]
    if count < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {count}")
    total = torch.tensor(-math.inf, dtype=points.dtype, device=points.device)
    rows = _rows_per_chunk(count, chunk_size)
    columns = torch.arange(count, device=points.device)
    for start in range(0, count, rows):
        block = points[start : start + rows]
        squared = (2.0 - 2.0 * block @ points.T).clamp_min(0.0)
        upper = (
            columns[None, :] > (start + torch.arange(block.shape[0], device=points.device))[:, None]
        )
        if bool(upper.any()):
            total = torch.logaddexp(total, torch.logsumexp(-t * squared[upper], dim=0))
    return float(total - math.log(count * (count - 1) / 2))


def _ordered_indices(loader: DataLoader) -> list[int] | None:
    """Dataset indices in the order ``loader`` yields them, when the sampler reveals them."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(batch_sampler, BatchSampler) or batch_sampler.sampler is not sampler:
        return None
    if isinstance(sampler, (DistributedSampler, SequentialSampler)):
        return [int(i) for i in sampler]
    return None


def _split_batch(batch: object, input_index: int, label_index: int) -> tuple[object, object]:
    if not isinstance(batch, (list, tuple)) or len(batch) <= max(input_index, label_index):
        size = len(batch) if isinstance(batch, (list, tuple)) else "not a sequence"
        raise ValueError(
            f"extract_features needs batches of (input, label, ...) with the input at position "
            f"{input_index} and the label at {label_index}, got a {type(batch).__name__} "
            f"({size})"
        )
    return batch[input_index], batch[label_index]


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device | str,
    *,
    input_index: int = 0,
    label_index: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn`` over an evaluation loader and gather the full result on every rank.

    Batches are ``(input, label, ...)``; ``fn(batch[input_index])`` gives ``[B, D]``. On several
    ranks, every rank's rows are gathered (:func:`tauray_trainers.distributed.gather_no_grad`),
    the repeats a ``DistributedSampler`` pads shards with are dropped (keeping the first
    occurrence) and rows are put in dataset order: with a loader from
    :func:`tauray_trainers.data.make_eval_loader` the result equals a single process's over the
    whole dataset, on every rank. (CLIP: ``input_index=2`` with ``fn`` the text tower gives the
    caption embeddings in the same order.)

    Args:
        fn: the model's embedding function (e.g. the backbone), called under ``no_grad``.
        loader: an evaluation loader; with more than one rank its sampler must be a
            ``DistributedSampler`` without ``drop_last`` (:func:`make_eval_loader`).
        device: where inputs go and outputs stay (CUDA for NCCL).
        input_index: position of the model input in a batch.
        label_index: position of the label in a batch.

    Returns:
        ``(features [N, D], labels [N])`` on ``device``; ``N == len(loader.dataset)`` when the
        sampler's indices are known, else the number of rows the loader yielded.

    Raises:
        ValueError: if batches lack the input or label, the loader yields nothing on this rank,
            drops samples, or (on several ranks) its sampler does not reveal sample indices.
    """
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for batch in loader:
        inputs, batch_labels = _split_batch(batch, input_index, label_index)
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.to(device, non_blocking=True)
        output = fn(inputs)
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            raise ValueError(
                "fn must return a [B, D] tensor, got "
                f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)}"
            )
        features.append(output.detach().to(device))
        labels.append(torch.as_tensor(batch_labels).long().reshape(-1).to(device))
    if not features:
        raise ValueError("the evaluation loader yielded no batch on this rank")
    local_features = torch.cat(features)
    local_labels = torch.cat(labels)
    if local_labels.shape[0] != local_features.shape[0]:
        raise ValueError(
            f"{local_features.shape[0]} feature rows but {local_labels.shape[0]} labels"
        )
    indices = _ordered_indices(loader)
    if indices is not None and len(indices) != local_features.shape[0]:
        raise ValueError(
            f"the loader yielded {local_features.shape[0]} of the {len(indices)} samples its "
            "sampler lists (drop_last?); evaluation must see every sample: use make_eval_loader"
        )
    if world_size() > 1:
        if indices is None:
            raise ValueError(
                "extract_features on several ranks needs a loader whose sampler is a "
                "DistributedSampler (make_eval_loader) to restore sample order"
            )
        sizes = gather_sizes(local_features.shape[0], device)
        local_features = gather_no_grad(local_features, sizes)
        local_labels = gather_no_grad(local_labels, sizes)
        index = gather_no_grad(torch.tensor(indices, dtype=torch.int64, device=device), sizes)
    elif indices is not None:
        index = torch.tensor(indices, dtype=torch.int64, device=device)
    else:
        return local_features, local_labels
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    keep = order[first]
    expected = len(loader.dataset)
    if int(first.sum()) != expected or not torch.equal(
        sorted_index[first], torch.arange(expected, device=sorted_index.device)
    ):
        raise ValueError(
            f"gathered {int(first.sum())} distinct samples, expected all {expected} of the "
            "dataset: use make_eval_loader (unshuffled shards, no drop_last)"
        )
    return local_features[keep], local_labels[keep]


def extract_text_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device | str,
    *,
    token_index: int = 2,
) -> torch.Tensor:
    """Caption embeddings of a CLIP validation loader, gathered like :func:`extract_features`.

    Batches are ``(image, label, tokens)`` (``DataBundle.val`` for clip); row ``i`` of the result
    embeds the caption of sample ``i``, matching the rows of ``extract_features`` on the images.

    Args:
        fn: the text tower, ``[B, context_length]`` int64 tokens -> ``[B, D]``.
        loader: the evaluation loader (:func:`make_eval_loader`).
        device: where tokens go and outputs stay.
        token_index: position of the tokens in a batch.

    Returns:
        ``[N, D]`` caption embeddings on ``device``.

    Raises:
        ValueError: as :func:`extract_features`.
    """
    return extract_features(fn, loader, device, input_index=token_index)[0]

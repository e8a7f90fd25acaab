"""Positive groups of the image-text losses: pairs whose captions say the same thing.

When captions are made from class names, or a data set repeats a caption, an image's caption is
not the only one in the batch that describes it. Treating the others as negatives asks the model
to tell apart captions that carry the same information (false negatives). With ``groups``, every
pair ``(i, j)`` whose rows share a group id is a positive, as in UniCL (Yang et al., "Unified
Contrastive Learning in Image-Text-Label Space", CVPR 2022).

For the softmax loss the target of each row (and column) is uniform over its group, so its
cross-entropy is ``logsumexp_j s_ij - mean_{k in group(i)} s_ik``; the log-sum-exp is the
ungrouped one. Because a group is an equivalence class, the positive terms of all rows and of all
columns both sum to ``sum_i a_i . mean_{k in group(i)} b_k / τ``: one mean text embedding per
group serves both directions, and, computed from the gathered texts, it is exact under DDP.

Measured (CLIP on the bundled cluttered digits, 10 classes x 8 caption templates, batch 64, so
about 5.4 other captions of the image's class per row; small CNN, τ 0.1, 10 epochs, seeds 0-2):
zero-shot top-1 0.348 / 0.304 / 0.627 with only the pairs as positives, 0.749 / 0.802 / 0.877
with class groups (SimCLR's augmentation in both); with crop-only augmentation 0.702 (pairs)
and 0.897 (groups) at seed 0. See benchmarks/README.md, "CLIP on the cluttered digits".
"""

from __future__ import annotations

import torch


def check_groups(groups: object, rows: int, device: torch.device) -> torch.Tensor:
    """A loss's ``groups`` argument as int64 ``[rows]`` on ``device``.

    Raises:
        TypeError: if ``groups`` is not an integer tensor.
        ValueError: if it is not 1-D with one entry per row.
    """
    if not isinstance(groups, torch.Tensor):
        raise TypeError(
            f"groups must be an integer torch.Tensor of shape ({rows},), got {groups!r}"
        )
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must hold integers, got dtype {groups.dtype}")
    if groups.shape != (rows,):
        raise ValueError(
            f"groups must have one id per row, shape ({rows},), got {tuple(groups.shape)}"
        )
    return groups.to(device=device, dtype=torch.int64)


def group_sums(
    keys: torch.Tensor, key_groups: torch.Tensor, query_groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the sum and the count of the keys in its group.

    Args:
        keys: ``[M, D]`` (the gathered texts; gradient flows through the sums).
        key_groups: int64 ``[M]``, the keys' group ids.
        query_groups: int64 ``[m]``, group ids each present among ``key_groups``.

    Returns:
        ``(sums [m, D], counts [m])``.
    """
    ids, key_index, counts = torch.unique(key_groups, return_inverse=True, return_counts=True)
    sums = keys.new_zeros((ids.shape[0], keys.shape[1])).index_add(0, key_index, keys)
    query_index = torch.searchsorted(ids, query_groups)
    return sums[query_index], counts[query_index].to(keys.dtype)

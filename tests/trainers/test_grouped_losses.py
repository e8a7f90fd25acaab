"""Grouped positives of the image-text losses (UniCL): a hand-computed example and parity.

Captions made from class names describe every image of their class; with ``groups`` the CLIP
and SigLIP losses count every pair whose rows share a group as a positive. The references here
write the multi-positive cross-entropy and the multi-positive sigmoid out with explicit sums.
"""

from __future__ import annotations

import math

import pytest
import torch

from tauray_trainers.losses import ClipLoss, SigLipLoss

GROUPINGS = {
    "distinct": [0, 1, 2, 3, 4, 5, 6],
    "one-group": [3, 3, 3, 3, 3, 3, 3],
    "mixed": [2, 0, 2, 7, 0, 2, 5],
}


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True))


def naive_grouped_clip(
    a: torch.Tensor, b: torch.Tensor, tau: torch.Tensor, groups: list[int]
) -> torch.Tensor:
    """Each row's and each column's cross-entropy against the uniform target over its group."""
    logits = unit_rows(a) @ unit_rows(b).T / tau
    n = logits.shape[0]
    total = 0.0
    for i in range(n):
        mates = [k for k in range(n) if groups[k] == groups[i]]
        row = torch.log(torch.exp(logits[i, :]).sum())
        column = torch.log(torch.exp(logits[:, i]).sum())
        for k in mates:
            total = total + (row - logits[i, k]) / len(mates) + (column - logits[k, i]) / len(mates)
    return total / (2 * n)


def naive_grouped_siglip(
    a: torch.Tensor, b: torch.Tensor, tau: torch.Tensor, bias: torch.Tensor, groups: list[int]
) -> torch.Tensor:
    logits = unit_rows(a) @ unit_rows(b).T / tau + bias
    same = torch.tensor([[gi == gj for gj in groups] for gi in groups], dtype=a.dtype)
    labels = 2 * same - 1
    return -torch.log(1 / (1 + torch.exp(-labels * logits))).sum() / a.shape[0]


def make(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).requires_grad_()


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)


def test_two_captions_of_one_class_by_hand() -> None:
    """[1,0]/[0,1] pairs at τ = 1 whose captions share a class.

    Pairs only: each row -log(e / (e + 1)) ≈ 0.3133. Grouped, each row's target is (1/2, 1/2):
    log(e + 1) - (1 + 0) / 2 ≈ 0.8133, and with logits s/τ the τ-gradient of
    log(e^(1/τ) + 1) - 1/(2τ) at τ = 1 is -(e / (e + 1) - 1/2) ≈ -0.2311: the loss now wants a
    flatter softmax over the two same-class captions, not a sharper one.
    """
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    tau = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    same_class = torch.tensor([4, 4])
    pairs_only = ClipLoss()(images, images.clone(), temperature=1.0)
    grouped = ClipLoss()(images, images.clone(), temperature=tau, groups=same_class)
    (tau_grad,) = torch.autograd.grad(grouped, [tau])
    assert pairs_only.item() == pytest.approx(math.log(math.e + 1) - 1, abs=1e-12)
    assert grouped.item() == pytest.approx(math.log(math.e + 1) - 0.5, abs=1e-12)
    assert tau_grad.item() == pytest.approx(-(math.e / (math.e + 1) - 0.5), abs=1e-12)
    different = ClipLoss()(images, images.clone(), temperature=1.0, groups=torch.tensor([0, 1]))
    assert different.item() == pytest.approx(pairs_only.item(), abs=1e-12)


@pytest.mark.parametrize("tau_value", [0.03, 0.1, 1.0])
@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_grouped_clip_matches_naive_reference(
    tau_value: float, grouping: str, chunk_size: int | None
) -> None:
    groups = GROUPINGS[grouping]
    a, b = make(len(groups), 5, seed=11, scale=2.0), make(len(groups), 5, seed=12)
    tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
    loss = ClipLoss(chunk_size)(a, b, temperature=tau, groups=torch.tensor(groups))
    reference = naive_grouped_clip(a, b, tau, groups)
    assert_close(loss, reference)
    got = torch.autograd.grad(loss, [a, b, tau])
    want = torch.autograd.grad(reference, [a, b, tau])
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    if grouping == "distinct":
        assert_close(loss, ClipLoss(chunk_size)(a, b, temperature=tau))


@pytest.mark.parametrize("bias_value", [-10.0, 0.5])
@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
def test_grouped_siglip_matches_naive_reference(bias_value: float, grouping: str) -> None:
    groups = GROUPINGS[grouping]
    a, b = make(len(groups), 4, seed=13), make(len(groups), 4, seed=14, scale=3.0)
    tau = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(bias_value, dtype=torch.float64, requires_grad=True)
    loss = SigLipLoss()(a, b, temperature=tau, bias=bias, groups=torch.tensor(groups))
    reference = naive_grouped_siglip(a, b, tau, bias, groups)
    assert_close(loss, reference)
    got = torch.autograd.grad(loss, [a, b, tau, bias])
    want = torch.autograd.grad(reference, [a, b, tau, bias])
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("loss_fn", [ClipLoss(), ClipLoss(chunk_size=2), SigLipLoss()])
def test_groups_are_checked(loss_fn: torch.nn.Module) -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"one id per row, shape \(4,\), got \(3,\)"):
        loss_fn(x, x, temperature=0.1, groups=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"groups must hold integers, got dtype torch\.float32"):
        loss_fn(x, x, temperature=0.1, groups=torch.zeros(4))
    with pytest.raises(TypeError, match=r"groups must be an integer torch.Tensor of shape \(4,\)"):
        loss_fn(x, x, temperature=0.1, groups=[0, 1, 2, 3])

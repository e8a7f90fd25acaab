"""The tiled path never materialises more than n_local x chunk_size similarities, and its
peak is two chunk_size x chunk_size blocks plus a few batch x D tensors.

Every ATen op run during the forward and the backward is intercepted with a TorchDispatchMode
and the largest tensor it produces is recorded: deterministic on CPU, unlike reading the
OS's counters. The sizes are chosen so that n x k (tile) < n x N (full block) and the
linear-size tensors (N x D gathered keys and their gradient) stay below n x k. The peak is
replayed from the profiler's allocation events (every allocation torch makes, temporaries
inside ops included), single-process and so deterministic.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tauray_trainers.losses import ClipLoss, NTXentLoss

N, DIM, CHUNK = 256, 8, 32


class LargestOutput(TorchDispatchMode):
    """Records the largest tensor (in elements) any op produces, and how many ops ran."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.largest_op = ""
        self.matmuls = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.matmuls += 1
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.numel() > self.largest:
                self.largest, self.largest_op = value.numel(), str(func)
        return out


def measure(loss_fn: torch.nn.Module) -> tuple[LargestOutput, LargestOutput]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(N, DIM, generator=generator, requires_grad=True)
    b = torch.randn(N, DIM, generator=generator, requires_grad=True)
    with LargestOutput() as forward:
        loss = loss_fn(a, b, temperature=0.1)
    with LargestOutput() as backward:
        loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    return forward, backward


@pytest.mark.parametrize(("cls", "rows"), [(ClipLoss, N), (NTXentLoss, 2 * N)])
def test_tiled_path_holds_at_most_one_tile(cls: type[torch.nn.Module], rows: int) -> None:
    tiles = -(-rows // CHUNK) if cls is NTXentLoss else -(-N // CHUNK)
    untiled_fwd, untiled_bwd = measure(cls())
    tiled_fwd, tiled_bwd = measure(cls(chunk_size=CHUNK))
    # The untiled path forms the whole block: the probe can see it.
    assert untiled_fwd.largest >= rows * (2 * N if cls is NTXentLoss else N)
    # The tiled path: nothing larger than (local rows) x k, forward or backward.
    bound = rows * CHUNK
    assert tiled_fwd.largest <= bound, (tiled_fwd.largest, tiled_fwd.largest_op)
    assert tiled_bwd.largest <= bound, (tiled_bwd.largest, tiled_bwd.largest_op)
    assert untiled_bwd.largest > bound
    # Tiles are recomputed in the backward: at least one product per tile, on top of the
    # products that form the gradients.
    assert tiled_fwd.matmuls >= tiles
    assert tiled_bwd.matmuls >= 3 * tiles


def peak_allocated_bytes(step: Any) -> int:
    """Largest total of live bytes allocated while ``step()`` runs (earlier ones not counted)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if type(event.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append(event)
        stack.extend(event.children)
    events.sort(key=lambda event: event.start_time_ns)
    live: dict[int, int] = {}
    total = peak = 0
    for fields in (event.extra_fields for event in events):
        if fields.alloc_size > 0:
            live[fields.ptr] = fields.alloc_size
            total += fields.alloc_size
        elif fields.ptr in live:
            total -= live.pop(fields.ptr)
        peak = max(peak, total)
    return peak


@pytest.mark.parametrize(("cls", "views"), [(ClipLoss, 1), (NTXentLoss, 2)])
def test_tiled_peak_is_two_blocks_and_a_few_linear_tensors(
    cls: type[torch.nn.Module], views: int
) -> None:
    # Blocks (k x k) are 8x a (rows x D) tensor here, so a third block would break the bound;
    # n_local x k tiles (three alive at once) would peak at about 200 of them for ClipLoss.
    n, dim, chunk = 4096, 8, 512
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, dim, generator=generator, requires_grad=True)
    b = torch.randn(n, dim, generator=generator, requires_grad=True)
    tau = torch.tensor(0.1, requires_grad=True)
    loss_fn = cls(chunk_size=chunk)

    def step() -> None:
        a.grad = b.grad = tau.grad = None
        loss_fn(a, b, temperature=tau).backward()

    step()  # first call: thread pools and the like
    peak = peak_allocated_bytes(step)
    linear = views * n * dim * 4  # one (rows x D) float32 tensor
    block = chunk * chunk * 4
    assert peak <= 2 * block + 6 * linear, (peak / linear, block / linear)
    assert a.grad is not None and b.grad is not None and tau.grad is not None

"""Where the peak of one CLIP loss forward+backward goes, on W gloo ranks (not a test).

Runs one forward+backward of the loss that ``loss_memory.py`` measures (same inputs, same
warm-up) under ``torch.profiler`` with ``profile_memory=True`` and replays the allocator's
allocation and free events in order. For the forward and for the backward it reports the peak,
the largest total of live allocations made during the step (tensors allocated before it, the
inputs, are not counted, as in ``loss_memory.py``), and what is alive at that moment: each
allocation is attributed to the function that made it (the innermost frame in
``tauray_trainers``, shown with the line of its ``def``; else the autograd node; else the
innermost Python frame) and the aten op, and summed per function and op.

This counts what torch allocates, not the process's resident set: it is repeatable, but leaves
out allocator overhead and what the collectives' library allocates outside torch. One known
blind spot: a tensor whose last reference a collective's worker thread drops (the input of a
gloo all-gather) is freed outside the profiler's view and stays "live" in the replay; what is
still allocated after the step is listed so that such blocks can be told from the step's
results (the input gradients).

    OMP_NUM_THREADS=1 python benchmarks/loss_memory_breakdown.py --global-batch 16384
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_memory import IMPLEMENTATIONS, _make_step
from torch.profiler import ProfilerActivity, profile

MIB = 2.0**20


def _label(event: Any) -> tuple[str, str]:
    """(function, aten op) that made an allocation event, from its ancestors."""
    op, ours, python, node = "", "", "", ""
    parent = event.parent
    while parent is not None:
        name = parent.name
        kind = type(parent.extra_fields).__name__
        if kind == "_ExtraFields_TorchOp":
            if not op and name.startswith("aten::"):
                op = name
            if not node and name.startswith("autograd::engine::evaluate_function: "):
                node = name.split(": ", 1)[1]
        elif kind == "_ExtraFields_PyCall":
            if not ours and "tauray_trainers" in name:
                ours = name[name.index("tauray_trainers") :]
            if not python:
                python = name
        parent = parent.parent
    where = ours or (f"autograd {node}" if node else python) or "?"
    return where, op or "?"


def _walk(roots: list[Any]) -> tuple[list[Any], int]:
    """Allocation events in time order, and when ``Tensor.backward`` was called."""
    found, stack, backward_ns = [], list(roots), -1
    while stack:
        event = stack.pop()
        kind = type(event.extra_fields).__name__
        if kind == "_ExtraFields_Allocation":
            found.append(event)
        elif (
            kind == "_ExtraFields_PyCall"
            and "_tensor.py" in event.name
            and "backward" in event.name
        ):
            backward_ns = (
                event.start_time_ns if backward_ns < 0 else min(backward_ns, event.start_time_ns)
            )
        stack.extend(event.children)
    return sorted(found, key=lambda e: e.start_time_ns), backward_ns


def _summary(peak: int, live: dict[int, tuple[int, tuple[str, str]]]) -> dict:
    by_line: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for size, label in live.values():
        by_line[label].append(size)
    rows = sorted(by_line.items(), key=lambda item: -sum(item[1]))
    return {
        "peak_mib": peak / MIB,
        "live": [
            {
                "where": where,
                "op": op,
                "mib": sum(sizes) / MIB,
                "blocks_mib": sorted((round(s / MIB, 1) for s in sizes), reverse=True),
            }
            for (where, op), sizes in rows
            if sum(sizes) >= MIB / 2
        ],
        "small_mib": sum(sum(sizes) for _, sizes in rows if sum(sizes) < MIB / 2) / MIB,
    }


def breakdown(prof: Any) -> dict:
    """Replay allocations: per phase (forward, backward) the peak and what is live at it."""
    events, backward_started_ns = _walk(prof.profiler.kineto_results.experimental_event_tree())
    live: dict[int, tuple[int, tuple[str, str]]] = {}
    total = 0
    peaks = {"forward": (0, {}), "backward": (0, {})}
    first_total: int | None = None
    allocator_peak = unmatched = 0
    for event in events:
        fields = event.extra_fields
        if fields.device.type != "cpu":
            continue
        size = fields.alloc_size
        if first_total is None:
            first_total = fields.total_allocated - size
        allocator_peak = max(allocator_peak, fields.total_allocated - first_total)
        if size > 0:
            if fields.ptr in live:  # its free was not recorded
                total -= live.pop(fields.ptr)[0]
                unmatched += 1
            live[fields.ptr] = (size, _label(event))
            total += size
        elif fields.ptr in live:  # frees of blocks allocated before the step are not counted
            total -= live.pop(fields.ptr)[0]
        phase = "backward" if event.start_time_ns >= backward_started_ns else "forward"
        if total > peaks[phase][0]:
            peaks[phase] = (total, dict(live))
    return {
        "after": _summary(total, live),
        "allocator_peak_mib": allocator_peak / MIB,
        "unmatched": unmatched,
        **{phase: _summary(*peak) for phase, peak in peaks.items()},
    }


def _worker(rank: int, settings: dict, store: str, out_dir: str) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    world = settings["world_size"]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        n_local = settings["global_batch"] // world
        generator = torch.Generator().manual_seed(1000 + rank)
        images = torch.randn(n_local, settings["dim"], generator=generator).requires_grad_()
        texts = torch.randn(n_local, settings["dim"], generator=generator).requires_grad_()
        temperature = torch.tensor(0.07, requires_grad=True)
        make = (settings["implementation"], temperature, settings["chunk_size"], rank, world)
        small = [x[:8].detach().clone().requires_grad_() for x in (images, texts)]
        _make_step(make[0], small[0], small[1], *make[1:])()
        step = _make_step(make[0], images, texts, *make[1:])
        dist.barrier()
        with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True
        ) as prof:
            step()
        result = breakdown(prof)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--global-batch", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--implementation", choices=IMPLEMENTATIONS, default="ours-tiled")
    args = parser.parse_args(argv)
    settings = {
        "global_batch": args.global_batch,
        "dim": args.dim,
        "world_size": args.world_size,
        "chunk_size": args.chunk_size,
        "implementation": args.implementation,
    }
    with tempfile.TemporaryDirectory(prefix="tauray-breakdown-") as out_dir:
        mp.start_processes(
            _worker,
            args=(settings, os.path.join(out_dir, "store"), out_dir),
            nprocs=args.world_size,
            join=True,
            start_method="spawn",
        )
        results = [
            json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(args.world_size)
        ]
    print(
        f"# {args.implementation}, global batch {args.global_batch}, {args.world_size} gloo ranks, "
        f"D={args.dim}, chunk_size={args.chunk_size}: live torch allocations at each rank's peak"
    )
    for rank, result in enumerate(results):
        print(
            f"rank {rank}: allocator's own peak count {result['allocator_peak_mib']:.1f} MiB; "
            f"{result['unmatched']} allocations without a recorded free"
        )
        for phase in ("forward", "backward"):
            summary = result[phase]
            print(f"  {phase} peak {summary['peak_mib']:.1f} MiB, live then:")
            for row in summary["live"]:
                blocks = " + ".join(f"{b:g}" for b in row["blocks_mib"])
                print(f"    {row['mib']:>7.1f}  {row['where']}  [{row['op']}]  ({blocks})")
            print(f"    {summary['small_mib']:>7.1f}  (lines under 0.5 MiB)")
        after = result["after"]
        print(f"  still allocated after the step: {after['peak_mib']:.1f} MiB")
        for row in after["live"]:
            print(f"    {row['mib']:>7.1f}  {row['where']}  [{row['op']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

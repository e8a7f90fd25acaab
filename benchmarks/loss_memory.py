"""Peak memory and forward+backward time of CLIP losses on W gloo ranks (not a test).

Compares, at each global batch size, three exact distributed CLIP losses:

- ``ours-untiled``: ``tauray_trainers.losses.ClipLoss()``;
- ``ours-tiled``: ``ClipLoss(chunk_size=k)``;
- ``open_clip``: ``open_clip.loss.ClipLoss(local_loss=True, gather_with_grad=True)``, its most
  memory-frugal exact mode (embeddings are L2-normalised before the call, inside the timed
  region, because our losses normalise inside).

Every configuration runs in fresh processes (one per rank) so that one configuration's allocator
state cannot hide another's peak. Memory is the growth of the process's resident set during
one forward+backward: the kernel's peak counter (VmHWM) is reset just before
(``/proc/self/clear_refs``), falling back to ``ru_maxrss`` where that is not allowed, and
compared with the resident set at that moment (inputs already allocated, a small warm-up
done). These memory runs fix glibc's mmap threshold so that the resident set tracks live
memory (see :func:`run_configuration`); the timing runs, in other fresh processes, use the
default allocator. On CUDA (``--device cuda``, NCCL) memory is the growth of
``torch.cuda.max_memory_allocated``. Time is the fastest of ``--repeats`` forward+backward
passes after an untimed full-size one, on the slowest rank; CPU time is the same for the
process's CPU time (all its threads), which other processes on a shared machine do not inflate.

    OMP_NUM_THREADS=1 python benchmarks/loss_memory.py --batch-sizes 1024 4096 16384
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

logger = logging.getLogger("benchmarks.loss_memory")

IMPLEMENTATIONS = ("ours-untiled", "ours-tiled", "open_clip")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakResidentSet:
    """Growth of the resident set between ``start()`` and ``peak_mib()`` (host memory)."""

    def __init__(self) -> None:
        self.method = "VmHWM"
        self.baseline_kib = 0

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM to the current resident set
        except OSError:
            self.method = "ru_maxrss"
        if self.method == "VmHWM" and _status_kib("VmHWM") is not None:
            self.baseline_kib = _status_kib("VmRSS") or 0
        else:
            self.method = "ru_maxrss"
            self.baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak_mib(self) -> float:
        if self.method == "VmHWM":
            peak = _status_kib("VmHWM") or 0
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(peak - self.baseline_kib, 0) / 1024.0


def _make_step(
    implementation: str,
    images: torch.Tensor,
    texts: torch.Tensor,
    temperature: torch.Tensor,
    chunk_size: int,
    rank: int,
    world: int,
) -> Callable[[], float]:
    if implementation == "open_clip":
        from open_clip.loss import ClipLoss as OpenClipLoss

        reference = OpenClipLoss(
            local_loss=True, gather_with_grad=True, cache_labels=False, rank=rank, world_size=world
        )

        def loss_value() -> torch.Tensor:
            return reference(
                F.normalize(images, dim=1), F.normalize(texts, dim=1), temperature.reciprocal()
            )
    else:
        from tauray_trainers.losses import ClipLoss

        ours = ClipLoss(chunk_size=chunk_size if implementation == "ours-tiled" else None)

        def loss_value() -> torch.Tensor:
            return ours(images, texts, temperature=temperature)

    def step() -> float:
        images.grad = texts.grad = temperature.grad = None
        loss = loss_value()
        loss.backward()
        return float(loss.detach())

    return step


def _worker(rank: int, settings: dict, store: str, out_dir: str) -> None:
    # open_clip's gather uses torch.distributed.nn.all_gather, deprecated in torch 2.14.
    warnings.filterwarnings("ignore", category=FutureWarning)
    world = settings["world_size"]
    device = torch.device(settings["device"])
    torch.set_num_threads(settings["threads"])
    if device.type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        result = _measure(rank, world, settings, device)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.barrier()


def _measure(rank: int, world: int, settings: dict, device: torch.device) -> dict:
    n_local = settings["global_batch"] // world
    generator = torch.Generator().manual_seed(1000 + rank)
    dim = settings["dim"]
    images = torch.randn(n_local, dim, generator=generator).to(device).requires_grad_()
    texts = torch.randn(n_local, dim, generator=generator).to(device).requires_grad_()
    temperature = torch.tensor(0.07, device=device, requires_grad=True)
    make = (settings["implementation"], temperature, settings["chunk_size"], rank, world)

    # Warm-up on a few rows: process group, thread pools and autograd initialise here.
    small = [x[:8].detach().clone().requires_grad_() for x in (images, texts)]
    _make_step(make[0], small[0], small[1], *make[1:])()

    step = _make_step(make[0], images, texts, *make[1:])
    _sync(device)
    if settings["phase"] == "memory":
        return _peak_of_one_pass(step, device)
    step()  # the first full-size pass allocates caches and workspaces: not timed
    times = []
    for _ in range(settings["repeats"]):
        _sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        loss = step()
        _sync(device)
        times.append((time.perf_counter() - started, time.process_time() - cpu_started))
    return {
        "times_s": [wall for wall, _ in times],
        "cpu_s": [cpu for _, cpu in times],
        "loss": loss,
    }


def _peak_of_one_pass(step: Callable[[], float], device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
        return {"peak_mib": peak, "memory_method": "cuda.max_memory_allocated"}
    meter = PeakResidentSet()
    meter.start()
    step()
    _sync(device)
    return {"peak_mib": meter.peak_mib(), "memory_method": meter.method}


def _spawn(settings: dict, environment: dict[str, str]) -> list[dict]:
    """Run ``_worker`` on ``world_size`` fresh spawned ranks with extra environment variables."""
    with tempfile.TemporaryDirectory(prefix="tauray-bench-") as out_dir:
        previous = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)  # inherited by the spawned ranks
        try:
            mp.start_processes(
                _worker,
                args=(settings, os.path.join(out_dir, "store"), out_dir),
                nprocs=settings["world_size"],
                join=True,
                start_method="spawn",
            )
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return [
            json.loads(Path(out_dir, f"rank{r}.json").read_text())
            for r in range(settings["world_size"])
        ]


def run_configuration(settings: dict) -> dict:
    """Measure one configuration: a memory run and a timing run, each on fresh ranks.

    The memory run fixes glibc's mmap threshold at 128 KiB (``MALLOC_MMAP_THRESHOLD_``): every
    large block is mapped when allocated and unmapped when freed, so the resident set follows
    live memory (the default dynamic threshold keeps freed blocks in the heap, which inflates a
    first peak by fragmentation and hides later ones). Mapping fresh pages for every temporary
    costs page faults, which would penalise code with many short-lived tiles, so the timing
    run uses the default allocator.
    """
    if settings["device"] == "cuda":
        memory = _spawn({**settings, "phase": "memory"}, {})
    else:
        memory = _spawn({**settings, "phase": "memory"}, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    timing = _spawn({**settings, "phase": "time"}, {})
    # Other processes only ever add time: the fastest pass is the least disturbed one.
    return {
        **settings,
        "peak_mib": max(r["peak_mib"] for r in memory),
        "memory_method": memory[0]["memory_method"],
        "time_s": max(min(r["times_s"]) for r in timing),
        "cpu_s": max(min(r["cpu_s"]) for r in timing),
        "loss_mean": statistics.fmean(r["loss"] for r in timing),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1024, 4096, 16384],
        help="global batch sizes (pairs), divisible by --world-size",
    )
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension D")
    parser.add_argument("--world-size", type=int, default=2, help="number of ranks")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        help="tile width k of ours-tiled (n_local x k scores at once)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed passes after an untimed full-size one"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS)
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for size in args.batch_sizes:
        if size < args.world_size or size % args.world_size:
            parser.error(
                f"--batch-sizes: {size} is not a multiple of --world-size {args.world_size}"
            )
    if min(args.chunk_size, args.repeats, args.world_size, args.threads) < 1:
        parser.error("--chunk-size, --repeats, --world-size and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    print(
        f"# {args.world_size} {'gloo CPU' if args.device == 'cpu' else 'NCCL GPU'} ranks, "
        f"D={args.dim}, chunk_size={args.chunk_size}, {args.threads} thread(s)/rank, "
        f"torch {torch.__version__}; time (wall) and CPU s = fastest of {args.repeats} fwd+bwd "
        "(slowest rank); memory = peak growth during one fwd+bwd (largest rank)",
        flush=True,
    )
    header = f"{'global batch':>12}  {'implementation':<14} {'peak MiB':>9} {'x open_clip':>11} "
    header += f"{'time s':>8} {'x open_clip':>11} {'CPU s':>8} {'x open_clip':>11}"
    print(header, flush=True)
    for batch in args.batch_sizes:
        row = {}
        for implementation in args.implementations:
            settings = {
                "implementation": implementation,
                "global_batch": batch,
                "dim": args.dim,
                "world_size": args.world_size,
                "chunk_size": args.chunk_size,
                "repeats": args.repeats,
                "threads": args.threads,
                "device": args.device,
            }
            row[implementation] = run_configuration(settings)
            results.append(row[implementation])
        baseline = row.get("open_clip")
        for implementation, result in row.items():
            mem_ratio = time_ratio = cpu_ratio = "-"
            if baseline is not None:
                mem_ratio = f"{result['peak_mib'] / max(baseline['peak_mib'], 1e-9):.3f}"
                time_ratio = f"{result['time_s'] / baseline['time_s']:.3f}"
                cpu_ratio = f"{result['cpu_s'] / baseline['cpu_s']:.3f}"
            print(
                f"{batch:>12}  {implementation:<14} {result['peak_mib']:>9.1f} {mem_ratio:>11} "
                f"{result['time_s']:>8.3f} {time_ratio:>11} "
                f"{result['cpu_s']:>8.3f} {cpu_ratio:>11}",
                flush=True,
            )
        losses = {k: round(v["loss_mean"], 5) for k, v in row.items()}
        print(f"{'':>12}  (mean loss over ranks, must agree: {losses})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ray Train's overhead over plain DDP: the same loop, model, data and batch on 2 CPU workers.

(a) Ray Train V2: ``tauray.training.build_trainer`` (a ``TorchTrainer`` with 2 workers of 1 CPU,
gloo) on a local Ray started once for the whole benchmark; (b) ``torch.multiprocessing.spawn``
of 2 ranks that join a gloo process group and run the very same per-worker loop
(``tauray_trainers.loop.train_locally``), one intra-op thread each (as Ray gives a 1-CPU worker).

Steady-state throughput is the median over epochs 2..E of the training steps per second each
path's loop measures itself (training phase only: no evaluation, no checkpoint). Start-up is
printed separately: the run's wall time minus its training time (process start, process group,
data, evaluation at the first and last epoch, the final checkpoint, shutdown) and, for Ray, the
one-off ``ray.init``. Runs alternate (DDP, Ray, DDP, Ray, ...) so that a change in machine load
hits both paths alike.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/train_overhead.py --epochs 6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORKERS = 2


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": args.method,
        "epochs": args.epochs,
        "batch_size_per_worker": args.batch_size,
        "data": {"max_train_samples": args.samples, "max_val_samples": 256},
        "model": {"backbone": args.backbone, "dino_out_dim": 1024},
        # Evaluate at the first and last epoch only; checkpoint at the last only.
        "eval": {"every_epochs": 1000},
        "checkpoint": {"every_epochs": 1000, "keep": 1},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_rank(rank: int, port: int, config: dict[str, Any], out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORKERS
    )
    try:
        from tauray_trainers.loop import train_locally

        reports = train_locally(config, device="cpu")
        if rank == 0:
            with open(out, "w") as handle:
                json.dump(reports, handle)
    finally:
        dist.destroy_process_group()


def run_ddp(config: dict[str, Any]) -> tuple[list[dict], float]:
    """Plain DDP: spawn 2 ranks; returns rank 0's per-epoch metrics and the wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "reports.json")
        start = time.perf_counter()
        mp.spawn(_ddp_rank, args=(_free_port(), config, out), nprocs=WORKERS, join=True)
        wall = time.perf_counter() - start
        with open(out) as handle:
            return json.load(handle), wall


def run_ray(config: dict[str, Any]) -> tuple[list[dict], float]:
    """Ray Train: one TorchTrainer fit; returns rank 0's per-epoch metrics and the wall time."""
    from tauray.training import (
        build_trainer,
        fit_forwarding_reports,
        queue_reports_callback,
        report_queue,
    )

    reported = report_queue()
    reports: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(
            config,
            workers=WORKERS,
            gpus_per_worker=0,
            run_name="overhead",
            storage_path=scratch,
            callbacks=[queue_reports_callback(reported)],
        )
        start = time.perf_counter()
        fit_forwarding_reports(trainer, reported, reports.append)
        wall = time.perf_counter() - start
    reported.shutdown()
    return reports, wall


def summarise(reports: list[dict], wall: float, global_batch: int) -> dict[str, float]:
    """Steady-state steps/s (median of epochs 2..E) and start-up (wall minus training time)."""
    from tauray_trainers import metrics as names

    rates = [float(r[names.PERF_SAMPLES_PER_SECOND]) for r in reports]
    samples = [
        float(r[names.COST_SAMPLES_SEEN]) - (float(p[names.COST_SAMPLES_SEEN]) if p else 0.0)
        for p, r in zip([None, *reports[:-1]], reports, strict=True)
    ]
    training = sum(s / rate for s, rate in zip(samples, rates, strict=True))
    steady = rates[1:] if len(rates) > 1 else rates
    return {
        "steps_per_second": statistics.median(steady) / global_batch,
        "training_seconds": training,
        "startup_seconds": wall - training,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr", choices=["simclr", "clip", "dino"])
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64, help="per worker")
    parser.add_argument("--samples", type=int, default=1024, help="training samples")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 is excluded as warm-up)")
    config = _config(args)
    global_batch = args.batch_size * WORKERS

    from tauray.cluster import ray_session

    init_start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {"ddp": [], "ray": []}
    with ray_session(num_cpus=WORKERS) as _info:
        ray_init = time.perf_counter() - init_start
        for repeat in range(args.repeats):
            for name, runner in (("ddp", run_ddp), ("ray", run_ray)):
                reports, wall = runner(config)
                figures = summarise(reports, wall, global_batch)
                results[name].append(figures)
                print(
                    f"[{repeat + 1}/{args.repeats}] {name:3s} steady "
                    f"{figures['steps_per_second']:.3f} steps/s, "
                    f"start-up {figures['startup_seconds']:.1f} s, "
                    f"wall {figures['wall_seconds']:.1f} s",
                    flush=True,
                )
    ddp = statistics.median(r["steps_per_second"] for r in results["ddp"])
    ray_rate = statistics.median(r["steps_per_second"] for r in results["ray"])
    load = os.getloadavg()
    print()
    print(
        f"config: {args.method}/{args.backbone}, {WORKERS} CPU workers x batch {args.batch_size} "
        f"(global {global_batch}), {args.samples} samples, {args.epochs} epochs, "
        f"{args.repeats} repeats; load average at the end {load[0]:.1f}"
    )
    print(f"plain DDP (torch.multiprocessing): {ddp:.3f} steps/s (steady state, median)")
    print(f"Ray Train V2 TorchTrainer:         {ray_rate:.3f} steps/s (steady state, median)")
    print(f"ratio Ray / DDP:                   {ray_rate / ddp:.3f} (target >= 0.95)")
    print(
        "start-up + teardown (s): DDP "
        + ", ".join(f"{r['startup_seconds']:.1f}" for r in results["ddp"])
        + "; Ray "
        + ", ".join(f"{r['startup_seconds']:.1f}" for r in results["ray"])
        + f"; plus ray.init once {ray_init:.1f}"
    )
    if args.json:
        print(json.dumps({"ddp": results["ddp"], "ray": results["ray"], "ray_init": ray_init}))


if __name__ == "__main__":
    main()

"""Per-trial fixed cost of a tauray sweep: trial wall time minus time inside the training loop.

Trivial trials (1 epoch of SimCLR on 128 cluttered digits, small CNN) run one at a time through
tauray's own trial driver (:func:`tauray.tuning.tauray_trial`: a Ray Tune function trainable that
builds a Ray Train V2 ``TorchTrainer`` with :func:`tauray.training.build_trainer`) on one local
Ray, for 1- and 2-worker CPU trials and for several settings of Ray Train's environment
variables, interleaved (variant A, B, C, A, B, C, ...) so that changes in machine load hit every
variant alike. Timestamps (``time.time()``, one clock on one machine):

- Tune: ``on_trial_start`` / ``on_trial_complete`` (a Tune callback in this process);
- the trainable: its entry, the ``fit()`` call and ``fit()``'s return;
- each worker: its process's creation time, entry into and exit from the per-worker loop
  (:func:`tauray_trainers.loop.train_fn_per_worker`, wrapped by this benchmark).

Phases of one trial (rank 0's loop bounds; the fixed cost is everything but the loop):

1. trial actor: Tune starts the trial until the trainable runs (actor start, parameter fetch);
2. trainer build: config validation, ``TorchTrainer`` construction, imports in the trial actor;
3. workers spawn: ``fit()`` until rank 0's process exists (Train controller actor, its imports,
   placement group, the worker actor's process; 0 when Ray reused an already started process);
4. worker init: rank 0's process creation until its loop starts (imports of ray/torch/tauray,
   the gloo process group, waiting for the other rank);
5. loop (excluded): data, training, evaluation, the epoch's report and checkpoint;
6. shutdown: loop exit until ``fit()`` returns (last report's propagation, the controller's
   poll interval, worker group teardown);
7. trial teardown: ``fit()``'s return until Tune's completion event.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sweep_overhead.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Ray Train V2 settings compared (environment variables read by the Train controller, which
# inherits them from the trial driver; unset = Ray's default).
VARIANTS: dict[str, dict[str, str]] = {
    # Ray's default, set explicitly: tauray's local ray_session now lowers it for its processes.
    "default": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"},
    # The controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s):
    # reports and the end of training are seen only at a poll.
    "poll-0.1s": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"},
    # ... plus the preemption watcher actor and the state actor's reconciliation loop off.
    "poll-0.1s+lean": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    },
}
_ALL_VARS = sorted({key for env in VARIANTS.values() for key in env})

PHASES = (
    ("trial actor", "tune_start", "trainable_start"),
    ("trainer build", "trainable_start", "fit_start"),
    ("workers spawn", "fit_start", "worker_created"),
    ("worker init", "worker_created", "loop_start"),
    ("loop (excluded)", "loop_start", "loop_end"),
    ("shutdown", "loop_end", "fit_end"),
    ("trial teardown", "fit_end", "tune_complete"),
)


def _trial_config(samples: int, batch: int) -> dict[str, Any]:
    return {
        "method": "simclr",
        "epochs": 1,
        "batch_size_per_worker": batch,
        "data": {"name": "digits-cluttered", "max_train_samples": samples, "max_val_samples": 128},
        "model": {"backbone": "small_cnn"},
        "checkpoint": {"every_epochs": 1, "keep": 1},
    }


def _timed_loop(out_dir: str, tag: str) -> Callable[[dict[str, Any]], None]:
    """The per-worker loop, wrapped to write its entry/exit times (one JSON file per rank)."""

    def train_fn(config: dict[str, Any]) -> None:
        import psutil
        import ray.train
        from tauray_trainers.loop import train_fn_per_worker

        entered = time.time()
        rank = ray.train.get_context().get_world_rank()
        try:
            train_fn_per_worker(config)
        finally:
            record = {
                "loop_start": entered,
                "loop_end": time.time(),
                "process_created": psutil.Process().create_time(),
                "pid": os.getpid(),
            }
            Path(out_dir, f"{tag}.rank{rank}.json").write_text(json.dumps(record))

    return train_fn


def _bench_trial(config: dict[str, Any], out_dir: str, loop_config: dict[str, Any]) -> None:
    """Tune function trainable: tauray's trial driver with the variant's environment set."""
    import tauray_trainers.loop
    from ray import tune
    from tauray.tuning import TrialSetup, tauray_trial

    started = time.time()
    tag = tune.get_context().get_trial_id()
    for key in _ALL_VARS:
        os.environ.pop(key, None)
    os.environ.update(VARIANTS[config["variant"]])
    # build_trainer imports train_fn_per_worker from the module when called: patch it there.
    tauray_trainers.loop.train_fn_per_worker = _timed_loop(out_dir, tag)
    setup = TrialSetup(
        fixed_config=loop_config,
        workers=int(config["workers"]),
        gpus_per_worker=0.0,
        cpus_per_worker=1.0,
        train_storage=str(Path(out_dir, "train")),
    )
    fit_start = time.time()
    tauray_trial({"train_loop_config": {}}, setup)
    record = {"trainable_start": started, "fit_start": fit_start, "fit_end": time.time()}
    Path(out_dir, f"{tag}.trial.json").write_text(json.dumps(record))


def _import_costs() -> dict[str, float]:
    """Seconds to import each module in a fresh interpreter (what every worker process pays)."""
    costs = {}
    for module in ("torch", "torchvision", "ray.train.torch", "tauray_trainers.loop", "mlflow"):
        code = (
            f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        costs[module] = float(out.strip().splitlines()[-1])
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="workers per trial, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-imports", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    variants = args.variants.split(",")
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
    workers = [int(w) for w in args.workers.split(",")]

    if not args.skip_imports:
        print("import cost in a fresh interpreter (s):", flush=True)
        for module, seconds in _import_costs().items():
            print(f"  {module:<22} {seconds:6.2f}")

    from ray import tune
    from tauray.cluster import driver_resources, ray_session

    class _Clock(tune.Callback):
        def __init__(self) -> None:
            self.times: dict[str, dict[str, float]] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["tune_start"] = time.time()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["tune_complete"] = time.time()

    # Interleaved: (repeat, workers, variant) with the variant changing fastest.
    points = [
        {"variant": v, "workers": w, "repeat": r}
        for r in range(args.repeats)
        for w in workers
        for v in variants
    ]
    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="tauray-sweep-overhead-") as tmp:
        init_start = time.monotonic()
        with ray_session(num_cpus=2, log_to_driver=False) as info:
            print(f"ray.init: {time.monotonic() - init_start:.1f} s", flush=True)
            trainable = tune.with_resources(
                tune.with_parameters(
                    _unwrap_point,
                    out_dir=tmp,
                    loop_config=_trial_config(args.samples, args.batch_size),
                ),
                driver_resources(info),
            )
            tuner = tune.Tuner(
                trainable,
                param_space={"point": tune.grid_search(points)},
                tune_config=tune.TuneConfig(max_concurrent_trials=1),
                run_config=tune.RunConfig(
                    name="sweep-overhead", storage_path=tmp, callbacks=[clock], verbose=0
                ),
            )
            tuner.fit()
        rows = []
        for trial_id, times in clock.times.items():
            trial_file = Path(tmp, f"{trial_id}.trial.json")
            rank0 = Path(tmp, f"{trial_id}.rank0.json")
            if not (trial_file.exists() and rank0.exists()):
                print(f"trial {trial_id}: missing timestamps (failed?)")
                continue
            stamp = {**times, **json.loads(trial_file.read_text()), **json.loads(rank0.read_text())}
            stamp["worker_created"] = max(stamp["process_created"], stamp["fit_start"])
            point = json.loads(Path(tmp, f"{trial_id}.point.json").read_text())
            rows.append((point, stamp))

    print(f"\nper-trial phases (s), {len(rows)} trials, run order:")
    header = "variant          workers  " + "  ".join(f"{p[0]:>15}" for p in PHASES)
    print(header + "       wall  fixed cost")
    summary: dict[tuple[str, int], list[float]] = {}
    for point, stamp in sorted(rows, key=lambda row: row[1]["tune_start"]):
        spans = [stamp[b] - stamp[a] for _, a, b in PHASES]
        wall = stamp["tune_complete"] - stamp["tune_start"]
        fixed = wall - spans[4]
        summary.setdefault((point["variant"], point["workers"]), []).append(fixed)
        cells = "  ".join(f"{s:15.2f}" for s in spans)
        print(f"{point['variant']:<16} {point['workers']:7d}  {cells}  {wall:9.2f}  {fixed:10.2f}")
    print("\nfixed cost per trial (s): median [min-max]")
    for (variant, count), values in sorted(summary.items(), key=lambda item: item[0][1]):
        print(
            f"  {variant:<16} {count} worker(s): {statistics.median(values):6.2f} "
            f"[{min(values):.2f}-{max(values):.2f}] over {len(values)} trials"
        )
    print(f"load average at the end: {os.getloadavg()}")
    return 0


def _unwrap_point(config: dict[str, Any], out_dir: str, loop_config: dict[str, Any]) -> None:
    """Tune trainable: ``grid_search`` over dicts nests each under ``point``; record and run it."""
    from ray import tune

    point = config["point"]
    Path(out_dir, f"{tune.get_context().get_trial_id()}.point.json").write_text(json.dumps(point))
    _bench_trial(point, out_dir, loop_config)


if __name__ == "__main__":
    raise SystemExit(main())

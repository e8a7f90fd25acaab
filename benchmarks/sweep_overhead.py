"""Per-trial fixed cost of a tauray sweep: trial wall time minus time inside the training loop.

Trivial trials (1 epoch of SimCLR on 128 cluttered digits, small CNN) run one at a time through
tauray's own trial driver (:func:`tauray.sweep.tauray_trial`, the sweep's function trainable) on
one local Ray, in the two places a trial trains:

- ``in-trial``: a one-worker trial trains inside its Ray Tune trial actor, which Ray Tune hands to
  the next trial (``reuse_actors``): tauray's path for one-worker trials;
- ``ray-train``: a Ray Train ``TorchTrainer`` worker group per trial (a new trial actor per trial):
  tauray's path for every trial with several workers (a DDP job), and for one-worker trials with
  ``--trial-runner ray-train``.

Everything is measured from outside tauray, through public interfaces only (``time.time()``, one
clock on one machine):

- Ray Tune: ``on_trial_start`` / ``on_trial_result`` / ``on_trial_complete`` (a Tune callback in
  this process);
- the trainable: this benchmark's function trainable calls ``tauray_trial`` and notes when it was
  entered and when ``tauray_trial`` returned;
- the loop: the seconds the training loop itself accounts in its last report
  (``cost/worker_seconds`` / workers: from the loop's start, data and model set-up included, to
  the last epoch's metrics).

Phases of one trial (the fixed cost is everything but the loop):

0. since previous: the previous trial's completion until Tune starts this one (searcher,
   scheduler, resetting a reused actor; 0 for a session's first trial, which has none);
1. trial actor: Tune starts the trial until the trainable runs (actor start, its imports; nearly
   0 when Ray Tune reuses the previous trial's actor);
2. trial driver: ``tauray_trial``'s wall time minus the loop: config validation, for Ray Train
   the controller and worker actors, their imports, the process group, the last checkpoint's
   report and the worker group's shutdown;
3. loop (excluded);
4. trial teardown: ``tauray_trial``'s return until Tune's completion event.

Each setup runs each worker count in a Ray session of its own, as a sweep's trials all have one
shape (Ray Tune hands an actor only to a trial of the same resources); trials with several
workers always use Ray Train. The Ray Train variants (``--variants``) set environment variables
its controller reads, interleaved so that changes in machine load hit every variant alike.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sweep_overhead.py --repeats 3
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Ray Train V2 settings compared (environment variables read by the Train controller, which
# inherits them from the trial driver; unset = Ray's default).
VARIANTS: dict[str, dict[str, str]] = {
    "default": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"},
    # The controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s):
    # reports and the end of training are seen only at a poll.
    "poll-0.1s": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"},
}
_ALL_VARS = sorted({key for env in VARIANTS.values() for key in env})

# Setup -> (Ray Tune's reuse_actors, trained in the trial actor), as the sweep driver sets them.
SETUPS: dict[str, tuple[bool, bool]] = {"ray-train": (False, False), "in-trial": (True, True)}

PHASES = (
    ("since previous", "previous_complete", "tune_start"),
    ("trial actor", "tune_start", "trainable_start"),
    ("trial driver", None, None),
    ("loop (excluded)", None, None),
    ("trial teardown", "trainable_end", "tune_complete"),
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


def _bench_trial(config: dict[str, Any], out_dir: str, loop_config: dict[str, Any]) -> None:
    """Tune function trainable: tauray's trial driver with the point's Ray Train variant set."""
    from ray import tune

    from tauray.sweep import TrialSetup, tauray_trial

    started = time.time()
    point = config["point"]
    tag = tune.get_context().get_trial_id()
    for key in _ALL_VARS:
        os.environ.pop(key, None)
    os.environ.update(VARIANTS[point["variant"]])
    setup = TrialSetup(
        fixed_config=loop_config,
        workers=int(point["workers"]),
        gpus_per_worker=0.0,
        cpus_per_worker=1.0,
        train_storage=str(Path(out_dir, "train")),
        in_trial=bool(point["in_trial"]),
    )
    tauray_trial({"train_loop_config": {}}, setup)
    record = {"trainable_start": started, "trainable_end": time.time(), "point": point}
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


def _clock() -> Any:
    """A Ray Tune callback noting each trial's start, last loop seconds and completion."""
    from ray import tune

    class Clock(tune.Callback):
        def __init__(self) -> None:
            self.times: dict[str, dict[str, float]] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["tune_start"] = time.time()

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if "cost/worker_seconds" in result:
                self.times.setdefault(trial.trial_id, {})["worker_seconds"] = float(
                    result["cost/worker_seconds"]
                )

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["tune_complete"] = time.time()

    return Clock()


def _run_setup(
    setup: str, points: list[dict[str, Any]], loop_config: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run every point (all of one worker count) as one trial, one at a time, in a Ray session
    of its own; return one row of timestamps per finished trial, in run order."""
    from ray import tune

    from tauray.cluster import ray_session
    from tauray.sweep import TrialSetup, trial_resources

    reuse_actors, in_trial = SETUPS[setup]
    points = [{**point, "in_trial": in_trial, "setup": setup} for point in points]
    clock = _clock()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tauray-sweep-overhead-") as tmp:
        init_start = time.monotonic()
        with ray_session(num_cpus=2, log_to_driver=False) as info:
            print(f"[{setup}] ray.init: {time.monotonic() - init_start:.1f} s", flush=True)
            shape = TrialSetup({}, points[0]["workers"], 0.0, 1.0, tmp, in_trial=in_trial)
            trainable = tune.with_resources(
                tune.with_parameters(_bench_trial, out_dir=tmp, loop_config=loop_config),
                trial_resources(shape, info),
            )
            tuner = tune.Tuner(
                trainable,
                param_space={"point": tune.grid_search(points)},
                tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse_actors),
                run_config=tune.RunConfig(
                    name="sweep-overhead", storage_path=tmp, callbacks=[clock], verbose=0
                ),
            )
            tuner.fit()
        for trial_id, times in clock.times.items():
            trial_file = Path(tmp, f"{trial_id}.trial.json")
            if not trial_file.exists() or "worker_seconds" not in times:
                print(f"[{setup}] trial {trial_id}: missing timestamps (failed?)")
                continue
            rows.append({**times, **json.loads(trial_file.read_text())})
    rows.sort(key=lambda row: row["tune_start"])
    # Trials run one at a time: Ray Tune's work between one trial's end and the next one's
    # start (searcher, scheduler, resetting or starting the actor) is part of the trial's cost.
    previous = None
    for row in rows:
        row["previous_complete"] = row["tune_start"] if previous is None else previous
        previous = row["tune_complete"]
    return rows


def _spans(row: dict[str, Any]) -> list[float]:
    loop = row["worker_seconds"] / row["point"]["workers"]
    driver = row["trainable_end"] - row["trainable_start"] - loop
    spans = []
    for name, start, end in PHASES:
        if name == "trial driver":
            spans.append(driver)
        elif name == "loop (excluded)":
            spans.append(loop)
        else:
            spans.append(row[end] - row[start])
    return spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="workers per trial, comma-separated")
    parser.add_argument("--variants", default="poll-0.1s")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-imports", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    variants = args.variants.split(",")
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
    setups = args.setups.split(",")
    for name in setups:
        if name not in SETUPS:
            raise ValueError(f"--setups: {name!r} is not one of {', '.join(SETUPS)}")
    workers = [int(w) for w in args.workers.split(",")]

    if not args.skip_imports:
        print("import cost in a fresh interpreter (s):", flush=True)
        for module, seconds in _import_costs().items():
            print(f"  {module:<22} {seconds:6.2f}")

    loop_config = _trial_config(args.samples, args.batch_size)
    rows = []
    for setup in setups:
        for count in workers:
            if setup == "in-trial" and count > 1:
                continue  # a DDP job: always a Ray Train worker group
            # Interleaved: (repeat, variant) with the variant changing fastest.
            points = [
                {"variant": v, "workers": count, "repeat": r}
                for r in range(args.repeats)
                for v in variants
            ]
            rows += _run_setup(setup, points, loop_config)
    print(f"\nper-trial phases (s), {len(rows)} trials, run order:")
    header = "setup      variant     workers  " + "  ".join(f"{p[0]:>15}" for p in PHASES)
    print(header + "       wall  fixed cost")
    summary: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        point = row["point"]
        spans = _spans(row)
        wall = row["tune_complete"] - row["previous_complete"]
        fixed = wall - spans[3]
        summary.setdefault((point["setup"], point["variant"], point["workers"]), []).append(fixed)
        cells = "  ".join(f"{s:15.2f}" for s in spans)
        print(
            f"{point['setup']:<10} {point['variant']:<11} {point['workers']:7d}  {cells}  "
            f"{wall:9.2f}  {fixed:10.2f}"
        )
    print("\nfixed cost per trial (s): median [min-max]; ratio = median / ray-train's, same shape")
    for count in workers:
        for variant in variants:
            values = summary.get(("ray-train", variant, count), [])
            base = statistics.median(values) if values else float("nan")
            for setup in setups:
                values = summary.get((setup, variant, count), [])
                if not values:
                    continue
                median = statistics.median(values)
                print(
                    f"  {setup:<10} {variant:<11} {count} worker(s): {median:6.2f} "
                    f"[{min(values):.2f}-{max(values):.2f}] over {len(values)} trials, "
                    f"ratio {median / base:.2f}"
                )
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

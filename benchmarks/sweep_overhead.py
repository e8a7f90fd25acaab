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

0. since previous: the previous trial's completion until Tune starts this one (searcher,
   scheduler, resetting a reused actor; 0 for a session's first trial, which has none);
1. trial actor: Tune starts the trial until the trainable runs (actor start, parameter fetch,
   the trainable's imports: all nearly 0 when Ray Tune reuses the previous trial's actor);
2. trainer build: config validation, ``TorchTrainer`` construction, imports in the trial actor;
3. workers spawn: ``fit()`` until rank 0's process exists (Train controller actor, its imports,
   placement group, the worker actor's process; 0 for an in-trial run, whose rank 0 is the
   trial actor itself);
4. worker init: rank 0's process creation until its loop starts (imports of ray/torch/tauray,
   the gloo process group, waiting for the other rank; in-trial: starting the rank workers,
   once per trial actor);
5. loop (excluded): data, training, evaluation, the epoch's report and checkpoint;
6. shutdown: loop exit until ``fit()`` returns (last report's propagation, the controller's
   poll interval, worker group teardown);
7. trial teardown: ``fit()``'s return until Tune's completion event.

Setups (``--setups``), each in a Ray session of its own: ``fresh`` (a new trial actor per trial, a
Ray Train worker group per trial: ``--trial-runner ray-train``, tauray's path for trials with
several GPU workers, and for all trials before the in-trial runner), ``reuse`` (the same with Ray
Tune's ``reuse_actors``: measured for comparison only; tauray does not reuse a Ray Train trial's
actor, because stopping such a trial early leaves its worker group training and the actor cannot be
reset), ``in-trial`` (``reuse_actors`` and trials trained in the trial actor,
:mod:`tauray.in_trial`: rank 0 in the trial actor, each further rank in a rank worker actor the
actor keeps for the next trial; tauray's default for CPU trials). Each setup runs each worker count
in a Ray session of its own, as a sweep's trials all have one shape (Ray Tune hands an actor only
to a trial of the same resources).

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

# Setups, each run in a Ray session of its own per worker count: (Ray Tune's reuse_actors,
# trials trained in the trial actor). "fresh" is tauray before both and its ray-train runner;
# "in-trial" is tauray's default now.
SETUPS: dict[str, tuple[bool, bool]] = {
    "fresh": (False, False),
    "reuse": (True, False),
    "in-trial": (True, True),
}

PHASES = (
    ("since previous", "previous_complete", "tune_start"),
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
        import ray.train

        from tauray_trainers.loop import train_fn_per_worker

        entered = time.time()
        rank = ray.train.get_context().get_world_rank()
        try:
            train_fn_per_worker(config)
        finally:
            _write_loop_times(Path(out_dir, f"{tag}.rank{rank}.json"), entered)

    return train_fn


def _write_loop_times(path: Path, entered: float) -> None:
    """Write a loop's entry/exit times and its process's creation time (this process)."""
    import psutil

    record = {
        "loop_start": entered,
        "loop_end": time.time(),
        "process_created": psutil.Process().create_time(),
        "pid": os.getpid(),
    }
    path.write_text(json.dumps(record))


def _timed_run_worker(out_dir: str, tag: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``run_worker`` as an in-trial run calls it, wrapped to write its entry/exit times."""

    def run_worker(config: dict[str, Any], runtime: Any) -> Any:
        entered = time.time()
        try:
            return original(config, runtime)
        finally:
            _write_loop_times(Path(out_dir, f"{tag}.rank0.json"), entered)

    return run_worker


def _bench_trial(config: dict[str, Any], out_dir: str, loop_config: dict[str, Any]) -> None:
    """Tune function trainable: tauray's trial driver with the variant's environment set."""
    from ray import tune

    import tauray_trainers.loop
    from tauray.sweep.trial import TrialSetup, tauray_trial

    started = time.time()
    tag = tune.get_context().get_trial_id()
    for key in _ALL_VARS:
        os.environ.pop(key, None)
    os.environ.update(VARIANTS[config["variant"]])
    # build_trainer imports train_fn_per_worker from the module when called, and an in-trial
    # run looks run_worker up there: patch both (the originals kept for a reused actor).
    loop = tauray_trainers.loop
    original = loop.__dict__.setdefault("_bench_run_worker", loop.run_worker)
    loop.train_fn_per_worker = _timed_loop(out_dir, tag)
    loop.run_worker = _timed_run_worker(out_dir, tag, original)
    setup = TrialSetup(
        fixed_config=loop_config,
        workers=int(config["workers"]),
        gpus_per_worker=0.0,
        cpus_per_worker=1.0,
        train_storage=str(Path(out_dir, "train")),
        in_trial=bool(config["in_trial"]),
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

    from ray import tune

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
    rows = []
    for setup in setups:
        for count in workers:
            same_shape = [point for point in points if point["workers"] == count]
            loop_config = _trial_config(args.samples, args.batch_size)
            rows += _run_setup(setup, same_shape, loop_config, _Clock())
    print(f"\nper-trial phases (s), {len(rows)} trials, run order:")
    header = "setup          variant     workers  " + "  ".join(f"{p[0]:>15}" for p in PHASES)
    print(header + "       wall  fixed cost")
    summary: dict[tuple[str, str, int], list[float]] = {}
    for point, stamp in rows:
        spans = [stamp[b] - stamp[a] for _, a, b in PHASES]
        wall = stamp["tune_complete"] - stamp["previous_complete"]
        fixed = wall - spans[5]
        key = (point["setup"], point["variant"], point["workers"])
        summary.setdefault(key, []).append(fixed)
        cells = "  ".join(f"{s:15.2f}" for s in spans)
        print(
            f"{point['setup']:<14} {point['variant']:<11} {point['workers']:7d}  {cells}  "
            f"{wall:9.2f}  {fixed:10.2f}"
        )
    print("\nfixed cost per trial (s): median [min-max]; ratio = median / first setup's")
    for count in workers:
        for variant in variants:
            base = statistics.median(summary.get((setups[0], variant, count), [float("nan")]))
            for setup in setups:
                values = summary.get((setup, variant, count), [])
                if not values:
                    print(f"  {setup:<14} {variant:<11} {count} worker(s): no finished trial")
                    continue
                median = statistics.median(values)
                print(
                    f"  {setup:<14} {variant:<11} {count} worker(s): {median:6.2f} "
                    f"[{min(values):.2f}-{max(values):.2f}] over {len(values)} trials, "
                    f"ratio {median / base:.2f}"
                )
    print(f"load average at the end: {os.getloadavg()}")
    return 0


def _run_setup(
    setup: str, points: list[dict[str, Any]], loop_config: dict[str, Any], clock: Any
) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """Run every point (all of one worker count) as one trial, one at a time, in a Ray session
    configured as ``setup``."""
    from ray import tune

    from tauray.cluster import ray_session
    from tauray.sweep.trial import TrialSetup, trial_resources

    reuse_actors, in_trial = SETUPS[setup]
    points = [{**p, "in_trial": in_trial} for p in points]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tauray-sweep-overhead-") as tmp:
        init_start = time.monotonic()
        with ray_session(num_cpus=2, log_to_driver=False) as info:
            print(f"[{setup}] ray.init: {time.monotonic() - init_start:.1f} s", flush=True)
            shape = TrialSetup({}, points[0]["workers"], 0.0, 1.0, tmp, in_trial=in_trial)
            trainable = tune.with_resources(
                tune.with_parameters(_unwrap_point, out_dir=tmp, loop_config=loop_config),
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
            rank0 = Path(tmp, f"{trial_id}.rank0.json")
            if not (trial_file.exists() and rank0.exists()):
                print(f"[{setup}] trial {trial_id}: missing timestamps (failed?)")
                continue
            stamp = {**times, **json.loads(trial_file.read_text()), **json.loads(rank0.read_text())}
            stamp["worker_created"] = max(stamp["process_created"], stamp["fit_start"])
            point = json.loads(Path(tmp, f"{trial_id}.point.json").read_text())
            rows.append(({**point, "setup": setup}, stamp))
    rows.sort(key=lambda row: row[1]["tune_start"])
    # Trials run one at a time: Ray Tune's work between one trial's end and the next one's
    # start (searcher, scheduler, resetting or starting the actor) is part of the trial's cost.
    # The first trial of a session has no predecessor: its gap counts as 0.
    previous = None
    for _, stamp in rows:
        stamp["previous_complete"] = stamp["tune_start"] if previous is None else previous
        previous = stamp["tune_complete"]
    return rows


def _unwrap_point(config: dict[str, Any], out_dir: str, loop_config: dict[str, Any]) -> None:
    """Tune trainable: ``grid_search`` over dicts nests each under ``point``; record and run it."""
    from ray import tune

    point = config["point"]
    Path(out_dir, f"{tune.get_context().get_trial_id()}.point.json").write_text(json.dumps(point))
    _bench_trial(point, out_dir, loop_config)


if __name__ == "__main__":
    raise SystemExit(main())

"""Search efficiency: a dense τ grid vs tauray's TPE + ASHA sweep vs random search + ASHA.

All three search SimCLR's fixed temperature τ in [0.02, 1] on the bundled cluttered digits, with
every other setting fixed (the same ``train_loop_config`` and the same trainer seed in every
trial), on one local Ray shared by the three arms, one CPU worker per trial:

(a) grid: ``--grid-points`` τ values log-spaced over [0.02, 1], each trained for all its epochs
    (Ray Tune ``grid_search`` running tauray's own trial driver, :func:`tauray.tuning.tauray_trial`,
    no early stopping);
(b) tauray: the real sweep driver (:func:`tauray.tuning.plan_sweep` + :func:`run_sweep`): Optuna
    TPE (tauray's sampler settings) and ASHA (tauray's scheduler settings), ``--trials`` trials;
(c) random: the same driver, trial budget, seed and ASHA, with Optuna's ``RandomSampler`` in
    place of TPE (the only difference from (b)).

For each arm it prints the best final ``val/knn_top1`` of a finished trial (the value of the
model the trial ended with, early-stopped trials included) and the trial-epochs spent (sum over
trials of the epochs each trained), then the ratios against the grid. Trial-epochs and accuracy
do not depend on machine load; wall times are printed for information only.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import yaml

METRIC = "val/knn_top1"
TAU_LOW, TAU_HIGH = 0.02, 1.0


def _fixed(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every trial of every arm shares (only ``temperature.value`` varies)."""
    return {
        "method": "simclr",
        "epochs": args.epochs,
        "seed": 0,
        "batch_size_per_worker": args.batch_size,
        "data": {"name": "digits-cluttered", "max_train_samples": args.samples},
        "model": {"backbone": "small_cnn"},
        "optimizer": {"name": "adamw", "warmup_epochs": 1.0},
        "temperature": {"mode": "fixed"},
        "checkpoint": {"every_epochs": 1000, "keep": 1},
    }


def _write_space(folder: Path, fixed: dict[str, Any]) -> Path:
    """A space file searching only the fixed τ, log-uniform over [0.02, 1]."""
    space = {
        "name": "bench-simclr-fixed-tau",
        "description": "SimCLR's fixed temperature only (search-efficiency benchmark).",
        "method": "simclr",
        "objective": {"metric": METRIC, "mode": "max"},
        "fixed": {key: value for key, value in fixed.items() if key != "method"},
        "parameters": [
            {
                "key": "temperature/value",
                "distribution": "loguniform",
                "low": TAU_LOW,
                "high": TAU_HIGH,
                "help": "SimCLR's fixed τ.",
            }
        ],
    }
    path = folder / "bench-simclr-fixed-tau.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


class _Arm:
    """One arm's outcome: per-trial (τ, epochs trained, final metric, status)."""

    def __init__(self, name: str, rows: list[tuple[float, int, float | None, str]], wall: float):
        self.name = name
        self.rows = rows
        self.wall_s = wall

    @property
    def best(self) -> float:
        values = [v for _, _, v, status in self.rows if v is not None and status != "failed"]
        return max(values) if values else float("nan")

    @property
    def best_tau(self) -> float:
        ok = [(v, tau) for tau, _, v, status in self.rows if v is not None and status != "failed"]
        return max(ok)[1] if ok else float("nan")

    @property
    def trial_epochs(self) -> int:
        return sum(epochs for _, epochs, _, _ in self.rows)


def _rows(records: Sequence[Any]) -> list[tuple[float, int, float | None, str]]:
    rows = []
    for record in records:
        tau = float(record.config["temperature"]["value"]) if record.config else float("nan")
        rows.append((tau, record.epoch, record.value(METRIC), record.status))
    return rows


def run_grid(args: argparse.Namespace, fixed: dict[str, Any], storage: Path) -> _Arm:
    """(a): every τ of the grid for all its epochs, through tauray's trial driver."""
    from ray import tune
    from tauray.cluster import driver_resources, max_concurrent_trials
    from tauray.cluster import ray_session as session
    from tauray.trials import TrialLedger
    from tauray.tuning import TrialSetup, tauray_trial, trial_name

    grid = [float(t) for t in np.geomspace(TAU_LOW, TAU_HIGH, args.grid_points)]
    ledger = TrialLedger(fixed)
    started = time.monotonic()
    with session() as info:
        setup = TrialSetup(
            fixed_config=fixed,
            workers=1,
            gpus_per_worker=0.0,
            cpus_per_worker=1.0,
            train_storage=str(storage / "grid" / "train"),
        )
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(tauray_trial, setup=setup), driver_resources(info)
            ),
            param_space={"train_loop_config": {"temperature": {"value": tune.grid_search(grid)}}},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent_trials(info, 1, 0.0, 1.0),
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name="grid", storage_path=str(storage), callbacks=[ledger], verbose=0
            ),
        )
        tuner.fit()
    return _Arm("grid", _rows(ledger.ordered()), time.monotonic() - started)


@contextlib.contextmanager
def _random_sampler() -> Iterator[None]:
    """Swap tauray's TPE sampler for Optuna's RandomSampler (same seed) inside the driver."""
    import optuna

    def random_description(num_samples: int, concurrency: int, seed: int) -> tuple[Any, str]:
        return optuna.samplers.RandomSampler(seed=seed), f"RandomSampler(seed={seed})"

    with mock.patch("tauray.tuning.sampler_description", random_description):
        yield


def run_driver(
    name: str, args: argparse.Namespace, space_file: Path, storage: Path, tracking: str
) -> _Arm:
    """(b) / (c): the real sweep driver, ASHA, ``args.trials`` trials, seed ``args.seed``."""
    from tauray.tuning import SweepRequest, plan_sweep, run_sweep

    request = SweepRequest(
        space=str(space_file),
        experiment=f"bench-search-{name}",
        trials=args.trials,
        workers_per_trial=1,
        scheduler="asha",
        tracking_uri=tracking,
        storage_path=str(storage / name),
        seed=args.seed,
        num_cpus=args.cpus,
        log_models=False,
    )
    plan = plan_sweep(request)
    started = time.monotonic()
    context = _random_sampler() if name == "random" else contextlib.nullcontext()
    with context:
        summary = run_sweep(plan, echo=lambda line: print(f"  [{name}] {line}", flush=True))
    print(f"  [{name}] sampler: {summary.sampler}; scheduler: {summary.scheduler}", flush=True)
    return _Arm(name, _rows(summary.records), time.monotonic() - started)


def _print_arm(arm: _Arm) -> None:
    print(f"\n{arm.name}: {len(arm.rows)} trials, wall {arm.wall_s:.0f} s")
    print("    τ        epochs  knn_top1  status")
    for tau, epochs, value, status in sorted(arm.rows):
        shown = f"{value:.4f}" if value is not None else "  -   "
        print(f"    {tau:<8.4f} {epochs:6d}  {shown}    {status}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=512, help="max_train_samples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--grid-points", type=int, default=10)
    parser.add_argument("--trials", type=int, default=10, help="trials of (b) and (c)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of (b) and (c)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--arms", default="grid,tauray,random")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray
    from tauray.cluster import ray_session

    fixed = _fixed(args)
    arms: dict[str, _Arm] = {}
    with tempfile.TemporaryDirectory(prefix="tauray-search-bench-") as tmp:
        folder = Path(tmp)
        space_file = _write_space(folder, fixed)
        tracking = f"sqlite:///{folder / 'mlflow.db'}"
        print(
            f"SimCLR, digits-cluttered, {args.samples} training samples, batch {args.batch_size}, "
            f"{args.epochs} epochs, small_cnn, trainer seed 0, 1 CPU worker per trial, "
            f"{args.cpus}-CPU local Ray",
            flush=True,
        )
        with ray_session(num_cpus=args.cpus, log_to_driver=False):
            assert ray.is_initialized()
            for name in args.arms.split(","):
                if name == "grid":
                    arms[name] = run_grid(args, fixed, folder)
                else:
                    arms[name] = run_driver(name, args, space_file, folder, tracking)
                _print_arm(arms[name])

    print("\narm      best knn_top1  at τ      trial-epochs  wall s")
    for arm in arms.values():
        print(
            f"{arm.name:<8} {arm.best:13.4f}  {arm.best_tau:<8.4f} {arm.trial_epochs:12d}  "
            f"{arm.wall_s:6.0f}"
        )
    grid = arms.get("grid")
    if grid is not None:
        for arm in arms.values():
            if arm is grid:
                continue
            print(
                f"{arm.name} / grid: best {arm.best / grid.best:.4f} (target >= 0.99), "
                f"trial-epochs {arm.trial_epochs / grid.trial_epochs:.3f} (target <= 0.333)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

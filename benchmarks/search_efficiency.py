"""Search efficiency: a dense τ grid vs tauray's TPE + ASHA sweep vs random search + ASHA.

All three search SimCLR's fixed temperature τ in [0.02, 1] on the bundled cluttered digits, with
every other setting fixed (the same ``train_loop_config`` and the same trainer seed in every
trial), on one local Ray shared by the three arms, one CPU worker per trial:

(a) grid: ``--grid-points`` τ values log-spaced over [0.02, 1], each trained for all its epochs
    (Ray Tune ``grid_search`` running tauray's own trial driver, :func:`tauray.sweep.tauray_trial`,
    no early stopping);
(b) tauray: the real sweep driver (:func:`tauray.sweep.plan_sweep` + :func:`run_sweep`): Optuna
    TPE (tauray's sampler settings) and ASHA (tauray's scheduler settings), ``--trials`` trials;
(c) random: the same driver, trial budget, seed and ASHA, with ``sampler="random"`` (Optuna's
    ``RandomSampler``; ``tauray tune --sampler random``) in place of TPE (the only difference
    from (b)).

For each arm it prints the best final ``val/knn_top1`` of a finished trial (the value of the
model the trial ended with, early-stopped trials included) and the trial-epochs spent (sum over
trials of the epochs each trained), then the ratios against the grid. Trial-epochs and accuracy
do not depend on machine load; wall times are printed for information only.

``--taus`` replaces the grid's log-spaced values by given ones: with ``--arms grid`` and seeds no
arm searched with, it re-trains the τ values the arms recommended, so that each recommendation
is scored free of the luck of its own seed.

``--seeds`` repeats the whole comparison per seed: seed ``s`` is the trainer's seed (weights,
augmentations, batch order) in every trial of every arm and the sampler's seed of (b) and (c),
so each replicate compares the three arms on the same objective function of τ. The data (the
cluttered digits and their split) stays the same.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

METRIC = "val/knn_top1"
TAU_LOW, TAU_HIGH = 0.02, 1.0


def _fixed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The settings every trial of every arm shares (only ``temperature.value`` varies)."""
    data: dict[str, Any] = {"name": "digits-cluttered"}
    if args.samples:
        data["max_train_samples"] = args.samples
    return {
        "method": "simclr",
        "epochs": args.epochs,
        "seed": seed,
        "batch_size_per_worker": args.batch_size,
        "data": data,
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

    def __init__(
        self,
        name: str,
        rows: list[tuple[float, int, float | None, str]],
        wall: float,
        records: Sequence[Any] = (),
    ):
        self.name = name
        self.rows = rows
        self.wall_s = wall
        self.records = list(records)  # the trial records (per-epoch histories), grid arm only

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


def run_grid(args: argparse.Namespace, fixed: dict[str, Any], storage: Path, seed: int) -> _Arm:
    """(a): every τ of the grid for all its epochs, through tauray's trial driver."""
    from ray import tune

    from tauray.cluster import max_concurrent_trials
    from tauray.cluster import ray_session as session
    from tauray.sweep.ledger import TrialLedger
    from tauray.sweep.trial import TrialSetup, tauray_trial, trial_name, trial_resources

    grid = (
        [float(t) for t in args.taus.split(",")]
        if args.taus
        else [float(t) for t in np.geomspace(TAU_LOW, TAU_HIGH, args.grid_points)]
    )
    ledger = TrialLedger(fixed)
    started = time.monotonic()
    with session() as info:
        setup = TrialSetup(
            fixed_config=fixed,
            workers=1,
            gpus_per_worker=0.0,
            cpus_per_worker=1.0,
            train_storage=str(storage / f"grid-{seed}" / "train"),
            in_trial=True,  # one worker, trained in the trial actor as tauray's sweeps do
        )
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(tauray_trial, setup=setup), trial_resources(setup, info)
            ),
            param_space={"train_loop_config": {"temperature": {"value": tune.grid_search(grid)}}},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent_trials(info, 1, 0.0, 1.0),
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"grid-{seed}", storage_path=str(storage), callbacks=[ledger], verbose=0
            ),
        )
        tuner.fit()
    arm = _Arm("grid", _rows(ledger.ordered()), time.monotonic() - started, ledger.ordered())
    _print_rank_agreement(ledger.ordered(), args.epochs, seed)
    return arm


def _print_rank_agreement(records: Sequence[Any], epochs: int, seed: int) -> None:
    """How well the metric after e epochs ranks the grid's τ values as the final one does.

    Spearman's rank correlation, over the grid's trials, between ``val/knn_top1`` at epoch e and
    at the last epoch: what an early-stopping rung at epoch e gets to see. Near 1: a rung there
    keeps the right trials; near 0 or below: it stops them at random or keeps the wrong ones.
    """
    from scipy.stats import spearmanr

    curves = [dict(record.history.get(METRIC, [])) for record in records]
    curves = [curve for curve in curves if epochs in curve]
    if len(curves) < 3:
        return
    final = [curve[epochs] for curve in curves]
    cells = []
    for epoch in range(1, epochs):
        if all(epoch in curve for curve in curves):
            rho = spearmanr([curve[epoch] for curve in curves], final).statistic
            cells.append(f"{epoch}: {rho:+.2f}")
    print(f"seed {seed}, grid: rank agreement with the final kNN by epoch  " + ", ".join(cells))


def run_driver(
    name: str, args: argparse.Namespace, space_file: Path, storage: Path, tracking: str, seed: int
) -> _Arm:
    """(b) / (c): the real sweep driver, ASHA, ``args.trials`` trials, sampler seed ``seed``."""
    from tauray.sweep.driver import run_sweep
    from tauray.sweep.plan import SweepRequest, plan_sweep

    request = SweepRequest(
        space=str(space_file),
        experiment=f"bench-search-{name}-{seed}",
        trials=args.trials,
        workers_per_trial=1,
        scheduler="asha",
        tracking_uri=tracking,
        storage_path=str(storage / f"{name}-{seed}"),
        seed=seed,
        num_cpus=args.cpus,
        log_models=False,
        sampler="random" if name == "random" else "tpe",
        confirm_top=0,
    )
    plan = plan_sweep(request)
    started = time.monotonic()
    summary = run_sweep(plan, echo=lambda line: print(f"  [{name}] {line}", flush=True))
    print(f"  [{name}] sampler: {summary.sampler}; scheduler: {summary.scheduler}", flush=True)
    return _Arm(name, _rows(summary.records), time.monotonic() - started)


def _print_arm(arm: _Arm, seed: int) -> None:
    print(f"\nseed {seed}, {arm.name}: {len(arm.rows)} trials, wall {arm.wall_s:.0f} s")
    print("    τ        epochs  knn_top1  status")
    for tau, epochs, value, status in sorted(arm.rows):
        shown = f"{value:.4f}" if value is not None else "  -   "
        print(f"    {tau:<8.4f} {epochs:6d}  {shown}    {status}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument(
        "--samples", type=int, default=0, help="max_train_samples (0: the whole split, 1,437)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--grid-points", type=int, default=10)
    parser.add_argument(
        "--taus",
        default="",
        help="comma-separated τ values for the grid arm instead of --grid-points log-spaced "
        "ones (e.g. the τ each arm recommended, re-trained under held-out --seeds)",
    )
    parser.add_argument("--trials", type=int, default=9, help="trials of (b) and (c)")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated; each a replicate (trainer + sampler seed)"
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--arms", default="grid,tauray,random")
    parser.add_argument(
        "--histories",
        type=Path,
        help="write every grid trial's per-epoch metrics to this CSV (seed, tau, epoch, one "
        "column per metric) for benchmarks/early_signals.py",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray

    from tauray.cluster import ray_session

    seeds = [int(seed) for seed in args.seeds.split(",")]
    names = args.arms.split(",")
    replicates: list[dict[str, _Arm]] = []
    with tempfile.TemporaryDirectory(prefix="tauray-search-bench-") as tmp:
        folder = Path(tmp)
        tracking = f"sqlite:///{folder / 'mlflow.db'}"
        samples = args.samples or "all (1,437)"
        print(
            f"SimCLR, digits-cluttered, {samples} training samples, batch {args.batch_size}, "
            f"{args.epochs} epochs, small_cnn, seeds {seeds}, 1 CPU worker per trial, "
            f"{args.cpus}-CPU local Ray",
            flush=True,
        )
        with ray_session(num_cpus=args.cpus, log_to_driver=False):
            assert ray.is_initialized()
            for seed in seeds:
                fixed = _fixed(args, seed)
                (folder / f"space-{seed}").mkdir()
                space_file = _write_space(folder / f"space-{seed}", fixed)
                arms: dict[str, _Arm] = {}
                for name in names:
                    if name == "grid":
                        arms[name] = run_grid(args, fixed, folder, seed)
                    else:
                        arms[name] = run_driver(name, args, space_file, folder, tracking, seed)
                    _print_arm(arms[name], seed)
                replicates.append(arms)
                _print_summary(arms, seed)
    if args.histories is not None and "grid" in names:
        _write_histories(args.histories, seeds, [arms["grid"] for arms in replicates])
    if len(replicates) > 1 and "grid" in names:
        print(f"\nover {len(replicates)} seeds (mean [min-max] of the per-seed ratios):")
        for name in names:
            if name == "grid":
                continue
            best = [arms[name].best / arms["grid"].best for arms in replicates]
            cost = [arms[name].trial_epochs / arms["grid"].trial_epochs for arms in replicates]
            print(
                f"  {name} / grid: best {np.mean(best):.4f} [{min(best):.4f}-{max(best):.4f}] "
                f"(target >= 0.99), trial-epochs {np.mean(cost):.3f} "
                f"[{min(cost):.3f}-{max(cost):.3f}] (target <= 0.333); seeds meeting both: "
                f"{sum(b >= 0.99 and c <= 1 / 3 for b, c in zip(best, cost, strict=True))} of "
                f"{len(best)}"
            )
    return 0


def _write_histories(path: Path, seeds: Sequence[int], grids: Sequence[_Arm]) -> None:
    """One CSV row per grid trial and epoch: seed, τ, epoch and every metric it reported."""
    import csv

    rows: list[dict[str, Any]] = []
    for seed, grid in zip(seeds, grids, strict=True):
        for record in grid.records:
            tau = float(record.config["temperature"]["value"])
            by_epoch: dict[int, dict[str, Any]] = {}
            for metric, points in record.history.items():
                for epoch, value in points:
                    by_epoch.setdefault(epoch, {})[metric] = value
            rows += [
                {"seed": seed, "tau": tau, "epoch": epoch, **values}
                for epoch, values in sorted(by_epoch.items())
            ]
    columns = [
        "seed",
        "tau",
        "epoch",
        *sorted({k for row in rows for k in row} - {"seed", "tau", "epoch"}),
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"histories of {len(rows)} trial-epochs written to {path}", flush=True)


def _print_summary(arms: dict[str, _Arm], seed: int) -> None:
    print(f"\nseed {seed}: arm      best knn_top1  at τ      trial-epochs  wall s")
    for arm in arms.values():
        print(
            f"seed {seed}: {arm.name:<8} {arm.best:13.4f}  {arm.best_tau:<8.4f} "
            f"{arm.trial_epochs:12d}  {arm.wall_s:6.0f}"
        )
    grid = arms.get("grid")
    if grid is None:
        return
    for arm in arms.values():
        if arm is not grid:
            print(
                f"seed {seed}: {arm.name} / grid: best {arm.best / grid.best:.4f} "
                f"(target >= 0.99), trial-epochs {arm.trial_epochs / grid.trial_epochs:.3f} "
                "(target <= 0.333)",
                flush=True,
            )


if __name__ == "__main__":
    raise SystemExit(main())

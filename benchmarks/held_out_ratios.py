"""Held-out ratios of recorded recommendations: each arm's τ re-trained under held-out seeds.

``search_efficiency.py`` scores each arm's recommended τ under its ``--held-out-seeds`` in the
same run. This script scores recommendations an earlier run recorded (a CSV with the columns
``replicate, arm, tau, trial_epochs, confirm_trial_epochs``; ``arm`` ``grid`` is the reference
of its replicate) against held-out runs trained separately, all at one commit:

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py --arms grid \\
        --taus <every recommended τ> --seeds 1000,1001,...,1007 --held-out-seeds '' \\
        --histories held.csv
    python benchmarks/held_out_ratios.py benchmarks/search_efficiency_round4.csv held.csv

The held-out runs may come in several histories CSVs (a run per seed, say). A τ's held-out
score is its mean final ``val/knn_top1`` over every seed of those files (``--epochs`` each).
The script prints, per replicate, each arm's score and ratio to its grid's, then over the
replicates each arm's mean ratio with its Student-t 95% interval, its trial-epoch ratios
(search apart from confirmation) and the noise yardstick (:func:`search_efficiency.noise_line`:
the SD between held-out seeds at one τ, and the τ x seed interaction that moves a ratio).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from search_efficiency import noise_line, ratio_lines, read_finals


def held_out_scores(
    paths: Sequence[Path], epochs: int
) -> tuple[dict[float, dict[int, float]], list[int]]:
    """Every τ's final values under the held-out seeds of ``--histories`` CSVs, and the seeds.

    Raises:
        SystemExit: a seed in two files, a run that did not reach epoch ``epochs``, or one
            without a value.
    """
    by_tau: dict[float, dict[int, float]] = {}
    seeds: list[int] = []
    for path in paths:
        finals = read_finals(path, epochs)
        twice = sorted(set(finals) & set(seeds))
        if twice:
            raise SystemExit(f"{path}: seed {twice} is in an earlier held-out file too")
        for seed, trials in finals.items():
            for tau, value in trials.items():
                if value is None:
                    raise SystemExit(f"{path}: τ {tau} under seed {seed} ended without a value")
                by_tau.setdefault(tau, {})[seed] = value
        seeds += finals
    return by_tau, sorted(seeds)


def _score(by_tau: dict[float, dict[int, float]], tau: float, seeds: Sequence[int]) -> float:
    """τ's held-out score: its mean final value over every held-out seed."""
    for known, values in by_tau.items():
        if math.isclose(known, tau, rel_tol=1e-9):
            if len(values) != len(seeds):
                raise SystemExit(
                    f"τ {tau} was trained under {len(values)} of the {len(seeds)} held-out seeds"
                )
            return float(np.mean(list(values.values())))
    raise SystemExit(f"τ {tau} has no held-out runs; trained: {sorted(by_tau)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recommendations", type=Path, help="recorded recommendations CSV")
    parser.add_argument("held", type=Path, nargs="+", help="histories CSVs of the held-out runs")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--arms", default="", help="comma-separated arms to score (default: all)")
    args = parser.parse_args(argv)

    by_tau, seeds = held_out_scores(args.held, args.epochs)
    with args.recommendations.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if args.arms:
        rows = [row for row in rows if row["arm"] in {"grid", *args.arms.split(",")}]
    replicates = list(dict.fromkeys(row["replicate"] for row in rows))
    arms = list(dict.fromkeys(row["arm"] for row in rows if row["arm"] != "grid"))
    print(f"held-out seeds {seeds}, {args.epochs} epochs each")
    print("replicate  arm              τ        held-out  / grid  trial-epochs (confirmation)")
    ratios: dict[str, tuple[list[float], list[float], list[float]]] = {
        arm: ([], [], []) for arm in arms
    }
    for replicate in replicates:
        mine = {row["arm"]: row for row in rows if row["replicate"] == replicate}
        if "grid" not in mine:
            raise SystemExit(f"{args.recommendations}: replicate {replicate} has no grid row")
        grid_score = _score(by_tau, float(mine["grid"]["tau"]), seeds)
        grid_epochs = int(mine["grid"]["trial_epochs"])
        for arm, row in mine.items():
            tau, score = float(row["tau"]), _score(by_tau, float(row["tau"]), seeds)
            epochs, confirm = int(row["trial_epochs"]), int(row["confirm_trial_epochs"] or 0)
            print(
                f"{replicate:<10} {arm:<16} {tau:<8.4f} {score:8.4f}  {score / grid_score:6.3f}"
                f"  {epochs} ({confirm})"
            )
            if arm != "grid":
                held, search, total = ratios[arm]
                held.append(score / grid_score)
                search.append((epochs - confirm) / grid_epochs)
                total.append(epochs / grid_epochs)
    print(f"\nover {len(replicates)} replicate(s), ratios to the grid:")
    for arm, (held, search, total) in ratios.items():
        print("\n".join(ratio_lines(arm, held, search, total)))
    line = noise_line(by_tau)
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

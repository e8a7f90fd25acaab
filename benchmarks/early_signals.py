"""How early can a sweep rank τ? Candidate early-stopping signals against the final ranking.

An early-stopping rung at epoch e keeps the trials that look best at e. That is only as good as
the agreement between the ranking a signal gives at e and the ranking of the objective at the end
of training. This script reads per-epoch histories of a τ grid (written by
``search_efficiency.py --arms grid --histories FILE``: one row per trial and epoch) and prints,
per seed and averaged over seeds, Spearman's rank correlation between each signal at epochs
``--epochs`` (default 2, 3, 4) and the final ``val/knn_top1``.

Signals (each oriented so that larger means "looks better"):

- ``objective``: ``val/knn_top1`` at epoch e (what ASHA compares today);
- ``curve``: the final ``val/knn_top1`` predicted from epochs 1..e by a saturating learning curve
  fitted per trial, ``y(t) = a - b * t**(-c)`` (Domhan et al., IJCAI 2015, use such curves to
  extrapolate learning curves); with two points ``c`` is fixed at 1;
- ``alignment``: minus the validation pairs' alignment (Wang & Isola, ICML 2020; lower is
  better);
- ``uniformity``: minus the validation embeddings' uniformity (same paper; lower is better);
- ``infonce_at_reference``: minus the validation pairs' InfoNCE at one fixed τ = 0.1
  (``val/infonce_at_reference``): the contrastive loss on one scale for every trial;
- ``effective_rank``: RankMe, the validation embeddings' effective rank (Garrido et al., ICML
  2023, ``val/effective_rank``): how many dimensions the representation uses, label-free;
- any other column of the histories named with ``--signal NAME[:min]``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/search_efficiency.py --arms grid --seeds 0,1,2 \\
        --histories grid.csv
    python benchmarks/early_signals.py grid.csv [more.csv ...]
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tauray.sweep.signals import predicted_final

OBJECTIVE = "val/knn_top1"
History = dict[str, dict[int, float]]  # metric -> epoch -> value, of one trial


def read_histories(path: Path) -> dict[int, dict[float, History]]:
    """``seed -> τ -> metric -> epoch -> value`` from a histories CSV (columns ``seed``, ``tau``,
    ``epoch`` and one per metric; an empty cell is a metric not reported that epoch)."""
    trials: dict[int, dict[float, History]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            seed, tau, epoch = int(row["seed"]), float(row["tau"]), int(row["epoch"])
            history = trials[seed].setdefault(tau, defaultdict(dict))
            for key, text in row.items():
                if key not in ("seed", "tau", "epoch") and text not in ("", None):
                    history[key][epoch] = float(text)
    return dict(trials)


def signal_functions(extra: Sequence[str] = ()) -> dict[str, Callable[[History, int, int], float]]:
    """Signal name -> ``f(history, epoch, final_epoch)``, larger meaning "looks better"."""

    def at(metric: str, sign: float) -> Callable[[History, int, int], float]:
        return lambda history, epoch, final: sign * history.get(metric, {}).get(epoch, math.nan)

    def curve(history: History, epoch: int, final: int) -> float:
        points = {e: v for e, v in history.get(OBJECTIVE, {}).items() if e <= epoch}
        return predicted_final(points, final) if points else math.nan

    signals: dict[str, Callable[[History, int, int], float]] = {
        "objective": at(OBJECTIVE, 1.0),
        "curve": curve,
        "alignment": at("val/alignment", -1.0),
        "uniformity": at("val/uniformity", -1.0),
        "infonce_at_reference": at("val/infonce_at_reference", -1.0),
        "effective_rank": at("val/effective_rank", 1.0),
    }
    for spec in extra:
        name, _, mode = spec.partition(":")
        signals[name] = at(name, -1.0 if mode == "min" else 1.0)
    return signals


def rank_agreement(
    trials: Mapping[float, History], epochs: Sequence[int], signals: Mapping[str, Callable]
) -> dict[str, dict[int, float]]:
    """Signal -> epoch -> Spearman's ρ between the signal at that epoch and the final objective,
    over the trials that reached the final epoch."""
    from scipy.stats import spearmanr

    final_epoch = max(max(h.get(OBJECTIVE, {0: 0})) for h in trials.values())
    complete = [h for h in trials.values() if final_epoch in h.get(OBJECTIVE, {})]
    final = [h[OBJECTIVE][final_epoch] for h in complete]
    table: dict[str, dict[int, float]] = {}
    for name, signal in signals.items():
        table[name] = {}
        for epoch in epochs:
            early = [signal(h, epoch, final_epoch) for h in complete]
            if len(complete) < 3 or any(math.isnan(value) for value in early):
                table[name][epoch] = math.nan
                continue
            table[name][epoch] = float(spearmanr(early, final).statistic)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("histories", type=Path, nargs="+", help="one or more histories CSVs")
    parser.add_argument("--epochs", default="2,3,4")
    parser.add_argument("--signal", action="append", default=[], metavar="NAME[:min]")
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",")]
    signals = signal_functions(args.signal)
    seeds: dict[int, dict[float, History]] = {}
    for path in args.histories:  # files of other seeds (their columns may differ)
        seeds.update(read_histories(path))
    tables = {seed: rank_agreement(trials, epochs, signals) for seed, trials in seeds.items()}
    header = f"{'signal':<22}" + "".join(f"{'epoch ' + str(e):>22}" for e in epochs)
    print(f"Spearman's ρ with the final {OBJECTIVE} ranking, per seed {sorted(seeds)} and mean")
    print(header)
    for name in signals:
        cells = []
        for epoch in epochs:
            values = [tables[seed][name][epoch] for seed in sorted(seeds)]
            shown = " ".join(f"{v:+.2f}" for v in values)
            known = [v for v in values if not math.isnan(v)]
            mean = f"{np.mean(known):+.2f}" if known else "  nan"
            cells.append(f"{shown} | {mean}")
        print(f"{name:<22}" + "".join(f"{cell:>22}" for cell in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

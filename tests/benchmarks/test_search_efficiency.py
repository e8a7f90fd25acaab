"""benchmarks/search_efficiency.py: the grid it reads back from a histories file is the grid
that was trained (final value per τ of the replicate asked for), and a grid cut short is
refused rather than scored."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from bench_modules import load

search_efficiency = load("search_efficiency")
METRIC = "val/knn_top1"


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["seed", "tau", "epoch", METRIC, "train/loss"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(seed: int, taus: dict[float, list[float]]) -> list[dict[str, object]]:
    return [
        {"seed": seed, "tau": tau, "epoch": epoch, METRIC: value, "train/loss": 1.0}
        for tau, values in taus.items()
        for epoch, value in enumerate(values, start=1)
    ]


def test_the_grid_of_one_replicate_is_read_back(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "grid.csv",
        _rows(0, {0.05: [0.1, 0.3, 0.4], 0.5: [0.2, 0.35, 0.3]})
        + _rows(1, {0.05: [0.1, 0.2, 0.25], 0.5: [0.2, 0.3, 0.45]}),
    )
    arm = search_efficiency._grid_from_histories(path, 1, 3)
    assert sorted(arm.rows) == [(0.05, 3, 0.25, "completed"), (0.5, 3, 0.45, "completed")]
    assert (arm.best, arm.best_tau, arm.champion_tau, arm.trial_epochs) == (0.45, 0.5, 0.5, 6)
    arm = search_efficiency._grid_from_histories(path, 0, 3)
    assert (arm.best, arm.champion_tau) == (0.4, 0.05)


def test_a_grid_cut_short_or_missing_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "grid.csv", _rows(0, {0.05: [0.1, 0.3, 0.4], 0.5: [0.2, 0.35]}))
    with pytest.raises(SystemExit, match=r"τ \[0.5\] did not reach epoch 3"):
        search_efficiency._grid_from_histories(path, 0, 3)
    with pytest.raises(SystemExit, match="no grid trials of seed 4"):
        search_efficiency._grid_from_histories(path, 4, 3)


def test_held_out_scores_and_their_ratio() -> None:
    grid = search_efficiency._Arm("grid", [(0.07, 16, 0.5, "completed")], 0.0)
    tauray = search_efficiency._Arm("tauray", [(0.2, 16, 0.45, "completed")], 0.0)
    grid.held_out, tauray.held_out = [0.48, 0.50], [0.47, 0.49]
    assert grid.held_out_score == pytest.approx(0.49)
    assert tauray.held_out_score / grid.held_out_score == pytest.approx(0.48 / 0.49)

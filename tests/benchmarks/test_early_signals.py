"""benchmarks/early_signals.py: the rank agreement it prints is computed right."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from bench_modules import load

early_signals = load("early_signals")


def test_rank_agreement_against_the_final_ranking(tmp_path: Path) -> None:
    # Four τ: small τ start slowly and finish best (the final order is the reverse of epoch 2's).
    finals = {0.02: 0.50, 0.05: 0.45, 0.2: 0.40, 1.0: 0.30}
    rows = []
    for tau, final in finals.items():
        for epoch in range(1, 9):
            knn = final - (final - 0.1) / epoch  # saturates towards `final`
            early = 0.3 - 0.1 * (final - 0.3)  # the early epochs rank the τ backwards
            rows.append(
                {
                    "seed": 0,
                    "tau": tau,
                    "epoch": epoch,
                    "val/knn_top1": early if epoch <= 2 else knn,
                    "val/alignment": 1 - final,  # lower alignment: better final model
                    "val/uniformity": "",
                }
            )
    path = tmp_path / "grid.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    trials = early_signals.read_histories(path)[0]
    assert set(trials) == set(finals)
    table = early_signals.rank_agreement(
        trials, [2, 4], early_signals.signal_functions(["val/alignment:min"])
    )
    assert table["objective"][2] == pytest.approx(-1.0)  # epoch 2 ranks them backwards
    assert table["objective"][4] == pytest.approx(1.0)
    assert table["alignment"][2] == pytest.approx(1.0)
    assert table["val/alignment"][2] == pytest.approx(1.0)
    assert math.isnan(table["uniformity"][2])  # never reported


def test_main_prints_a_row_per_signal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "grid.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seed", "tau", "epoch", "val/knn_top1"])
        for tau, slope in ((0.1, 0.3), (0.2, 0.2), (0.5, 0.1)):
            for epoch in (1, 2, 3, 4):
                writer.writerow([1, tau, epoch, slope * epoch])
    assert early_signals.main([str(path), "--epochs", "2,3"]) == 0
    out = capsys.readouterr().out
    assert "objective" in out and "curve" in out and "+1.00" in out

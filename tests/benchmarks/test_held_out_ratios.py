"""benchmarks/held_out_ratios.py and the ratio summary it shares with search_efficiency.py: the
held-out scores, ratios, intervals and trial-epoch shares it prints are computed right."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from bench_modules import load
from scipy import stats

held_out_ratios = load("held_out_ratios")
search_efficiency = load("search_efficiency")
METRIC = "val/knn_top1"
FINALS = {  # (seed, τ) -> final value; epoch 1 is 0.1 below it
    (1000, 0.05): 0.50, (1000, 0.2): 0.45, (1000, 0.1): 0.52,
    (1001, 0.05): 0.46, (1001, 0.2): 0.47, (1001, 0.1): 0.50,
    (1002, 0.05): 0.48, (1002, 0.2): 0.43, (1002, 0.1): 0.47,
}  # fmt: skip


def _histories(path: Path, finals: dict[tuple[int, float], float]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["seed", "tau", "epoch", METRIC])
        writer.writeheader()
        for (seed, tau), value in finals.items():
            writer.writerow({"seed": seed, "tau": tau, "epoch": 1, METRIC: value - 0.1})
            writer.writerow({"seed": seed, "tau": tau, "epoch": 2, METRIC: value})
    return path


def _recommendations(path: Path) -> Path:
    path.write_text(
        "replicate,arm,tau,trial_epochs,confirm_trial_epochs\n"
        "r0,grid,0.05,20,0\nr0,tauray,0.1,15,6\nr0,random,0.2,5,0\n"
        "r1,grid,0.1,20,0\nr1,tauray,0.05,11,6\nr1,random,0.1,7,\n"
    )
    return path


def _mean(tau: float) -> float:
    return float(np.mean([value for (_, t), value in FINALS.items() if t == tau]))


def test_recorded_recommendations_are_scored_on_every_held_out_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The held-out seeds in two files, as two runs write them.
    first = {key: value for key, value in FINALS.items() if key[0] != 1002}
    held = [
        _histories(tmp_path / "held-a.csv", first),
        _histories(tmp_path / "held-b.csv", {k: v for k, v in FINALS.items() if k[0] == 1002}),
    ]
    recommendations = _recommendations(tmp_path / "rec.csv")
    code = held_out_ratios.main([str(recommendations), *map(str, held), "--epochs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "held-out seeds [1000, 1001, 1002], 2 epochs each" in out
    tauray = [_mean(0.1) / _mean(0.05), _mean(0.05) / _mean(0.1)]
    random = [_mean(0.2) / _mean(0.05), 1.0]
    rows = [line.split() for line in out.splitlines() if line.startswith("r0 ")]
    assert ["r0", "tauray", "0.1000", f"{_mean(0.1):.4f}", f"{tauray[0]:.3f}", "15", "(6)"] in rows
    interval = stats.t.interval(0.95, 1, loc=np.mean(tauray), scale=stats.sem(tauray))
    assert (
        f"  tauray / grid: held-out {tauray[0]:.3f}, {tauray[1]:.3f}; mean {np.mean(tauray):.3f}, "
        f"SD {np.std(tauray, ddof=1):.3f}, 95% interval {interval[0]:.3f}-{interval[1]:.3f}"
    ) in out
    assert "trial-epochs: search 0.45, 0.25 (mean 0.35); with confirmation 0.75, 0.55" in out
    assert f"  random / grid: held-out {random[0]:.3f}, {random[1]:.3f}" in out
    assert "trial-epochs: search 0.25, 0.35 (mean 0.30)" in out
    floor = sum(value >= 0.97 for value in random)
    assert f">= 0.97 in {floor} of 2 replicates; <= 1/3 of the grid's trial-epochs with " in out
    sds = [np.std([FINALS[(s, t)] for s in (1000, 1001, 1002)], ddof=1) for t in (0.05, 0.1, 0.2)]
    pooled = np.sqrt(np.mean(np.square(sds)))
    assert (
        f"noise yardstick (3 τ x 3 held-out seeds): SD between the seeds at one τ {pooled:.4f}, "
        f"so a held-out score (the mean of 3 seeds) moves by about {pooled / np.sqrt(3):.4f}"
    ) in out
    interaction = _additive_model_residual_sd(FINALS)
    assert f"the τ x seed interaction SD is {interaction:.4f}" in out


def _additive_model_residual_sd(finals: dict[tuple[int, float], float]) -> float:
    """The residual SD of value ~ τ + seed, fitted by least squares on indicator columns."""
    keys = sorted(finals)
    seeds, taus = sorted({s for s, _ in keys}), sorted({t for _, t in keys})
    design = np.array(
        [[1.0] + [s == x for x in seeds[1:]] + [t == x for x in taus[1:]] for s, t in keys]
    )
    values = np.array([finals[key] for key in keys])
    _, residual, rank, _ = np.linalg.lstsq(design, values, rcond=None)
    return float(np.sqrt(residual[0] / (len(keys) - rank)))


def test_a_seed_that_trains_every_tau_worse_moves_scores_not_ratios() -> None:
    shifted = {
        tau: {
            seed: value - (0.1 if seed == 1002 else 0.0)
            for (seed, t), value in FINALS.items()
            if t == tau
        }
        for tau in (0.05, 0.1, 0.2)
    }
    plain = {tau: {s: v for (s, t), v in FINALS.items() if t == tau} for tau in (0.05, 0.1, 0.2)}
    before, after = search_efficiency.noise_line(plain), search_efficiency.noise_line(shifted)
    assert before is not None and after is not None
    within = lambda line: float(line.split("at one τ ")[1].split(",")[0])  # noqa: E731
    interaction = lambda line: float(line.split("interaction SD is ")[1].split(",")[0])  # noqa: E731
    shared = lambda line: float(line.split("every τ has SD ")[1].split(" ")[0])  # noqa: E731
    assert within(after) > within(before) + 0.02
    assert shared(after) > shared(before) + 0.03
    assert interaction(after) == interaction(before)
    # A τ missing under one seed is left out of the table; one τ has no interaction to report.
    one = search_efficiency.noise_line({0.05: plain[0.05], 0.1: {1000: 0.5}})
    assert one is not None and "(1 τ x 3 held-out seeds)" in one and "interaction" not in one
    assert search_efficiency.noise_line({0.05: {1000: 0.5}}) is None


def test_a_tau_missing_under_a_held_out_seed_is_refused(tmp_path: Path) -> None:
    finals = {key: value for key, value in FINALS.items() if key != (1002, 0.2)}
    held = _histories(tmp_path / "held.csv", finals)
    recommendations = _recommendations(tmp_path / "rec.csv")
    with pytest.raises(SystemExit, match=r"τ 0.2 was trained under 2 of the 3 held-out seeds"):
        held_out_ratios.main([str(recommendations), str(held), "--epochs", "2"])
    # An arm left out needs no held-out runs of its τ.
    assert (
        held_out_ratios.main([str(recommendations), str(held), "--epochs", "2", "--arms", "tauray"])
        == 0
    )
    with pytest.raises(SystemExit, match=r"seed \[1000, 1001, 1002\] is in an earlier held-out"):
        held_out_ratios.held_out_scores([held, held], 2)
    recommendations.write_text(recommendations.read_text().replace("0.2,5", "0.3,5"))
    with pytest.raises(SystemExit, match=r"τ 0.3 has no held-out runs"):
        held_out_ratios.main([str(recommendations), str(_histories(held, FINALS)), "--epochs", "2"])


def test_the_fixed_targets_are_judged_per_replicate_and_on_average() -> None:
    lines = search_efficiency.ratio_lines("a", [1.0, 0.96, 1.02], [0.3, 0.3, 0.3], [0.9, 0.3, 1])
    assert lines[0].startswith("  a / grid: held-out 1.000, 0.960, 1.020; mean 0.993, SD 0.031")
    assert lines[2] == (
        "    fixed targets: mean >= 0.99 met; >= 0.97 in 2 of 3 replicates; <= 1/3 of the "
        "grid's trial-epochs with confirmation in 1 of 3"
    )
    one = search_efficiency.ratio_lines("a", [0.95], [0.3], [0.3])
    assert one[0] == "  a / grid: held-out 0.950; mean 0.950"  # no spread from one replicate

"""The confirmation phase's parts without Ray: picking, seeds, the phase file, the champion."""

from __future__ import annotations

import csv
import inspect
import io
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy import stats as scipy_stats

from tauray import layout
from tauray.cli.tune import tune_command
from tauray.layout import confirmation as confirmation_layout
from tauray.sweep.confirm import (
    CONFIRM_FILE,
    SAME_CONFIGURATION_SHARE,
    ConfirmationPhase,
    budget_cut_text,
    confirmation_result,
    fresh_seeds,
    pick_configurations,
    plan_jobs,
    result_lines,
    same_configuration,
)
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.plan import (
    DEFAULT_CONFIRM_SEEDS,
    DEFAULT_CONFIRM_TOP,
    SweepRequest,
    plan_sweep,
)
from tauray.trials import PHASE_CONFIRM, PHASE_SEARCH, TrialRecord, resolve_train_loop_config
from tauray_spaces import Objective, ParameterSpec
from tauray_trainers.config import flatten

KNN = Objective("val/knn_top1", "max")
FIXED = {"method": "simclr", "epochs": 4, "seed": 7}


def _search(index: int, tau: float, knn: float, status: str = "completed") -> TrialRecord:
    sampled = {"temperature": {"mode": "fixed", "value": tau}}
    config = resolve_train_loop_config(FIXED, {"train_loop_config": sampled})
    record = TrialRecord(f"s{index}", index, flatten(sampled), config, status=status)
    record.metrics = {"val/knn_top1": knn}
    return record


def _confirm(index: int, of: TrialRecord, seed: int, knn: float | None, status: str = "completed"):
    sampled = {**of.sampled, "seed": seed}
    record = TrialRecord(f"c{index}", index, sampled, of.config, status=status)
    record.phase, record.confirms = PHASE_CONFIRM, of.trial_id
    if knn is not None:
        record.metrics = {"val/knn_top1": knn}
    return record


# ---- options ---------------------------------------------------------------------------------


def test_tune_defaults_are_the_plans(tmp_path: Path) -> None:
    defaults = inspect.signature(tune_command).parameters
    assert defaults["confirm_top"].default == DEFAULT_CONFIRM_TOP == 3
    assert defaults["confirm_seeds"].default == DEFAULT_CONFIRM_SEEDS == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confirm_top": -1}, r"--confirm-top must be >= 0 \(0: no confirmation phase\), got -1"),
        ({"confirm_seeds": 0}, "--confirm-seeds must be >= 1, got 0"),
    ],
)
def test_confirmation_options_fail_before_ray(tmp_path: Path, changes: dict, message: str) -> None:
    request = SweepRequest(space="simclr-temperature", **changes)
    with pytest.raises(ValueError, match=message):
        plan_sweep(request, cwd=tmp_path, environ={}, check_tracking=False)


# ---- picking and seeds -------------------------------------------------------------------------


def test_the_best_distinct_search_configurations_are_picked() -> None:
    best = _search(1, 0.1, 0.60)
    same_values = _search(2, 0.1, 0.50)  # the same configuration, a worse draw
    second = _search(3, 0.2, 0.55, status="stopped")
    failed = _search(4, 0.3, 0.99, status="failed")
    third = _search(5, 0.4, 0.40)
    confirmation = _confirm(6, best, 8, 0.99)  # never a candidate itself
    records = [best, same_values, second, failed, third, confirmation]
    picked = pick_configurations(records, [KNN], 2)
    assert [record.trial_id for record in picked] == ["s1", "s3"]
    assert [r.trial_id for r in pick_configurations(records, [KNN], 5)] == ["s1", "s3", "s5"]


TAU = ParameterSpec("temperature/value", "loguniform", low=0.02, high=1.0, log=True)
MODE = ParameterSpec("temperature/mode", "choice", choices=("fixed", "learnable"))


def test_near_identical_values_of_a_continuous_parameter_are_one_configuration() -> None:
    # 0.1098 and 0.1101 (0.07% of τ's log range) and 0.1101 and 0.1148 (1.07%) are one
    # configuration; 0.1101 and 0.1250 (3.2%) are two.
    best = _search(1, 0.1101, 0.60)
    twins = [_search(2, 0.1098, 0.59), _search(3, 0.1148, 0.58)]
    second = _search(4, 0.1250, 0.55)
    third = _search(5, 0.02, 0.40)
    records = [best, *twins, second, third]
    picked = pick_configurations(records, [KNN], 3, [TAU, MODE])
    assert [record.trial_id for record in picked] == ["s1", "s4", "s5"]
    # Without the space's parameters only equal values are one configuration.
    assert [r.trial_id for r in pick_configurations(records, [KNN], 3)] == ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"temperature/value": 0.1}, {"temperature/value": 0.1 * 1.07}, True),
        ({"temperature/value": 0.1}, {"temperature/value": 0.1 * 1.09}, False),
        (
            {"temperature/value": 0.1, "temperature/mode": "fixed"},
            {"temperature/value": 0.1, "temperature/mode": "learnable"},
            False,
        ),
        ({"temperature/value": 0.1}, {"temperature/value": 0.1, "batch_size": 64}, False),
        ({"batch_size": 64}, {"batch_size": 65}, False),  # no continuous range: equal or not
        ({"batch_size": 64}, {"batch_size": 64}, True),
        ({"optimizer/lr": 0.010}, {"optimizer/lr": 0.0109}, True),  # 1.8% of a linear range
        ({"optimizer/lr": 0.010}, {"optimizer/lr": 0.0111}, False),  # 2.2%
    ],
)
def test_same_configuration_compares_continuous_values_by_their_share_of_the_range(
    a: dict, b: dict, same: bool
) -> None:
    lr = ParameterSpec("optimizer/lr", "uniform", low=0.0, high=0.05)
    batch = ParameterSpec("batch_size", "int", low=16, high=256)
    assert same_configuration(a, b, [TAU, MODE, lr, batch]) is same
    assert same_configuration(b, a, [TAU, MODE, lr, batch]) is same
    assert SAME_CONFIGURATION_SHARE == 0.02


def test_a_range_position_is_linear_or_logarithmic_and_none_without_a_range() -> None:
    assert TAU.range_position(0.02) == 0.0
    assert TAU.range_position(1.0) == pytest.approx(1.0)
    assert TAU.range_position(math.sqrt(0.02)) == pytest.approx(0.5)
    assert ParameterSpec("a", "uniform", low=1.0, high=3.0).range_position(2.5) == 0.75
    assert ParameterSpec("a", "uniform", low=0.0, high=1.0, step=0.1).range_position(0.5) is None
    assert ParameterSpec("a", "int", low=1, high=9).range_position(5) is None
    assert MODE.range_position("fixed") is None
    assert TAU.range_position("0.1") is None
    assert TAU.range_position(float("nan")) is None
    assert TAU.range_position(True) is None


def test_confirmation_runs_get_fresh_seeds_and_keep_the_configuration() -> None:
    assert fresh_seeds(7, 2) == [8, 9]
    jobs = plan_jobs([_search(1, 0.1, 0.6), _search(2, 0.2, 0.5)], 2)
    assert [(job.confirms, job.seed) for job in jobs] == [
        ("s1", 8),
        ("s1", 9),
        ("s2", 8),
        ("s2", 9),
    ]
    config = resolve_train_loop_config(FIXED, jobs[1].trial_config())
    assert config["seed"] == 9  # init, augmentations and order change ...
    assert config["data"]["seed"] == resolve_train_loop_config(FIXED, {})["data"]["seed"]
    assert config["temperature"] == _search(1, 0.1, 0.6).config["temperature"]  # ... τ stays


def test_the_ledger_marks_the_confirmation_runs() -> None:
    jobs = plan_jobs([_search(1, 0.1, 0.6)], 1)
    phase = ConfirmationPhase(jobs)
    ledger = TrialLedger(FIXED)
    ledger.expect_confirmations(phase.confirmations())
    search = ledger.record_for(
        SimpleNamespace(trial_id="a", config={"train_loop_config": {"temperature": {"value": 0.1}}})
    )
    confirmation = ledger.record_for(SimpleNamespace(trial_id="b", config=jobs[0].trial_config()))
    assert (search.phase, search.confirms) == (PHASE_SEARCH, None)
    assert (confirmation.phase, confirmation.confirms, confirmation.index) == (
        PHASE_CONFIRM,
        "s1",
        2,
    )
    assert confirmation.config["seed"] == 8


def test_the_phase_file_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    assert ConfirmationPhase.load(tmp_path) is None
    phase = ConfirmationPhase(plan_jobs([_search(1, 0.1, 0.6)], 2), {"records": [1]}, {"a": "b"})
    phase.save(tmp_path)
    assert ConfirmationPhase.load(tmp_path) == phase
    (tmp_path / CONFIRM_FILE).write_text("{")
    with pytest.raises(ValueError, match=f"cannot read .*{CONFIRM_FILE}"):
        ConfirmationPhase.load(tmp_path)


# ---- the champion ------------------------------------------------------------------------------


def _sweep() -> tuple[list[TrialRecord], ConfirmationPhase]:
    lucky = _search(1, 0.1, 0.70)  # the best single run ...
    steady = _search(2, 0.2, 0.62)
    early = _search(3, 0.3, 0.90, status="stopped")  # truncated: its search value never counts
    records = [
        lucky,
        steady,
        early,
        _confirm(4, lucky, 8, 0.50),
        _confirm(5, lucky, 9, 0.52),  # ... of a configuration with a worse mean
        _confirm(6, steady, 8, 0.63),
        _confirm(7, steady, 9, 0.61, status="failed"),
        _confirm(8, early, 8, 0.50),
        _confirm(9, early, 9, None, status="stopped"),
    ]
    return records, ConfirmationPhase(plan_jobs([lucky, steady, early], 2))


def test_the_champion_is_the_best_mean_not_the_best_run() -> None:
    records, phase = _sweep()
    result = confirmation_result(records, phase, KNN)
    assert [item.search.trial_id for item in result.configurations] == ["s2", "s1", "s3"]
    steady = result.configurations[0]
    assert result.champion is steady
    assert [run.trial_id for run in steady.runs] == ["s2", "c6"]  # the failed run is left out
    assert steady.stats.n == 2 and steady.stats.mean == pytest.approx(0.625)
    assert result.champion_run.trial_id == "c6"  # its best-scoring run gives the model
    assert [run.trial_id for run in result.configurations[2].runs] == ["c8"]
    expected = scipy_stats.ttest_ind([0.62, 0.63], [0.70, 0.50, 0.52], equal_var=False)
    assert result.comparison.p_value == pytest.approx(expected.pvalue)
    assert "indistinguishable on this evidence" in result.verdict


def test_a_minimised_objective_picks_the_lowest_mean() -> None:
    records, phase = _sweep()
    result = confirmation_result(records, phase, Objective("val/knn_top1", "min"))
    assert [item.search.trial_id for item in result.configurations] == ["s3", "s1", "s2"]
    assert result.champion_run.trial_id == "c8"


def test_confirmation_csv_has_a_row_per_configuration() -> None:
    records, phase = _sweep()
    result = confirmation_result(records, phase, KNN)
    text = result.csv_text({"s1": "run-1", "s2": "run-2", "s3": "run-3"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(confirmation_layout.CONFIRMATION_COLUMNS)
    assert [row["search_run_id"] for row in rows] == ["run-2", "run-1", "run-3"]
    assert rows[0]["temperature_mode"] == "fixed" and float(rows[0]["temperature"]) == 0.2
    assert int(rows[0]["n"]) == 2 and float(rows[0]["mean"]) == pytest.approx(0.625)
    low, high = scipy_stats.t.interval(0.95, 1, loc=0.625, scale=scipy_stats.sem([0.62, 0.63]))
    assert float(rows[0]["ci95_low"]) == pytest.approx(low)
    assert float(rows[0]["ci95_high"]) == pytest.approx(high)
    assert int(rows[2]["n"]) == 1 and math.isnan(float(rows[2]["sd"]))
    metrics = layout.champion_metrics(result.champion.stats)
    assert metrics["champion/mean"] == pytest.approx(0.625) and metrics["champion/n"] == 2
    assert set(metrics) == {f"champion/{name}" for name in layout.CHAMPION_STATS}


def test_the_summary_says_what_the_budget_cut() -> None:
    records, phase = _sweep()
    cut = budget_cut_text(records, phase)
    assert cut == (
        "the time budget ended the confirmation: 4 of 6 runs completed "
        "(1 stopped, 1 failed, 0 never started)"
    )
    lines = result_lines(confirmation_result(records, phase, KNN, cut=cut))
    assert lines[1].startswith("  trial 2, τ 0.2 fixed: mean 0.625") and "champion" in lines[1]
    assert lines[-1] == f"Note: {cut}."
    assert lines[3] == "  trial 3, τ 0.3 fixed: mean 0.5, sd -, n 1"
    finished = [r for r in records if r.status != "stopped" or r.confirms is None]
    assert budget_cut_text(finished, ConfirmationPhase(phase.jobs[:5])) is None
    assert "1 never started" in budget_cut_text(finished, phase)


def test_confirmation_runs_are_tagged_with_their_phase_and_search_run() -> None:
    search = _search(1, 0.1, 0.6)
    tags = layout.trial_tags(search, "space")
    assert tags[layout.TAG_PHASE] == "search" and layout.TAG_CONFIRMS not in tags
    tags = layout.trial_tags(_confirm(2, search, 8, None), "space", "run-of-s1")
    assert tags[layout.TAG_PHASE] == "confirm" and tags[layout.TAG_CONFIRMS] == "run-of-s1"


def test_confirmation_csv_reads_back_exactly() -> None:
    records, phase = _sweep()
    result = confirmation_result(records, phase, KNN)
    rows = confirmation_layout.read_confirmation_csv(
        result.csv_text({"s1": "r1", "s2": "r2", "s3": "r3"})
    )
    assert [row["search_run_id"] for row in rows] == ["r2", "r1", "r3"]
    first = result.configurations[0].stats
    assert (rows[0]["mean"], rows[0]["ci95_low"], rows[0]["n"]) == (
        first.mean,
        first.ci95_low,
        2,
    )
    assert math.isnan(rows[2]["ci95_high"]) and rows[2]["n"] == 1


def test_the_temperature_plot_draws_confirmed_means_with_their_intervals() -> None:
    from matplotlib.container import ErrorbarContainer

    from tauray.plots import objective_vs_temperature

    records, phase = _sweep()
    points = confirmation_result(records, phase, KNN).plot_points()
    assert [(p.temperature, p.mode) for p in points] == [
        (0.2, "fixed"),
        (0.1, "fixed"),
        (0.3, "fixed"),
    ]
    figure = objective_vs_temperature(records, "val/knn_top1", points)
    (axes,) = figure.axes
    bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    assert sum(1 for c in bars if c.has_yerr) == 2  # one run only: a mean without a bar
    ((low, high),) = [segment[:, 1] for segment in bars[0].lines[2][0].get_segments()]
    stats = confirmation_result(records, phase, KNN).configurations[0].stats
    assert (low, high) == pytest.approx((stats.ci95_low, stats.ci95_high))
    plain = objective_vs_temperature(records, "val/knn_top1")
    assert not plain.axes[0].containers


def test_the_report_says_what_the_confirmation_found() -> None:
    from tauray.report.build import SweepReport, SweepRun
    from tauray.report.text import confirmation_lines
    from tauray.tracking import TrackingTarget

    records, phase = _sweep()
    result = confirmation_result(records, phase, KNN)
    run_ids = {record.trial_id: f"run-{record.trial_id}" for record in records}
    sweep = SweepRun("p", "sweep", "FINISHED", {}, {layout.TAG_VERDICT: result.verdict})
    report = SweepReport(
        "e", "1", TrackingTarget("http://x", None, "flag"), sweep, [], (KNN,), "sweep",
        records, run_ids,
        confirmation=confirmation_layout.read_confirmation_csv(result.csv_text(run_ids)),
    )  # fmt: skip
    lines = confirmation_lines(report)
    assert lines[1] == "Confirmation (val/knn_top1, mean and 95% t-interval over seeds):"
    assert lines[2].startswith("  trial 2, τ 0.2 fixed: mean 0.625, sd 0.007071, n 2, 95% CI [")
    assert lines[2].endswith("<- champion")
    assert lines[4] == "  trial 3, τ 0.3 fixed: mean 0.5, sd -, n 1"
    assert lines[-1] == result.verdict
    report.confirmation = []
    assert confirmation_lines(report) == []


def test_the_trial_table_marks_the_confirmation_runs() -> None:
    from tauray.ranking import rank_trials
    from tauray.tables import trial_table

    records, _ = _sweep()
    text = trial_table(records, [KNN], rank_trials(records, [KNN]))
    assert "#6c" in text and "#2 " in text and "#2c" not in text
    assert "#Nc: a confirmation run" in text
    search_only = [record for record in records if record.confirms is None]
    assert "#Nc" not in trial_table(search_only, [KNN], rank_trials(search_only, [KNN]))

"""tauray report: a finished sweep read back from a real ``mlflow server``, through the real CLI.

The sweeps are written without Ray by the sweep driver's own writers: ``plan_sweep`` plans a real
``tauray tune`` sweep, :class:`~tauray.tracking.SweepRecorder` opens its parent run with the
params ``tauray tune`` logs, and the :class:`~tauray.sweep.ledger.TrialLedger` +
:class:`~tauray.sweep.mlflow_logger.MlflowTrialLogger` callbacks receive the trial events Ray Tune
would send
(stub ``Trial`` objects, per-epoch results with cumulative cost counters). So the runs have
exactly the layout real sweeps write.
"""

from __future__ import annotations

import datetime
import json
import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from ray.tune.experiment import Trial

from tauray import cli, layout, notes, ui_layout
from tauray.layout import TAG_SPACE, TAG_STORAGE, TAG_SWEEP, config_from_params, config_params
from tauray.ranking import dominates, pareto_front, rank_trials
from tauray.report import SweepReport, SweepRun, format_report, rank, text_scatter, write_report
from tauray.run_file import load_run_file
from tauray.sweep import driver
from tauray.sweep import ledger as ledger_module
from tauray.sweep.describe import describe_sweep
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.mlflow_logger import MlflowTrialLogger
from tauray.sweep.plan import SweepPlan, SweepRequest, plan_sweep
from tauray.tracking import SweepRecorder, resolve_tracking_target
from tauray.trials import TrialRecord
from tauray_spaces import Objective
from tauray_trainers.config import build_config

EPOCHS = 2
NAN_ERROR = """ray.train.WorkerGroupError: Training failed due to worker errors:
tauray_trainers.loop.NonFiniteLossError: non-finite loss (nan) at step 7 (epoch 2), temperature 0.02
"""


@dataclass
class PlannedTrial:
    """One trial of a test sweep: what the search space sampled and what it will report."""

    trial_id: str
    sampled: dict[str, Any]
    knn: list[float]  # val/knn_top1 per reported epoch
    seconds_per_epoch: float
    ends: str  # complete | error | never (left running)
    temperatures: list[float] | None = None


@dataclass
class WrittenSweep:
    experiment: str
    sweep_name: str
    parent_run_id: str
    ledger: TrialLedger
    planned: dict[str, PlannedTrial]
    recorder: SweepRecorder
    plan: SweepPlan


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _result(epoch: int, trial: PlannedTrial) -> dict[str, Any]:
    seconds = trial.seconds_per_epoch * epoch
    temperature = (
        trial.temperatures[epoch - 1]
        if trial.temperatures
        else trial.sampled.get("temperature", {}).get("value", 0.1)
    )
    return {
        "epoch": epoch,
        "training_iteration": epoch,
        "train/loss": 5.0 - epoch,
        "train/temperature": temperature,
        "val/knn_top1": trial.knn[epoch - 1],
        "cost/worker_seconds": seconds,
        "cost/cpu_seconds": seconds,
        "cost/gpu_seconds": 0.0,
        "cost/samples_seen": 1000 * epoch,
        "time_total_s": seconds,
        "config": {"train_loop_config": trial.sampled},
    }


def write_sweep(
    uri: str,
    experiment: str,
    planned: list[PlannedTrial],
    objectives: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> WrittenSweep:
    """Record a finished sweep in MLflow the way ``tauray tune``'s driver does."""
    plan = plan_sweep(
        SweepRequest(
            space="simclr-temperature",
            experiment=experiment,
            tracking_uri=uri,
            overrides=(f"epochs={EPOCHS}", "data.max_train_samples=256"),
            objectives=objectives,
        ),
        check_tracking=False,
        now=now,
    )
    recorder = SweepRecorder(plan.target, plan.experiment)
    parent = recorder.start_sweep_run(
        plan.sweep_name,
        params=driver.sweep_run_params(plan),
        tags={
            TAG_SWEEP: plan.sweep_name,
            TAG_SPACE: plan.space.name,
            TAG_STORAGE: str(plan.sweep_dir),
        },
    )
    ledger = TrialLedger(plan.fixed_config)
    logger = MlflowTrialLogger(recorder, ledger, parent, plan.space.name, log_models=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "_error_text", lambda trial: NAN_ERROR)
        for each in planned:
            trial = Trial(
                "tauray_trial",
                config={"train_loop_config": each.sampled},
                trial_id=each.trial_id,
                stub=True,
            )
            for callback in (ledger, logger):
                callback.on_trial_start(iteration=0, trials=[], trial=trial)
            for epoch in range(1, len(each.knn) + 1):
                for callback in (ledger, logger):
                    callback.on_trial_result(
                        iteration=epoch, trials=[], trial=trial, result=_result(epoch, each)
                    )
            event = {"complete": "on_trial_complete", "error": "on_trial_error"}.get(each.ends)
            if event:
                for callback in (ledger, logger):
                    getattr(callback, event)(iteration=0, trials=[], trial=trial)
    assert logger.errors == 0
    assert all(record.config is not None for record in ledger.records.values())
    recorder.end_run(parent, "FINISHED")
    return WrittenSweep(
        experiment,
        plan.sweep_name,
        parent,
        ledger,
        {t.trial_id: t for t in planned},
        recorder,
        plan,
    )


def _fixed(value: float, lr: float = 1e-3, batch: int = 64) -> dict[str, Any]:
    return {
        "temperature": {"mode": "fixed", "value": value},
        "optimizer": {"lr": lr, "weight_decay": 1e-4},
        "batch_size_per_worker": batch,
    }


SINGLE = [
    PlannedTrial("aaaa0001", _fixed(0.1), [0.45, 0.60], 10.0, "complete"),
    PlannedTrial(
        "aaaa0002",
        {
            "temperature": {"mode": "learnable", "value": 0.07, "lr_multiplier": 2.0},
            "optimizer": {"lr": 2e-5, "weight_decay": 1e-6},
            "batch_size_per_worker": 128,
        },
        [0.55, 0.70],
        12.0,
        "complete",
        temperatures=[0.06, 0.05],
    ),
    PlannedTrial(
        "aaaa0003",
        {
            "temperature": {
                "mode": "scheduled",
                "schedule": "cosine",
                "min": 0.05,
                "max": 0.5,
                "period_epochs": 2.0,
            },
            "optimizer": {"lr": 3e-4, "weight_decay": 1e-3},
            "batch_size_per_worker": 32,
        },
        [0.40],
        9.0,
        "complete",  # stopped early by the scheduler after one epoch
        temperatures=[0.5],
    ),
    # Logged the highest value of all before its loss went NaN: never the best.
    PlannedTrial("aaaa0004", _fixed(0.02), [0.95], 8.0, "error"),
    PlannedTrial("aaaa0005", _fixed(0.3, lr=2e-3), [0.40, 0.65], 5.0, "complete"),
]


def _naive_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Trials no other trial beats on one of (quality max, cost min) without losing the other."""
    front = set()
    for key, (quality, cost) in points.items():
        beaten = any(
            other_quality >= quality
            and other_cost <= cost
            and (other_quality > quality or other_cost < cost)
            for other, (other_quality, other_cost) in points.items()
            if other != key
        )
        if not beaten:
            front.add(key)
    return front


@pytest.fixture(scope="module")
def single_sweep(mlflow_uri: str) -> WrittenSweep:
    return write_sweep(mlflow_uri, f"report-single-{uuid.uuid4().hex[:8]}", SINGLE)


def _run_report(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 200


def _table_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Top trials"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("("):
            break
        rows.append(line.replace("stopped early", "stopped_early").split())
    return rows


# ---- a single-objective sweep -------------------------------------------------------------------


def test_single_objective_report_ranks_costs_and_writes_files(
    single_sweep: WrittenSweep, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_report(
        [single_sweep.experiment, "--tracking-uri", mlflow_uri, "--output", str(tmp_path)], capsys
    )
    assert code == 0, err
    assert f"Sweep {single_sweep.sweep_name}" in out
    assert "5 trials: 3 completed, 1 stopped early, 1 failed" in out
    assert "Objective (the sweep's): val/knn_top1 (max)" in out

    # The table: ranked by the last val/knn_top1 (failed trial #4 listed last, never ranked).
    rows = _table_rows(out)
    assert [row[1] for row in rows] == ["#2", "#5", "#1", "#3", "#4"]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "-"]
    assert rows[3][2] == "stopped_early"
    assert rows[4][2] == "failed"
    header = next(line for line in out.splitlines() if line.lstrip().startswith("rank"))
    for column in ("val/knn_top1", "τ mode", "τ end", "lr", "worker-s", "CPU-s", "samples"):
        assert column in header
    best_row = rows[0]
    assert "0.7" in best_row and "learnable" in best_row and "0.05" in best_row
    assert "24.0" in best_row and "2,000" in best_row  # 2 epochs x 12 CPU-s, 1,000 samples
    assert "trial #4 failed: NonFiniteLossError: non-finite loss (nan) at step 7" in out
    assert "Best trial (best by val/knn_top1): #2 (aaaa0002)" in out

    # The best configuration: a `tauray train --config` file that builds the trial's config.
    config_path = tmp_path / "best_config.yaml"
    tree, run_keys = load_run_file(config_path)
    assert build_config(tree).to_dict() == single_sweep.ledger.records["aaaa0002"].config
    assert run_keys == {"workers": 1, "gpus_per_worker": 0.0, "cpus_per_worker": 1.0}
    assert f"tauray train --config {config_path}" in out
    printed = out.split("settings that differ from the defaults (train_loop_config):\n")[1]
    printed_yaml = yaml.safe_load(printed.split("\nTrain it:")[0])
    assert build_config(printed_yaml).to_dict() == build_config(tree).to_dict()

    # The pictures, as PNG files and as text.
    for name in ("objective_vs_temperature", "quality_vs_cost", "optimization_history"):
        _assert_png(tmp_path / f"{name}.png")
    assert "val/knn_top1 vs final temperature τ" in out
    assert "val/knn_top1 vs CPU-s" in out

    # Cost frontier of a single-objective sweep: no other trial both better and cheaper.
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["best"] == "aaaa0002"
    assert summary["ranked"] == ["aaaa0002", "aaaa0005", "aaaa0001", "aaaa0003"]
    assert summary["pareto_front"] == []
    assert summary["cost_metric"] == "cost/cpu_seconds"
    points = {
        t.trial_id: (t.knn[-1], t.seconds_per_epoch * len(t.knn))
        for t in SINGLE
        if t.ends == "complete"
    }
    assert (
        set(summary["cost_frontier"])
        == _naive_front(points)
        == {
            "aaaa0002",
            "aaaa0003",
            "aaaa0005",
        }
    )
    by_id = {trial["trial_id"]: trial for trial in summary["trials"]}
    assert by_id["aaaa0004"]["status"] == "failed"
    assert by_id["aaaa0002"]["cost"]["cost/worker_seconds"] == pytest.approx(24.0)
    assert by_id["aaaa0003"]["epoch"] == 1
    assert (tmp_path / "report.txt").read_text().strip() == out.strip()


def test_a_finished_sweep_describes_itself_in_mlflow_and_still_reports(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = write_sweep(mlflow_uri, f"report-described-{uuid.uuid4().hex[:8]}", SINGLE)
    recorder, parent = written.recorder, written.parent_run_id
    records = written.ledger.ordered()
    best = rank_trials(records, written.plan.objectives).best
    assert best is not None
    best_run_id = recorder.find_trial_run(parent, best.trial_id)
    for _ in range(2):  # a finished sweep resumed again: rewritten, no point logged twice
        describe_sweep(
            recorder, written.plan, parent, records, best, best_run_id, ("models:/m@champion", "1")
        )
    client = recorder.client
    curve = client.get_metric_history(parent, ui_layout.OBJECTIVE_BEST_SO_FAR)
    expected = ui_layout.best_so_far(records, "val/knn_top1", "max")
    assert [(entry.step, entry.value) for entry in curve] == expected
    assert expected[-1][1] == best.value("val/knn_top1")
    best_run = client.get_run(best_run_id or "")
    note = client.get_run(parent).data.tags[notes.NOTE_TAG]
    link = f"[{best_run.info.run_name}](#/experiments/{recorder.experiment_id}/runs/{best_run_id})"
    assert link in note and "`models:/m@champion` (version 1)" in note
    description = client.get_experiment(recorder.experiment_id).tags[notes.NOTE_TAG]
    assert f"[{written.sweep_name}](#/experiments/{recorder.experiment_id}/runs/{parent})" in (
        description
    )
    code, out, err = _run_report(
        [written.experiment, "--tracking-uri", mlflow_uri, "--output", str(tmp_path)], capsys
    )
    assert code == 0, err
    assert f"#{best.index}" in out


def test_objective_override_gives_a_pareto_front_and_top_limits_the_table(
    single_sweep: WrittenSweep, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_report(
        [
            single_sweep.experiment,
            "--tracking-uri",
            mlflow_uri,
            "--output",
            str(tmp_path),
            "--top",
            "2",
            "--objective",
            "val/knn_top1:max",
            "--objective",
            "cost/cpu_seconds:min",
        ],
        capsys,
    )
    assert code == 0, err
    assert "Objectives (from --objective)" in out
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["pareto_front"] == ["aaaa0002", "aaaa0005", "aaaa0003"]  # by val/knn_top1
    assert len(list((tmp_path / "pareto").glob("trial-*.yaml"))) == 3
    rows = _table_rows(out)
    assert [row[1] for row in rows] == ["#2", "#5", "#4"]  # --top 2, then the failed trial
    assert "2 more ranked trial(s) not shown (--top 4)" in out


def test_unknown_objective_metric_is_a_one_line_error(
    single_sweep: WrittenSweep, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run_report(
        [
            single_sweep.experiment,
            "--tracking-uri",
            mlflow_uri,
            "--output",
            str(tmp_path),
            "--objective",
            "val/knn_top5:max",
        ],
        capsys,
    )
    assert code == 2
    assert err.count("\n") == 1
    assert "'val/knn_top5'" in err and "val/knn_top1" in err


# ---- a multi-objective sweep --------------------------------------------------------------------


def _multi_trials() -> list[PlannedTrial]:
    rng = random.Random(11)
    planned = []
    for number in range(1, 7):
        final = round(rng.uniform(0.3, 0.8), 3)
        knn = [round(final * (0.6 + 0.2 * epoch), 4) for epoch in range(EPOCHS)]
        knn[-1] = final
        planned.append(
            PlannedTrial(
                f"bbbb{number:04d}",
                _fixed(round(rng.uniform(0.03, 0.9), 3), batch=rng.choice([32, 64, 128])),
                knn,
                round(rng.uniform(2.0, 20.0), 2),
                "complete",
            )
        )
    planned[3].knn = planned[3].knn[:1]  # stopped early after one epoch
    # Failed after logging an unbeatable point (cheap and good): must not join the front.
    planned.append(PlannedTrial("bbbb0007", _fixed(0.05), [0.99], 0.5, "error"))
    # Still running (the sweep's driver died): listed, not ranked.
    planned.append(PlannedTrial("bbbb0008", _fixed(0.2), [0.98], 0.4, "never"))
    return planned


@pytest.fixture(scope="module")
def multi_sweep(mlflow_uri: str) -> WrittenSweep:
    return write_sweep(
        mlflow_uri,
        f"report-multi-{uuid.uuid4().hex[:8]}",
        _multi_trials(),
        objectives=("val/knn_top1:max", "cost/cpu_seconds:min"),
    )


def test_multi_objective_sweep_reports_the_pareto_front(
    multi_sweep: WrittenSweep, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_report(
        [multi_sweep.experiment, "--tracking-uri", mlflow_uri, "--output", str(tmp_path)], capsys
    )
    assert code == 0, err
    assert "Objectives (the sweep's): val/knn_top1 (max), cost/cpu_seconds (min)" in out
    eligible = {
        t.trial_id: (t.knn[-1], t.seconds_per_epoch * len(t.knn))
        for t in multi_sweep.planned.values()
        if t.ends == "complete"
    }
    expected = _naive_front(eligible)
    assert 2 <= len(expected) < len(eligible)  # the data makes a real trade-off

    summary = json.loads((tmp_path / "report.json").read_text())
    assert set(summary["pareto_front"]) == expected
    assert summary["best"] == max(expected, key=lambda key: eligible[key][0])
    index = {t: i + 1 for i, t in enumerate(multi_sweep.planned)}
    rows = _table_rows(out)
    marked = {row[1] for row in rows if row[0] != "-" and row[3] == "*"}
    assert marked == {f"#{index[key]}" for key in expected}
    assert [row[1] for row in rows[: len(expected)]] == [
        f"#{index[key]}" for key in sorted(expected, key=lambda key: -eligible[key][0])
    ]
    unranked = {row[1]: row[2] for row in rows if row[0] == "-"}
    assert unranked == {"#7": "failed", "#8": "running"}
    assert "Pareto front:" in out and "Pareto front, by cost:" in out
    assert {path.stem for path in (tmp_path / "pareto").glob("*.yaml")} == {
        f"trial-{index[key]:03d}" for key in expected
    }
    _assert_png(tmp_path / "quality_vs_cost.png")
    assert not (tmp_path / "pareto_front.png").exists()  # the trade-off shows these two axes


def test_the_latest_sweep_is_reported_unless_sweep_names_another(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = f"report-two-sweeps-{uuid.uuid4().hex[:8]}"
    older = write_sweep(
        mlflow_uri, experiment, [SINGLE[0]], now=datetime.datetime(2026, 1, 1, 9, 0, 0)
    )
    newer = write_sweep(
        mlflow_uri, experiment, [SINGLE[4]], now=datetime.datetime(2026, 1, 1, 10, 0, 0)
    )
    base = [experiment, "--tracking-uri", mlflow_uri, "--output", str(tmp_path)]

    code, out, err = _run_report(base, capsys)
    assert code == 0, err
    assert f"Sweep {newer.sweep_name}" in out
    assert f"1 other sweep(s) (newest: {older.sweep_name})" in out
    assert json.loads((tmp_path / "report.json").read_text())["best"] == "aaaa0005"

    for chosen in (older.sweep_name, older.parent_run_id):
        code, out, err = _run_report([*base, "--sweep", chosen], capsys)
        assert code == 0, err
        assert f"Sweep {older.sweep_name}" in out
        assert json.loads((tmp_path / "report.json").read_text())["best"] == "aaaa0001"

    code, _, err = _run_report([*base, "--sweep", "no-such-sweep"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert newer.sweep_name in err and older.sweep_name in err


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_experiment_is_a_one_line_error_that_says_how_to_list_them(
    single_sweep: WrittenSweep, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_report(["no-such-experiment", "--tracking-uri", mlflow_uri], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "'no-such-experiment' does not exist" in err
    assert "mlflow experiments search" in err
    assert repr(single_sweep.experiment) in err  # experiments that do exist are listed


@pytest.mark.timeout(60)
def test_unreachable_tracking_server_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    code, _, err = _run_report(
        ["anything", "--tracking-uri", uri, "--output", str(tmp_path)], capsys
    )
    assert code == 2
    assert err.count("\n") == 1
    assert "unreachable" in err and uri in err
    assert not any(tmp_path.iterdir())


def test_missing_sqlite_database_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "mlflow.db"
    code, _, err = _run_report(["anything", "--tracking-uri", f"sqlite:///{database}"], capsys)
    assert code == 2
    assert "no MLflow database" in err
    assert not database.exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--top", "0"], "--top must be >= 1, got 0"),
        (["--objective", "val/knn_top1"], "must look like METRIC:max or METRIC:min"),
    ],
)
def test_bad_options_fail_before_connecting(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens: a connection would say so
    code, _, err = _run_report(["x", "--tracking-uri", uri, *option], capsys)
    assert code == 2
    assert message in err and "unreachable" not in err


# ---- the parts ----------------------------------------------------------------------------------


def test_pareto_front_matches_a_naive_front_on_random_points() -> None:
    rng = random.Random(3)
    for _ in range(20):
        points = {
            f"t{i}": (round(rng.random(), 1), round(rng.random(), 1))
            for i in range(rng.randint(1, 15))
        }
        assert set(pareto_front(points, ["max", "min"])) == _naive_front(points)
    assert pareto_front({"a": (1.0, 1.0), "b": (1.0, 1.0)}, ["max", "min"]) == ["a", "b"]
    assert dominates((2.0, 1.0, 5.0), (1.0, 1.0, 5.0), ["max", "min", "max"])
    assert not dominates((2.0, 2.0), (1.0, 1.0), ["max", "min"])
    with pytest.raises(ValueError, match="mode 'up'"):
        dominates((1.0,), (2.0,), ["up"])


@pytest.mark.parametrize("method", ["simclr", "clip", "dino"])
def test_config_round_trips_through_mlflow_params(method: str) -> None:
    config = build_config(
        {
            "method": method,
            "optimizer": {"lr": 1e-5, "grad_clip_norm": 1.5},
            "temperature": {"mode": "learnable", "value": 0.07},
            "data": {"root": "123", "max_train_samples": 256, "horizontal_flip": False},
        }
    ).to_dict()
    rebuilt, error = config_from_params(config_params(config))
    assert error is None
    assert rebuilt == config
    assert rebuilt["data"]["root"] == "123" and rebuilt["optimizer"]["lr"] == 1e-5
    broken, reason = config_from_params({**config_params(config), "optimizer.lr": "fast"})
    assert broken is None and "optimizer.lr" in (reason or "")


@pytest.mark.parametrize("method", ["simclr", "clip", "dino"])
def test_a_trial_config_rebuilds_from_its_method_params_and_short_keys(method: str) -> None:
    config = build_config(
        {
            "method": method,
            "temperature": {"mode": "fixed", "value": 0.3},
            "optimizer": {"lr": 0.002},
        }
    ).to_dict()
    sampled = {"temperature/mode": "fixed", "temperature/value": 0.3, "optimizer/lr": 0.002}
    record = TrialRecord(trial_id="t", index=1, sampled=sampled, config=config)
    params = layout.trial_params(record)
    assert (params["tau"], params["tau_mode"], params["lr"]) == ("0.3", "fixed", "0.002")
    assert any(key.startswith("dino.") for key in params) == (method == "dino")
    assert any(key.startswith("model.text_") for key in params) == (method == "clip")
    tags = layout.trial_tags(record, "space")
    read = layout.trial_record(
        run_id="r", run_status="FINISHED", tags=tags, params=params, metrics={}, epoch=0, position=1
    )
    assert read.config_error is None
    assert read.config == config  # the keys not logged are the method-irrelevant defaults
    assert read.sampled == sampled


def test_text_scatter_puts_extremes_in_the_corners() -> None:
    text = text_scatter(
        [(0.01, 0.2, "a"), (1.0, 0.9, "b"), (0.1, 0.5, "c")],
        x_label="tau",
        y_label="knn",
        log_x=True,
        width=21,
        height=5,
    )
    lines = text.splitlines()
    grid = [line.split("|", 1)[1].ljust(21) for line in lines[1:6]]
    assert grid[0][20] == "b" and grid[4][0] == "a" and grid[2][10] == "c"
    assert "0.01" in lines[7] and "1" in lines[7] and "tau (log scale)" in lines[8]
    with pytest.raises(ValueError, match="no finite point"):
        text_scatter([(0.0, 1.0, "x")], x_label="x", y_label="y", log_x=True)


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


def test_two_quality_objectives_get_their_own_pareto_picture(tmp_path: Path) -> None:
    """Objectives that are not a cost: the front is drawn in pareto_front.png; no cost metric
    recorded: the trade-off is skipped with its reason (no MLflow needed for this part)."""
    config = build_config({"epochs": 2}).to_dict()
    values = {"t1": (0.7, -1.0), "t2": (0.6, -2.0), "t3": (0.5, -1.5), "t4": (0.8, -0.5)}
    records = [
        TrialRecord(
            trial_id=key,
            index=number,
            sampled={},
            config=config,
            status="completed",
            epoch=2,
            metrics={"val/knn_top1": knn, "val/uniformity": uniformity},
        )
        for number, (key, (knn, uniformity)) in enumerate(values.items(), start=1)
    ]
    report = SweepReport(
        experiment="e",
        experiment_id="1",
        target=resolve_tracking_target("http://127.0.0.1:5000", environ={}),
        sweep=SweepRun("run", "sweep-1", "FINISHED", {"space": "s", "method": "simclr"}, {}),
        other_sweeps=[],
        objectives=(Objective("val/knn_top1", "max"), Objective("val/uniformity", "min")),
        objectives_source="sweep",
        records=records,
        run_ids={},
    )
    rank(report)
    expected = _naive_front(values)  # (max, min): the same directions as these objectives
    assert set(report.front) == expected == {"t1", "t2", "t4"}
    assert report.best is not None and report.best.trial_id == "t4"
    assert report.cost_metric is None
    files = write_report(report, tmp_path)
    _assert_png(tmp_path / "pareto_front.png")
    assert "quality_vs_cost" in files.skipped and not (tmp_path / "quality_vs_cost.png").exists()
    text = format_report(report, files=files)
    assert "No trial recorded its cost" in text
    assert "Pareto front: 3 of 4 ranked trials are not dominated" in text

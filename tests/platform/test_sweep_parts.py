"""The pieces of a sweep that need no cluster: validation, search algorithm, scheduler, trial
records, failure reasons, the summary and the plots."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from tauray.plots import render_sweep_plots
from tauray.ranking import rank_trials
from tauray.run_file import best_config_yaml, changed_settings, load_run_file
from tauray.sweep import search
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.plan import DEFAULT_TRIALS, SweepPlan, SweepRequest, plan_sweep, runs_in_trial
from tauray.sweep.reaper import OrphanedPlacementGroupReaper
from tauray.sweep.summary import SweepSummary, format_summary
from tauray.sweep.trial import TrialSetup, trial_resources
from tauray.tables import trial_table
from tauray.training import prepare_run
from tauray.trials import (
    TrialRecord,
    failure_kind,
    failure_reason,
    is_metric,
    resolve_train_loop_config,
)
from tauray_spaces import Objective
from tauray_trainers.config import build_config, flatten

KNN_MAX = (Objective("val/knn_top1", "max"),)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def _plan(tmp_path: Path, **changes) -> SweepPlan:
    request = SweepRequest(space="simclr-temperature", **changes)
    return plan_sweep(request, cwd=tmp_path, environ={}, check_tracking=False, now=NOW)


# ---- validation before Ray starts -------------------------------------------------------------


def test_plan_defaults(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert plan.experiment == "tauray-simclr-temperature"
    assert plan.sweep_name == "tauray-simclr-temperature-20260102-030405"
    assert plan.num_samples == DEFAULT_TRIALS
    assert plan.epochs == 6  # the space's fixed setting
    assert plan.objective.metric == "val/knn_top1" and plan.objective.mode == "max"
    assert plan.target.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert plan.storage_path == tmp_path.resolve() / "tauray_results"
    assert plan.model_name == "tauray-simclr-temperature"
    assert plan.fixed_config["method"] == "simclr"


def test_set_pins_settings_and_searched_parameters(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        overrides=("epochs=3", "temperature.mode=fixed", "data.root=data/here"),
        time_budget_s=60,
    )
    assert plan.epochs == 3
    assert plan.num_samples == -1  # only a time budget: run until it is spent
    assert plan.fixed_config["data"]["root"] == str(tmp_path.resolve() / "data" / "here")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        sampled = plan.space.sample_config(study.ask())
        assert sampled["temperature"]["mode"] == "fixed"
        assert "lr_multiplier" not in sampled["temperature"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"overrides": ("optimizer.lrr=0.1",)}, "lrr"),
        ({"overrides": ("epochs=0",)}, "epochs"),
        ({"overrides": ("epochs",)}, "key=value"),
        ({"trials": 0}, "--trials"),
        ({"time_budget_s": -5.0}, "--time-budget"),
        ({"scheduler": "pbt"}, "--scheduler"),
        ({"workers_per_trial": 0}, "--workers-per-trial"),
        ({"cpus_per_worker": 0.0}, "--cpus-per-worker must be a finite number > 0, got 0.0"),
        ({"gpus_per_worker": float("nan")}, "--gpus-per-worker must be a finite number >= 0"),
        ({"objectives": ("val/knn_top1",)}, "METRIC:max"),
        ({"tracking_uri": "sqlite:///:memory:"}, "in-memory"),
    ],
)
def test_mistakes_fail_in_planning(tmp_path: Path, changes: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        _plan(tmp_path, **changes)
    assert "\n" not in str(caught.value)


def test_unknown_space_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="simclr-temperature"):
        plan_sweep(SweepRequest(space="simclr-temp"), cwd=tmp_path, environ={})


def test_objectives_override_the_space(tmp_path: Path) -> None:
    plan = _plan(tmp_path, objectives=("val/knn_top1:max", "cost/cpu_seconds:min"))
    assert [(o.metric, o.mode) for o in plan.objectives] == [
        ("val/knn_top1", "max"),
        ("cost/cpu_seconds", "min"),
    ]
    searcher, _, _ = search.build_searcher(plan, concurrency=1)
    assert searcher.metric == ["val/knn_top1", "cost/cpu_seconds"]


# ---- search algorithm and scheduler -----------------------------------------------------------


def test_searcher_runs_the_baselines_first_and_records_distributions(tmp_path: Path) -> None:
    plan = _plan(tmp_path, trials=9, seed=3)
    searcher, recording, description = search.build_searcher(plan, concurrency=2)
    assert isinstance(searcher, OptunaSearch)
    assert "multivariate=True, group=True, seed=3, n_startup_trials=3" in description
    assert "constant_liar=True" in description
    first = searcher.suggest("trial-1")
    second = searcher.suggest("trial-2")
    third = searcher.suggest("trial-3")
    assert set(first) == {"train_loop_config"}
    assert first["train_loop_config"]["temperature"] == {"mode": "fixed", "value": 0.1}
    assert second["train_loop_config"]["temperature"]["mode"] == "learnable"
    assert second["train_loop_config"]["temperature"]["value"] == 0.07
    for suggestion in (first, second, third):
        build_config(resolve_train_loop_config(plan.fixed_config, suggestion))
    assert "train_loop_config/optimizer/lr" in recording.distributions
    assert "train_loop_config/temperature/mode" in recording.distributions


def test_sampler_startup_trials_scale_with_the_budget() -> None:
    assert "n_startup_trials=2," in search.sampler_description(4, 1, 0)[1]
    assert "n_startup_trials=10," in search.sampler_description(60, 1, 0)[1]
    assert "n_startup_trials=10," in search.sampler_description(-1, 1, 0)[1]
    assert "constant_liar=False" in search.sampler_description(4, 1, 0)[1]


def test_schedulers(tmp_path: Path) -> None:
    asha, text = search.build_scheduler(_plan(tmp_path))
    assert isinstance(asha, ASHAScheduler)
    # simclr-temperature warms the learning rate up for 1 epoch: the first rung is epoch 2.
    assert "max_t=6, grace_period=2" in text and "time_attr=epoch" in text
    long_asha, long_text = search.build_scheduler(_plan(tmp_path, overrides=("epochs=20",)))
    assert "grace_period=2" in long_text
    hyperband, hyperband_text = search.build_scheduler(_plan(tmp_path, scheduler="hyperband"))
    assert isinstance(hyperband, AsyncHyperBandScheduler)
    assert hyperband_text.startswith("async HyperBand(") and "brackets=2)" in hyperband_text
    assert len(hyperband._brackets) == 2  # first rungs at 2 and 6 epochs (of 6)
    assert len(asha._brackets) == 1
    none, _ = search.build_scheduler(_plan(tmp_path, scheduler="none"))
    assert isinstance(none, FIFOScheduler)
    single_epoch, _ = search.build_scheduler(_plan(tmp_path, overrides=("epochs=1",)))
    assert isinstance(single_epoch, FIFOScheduler)
    # The rung the trials' objective/at_first_rung column is logged at: none without stopping.
    assert search.early_stopping_rung(_plan(tmp_path)) == 2
    assert search.early_stopping_rung(_plan(tmp_path, scheduler="none")) is None
    assert search.early_stopping_rung(_plan(tmp_path, overrides=("epochs=1",))) is None
    assert isinstance(long_asha, ASHAScheduler)


@pytest.mark.parametrize(
    ("overrides", "grace"),
    [
        (("optimizer.warmup_epochs=0",), 1),  # no warm-up: short trials are judged at epoch 1
        (("optimizer.warmup_epochs=0.5",), 1),  # the warm-up ends inside epoch 1
        (("optimizer.warmup_epochs=1",), 2),
        (("optimizer.warmup_epochs=2.5",), 3),  # the first full epoch after the warm-up
        (("optimizer.warmup_epochs=5",), 3),  # capped at half the 6-epoch trial
        (("optimizer.warmup_epochs=0", "epochs=20"), 2),  # long trials start at 2
        (("optimizer.warmup_epochs=4", "epochs=20"), 5),
        (("optimizer.warmup_epochs=0", "dino.teacher_temperature_warmup_epochs=3"), 3),
    ],
)
def test_first_rung_comes_after_every_warmup(
    tmp_path: Path, overrides: tuple[str, ...], grace: int
) -> None:
    plan = _plan(tmp_path, overrides=overrides)
    assert search.first_rung(plan) == grace
    _, text = search.build_scheduler(plan)
    assert f"grace_period={grace}," in text


def test_first_rung_counts_a_sampled_warmup_at_the_top_of_its_range(tmp_path: Path) -> None:
    space = tmp_path / "warmup.yaml"
    space.write_text(
        "name: warmup\nmethod: simclr\nobjective: {metric: val/knn_top1, mode: max}\n"
        "fixed: {epochs: 12}\n"
        "parameters:\n  - {key: optimizer/warmup_epochs, distribution: uniform, low: 0.0, "
        "high: 3.0}\n"
    )
    plan = plan_sweep(
        SweepRequest(space=str(space)), cwd=tmp_path, environ={}, check_tracking=False, now=NOW
    )
    assert search.longest_warmup(plan) == 3.0
    assert search.first_rung(plan) == 4


def test_trials_in_their_trial_actor_reserve_one_bundle(tmp_path: Path) -> None:
    from tauray.cluster import DRIVER_RESOURCE, ClusterInfo

    local = ClusterInfo(cpus=2, gpus=0, local=True, address=None, driver_resource=True)
    remote = ClusterInfo(cpus=8, gpus=4, local=False, address="auto", driver_resource=False)
    in_trial = TrialSetup({}, 1, 0.0, 1.0, str(tmp_path), in_trial=True)
    # The trial actor trains: it reserves the worker's CPU (or GPU) besides the driver's share ...
    assert trial_resources(in_trial, local).bundles == [{"CPU": 1.0, DRIVER_RESOURCE: 1.0}]
    on_gpu = TrialSetup({}, 1, 1.0, 2.0, str(tmp_path), in_trial=True)
    assert trial_resources(on_gpu, remote).bundles == [{"CPU": pytest.approx(2.01), "GPU": 1.0}]
    # ... while a Ray Train driver only waits on its workers.
    ray_train = TrialSetup({}, 2, 0.0, 1.0, str(tmp_path))
    assert trial_resources(ray_train, local) == {"CPU": 0.0, DRIVER_RESOURCE: 1.0}
    assert trial_resources(ray_train, remote) == {"CPU": 0.01}
    # Several workers are a DDP job: never trained in the trial actor.
    with pytest.raises(ValueError, match="in-trial training runs one worker, got 2"):
        TrialSetup({}, 2, 0.0, 1.0, str(tmp_path), in_trial=True)


def test_trial_runner_choice(tmp_path: Path) -> None:
    request = SweepRequest(space="simclr-temperature")
    assert request.trial_runner == "in-trial"
    assert runs_in_trial(request)
    assert runs_in_trial(dataclasses.replace(request, gpus_per_worker=1))
    # Several workers, on CPUs (gloo) or GPUs (NCCL), are a DDP job: a Ray Train worker group.
    assert not runs_in_trial(dataclasses.replace(request, workers_per_trial=4))
    assert not runs_in_trial(dataclasses.replace(request, workers_per_trial=2, gpus_per_worker=1))
    assert not runs_in_trial(dataclasses.replace(request, trial_runner="ray-train"))
    with pytest.raises(ValueError, match="--trial-runner 'threads' is not one of: in-trial, ray"):
        plan_sweep(
            dataclasses.replace(request, trial_runner="threads"),
            cwd=tmp_path,
            environ={},
            check_tracking=False,
        )


def test_storage_path_is_a_local_folder_or_an_object_store_uri(tmp_path: Path) -> None:
    from tauray.storage import RemotePath

    request = SweepRequest(space="simclr-temperature", storage_path="s3://bucket/sweeps")
    # Path("s3://bucket/sweeps") would be the local folder "s3:/bucket/sweeps".
    plan = plan_sweep(request, cwd=tmp_path, environ={}, check_tracking=False, now=NOW)
    assert plan.storage_path == RemotePath("s3://bucket/sweeps")
    assert str(plan.sweep_dir) == f"s3://bucket/sweeps/{plan.sweep_name}"
    assert plan.sweep_dir.parent == plan.storage_path and plan.sweep_dir.name == plan.sweep_name
    relative = dataclasses.replace(request, storage_path="results")
    plan = plan_sweep(relative, cwd=tmp_path, environ={}, check_tracking=False)
    assert plan.storage_path == tmp_path.resolve() / "results"


# ---- trial records and failures ---------------------------------------------------------------


FIXED = {"method": "simclr", "epochs": 4}


def _record(index: int, mode: str, value: float, knn: float | None, status: str) -> TrialRecord:
    sampled = {"temperature": {"mode": mode, "value": value}, "optimizer": {"lr": 1e-3 * index}}
    if mode == "learnable":
        sampled["temperature"]["lr_multiplier"] = 2.0
    config = resolve_train_loop_config(FIXED, {"train_loop_config": sampled})
    record = TrialRecord(f"t{index}", index, flatten(sampled), config, status=status)
    record.epoch = 4 if status == "completed" else 1
    if knn is not None:
        final = value * 0.8 if mode == "learnable" else value
        record.metrics = {"val/knn_top1": knn, "train/temperature": final}
    return record


def test_resolved_config_merges_fixed_and_sampled_and_validates() -> None:
    config = resolve_train_loop_config(
        FIXED, {"train_loop_config": {"temperature": {"mode": "learnable", "value": 0.07}}}
    )
    assert config["epochs"] == 4
    assert config["temperature"]["mode"] == "learnable"
    assert config["optimizer"]["name"] == "adamw"  # defaults filled in
    with pytest.raises(ValueError, match=r"temperature\.value"):
        resolve_train_loop_config(
            FIXED, {"train_loop_config": {"temperature": {"mode": "learnable", "value": 5.0}}}
        )
    with pytest.raises(ValueError, match="workers"):
        resolve_train_loop_config(FIXED, {"train_loop_config": {}, "workers": 2})


def test_best_trial_ignores_failed_and_running_trials() -> None:
    ledger = TrialLedger(FIXED)
    for record in (
        _record(1, "fixed", 0.1, 0.40, "completed"),
        _record(2, "fixed", 0.5, 0.55, "stopped"),
        _record(3, "learnable", 0.07, 0.90, "failed"),
        _record(4, "fixed", 0.2, 0.95, "running"),
    ):
        ledger.records[record.trial_id] = record
    records = ledger.ordered()
    assert rank_trials(records, KNN_MAX).best.trial_id == "t2"
    assert [r.trial_id for r in rank_trials(records, KNN_MAX).ranked] == ["t2", "t1"]
    assert rank_trials(records, [Objective("val/knn_top1", "min")]).best.trial_id == "t1"
    assert ledger.counts() == {"running": 1, "completed": 1, "stopped": 1, "failed": 1}
    assert rank_trials(records, [Objective("val/zeroshot_top1", "max")]).best is None
    with pytest.raises(ValueError, match="at least one objective"):
        rank_trials(records, [])


def test_best_trial_breaks_ties_by_start_order_and_is_on_the_pareto_front() -> None:
    records = [
        _record(1, "fixed", 0.1, 0.50, "completed"),
        _record(2, "fixed", 0.2, 0.50, "completed"),
        _record(3, "fixed", 0.3, 0.40, "completed"),
    ]
    assert rank_trials(records, KNN_MAX).best.trial_id == "t1"
    # Two objectives: t2 equals t1 on kNN and is cheaper, so t1 is dominated and t2 is best.
    for record, seconds in zip(records, (5.0, 4.0, 1.0), strict=True):
        record.metrics["cost/cpu_seconds"] = seconds
    both = (*KNN_MAX, Objective("cost/cpu_seconds", "min"))
    ranking = rank_trials(records, both)
    assert ranking.front == ["t2", "t3"]
    assert [r.trial_id for r in ranking.ranked] == ["t2", "t3", "t1"]
    assert ranking.best.trial_id == "t2"


def test_time_budget_stops_the_unfinished_trials() -> None:
    ledger = TrialLedger(FIXED)
    for record in (
        _record(1, "fixed", 0.1, 0.40, "completed"),
        _record(2, "fixed", 0.5, 0.55, "running"),
    ):
        ledger.records[record.trial_id] = record
    assert [record.trial_id for record in ledger.stop_unfinished()] == ["t2"]
    assert ledger.counts()["stopped"] == 1 and ledger.counts()["running"] == 0
    assert rank_trials(ledger.ordered(), KNN_MAX).best.trial_id == "t2"


def test_failure_reasons_and_kinds() -> None:
    text = (
        "ray::ImplicitFunc.train() (pid=1)\n"
        "ray.train.WorkerGroupError: Training failed due to worker errors:\n"
        "    raise TrialOutOfMemoryError(batch_size)\n"
        "tauray_trainers.loop.TrialOutOfMemoryError: CUDA out of memory at batch size 512\n"
    )
    assert failure_reason(text) == "TrialOutOfMemoryError: CUDA out of memory at batch size 512"
    assert failure_kind(failure_reason(text)) == "out_of_memory"
    assert failure_kind("NonFiniteLossError: non-finite loss at step 3") == "non_finite"
    assert failure_kind("ValueError: bad") == "error"
    assert failure_reason(None).startswith("unknown error")
    assert failure_reason("something odd happened\n") == "something odd happened"


def test_metric_filter() -> None:
    assert is_metric("val/knn_top1", 0.5)
    assert is_metric("cost/cpu_seconds", 3)
    assert not is_metric("time_total_s", 1.0)
    assert not is_metric("val/knn_top1", "0.5")
    assert not is_metric("train/flag", True)
    assert not is_metric("config/train_loop_config/epochs", 3)


# ---- summary, best config, plots --------------------------------------------------------------


def test_best_config_file_is_accepted_by_tauray_train(tmp_path: Path) -> None:
    record = _record(2, "learnable", 0.07, 0.5, "completed")
    text = best_config_yaml(
        record.config,
        workers=2,
        gpus_per_worker=0.0,
        cpus_per_worker=1.0,
        header="best trial\nsecond line",
    )
    assert text.startswith("# best trial\n# second line\n")
    path = tmp_path / "best.yaml"
    path.write_text(text)
    tree, run_keys = load_run_file(path)
    assert tree == record.config
    assert run_keys["workers"] == 2
    run = prepare_run(config_path=path)
    assert run.workers == 2
    assert run.config.to_dict() == record.config


def test_changed_settings_keep_only_what_differs_from_defaults() -> None:
    record = _record(3, "fixed", 0.3, 0.5, "completed")
    changed = changed_settings(record.config)
    assert changed == {
        "method": "simclr",
        "epochs": 4,
        "optimizer": {"lr": pytest.approx(0.003)},
        "temperature": {"value": 0.3},
    }
    assert build_config(changed).to_dict() == record.config


def test_summary_text(tmp_path: Path) -> None:
    plan = _plan(tmp_path, workers_per_trial=2)
    records = [
        _record(1, "fixed", 0.1, 0.40, "completed"),
        _record(2, "learnable", 0.07, 0.30, "stopped"),
        _record(3, "fixed", 0.02, None, "failed"),
    ]
    records[2].error = "NonFiniteLossError: non-finite loss at step 3"
    summary = SweepSummary(
        plan=plan,
        records=records,
        counts={"running": 0, "completed": 1, "stopped": 1, "failed": 1},
        best=records[0],
        best_config=records[0].config,
        best_config_path=tmp_path / "best_config.yaml",
        experiment_id="4",
        parent_run_id="parent123",
        best_run_id="child1",
        champion=("models:/tauray-simclr-temperature@champion", "2"),
        elapsed_s=125.0,
    )
    text = format_summary(summary)
    assert "finished in 2m05s: 3 trials, 1 completed, 1 stopped early, 1 failed." in text
    assert "trial 3 failed: NonFiniteLossError: non-finite loss at step 3" in text
    assert "Best trial: #1 (t1), val/knn_top1 = 0.4 at epoch 4/4, τ 0.1 (fixed)" in text
    assert f"tauray train --config {tmp_path / 'best_config.yaml'}" in text
    assert "models:/tauray-simclr-temperature@champion (version 2)" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text
    assert "#/experiments/4/runs/parent123" in text
    # The report's table: ranked trials first (best first), then the failed one, unranked.
    table = trial_table(records, plan.objectives, rank_trials(records, plan.objectives))
    assert table in text
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["rank", "trial", "status", "val/knn_top1"]
    assert "τ.lr_multiplier" in header
    assert [row.split()[:3] for row in rows] == [
        ["1", "#1", "completed"],
        ["2", "#2", "stopped"],
        ["-", "#3", "failed"],
    ]
    assert "stopped early" in rows[1]
    assert yaml.safe_load(
        text.split("the full config is in")[1].split("\n", 1)[1].split("Train it")[0]
    )


def test_plots_are_written_and_importances_need_two_trials(tmp_path: Path) -> None:
    records = [
        _record(1, "fixed", 0.1, 0.40, "completed"),
        _record(2, "learnable", 0.07, 0.30, "stopped"),
        _record(3, "fixed", 0.5, 0.45, "completed"),
        _record(4, "fixed", 0.03, 0.35, "completed"),
        _record(5, "fixed", 0.02, None, "failed"),
    ]
    distributions = {
        "train_loop_config/temperature/mode": optuna.distributions.CategoricalDistribution(
            ["fixed", "learnable"]
        ),
        "train_loop_config/temperature/value": optuna.distributions.FloatDistribution(
            0.02, 1.0, log=True
        ),
        "train_loop_config/optimizer/lr": optuna.distributions.FloatDistribution(
            1e-4, 1e-2, log=True
        ),
    }
    plots = render_sweep_plots(records, "val/knn_top1", "max", distributions, tmp_path / "p")
    assert set(plots.paths) == {
        "objective_vs_temperature",
        "optimization_history",
        "parameter_importances",
    }, plots.skipped
    for path in plots.paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = render_sweep_plots(records[:1], "val/knn_top1", "max", distributions, tmp_path / "q")
    assert ">= 2 finished trials" in single.skipped["parameter_importances"]
    assert "objective_vs_temperature" in single.paths
    nothing = render_sweep_plots(records[4:], "val/knn_top1", "max", distributions, tmp_path / "r")
    assert not nothing.paths and len(nothing.skipped) == 3


# ---- placement groups of stopped trials (needs a Ray cluster) ---------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, resources={"probe": 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_reaper_frees_placement_groups_of_dead_controllers_only(local_ray) -> None:
    from ray.util.placement_group import placement_group, placement_group_table

    ray = local_ray

    @ray.remote(num_cpus=0)
    class Controller:
        """Stands in for a Ray Train controller: it reserves its workers' CPU."""

        def reserve(self) -> str:
            group = placement_group([{"CPU": 1}])
            ray.get(group.ready(), timeout=60)
            return group.id.hex()

    controller = Controller.remote()
    orphan = ray.get(controller.reserve.remote())
    own = placement_group([{"probe": 1}])  # created by the driver: never touched
    ray.get(own.ready(), timeout=60)
    reaper = OrphanedPlacementGroupReaper()
    assert reaper.reap() == 0  # the controller is alive
    ray.kill(controller)
    deadline = time.monotonic() + 30
    while reaper.reap() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    table = placement_group_table()
    assert table[orphan]["state"] == "REMOVED"
    assert table[own.id.hex()]["state"] == "CREATED"
    assert reaper.removed == 1
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 1


@pytest.mark.ray
def test_a_trial_forwards_every_report_of_its_train_run_the_last_included(
    local_ray, tmp_path: Path
) -> None:
    """A stand-in for a Train run whose controller queues its reports from another process and
    returns from ``fit`` at once after the last: Ray Tune gets every report, in order, and ends
    the trial on the last one (the forwarding a Ray Train trial does, without Ray Train)."""
    from ray import tune

    from tauray.training import fit_forwarding_reports, queue_reports_callback, report_queue

    ray = local_ray
    epochs = 6

    @ray.remote(num_cpus=0)
    def controller(callback: Any) -> None:
        for epoch in range(1, epochs + 1):
            callback.after_report(None, [{"epoch": epoch}], None)

    class Trainer:
        def __init__(self, callback: Any) -> None:
            self.callback = callback

        def fit(self) -> SimpleNamespace:
            ray.get(controller.remote(self.callback))
            return SimpleNamespace(metrics={"epoch": epochs})

    def trial(config: dict) -> None:
        reports = report_queue(maxsize=1)
        try:
            derive = lambda metrics: {**metrics, "derived": 1}  # noqa: E731
            trainer = Trainer(queue_reports_callback(reports, derive=derive, checkpoints=True))
            _, forwarded = fit_forwarding_reports(trainer, reports, tune.report)
            assert forwarded == epochs
        finally:
            reports.shutdown()

    grid = tune.Tuner(
        tune.with_resources(trial, {"cpu": 0.5}),
        param_space={"repeat": tune.grid_search(list(range(3)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="forward", verbose=0),
    ).fit()
    assert [result.error for result in grid] == [None] * 3
    for result in grid:
        assert result.metrics["epoch"] == epochs and result.metrics["derived"] == 1
        assert list(result.metrics_dataframe["epoch"]) == list(range(1, epochs + 1))


# ---- the tauray version a sweep folder was written by ---------------------------------------


def test_saved_request_carries_the_tauray_version(tmp_path: Path) -> None:
    from tauray import __version__
    from tauray.sweep.state import SWEEP_FILE, VERSION_KEY, save_sweep_request

    plan = _plan(tmp_path, storage_path=str(tmp_path / "results"))
    document = json.loads(save_sweep_request(plan).read_text())
    assert document[VERSION_KEY] == __version__
    assert (plan.sweep_dir / SWEEP_FILE).is_file()


def test_folder_version_rule() -> None:
    from tauray.sweep.state import check_folder_version

    folder = Path("/sweeps/s")
    check_folder_version("0.2.0", folder, running="0.2.0")
    check_folder_version("0.2.3+g1a2b3c.dirty", folder, running="0.2.0")  # a patch release
    with pytest.raises(ValueError, match=r"started by tauray 0\.1\.0, and this is tauray 0\.2\.0"):
        check_folder_version("0.1.0", folder, running="0.2.0")
    with pytest.raises(ValueError, match=r"before 0\.2 \(no version recorded\).*tauray 0\.2\.1"):
        check_folder_version(None, folder, running="0.2.1")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"request": {"space": "simclr-temperature"}}, "before 0.2 (no version recorded)"),
        ({"request": {"space": "x"}, "tauray_version": "9.9.0"}, "started by tauray 9.9.0"),
        ({}, "is damaged: it holds no saved request"),
        ([1, 2], "is damaged: it holds no saved request"),
        ({"request": {}, "tauray_version": None}, "no version recorded"),
        ("not json", "cannot read"),
    ],
)
def test_resume_refuses_other_releases_and_damaged_folders(
    tmp_path: Path, document: object, problem: str
) -> None:
    from tauray.sweep.state import SWEEP_FILE, TUNER_STATE, plan_resume

    folder = tmp_path / "tauray_results" / "old-sweep"
    folder.mkdir(parents=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / SWEEP_FILE).write_text(text)
    (folder / TUNER_STATE).write_bytes(b"not a pickle")  # never read: refused before
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        plan_resume(str(folder), cwd=tmp_path, environ={}, check_tracking=False)
    assert "\n" not in str(caught.value)


def test_resume_of_a_current_folder_with_a_damaged_request(tmp_path: Path) -> None:
    from tauray import __version__
    from tauray.sweep.state import SWEEP_FILE, TUNER_STATE, plan_resume

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / SWEEP_FILE).write_text(json.dumps({"request": {}, "tauray_version": __version__}))
    (folder / TUNER_STATE).write_bytes(b"")
    with pytest.raises(ValueError, match=r"is damaged: .*space"):
        plan_resume(str(folder), cwd=tmp_path, environ={}, check_tracking=False)


def test_random_sampler_is_a_request_option(tmp_path: Path) -> None:
    plan = _plan(tmp_path, sampler="random", trials=4)
    searcher, _, description = search.build_searcher(plan, concurrency=2)
    assert description == "RandomSampler(seed=0)"
    assert isinstance(searcher, OptunaSearch)
    sampler, _ = search.sampler_description(4, 2, 5, "random")
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    with pytest.raises(ValueError, match="--sampler 'grid' is not one of: tpe, random"):
        _plan(tmp_path, sampler="grid")

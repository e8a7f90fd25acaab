"""The confirmation phase end to end: a real local Ray, the real CLI, a real ``mlflow server``.

**A sweep with a confirmation** (3 search trials of simclr-temperature on tiny data, 1 epoch,
no early stopping, then ``--confirm-top 2 --confirm-seeds 2``: 4 confirmation runs). The
trainer's fault hook fails the first run of trainer seed 2 (``TAURAY_INJECT_FAILURE`` with
``seed=2``), which only a confirmation run has: the sweep must record that run as failed and
go on. Checked through ``MlflowClient``: the phase tags, each confirmation run's search run and
seeds, the parent run's ``champion/*`` metrics and ``confirmation.csv`` against the child runs'
own values (the champion is the best mean, recomputed here with scipy), and the registered
champion model (the champion configuration's best run).

**Ctrl-C in the confirmation phase** (2 search trials of 3 epochs, then one configuration under
2 seeds, one trial at a time): SIGINT reaches the ``tauray tune`` process group once a
confirmation run has logged an epoch; ``tauray tune --resume`` must finish the sweep in the
confirmation phase, repeating no search trial and no confirmation run, every epoch logged once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from process_helpers import kill_tree
from scipy import stats as scipy_stats

from tauray.cli import main
from tauray.layout import (
    CHAMPION_ALIAS,
    CONFIRMATION_FILE,
    TAG_BEST_RUN,
    TAG_CONFIRMS,
    TAG_FAILURE_REASON,
    TAG_KIND,
    TAG_PHASE,
    TAG_STATUS,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
    TAG_VERDICT,
)
from tauray.sweep.confirm import CONFIRM_FILE
from tauray.sweep.state import SWEEP_FILE
from tauray_trainers.loop import FAULT_INJECTION_ENV

TAURAY = str(Path(sys.executable).parent / "tauray")
METRIC = "val/knn_top1"
EXPERIMENT = "e2e-confirm"
TRIALS, TOP, SEEDS = 3, 2, 2
TINY = [
    "--set", "batch_size_per_worker=32", "--set", "data.max_train_samples=128",
    "--set", "data.max_val_samples=64",
]  # fmt: skip


def _runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=200)


def _children(runs: list[Run], phase: str) -> list[Run]:
    return [
        run
        for run in runs
        if run.data.tags.get(TAG_KIND) == "trial" and run.data.tags.get(TAG_PHASE) == phase
    ]


def _parent(runs: list[Run]) -> Run:
    (parent,) = [run for run in runs if run.data.tags.get(TAG_KIND) == "sweep"]
    return parent


@dataclass(frozen=True)
class Confirmed:
    exit_code: int
    stdout: str
    client: MlflowClient
    runs: list[Run]
    storage: Path
    model_name: str
    report: str  # `tauray report` of the sweep


@pytest.fixture(scope="module")
def confirmed(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Confirmed:
    root = tmp_path_factory.mktemp("confirm-sweep")
    storage = root / "results"
    argv = [
        "tune", "--space", "simclr-temperature", "--experiment", EXPERIMENT,
        "--trials", str(TRIALS), "--scheduler", "none", "--num-cpus", "2", "--seed", "0",
        "--tracking-uri", mlflow_uri, "--storage-path", str(storage),
        "--confirm-top", str(TOP), "--confirm-seeds", str(SEEDS), "--set", "epochs=1", *TINY,
    ]  # fmt: skip
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        # Local Ray workers inherit this environment: the first run of trainer seed 2 (a
        # confirmation run: the search trains with seed 0) fails halfway through epoch 1.
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=1,seed=2,marker={root / 'fault' / 'injected'}")
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.chdir(root)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(argv)
    client = MlflowClient(mlflow_uri)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        main(["report", EXPERIMENT, "--tracking-uri", mlflow_uri, "--output", str(root / "r")])
    return Confirmed(
        exit_code,
        stdout.getvalue(),
        client,
        _runs(client, EXPERIMENT),
        storage,
        EXPERIMENT,
        report.getvalue(),
    )


@pytest.mark.ray
def test_search_and_confirmation_runs_are_tagged_children_of_the_sweep(
    confirmed: Confirmed,
) -> None:
    assert confirmed.exit_code == 0, confirmed.stdout[-3000:]
    search = _children(confirmed.runs, "search")
    confirmation = _children(confirmed.runs, "confirm")
    assert len(search) == TRIALS and len(confirmation) == TOP * SEEDS, confirmed.stdout[-3000:]
    search_ids = {run.info.run_id: run for run in search}
    repeated = [run.data.tags[TAG_CONFIRMS] for run in confirmation]
    assert set(repeated) <= set(search_ids) and len(set(repeated)) == TOP
    for run in confirmation:
        searched = search_ids[run.data.tags[TAG_CONFIRMS]]
        original = searched.data.params
        params = run.data.params
        # Its name says which search trial it repeats, under which seed.
        index, searched_index = (int(r.data.tags[TAG_TRIAL_INDEX]) for r in (run, searched))
        name = f"t{index:03d} confirm t{searched_index:03d} seed={params['seed']}"
        assert run.info.run_name == name
        assert params["seed"] in ("1", "2") and original["seed"] == "0"
        assert params["data.seed"] == original["data.seed"]  # the same split
        assert params["temperature.mode"] == original["temperature.mode"]
        assert params.get("temperature.value") == original.get("temperature.value")
    for search_id in set(repeated):
        seeds = sorted(
            r.data.params["seed"] for r in confirmation if r.data.tags[TAG_CONFIRMS] == search_id
        )
        assert seeds == ["1", "2"]
    assert "confirmation: the 2 best configuration(s) x 2 fresh seed(s)" in confirmed.stdout


@pytest.mark.ray
def test_a_failing_confirmation_run_is_recorded_and_the_sweep_goes_on(
    confirmed: Confirmed,
) -> None:
    confirmation = _children(confirmed.runs, "confirm")
    failed = [run for run in confirmation if run.info.status == "FAILED"]
    assert len(failed) == 1, [(r.info.status, r.data.tags.get(TAG_STATUS)) for r in confirmation]
    assert failed[0].data.params["seed"] == "2"
    assert failed[0].data.tags[TAG_STATUS] == "failed"
    assert "InjectedFailure" in failed[0].data.tags[TAG_FAILURE_REASON]
    finished = [run for run in confirmation if run.info.status == "FINISHED"]
    assert len(finished) == TOP * SEEDS - 1
    assert _parent(confirmed.runs).info.status == "FINISHED"


def _values_by_configuration(runs: list[Run]) -> dict[str, list[float]]:
    """Per confirmed search run: the objective of it and of its finished confirmation runs."""
    values: dict[str, list[float]] = {}
    by_id = {run.info.run_id: run for run in runs}
    for run in _children(runs, "confirm"):
        search_id = run.data.tags[TAG_CONFIRMS]
        if search_id not in values:
            values[search_id] = [by_id[search_id].data.metrics[METRIC]]
        if run.info.status == "FINISHED":
            values[search_id].append(run.data.metrics[METRIC])
    return values


@pytest.mark.ray
def test_the_champion_is_the_best_mean_with_its_interval(confirmed: Confirmed) -> None:
    values = _values_by_configuration(confirmed.runs)
    champion_id = max(values, key=lambda key: float(np.mean(values[key])))
    best = np.array(values[champion_id])
    parent = _parent(confirmed.runs)
    metrics = parent.data.metrics
    assert metrics["champion/mean"] == pytest.approx(best.mean())
    assert metrics["champion/n"] == len(best)
    assert metrics["champion/sd"] == pytest.approx(best.std(ddof=1))
    low, high = scipy_stats.t.interval(
        0.95, len(best) - 1, loc=best.mean(), scale=scipy_stats.sem(best)
    )
    assert metrics["champion/ci95_low"] == pytest.approx(low)
    assert metrics["champion/ci95_high"] == pytest.approx(high)

    path = confirmed.client.download_artifacts(parent.info.run_id, CONFIRMATION_FILE)
    rows = list(csv.DictReader(Path(path).open()))
    assert rows[0]["search_run_id"] == champion_id
    assert {row["search_run_id"] for row in rows} == set(values)
    for row in rows:
        sample = values[row["search_run_id"]]
        assert int(row["n"]) == len(sample) and float(row["mean"]) == pytest.approx(np.mean(sample))
        assert row["temperature_mode"] in ("fixed", "learnable", "scheduled")

    # The registered champion is that configuration's best-scoring run.
    by_id = {run.info.run_id: run for run in confirmed.runs}
    group = [champion_id] + [
        run.info.run_id
        for run in _children(confirmed.runs, "confirm")
        if run.data.tags[TAG_CONFIRMS] == champion_id and run.info.status == "FINISHED"
    ]
    best_run = max(group, key=lambda run_id: by_id[run_id].data.metrics[METRIC])
    assert parent.data.tags[TAG_BEST_RUN] == best_run
    version = confirmed.client.get_model_version_by_alias(confirmed.model_name, CHAMPION_ALIAS)
    assert version.run_id == best_run
    # ... and the run `tauray report` recommends, as the summary does.
    trial_id = by_id[best_run].data.tags["tauray.trial_id"]
    assert "Champion configuration's best run (the best mean over seeds, see Confirmation): " in (
        confirmed.report
    )
    assert f"({trial_id})" in confirmed.report.split("Champion configuration's best run")[1]

    other = next(key for key in values if key != champion_id)
    p_value = scipy_stats.ttest_ind(best, values[other], equal_var=False).pvalue
    heading = "Confirmation (val/knn_top1, mean and 95% t-interval over seeds):"
    assert heading in confirmed.stdout and heading in confirmed.report
    verdict = parent.data.tags[TAG_VERDICT]
    assert verdict in confirmed.stdout and verdict in confirmed.report
    if np.isfinite(p_value):
        words = "beyond seed noise" if p_value < 0.05 else "indistinguishable on this evidence"
        assert f"{words} (Welch's t-test, p = {p_value:.3g}" in confirmed.stdout


# ---- Ctrl-C in the confirmation phase ---------------------------------------------------------

CTRL_C_EXPERIMENT = "confirm-ctrl-c"
CTRL_C_TRIALS, CTRL_C_EPOCHS = 2, 3


def _confirmation_midway(runs: list[Run]) -> bool:
    return any(
        run.info.status == "RUNNING" and "train/loss" in run.data.metrics
        for run in _children(runs, "confirm")
    )


@dataclass(frozen=True)
class Resumed:
    exit_code: int
    output: str
    resume_exit_code: int
    resume_output: str
    runs_at_interrupt: list[Run]
    runs: list[Run]
    client: MlflowClient


@pytest.fixture(scope="module")
def resumed(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    root = tmp_path_factory.mktemp("confirm-ctrl-c")
    storage = root / "results"
    ray_tmp = tempfile.mkdtemp(prefix="tcc", dir="/tmp")
    argv = [
        TAURAY, "tune", "--space", "simclr-temperature", "--experiment", CTRL_C_EXPERIMENT,
        "--trials", str(CTRL_C_TRIALS), "--scheduler", "none", "--num-cpus", "2",
        "--max-concurrent-trials", "1", "--seed", "0", "--tracking-uri", mlflow_uri,
        "--storage-path", str(storage), "--confirm-top", "1", "--confirm-seeds", "2",
        "--set", f"epochs={CTRL_C_EPOCHS}", "--set", "batch_size_per_worker=32",
        "--set", "data.max_train_samples=256", "--set", "data.max_val_samples=64",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp}
    env.pop(FAULT_INJECTION_ENV, None)
    client = MlflowClient(mlflow_uri)
    log = root / "interrupted.log"
    midway = False
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and process.poll() is None:
                if _confirmation_midway(_runs(client, CTRL_C_EXPERIMENT)):
                    midway = True
                    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
                    break
                time.sleep(0.5)
            exit_code = process.wait(timeout=180)
        finally:
            kill_tree(process.pid, ray_tmp)
            process.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert midway, output[-3000:]
    runs_at_interrupt = _runs(client, CTRL_C_EXPERIMENT)
    (sweep_dir,) = [path.parent for path in storage.glob(f"*/{SWEEP_FILE}")]
    assert (sweep_dir / CONFIRM_FILE).is_file()
    captured = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.delenv(FAULT_INJECTION_ENV, raising=False)
        patch.chdir(root)
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            resume_exit_code = main(["tune", "--resume", str(sweep_dir), "--num-cpus", "2"])
    return Resumed(
        exit_code,
        output,
        resume_exit_code,
        captured.getvalue(),
        runs_at_interrupt,
        _runs(client, CTRL_C_EXPERIMENT),
        client,
    )


@pytest.mark.ray
def test_ctrl_c_in_the_confirmation_phase_resumes_there(resumed: Resumed) -> None:
    assert resumed.exit_code == 130, resumed.output[-3000:]
    # The search trials logged their models: MLflow's two notices on each are not printed.
    assert "Failed to validate serving input example" not in resumed.output
    assert "Saving pytorch model by Pickle" not in resumed.output
    assert _parent(resumed.runs_at_interrupt).info.status == "KILLED"
    assert resumed.resume_exit_code == 0, resumed.resume_output[-3000:]
    assert "resuming in the confirmation phase" in resumed.resume_output
    search = _children(resumed.runs, "search")
    confirmation = _children(resumed.runs, "confirm")
    # Nothing repeated: the search trials are the first session's, one run per confirmation.
    assert {run.info.run_id for run in search} == {
        run.info.run_id for run in _children(resumed.runs_at_interrupt, "search")
    }
    assert len(search) == CTRL_C_TRIALS
    assert len(confirmation) == 2, [run.data.tags for run in confirmation]
    assert len({run.data.tags[TAG_TRIAL_ID] for run in confirmation}) == 2
    assert sorted(run.data.params["seed"] for run in confirmation) == ["1", "2"]
    for run in search + confirmation:
        assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "completed"
        steps = [
            entry.step for entry in resumed.client.get_metric_history(run.info.run_id, "train/loss")
        ]
        assert steps == list(range(1, CTRL_C_EPOCHS + 1)), (run.data.tags, steps)
    parent = _parent(resumed.runs)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["champion/n"] == 3  # the search run and both confirmation runs

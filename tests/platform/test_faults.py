"""Faults inside a multi-objective sweep: out-of-memory trials are infeasible, the sweep goes on.

One ``tauray tune`` runs once for the module (one local Ray, started and stopped by the CLI):
4 trials of simclr-temperature, one CPU worker each, 2 tiny epochs, two objectives (kNN top-1 up,
CPU-seconds down). The trainer's fault hook (``TAURAY_INJECT_FAILURE``, ``action=oom``) raises
the loop's ``TrialOutOfMemoryError`` halfway through epoch 1 of every trial whose per-worker
batch is at least 64 (the space samples 32, 64 or 128), as a GPU would at a large batch.

Checked through MLflow and Ray Tune's own results: the parent run records both objectives (the
``objective`` param ``tauray report`` reads) and no early stopping; an out-of-memory trial's
child run is FAILED with kind ``out_of_memory`` and the batch size, and Ray Tune (hence Optuna)
got the worst value of both objectives for it; the other trials ran both epochs and have both
objectives.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tauray.cli import main
from tauray.layout import (
    TAG_FAILURE_KIND,
    TAG_FAILURE_REASON,
    TAG_KIND,
    TAG_MODEL_URI,
    TAG_OOM_BATCH_SIZE,
    TAG_STATUS,
    TAG_TRIAL_ID,
)
from tauray.trials import INFEASIBLE
from tauray_trainers.loop import FAULT_INJECTION_ENV

EXPERIMENT = "faults-multi-objective"
TRIALS = 4
EPOCHS = 2
OOM_MIN_BATCH = 64
OBJECTIVES = ("val/knn_top1:max", "cost/cpu_seconds:min")


@dataclass(frozen=True)
class Sweep:
    exit_code: int
    stdout: str
    client: MlflowClient
    parent: mlflow.entities.Run
    children: list[mlflow.entities.Run]
    storage: Path


@pytest.fixture(scope="module")
def sweep(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    root = tmp_path_factory.mktemp("faults")
    storage = root / "results"
    argv = ["tune", "--space", "simclr-temperature", "--experiment", EXPERIMENT]
    for objective in OBJECTIVES:
        argv += ["--objective", objective]
    argv += [
        "--trials", str(TRIALS), "--workers-per-trial", "1", "--tracking-uri", mlflow_uri,
        "--storage-path", str(storage), "--num-cpus", "2", "--seed", "0", "--confirm-top", "0",
        "--set", f"epochs={EPOCHS}", "--set", "data.max_train_samples=256",
        "--set", "data.max_val_samples=64",
    ]  # fmt: skip
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        # Local Ray workers inherit this environment.
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=1,action=oom,min_batch={OOM_MIN_BATCH}")
        patch.chdir(root)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(argv)
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, stdout.getvalue()[-3000:]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [run for run in runs if run.data.tags.get(TAG_KIND) == "sweep"]
    assert len(parents) == 1, stdout.getvalue()[-3000:]
    children = [run for run in runs if run.data.tags.get(TAG_KIND) == "trial"]
    return Sweep(exit_code, stdout.getvalue(), client, parents[0], children, storage)


def _batch(run: mlflow.entities.Run) -> int:
    return int(run.data.params["batch_size_per_worker"])


@pytest.mark.ray
def test_multi_objective_sweep_records_both_objectives(sweep: Sweep) -> None:
    assert sweep.exit_code == 0, sweep.stdout[-3000:]
    params = sweep.parent.data.params
    assert params["objective"] == ",".join(OBJECTIVES)
    assert params["scheduler"].startswith("none (multi-objective")
    assert params["trial_runner"] == "in-trial"  # one worker per trial: in the trial actor
    assert len(sweep.children) == TRIALS
    feasible = [run for run in sweep.children if _batch(run) < OOM_MIN_BATCH]
    assert feasible, "the seeded sampler chose no feasible batch size"
    for run in feasible:
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags[TAG_STATUS] == "completed"
        # The model of an in-trial run comes from the checkpoint Ray Tune stored for it.
        assert run.data.tags[TAG_MODEL_URI].startswith("models:/"), run.data.tags
        for objective in OBJECTIVES:
            metric = objective.rsplit(":", 1)[0]
            steps = [m.step for m in sweep.client.get_metric_history(run.info.run_id, metric)]
            assert EPOCHS in steps, (metric, steps)


@pytest.mark.ray
def test_out_of_memory_trials_are_infeasible_with_their_batch_size(sweep: Sweep) -> None:
    oom = [run for run in sweep.children if _batch(run) >= OOM_MIN_BATCH]
    assert oom, "the seeded sampler chose no batch size that runs out of memory"
    for run in oom:
        tags = run.data.tags
        assert run.info.status == "FAILED"
        assert tags[TAG_STATUS] == "failed"
        assert tags[TAG_FAILURE_KIND] == "out_of_memory"
        assert tags[TAG_OOM_BATCH_SIZE] == str(_batch(run))
        assert f"batch_size_per_worker={_batch(run)}" in tags[TAG_FAILURE_REASON]
        # No measurement was logged for it (the worst values are for the searcher only).
        assert "val/knn_top1" not in run.data.metrics
        # Ray Tune's last result of the trial (what OptunaSearch told the study): the worst
        # value of both objectives.
        (result_file,) = sweep.storage.glob(f"*/trial_{tags[TAG_TRIAL_ID]}/result.json")
        last = json.loads(result_file.read_text().strip().splitlines()[-1])
        assert last[INFEASIBLE].startswith("infeasible:")
        assert last["val/knn_top1"] == float("-inf")
        assert last["cost/cpu_seconds"] == float("inf")
    assert f"{len(oom)} failed" in sweep.stdout
    assert "FAILED (infeasible)" in sweep.stdout

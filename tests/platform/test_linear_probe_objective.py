"""``val/linear_top1`` as a user meets it: in a space file's objective, as ``tauray tune
--objective``, in a real ``tauray train`` run's reported metrics, and as the objective Ray Tune
optimises in a real one-trial sweep (local Ray, SQLite MLflow store)."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tauray.cli import main
from tauray.cluster import ray_session
from tauray.layout import TAG_KIND
from tauray.sweep import search
from tauray.sweep.plan import SweepRequest, plan_sweep
from tauray_spaces.spacefile import load_space_text
from tauray_trainers import metrics as names
from tauray_trainers.models.checkpoint import read_checkpoint

SPACE = """
name: linear-probe-space
description: Fixed τ searched for the best linear probe.
method: simclr
objective: {metric: val/linear_top1, mode: max}
parameters:
  - key: temperature/value
    distribution: loguniform
    low: 0.05
    high: 0.5
"""

TINY = (
    "--set",
    "epochs=1",
    "--set",
    "batch_size_per_worker=16",
    "--set",
    "data.max_train_samples=96",
    "--set",
    "data.max_val_samples=64",
    "--set",
    "data.image_size=16",
)


def test_a_space_file_may_optimise_the_linear_probe() -> None:
    space = load_space_text(SPACE)
    assert [(o.metric, o.mode) for o in space.objectives] == [(names.VAL_LINEAR_TOP1, "max")]
    with pytest.raises(ValueError, match="val/linear_top5"):
        load_space_text(SPACE.replace("val/linear_top1", "val/linear_top5"))


def test_tune_objective_option_reaches_the_searcher(tmp_path: Path) -> None:
    request = SweepRequest(space="simclr-temperature", objectives=("val/linear_top1:max",))
    plan = plan_sweep(request, cwd=tmp_path, environ={}, check_tracking=False)
    assert [(o.metric, o.mode) for o in plan.objectives] == [(names.VAL_LINEAR_TOP1, "max")]
    searcher, _, _ = search.build_searcher(plan, concurrency=1)
    assert searcher.metric == names.VAL_LINEAR_TOP1


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    with ray_session(num_cpus=2) as info:
        yield info


@pytest.mark.ray
def test_tauray_train_reports_the_linear_probe(
    ray_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--method",
            "simclr",
            *TINY,
            "--storage-path",
            str(tmp_path / "results"),
            "--name",
            "linear-probe",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "linear@1" in next(line for line in out.splitlines() if line.startswith("epoch 1/1"))
    match = re.search(r"^checkpoint: (\S+)$", out, flags=re.MULTILINE)
    assert match, out
    value = read_checkpoint(Path(match.group(1)))["metrics"][names.VAL_LINEAR_TOP1]
    assert 0.0 <= value <= 1.0
    assert f"{names.VAL_LINEAR_TOP1}: {value:.6g}" in out


@pytest.mark.ray
def test_a_sweep_optimises_the_linear_probe(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        "tune",
        "--space",
        "simclr-temperature",
        "--objective",
        "val/linear_top1:max",
        "--trials",
        "1",
        "--confirm-top",
        "0",
        "--experiment",
        "linear-probe-sweep",
        "--tracking-uri",
        uri,
        "--storage-path",
        str(tmp_path / "results"),
        *TINY,
    ]
    stdout = io.StringIO()
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    assert code == 0, stdout.getvalue()[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("linear-probe-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(run for run in runs if run.data.tags.get(TAG_KIND) == "sweep")
    trial = next(run for run in runs if run.data.tags.get(TAG_KIND) == "trial")
    assert parent.data.params["objective"] == "val/linear_top1:max"
    best = parent.data.metrics[f"best/{names.VAL_LINEAR_TOP1}"]
    assert best == trial.data.metrics[names.VAL_LINEAR_TOP1]
    shown = re.search(r"Best trial: #1 \(\S+\), val/linear_top1 = (\S+) at", stdout.getvalue())
    assert shown, stdout.getvalue()[-3000:]
    assert float(shown.group(1)) == pytest.approx(best, abs=1e-3)

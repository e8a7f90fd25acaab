"""A sweep whose storage path is an S3 bucket: ``tauray tune --storage-path s3://...``.

The bucket is served by a real S3 endpoint on loopback (moto's server: conftest's ``s3_endpoint``,
a subprocess in its own process group, stopped by PID); the sweep finds it the way it finds MinIO
or AWS in a cluster: through ``AWS_ENDPOINT_URL`` and the AWS credentials in the environment, which
the local Ray's workers inherit. One tiny sweep (2 trials of 2 epochs, one CPU worker each, a real
``mlflow server``) runs per trial runner (in the trial actor, and in a Ray Train worker group,
which keeps its checkpoints under the sweep's ``train/`` prefix); then:

- everything of the sweep is in the bucket (Ray Tune's state, the trials' checkpoints, tauray's
  request and clock, ``best_config.yaml``, the plots) and nothing in the working directory;
- MLflow got a model for each trial and the champion, loaded from the checkpoints in S3;
- ``--resume`` finds the sweep in the bucket (by its name under the storage path, and by URI),
  and ``tauray train --config`` reads the bucket's ``best_config.yaml``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient

from tauray.cli import main
from tauray.layout import TAG_KIND, TAG_MODEL_URI
from tauray.storage import RemotePath
from tauray.sweep.state import SWEEP_FILE, plan_resume
from tauray.training import prepare_run

if TYPE_CHECKING:
    from conftest import S3Endpoint  # tests/platform/conftest.py: the s3_endpoint fixture

BUCKET = "tauray-sweeps"
STORAGE = f"s3://{BUCKET}/team-a"
TRIALS = 2
EPOCHS = 2


@dataclass(frozen=True)
class Sweep:
    runner: str
    experiment: str
    exit_code: int
    stdout: str
    workdir: Path
    keys: list[str]  # every object in the bucket
    client: MlflowClient
    env: dict[str, str]


@pytest.fixture(scope="module", params=["in-trial", "ray-train"])
def sweep(
    request: pytest.FixtureRequest,
    s3_endpoint: S3Endpoint,
    mlflow_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sweep]:
    runner = request.param
    experiment = f"s3-storage-{runner}"
    workdir = tmp_path_factory.mktemp(f"s3-sweep-{runner}")
    argv = [
        "tune", "--space", "simclr-temperature", "--experiment", experiment,
        "--trial-runner", runner,
        "--trials", str(TRIALS), "--workers-per-trial", "1", "--num-cpus", "2",
        "--tracking-uri", mlflow_uri, "--storage-path", STORAGE, "--seed", "0",
        "--scheduler", "none", "--confirm-top", "0",
        "--set", f"epochs={EPOCHS}", "--set", "batch_size_per_worker=16",
        "--set", "data.max_train_samples=96", "--set", "data.max_val_samples=48",
    ]  # fmt: skip
    bucket = s3_endpoint.client()
    if not any(item["Name"] == BUCKET for item in bucket.list_buckets()["Buckets"]):
        bucket.create_bucket(Bucket=BUCKET)
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**s3_endpoint.env, "OMP_NUM_THREADS": "1"}.items():
            patch.setenv(key, value)  # the local Ray's workers inherit them
        patch.chdir(workdir)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(argv)
        pages = bucket.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        keys = [
            item["Key"]
            for page in pages
            for item in page.get("Contents", [])
            if item["Key"].startswith(f"team-a/{experiment}-")
        ]
        client = MlflowClient(mlflow_uri)
        yield Sweep(
            runner, experiment, exit_code, stdout.getvalue(), workdir, keys, client, s3_endpoint.env
        )


def _sweep_prefix(sweep: Sweep) -> str:
    (request_key,) = [key for key in sweep.keys if key.endswith(f"/{SWEEP_FILE}")]
    return request_key.removesuffix(f"/{SWEEP_FILE}")


@pytest.mark.ray
def test_sweep_keeps_everything_in_the_bucket(sweep: Sweep) -> None:
    assert sweep.exit_code == 0, sweep.stdout[-3000:]
    prefix = _sweep_prefix(sweep)
    names = {key.removeprefix(f"{prefix}/") for key in sweep.keys}
    assert {SWEEP_FILE, "tauray_clock.json", "tuner.pkl", "best_config.yaml"} <= names
    assert any(name.startswith("experiment_state") for name in names)
    assert any(name.startswith("plots/") and name.endswith(".png") for name in names)
    # In-trial: Ray Tune's checkpoints in each trial's folder; Ray Train: its run folders.
    folders = {name.rsplit("/checkpoint_", 1)[0] for name in names if "/checkpoint_" in name}
    assert len(folders) == TRIALS, sorted(names)
    if sweep.runner == "ray-train":
        assert all(folder.startswith("train/") for folder in folders), folders
    # Nothing went to a local folder instead (Path("s3://...") would be "./s3:/...").
    assert sorted(path.name for path in sweep.workdir.iterdir()) == [], sweep.stdout[-2000:]
    assert f"s3://{BUCKET}/{prefix}/best_config.yaml" in sweep.stdout


@pytest.mark.ray
def test_models_were_logged_from_the_checkpoints_in_the_bucket(sweep: Sweep) -> None:
    experiment = sweep.client.get_experiment_by_name(sweep.experiment)
    runs = sweep.client.search_runs([experiment.experiment_id])
    trials = [run for run in runs if run.data.tags.get(TAG_KIND) == "trial"]
    assert len(trials) == TRIALS
    assert all(run.info.status == "FINISHED" for run in trials)
    assert all(TAG_MODEL_URI in run.data.tags for run in trials), [r.data.tags for r in trials]
    champion = sweep.client.get_model_version_by_alias(sweep.experiment, "champion")
    assert champion.version


@pytest.mark.ray
def test_resume_and_train_find_the_sweep_in_the_bucket(sweep: Sweep) -> None:
    prefix = _sweep_prefix(sweep)
    name = prefix.rsplit("/", 1)[-1]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in sweep.env.items():
            patch.setenv(key, value)
        by_name = plan_resume(name, storage_path=STORAGE, cwd=sweep.workdir, check_tracking=False)
        by_uri = plan_resume(f"s3://{BUCKET}/{prefix}", cwd=sweep.workdir, check_tracking=False)
        run = prepare_run(config_path=f"s3://{BUCKET}/{prefix}/best_config.yaml")
    assert by_name.sweep_dir == by_uri.sweep_dir == RemotePath(f"s3://{BUCKET}/{prefix}")
    assert by_name.sweep_name == name
    assert by_name.request.trials == TRIALS
    assert run.config.epochs == EPOCHS

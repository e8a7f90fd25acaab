"""Training on a real local Ray (2 CPUs, 2 Ray Train V2 workers, gloo): SimCLR learns, DINO
keeps its ranks identical, a run killed after a checkpoint resumes to the same final metrics,
and ``tauray train`` trains CLIP end to end through the CLI.

One local Ray serves the whole module. Every trial costs ~30 s of fixed Ray overhead on 2 cores,
so the module runs four short trials (about 4 minutes on an idle 2-core machine).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from tauray.cli import main
from tauray.cluster import ray_session
from tauray.layout import (
    TAG_KIND,
    TAG_METHOD,
    TAG_MODEL_URI,
    TAG_PARENT_RUN_ID,
    TAG_STATUS,
    config_params,
)
from tauray.layout.models import read_model_metadata
from tauray.tracking import resolve_tracking_target, tracking_scope
from tauray.training import build_trainer
from tauray_trainers import metrics as names
from tauray_trainers.loop import FAULT_INJECTION_ENV, evaluate_untrained
from tauray_trainers.models import load_embedding_model
from tauray_trainers.models.checkpoint import read_checkpoint

pytestmark = pytest.mark.ray

TRAIN_EXPERIMENT = "train-cli"

# SimCLR on the cluttered digits: 16% kNN top-1 at random init; after these 5 epochs 25-29% on
# an AMD EPYC VM (seeds 0-3: 0.2535, 0.2535, 0.2730, 0.2869), about 30% where it was first run:
# the CPU's floating-point path changes the trajectory as much as another seed does. A run that
# learns nothing stays at its init's value, so a margin of 0.05 still tells learning apart.
SIMCLR: dict[str, Any] = {
    "method": "simclr",
    "epochs": 5,
    "seed": 0,
    "batch_size_per_worker": 16,
    "data": {"name": "digits-cluttered", "max_train_samples": 1024},
    "optimizer": {"lr": 0.002, "warmup_epochs": 0.5},
    "temperature": {"value": 0.2},
    # Evaluate only at the first and the last epoch (later epochs repeat the last evaluation).
    "eval": {"every_epochs": 100},
    # Keep every checkpoint: Result.metrics_dataframe lists the epochs of the kept ones.
    "checkpoint": {"keep": 10},
}
KNN_MARGIN = 0.05

# CLIP on the plain digits with template captions: zero-shot ~10% at init, ~80% after 5 epochs.
CLIP: dict[str, Any] = {
    "method": "clip",
    "epochs": 5,
    "batch_size_per_worker": 16,
    "data": {"name": "digits", "max_train_samples": 1024},
    "optimizer": {"lr": 0.002, "warmup_epochs": 0.5},
    "eval": {"every_epochs": 100},
}
CHANCE = 0.1
ZEROSHOT_MARGIN = 0.2

DINO: dict[str, Any] = {
    "method": "dino",
    "epochs": 2,
    "batch_size_per_worker": 16,
    "data": {"image_size": 16, "max_train_samples": 128, "max_val_samples": 64},
    "model": {"hidden_dim": 64, "embedding_dim": 32, "dino_out_dim": 64},
    "dino": {"num_local_crops": 2, "local_crop_size": 8},
    "eval": {"knn_k": 5},
    "checkpoint": {"keep": 10},
}

# Wall-clock figures differ between runs; everything else must match.
_TIMED = (
    names.PERF_SAMPLES_PER_SECOND,
    names.COST_WORKER_SECONDS,
    names.COST_CPU_SECONDS,
)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    with ray_session(num_cpus=2) as info:
        yield info


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray_results")


@pytest.fixture(scope="module")
def simclr_run(ray_cluster: Any, storage: Path) -> Any:
    trainer = build_trainer(
        SIMCLR, workers=2, gpus_per_worker=0, run_name="simclr", storage_path=storage
    )
    return trainer.fit()


def _epochs(result: Any) -> list[int]:
    return [int(e) for e in result.metrics_dataframe[names.EPOCH]]


def test_simclr_beats_its_random_init(simclr_run: Any) -> None:
    assert simclr_run.error is None
    assert _epochs(simclr_run) == [1, 2, 3, 4, 5]
    baseline = evaluate_untrained(SIMCLR)[names.VAL_KNN_TOP1]
    trained = simclr_run.metrics[names.VAL_KNN_TOP1]
    assert trained >= baseline + KNN_MARGIN, (baseline, trained)
    metrics = simclr_run.metrics
    assert metrics[names.COST_SAMPLES_SEEN] == 5 * 1024  # 32 per step x 32 steps x 5 epochs
    assert names.COST_GPU_SECONDS not in metrics  # no GPU reserved
    # Two workers of one CPU each: worker- and CPU-seconds agree.
    assert metrics[names.COST_CPU_SECONDS] == pytest.approx(metrics[names.COST_WORKER_SECONDS])
    assert metrics[names.DIST_STATE_DIVERGENCE] == 0.0
    saved = read_checkpoint(simclr_run.checkpoint.path)
    assert saved["epoch"] == 5 and saved["world_size"] == 2


def test_resume_after_a_failure_matches_the_uninterrupted_run(
    ray_cluster: Any, storage: Path, simclr_run: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "failed"
    trainer = build_trainer(
        SIMCLR,
        workers=2,
        gpus_per_worker=0,
        run_name="simclr-interrupted",
        storage_path=storage,
        max_failures=1,
        worker_env={FAULT_INJECTION_ENV: f"epoch=3,marker={marker}"},
    )
    result = trainer.fit()
    assert result.error is None
    # Both ranks failed halfway through epoch 3, once...
    assert (tmp_path / "failed.rank0").exists() and (tmp_path / "failed.rank1").exists()
    # ...and the restarted workers continued after epoch 2's checkpoint instead of starting over.
    assert _epochs(result) == [1, 2, 3, 4, 5]
    expected = {k: v for k, v in simclr_run.metrics.items() if k not in _TIMED}
    actual = {k: v for k, v in result.metrics.items() if k not in _TIMED}
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_dino_ranks_hold_identical_teacher_and_center(ray_cluster: Any, storage: Path) -> None:
    trainer = build_trainer(
        DINO, workers=2, gpus_per_worker=0, run_name="dino", storage_path=storage
    )
    result = trainer.fit()
    frame = result.metrics_dataframe
    assert list(frame[names.EPOCH]) == [1, 2]
    # Fingerprints of every weight (student, EMA teacher) and the DINO center, all-gathered from
    # both ranks at the end of each epoch: exactly equal.
    assert list(frame[names.DIST_STATE_DIVERGENCE]) == [0.0, 0.0]
    assert list(frame[names.TRAIN_TEACHER_TEMPERATURE]) == pytest.approx([0.04, 0.04])
    assert all(math.isfinite(v) for v in frame[names.TRAIN_LOSS])
    state = read_checkpoint(result.checkpoint.path)["model"]
    assert float(state["loss.center"].abs().sum()) > 0, "the center was updated"
    moved = [
        key
        for key in state
        if key.startswith("teacher.")
        and "running" not in key
        and "num_batches" not in key
        and not state[key].equal(state["student." + key.removeprefix("teacher.")])
    ]
    assert moved, "the EMA teacher differs from the student after training"


def test_tauray_train_cli_trains_clip(
    ray_cluster: Any,
    storage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mlflow_uri: str,
) -> None:
    run_file = tmp_path / "best.yaml"
    # The form `tauray tune` prints for its best trial: train_loop_config plus run-level keys.
    run_file.write_text(yaml.safe_dump({"train_loop_config": CLIP, "workers": 2}))
    code = main(
        [
            "train",
            "--config",
            str(run_file),
            "--set",
            "seed=1",
            "--storage-path",
            str(storage),
            "--name",
            "cli-clip",
            "--tracking-uri",
            mlflow_uri,
            "--experiment",
            TRAIN_EXPERIMENT,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    progress = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in progress] == [f"{e}/5" for e in range(1, 6)]
    assert all("loss" in line and "zero-shot@1" in line for line in progress)
    match = re.search(r"^checkpoint: (\S+)$", out, flags=re.MULTILINE)
    assert match, out
    checkpoint = Path(match.group(1))
    saved = read_checkpoint(checkpoint)
    assert saved["config"]["seed"] == 1 and saved["config"]["method"] == "clip"
    zero_shot = saved["metrics"][names.VAL_ZEROSHOT_TOP1]
    assert zero_shot >= CHANCE + ZEROSHOT_MARGIN, zero_shot
    assert f"val/zeroshot_top1: {zero_shot:.6g}" in out
    # The tuner logs this embedding model to MLflow: it loads and embeds a batch.
    exported, config = load_embedding_model(checkpoint)
    embeddings = exported.model(exported.example)
    assert config.method == "clip"
    assert embeddings.shape == (len(exported.example), config.model.embedding_dim)
    assert exported.model.embed_text(["a photo of the digit 3"]).shape == embeddings[:1].shape
    _assert_recorded_as_a_trial(mlflow_uri, saved, out)


def _assert_recorded_as_a_trial(uri: str, saved: dict[str, Any], out: str) -> None:
    """The run's MLflow record has a sweep trial's layout: the config as dotted params, every
    epoch's metrics with τ at step = epoch, the cost, the model, the status."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(TRAIN_EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "cli-clip" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags[TAG_KIND], tags[TAG_METHOD], tags[TAG_STATUS]) == ("train", "clip", "completed")
    assert TAG_PARENT_RUN_ID not in tags
    assert tags["mlflow.source.name"] == "tauray train" and tags["mlflow.user"]
    files = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in files
    assert run.data.params == {
        **config_params(saved["config"]),
        "workers_per_trial": "2",
        "gpus_per_worker": "0.0",
        "cpus_per_worker": "1.0",
    }
    history = client.get_metric_history(run.info.run_id, names.TRAIN_TEMPERATURE)
    assert sorted(entry.step for entry in history) == [1, 2, 3, 4, 5]
    knn = client.get_metric_history(run.info.run_id, names.VAL_ZEROSHOT_TOP1)
    final = max(knn, key=lambda entry: entry.step)
    assert final.value == pytest.approx(saved["metrics"][names.VAL_ZEROSHOT_TOP1])
    assert run.data.metrics["cost/samples_seen"] == saved["metrics"]["cost/samples_seen"]
    assert f"MLflow run {run.info.run_id}" in out
    # Its data as MLflow datasets; its model named after the run, the final values linked.
    contexts = {
        item.dataset.name: [tag.value for tag in item.tags] for item in run.inputs.dataset_inputs
    }
    assert contexts == {"digits-train": ["train"], "digits-validation": ["validation"]}
    model_uri = tags[TAG_MODEL_URI]
    (logged,) = client.search_logged_models([experiment.experiment_id])
    assert (logged.name, logged.model_uri, logged.source_run_id) == (
        "cli-clip",
        model_uri,
        run.info.run_id,
    )
    linked = {metric.key: metric for metric in logged.metrics}
    assert linked[names.VAL_ZEROSHOT_TOP1].value == final.value
    assert linked[names.VAL_ZEROSHOT_TOP1].step == 5
    assert linked[names.VAL_ZEROSHOT_TOP1].dataset_name == "digits-validation"
    assert linked[names.TRAIN_TEMPERATURE].value == run.data.metrics[names.TRAIN_TEMPERATURE]
    with tracking_scope(resolve_tracking_target(uri, environ={})):
        info = mlflow.models.get_model_info(model_uri)
        model = mlflow.pytorch.load_model(model_uri)
    assert read_model_metadata(info.metadata)["method"] == "clip"
    with torch.no_grad():
        text = model.embed_text(["a photo of the digit 3", "a photo of the digit 7"])
    assert text.shape == (2, int(info.metadata["embedding_dim"]))

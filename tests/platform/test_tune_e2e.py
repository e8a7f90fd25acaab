"""``tauray tune`` end to end: a real local Ray, real two-rank DDP trials, a real MLflow server.

One sweep runs once for the module (3 trials of simclr-temperature, 2 CPU workers each, so every
trial is a Ray Train worker group whose ranks gather negatives across the gloo group; 2 tiny
epochs). The first trial is made to fail halfway
through its first epoch with the trainer's fault-injection hook (``TAURAY_INJECT_FAILURE``), so
the sweep has to record a failure and go on. Everything is then checked through
``MlflowClient``: the parent run, a child run per trial with its parameters and per-epoch
metrics, the logged models, and the registered champion, which must load and embed a batch.

The fail-fast paths (unreachable tracking server, a bad ``--set``) need no cluster.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import ray
import torch
from mlflow import MlflowClient

from tauray import __version__, ui_layout
from tauray.cli import main
from tauray.layout import (
    CHAMPION_ALIAS,
    TAG_BEST_RUN,
    TAG_FAILURE_REASON,
    TAG_KIND,
    TAG_METHOD,
    TAG_MODEL_URI,
    TAG_PARENT_RUN_ID,
    TAG_SPACE,
    TAG_STATUS,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
    trial_record,
)
from tauray.layout.models import (
    TAG_CHAMPION,
    logged_model_id,
    logged_model_name,
    read_model_metadata,
)
from tauray.tracking import resolve_tracking_target, tracking_scope
from tauray.training import prepare_run
from tauray_trainers.config import build_config
from tauray_trainers.data import build_data, raw_images
from tauray_trainers.evaluation import knn_top1
from tauray_trainers.loop import FAULT_INJECTION_ENV

EXPERIMENT = "e2e-simclr"
METRIC = "val/knn_top1"
TRIALS = 3
EPOCHS = 2


@dataclass(frozen=True)
class SweepRun:
    exit_code: int
    stdout: str
    uri: str
    client: MlflowClient
    experiment_id: str
    parent: mlflow.entities.Run
    children: list[mlflow.entities.Run]
    storage: Path
    seconds: float


@pytest.fixture(scope="module")
def sweep(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> SweepRun:
    root = tmp_path_factory.mktemp("e2e-sweep")
    storage = root / "results"
    argv = [
        "tune",
        "--space",
        "simclr-temperature",
        "--experiment",
        EXPERIMENT,
        "--trials",
        str(TRIALS),
        "--workers-per-trial",
        "2",
        "--tracking-uri",
        mlflow_uri,
        "--storage-path",
        str(storage),
        "--num-cpus",
        "2",
        "--seed",
        "0",
        "--confirm-top",
        "0",
        "--early-signal",
        "curve",
        "--set",
        f"epochs={EPOCHS}",
        "--set",
        "batch_size_per_worker=16",
        "--set",
        "data.max_train_samples=128",
        "--set",
        "data.max_val_samples=64",
    ]
    stdout = io.StringIO()
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        # Local Ray workers inherit this process's environment: trial 1 (the first to reach
        # epoch 1) fails on rank 1, while rank 0 waits for it in a collective; the marker file
        # keeps later trials from failing.
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=1,rank=1,marker={root / 'fault' / 'injected'}")
        patch.chdir(root)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(argv)
    seconds = time.monotonic() - started
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, stdout.getvalue()[-3000:]
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [run for run in runs if run.data.tags.get(TAG_KIND) == "sweep"]
    assert len(parents) == 1, [run.data.tags for run in runs]
    children = sorted(
        (run for run in runs if run.data.tags.get(TAG_KIND) == "trial"),
        key=lambda run: int(run.data.tags[TAG_TRIAL_INDEX]),
    )
    return SweepRun(
        exit_code,
        stdout.getvalue(),
        mlflow_uri,
        client,
        experiment.experiment_id,
        parents[0],
        children,
        storage,
        seconds,
    )


@pytest.mark.ray
def test_sweep_finishes_and_prints_a_summary(sweep: SweepRun) -> None:
    assert sweep.exit_code == 0, sweep.stdout[-3000:]
    out = sweep.stdout
    assert f"{TRIALS} trials" in out
    assert "1 failed." in out
    assert "trial 1 failed: InjectedFailure: injected failure in epoch 1" in out
    assert "Best trial: #" in out
    assert "tauray train --config" in out
    assert f"{sweep.uri}/#/experiments/{sweep.experiment_id}/runs/{sweep.parent.info.run_id}" in out
    assert f"models:/{EXPERIMENT}@champion" in out
    print(f"e2e sweep wall time: {sweep.seconds:.0f} s")


@pytest.mark.ray
def test_parent_run_describes_the_sweep(sweep: SweepRun) -> None:
    parent = sweep.parent
    assert parent.info.status == "FINISHED"
    params = parent.data.params
    assert params["space"] == "simclr-temperature"
    assert params["method"] == "simclr"
    assert params["objective"] == "val/knn_top1:max"
    assert params["trials"] == str(TRIALS)
    assert params["workers_per_trial"] == "2"
    assert params["epochs"] == str(EPOCHS)
    assert params["sampler"].startswith("TPESampler(multivariate=True, group=True, seed=0")
    assert params["scheduler"].startswith("ASHA(time_attr=epoch, max_t=2")
    assert params["scheduler"].endswith("on rung/predicted_final (max; --early-signal curve)")
    assert params["code_version"].startswith(__version__)
    assert params["cluster_cpus"] == "2.0"
    # Two workers per trial are a DDP job: a Ray Train worker group (gloo on CPUs).
    assert params["trial_runner"] == "ray-train"
    metrics = parent.data.metrics
    assert metrics["trials/failed"] == 1
    assert metrics["trials/completed"] + metrics["trials/stopped_early"] == TRIALS - 1
    best_run = sweep.client.get_run(parent.data.tags[TAG_BEST_RUN])
    assert metrics["best/val/knn_top1"] == best_run.data.metrics["val/knn_top1"]
    # The data the registered champion trained on, on the sweep's run as on the best trial's.
    data = [
        {(item.dataset.name, item.dataset.digest) for item in run.inputs.dataset_inputs}
        for run in (parent, best_run)
    ]
    assert data[0] == data[1] and len(data[0]) == 2
    assert all(
        best_run.data.params[key.removeprefix("best/").replace("/", ".")] == value
        for key, value in params.items()
        if key.startswith("best/")
    )
    artifacts = {item.path for item in sweep.client.list_artifacts(parent.info.run_id)}
    assert {"best_config.yaml", "plots"} <= artifacts
    plots = {item.path for item in sweep.client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/objective_vs_temperature.png", "plots/optimization_history.png"} <= plots


@pytest.mark.ray
def test_one_child_run_per_trial_with_params_and_metrics_per_epoch(sweep: SweepRun) -> None:
    children = sweep.children
    assert len(children) == TRIALS
    assert len({run.data.tags[TAG_TRIAL_ID] for run in children}) == TRIALS
    for run in children:
        tags, params = run.data.tags, run.data.params
        assert tags[TAG_PARENT_RUN_ID] == sweep.parent.info.run_id
        assert tags[TAG_METHOD] == "simclr"
        assert tags[TAG_SPACE] == "simclr-temperature"
        assert params["epochs"] == str(EPOCHS)
        assert params["batch_size_per_worker"] == "16"
        assert params["temperature.mode"] in ("fixed", "learnable", "scheduled")
        assert float(params["optimizer.lr"]) > 0
    # The space's baselines run first: τ = 0.1 fixed, then τ = 0.07 learnable.
    assert children[0].data.params["temperature.value"] == "0.1"
    assert children[1].data.params["temperature.mode"] == "learnable"

    failed, *finished = children
    assert failed.info.status == "FAILED"
    assert failed.data.tags[TAG_STATUS] == "failed"
    reason = failed.data.tags[TAG_FAILURE_REASON]
    # Rank 1's own error, not the broken collective it left rank 0 in.
    assert "InjectedFailure: injected failure in epoch 1" in reason
    assert "(rank 1)" in reason
    assert TAG_MODEL_URI not in failed.data.tags
    for run in finished:
        assert run.info.status == "FINISHED"
        assert run.data.tags[TAG_STATUS] in ("completed", "stopped")
        knn = sweep.client.get_metric_history(run.info.run_id, "val/knn_top1")
        steps = [entry.step for entry in knn]
        assert steps == list(range(1, len(steps) + 1)) and steps
        if run.data.tags[TAG_STATUS] == "completed":
            assert steps == list(range(1, EPOCHS + 1))
        temperature = sweep.client.get_metric_history(run.info.run_id, "train/temperature")
        assert [entry.step for entry in temperature] == steps
        # --early-signal curve: what ASHA compared, logged beside the objective it predicts.
        predicted = sweep.client.get_metric_history(run.info.run_id, "rung/predicted_final")
        assert [entry.step for entry in predicted] == steps
        assert predicted[0].value == knn[0].value  # one point: the value itself
        assert all(entry.value > 0 for entry in temperature)
        assert run.data.metrics["cost/samples_seen"] > 0
        assert 0.0 <= run.data.metrics["val/knn_top1"] <= 1.0


@pytest.mark.ray
def test_the_runs_table_reads_well(sweep: SweepRun) -> None:
    """Names that say what differs, short searched keys, the objective's columns, the config
    file, MLflow's context tags and datasets: what a person sees in the MLflow UI."""
    client, parent = sweep.client, sweep.parent
    assert sweep.children[0].info.run_name == "t001 fixed τ=0.100"  # the space's first baseline
    assert sweep.children[1].info.run_name.startswith("t002 learnable τ0=0.070")
    for run in sweep.children:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert re.fullmatch(
            r"t\d{3} (fixed τ=|learnable τ0=|cosine τ )\S+( \S+)?", run.info.run_name
        )
        if tags[TAG_STATUS] == "stopped":
            epoch = tags[ui_layout.TAG_STOPPED_AT_EPOCH]
            assert run.info.run_name.endswith(f" stopped@{epoch}")
        else:
            assert (
                ui_layout.TAG_STOPPED_AT_EPOCH not in tags and "stopped@" not in run.info.run_name
            )
        assert params["tau_mode"] == params["temperature.mode"]
        assert {"lr", "weight_decay", "batch_size_per_worker"} <= set(params)
        assert not [key for key in params if key.startswith(("dino.", "model.text_", "loss.name"))]
        assert tags["mlflow.user"] and tags["mlflow.source.name"] == "tauray tune"
        assert tags["mlflow.source.git.commit"] == parent.data.tags["mlflow.source.git.commit"]
        contexts = {
            item.dataset.name: [tag.value for tag in item.tags]
            for item in run.inputs.dataset_inputs
        }
        assert contexts == {
            "digits-cluttered-train": ["train"],
            "digits-cluttered-validation": ["validation"],
        }
        files = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert ui_layout.CONFIG_FILE in files
        if tags[TAG_STATUS] == "failed":
            continue
        knn = [entry.value for entry in client.get_metric_history(run.info.run_id, METRIC)]
        assert metrics[ui_layout.OBJECTIVE_BEST] == max(knn)
        # --set epochs=2: the first rung is epoch 1, which every trial that ran reached.
        assert metrics[ui_layout.OBJECTIVE_AT_FIRST_RUNG] == knn[0]
    # The parent: the objective under the trials' key, the optimisation history, descriptions.
    best_run_id = parent.data.tags[TAG_BEST_RUN]
    assert parent.data.metrics[METRIC] == parent.data.metrics[f"best/{METRIC}"]
    curve = client.get_metric_history(parent.info.run_id, ui_layout.OBJECTIVE_BEST_SO_FAR)
    assert [entry.step for entry in curve] == sorted(entry.step for entry in curve)
    assert {entry.step for entry in curve} <= {
        int(run.data.tags[TAG_TRIAL_INDEX]) for run in sweep.children
    }
    assert curve[-1].value == parent.data.metrics[METRIC]
    values = [entry.value for entry in curve]
    assert values == sorted(values)  # max: the best so far never falls
    link = f"(#/experiments/{sweep.experiment_id}/runs/{best_run_id})"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("### Sweep ") and link in note
    assert f"**{parent.data.metrics[METRIC]:.4g}**" in note
    assert f"models:/{EXPERIMENT}@champion" in note
    experiment = client.get_experiment(sweep.experiment_id)
    description = experiment.tags["mlflow.note.content"]
    assert f"(#/experiments/{sweep.experiment_id}/runs/{parent.info.run_id})" in description
    assert link in description


@pytest.mark.ray
def test_completed_trials_and_the_best_one_logged_their_models(sweep: SweepRun) -> None:
    best_run_id = sweep.parent.data.tags[TAG_BEST_RUN]
    with_models = [
        run
        for run in sweep.children
        if run.data.tags[TAG_STATUS] == "completed" or run.info.run_id == best_run_id
    ]
    assert with_models
    for run in with_models:
        logged = sweep.client.get_logged_model(logged_model_id(run.data.tags[TAG_MODEL_URI]))
        assert logged.source_run_id == run.info.run_id
        # Named after the trial's run as it started (a stopped one's without `stopped@N`).
        stopped_at = run.data.tags.get(ui_layout.TAG_STOPPED_AT_EPOCH)
        started_as = run.info.run_name.removesuffix(f" stopped@{stopped_at}")
        assert logged.name == logged_model_name(started_as)
        assert re.fullmatch(
            r"t\d{3}-(fixed-tau=|learnable-tau0=|cosine-tau-)[0-9a-z=p-]+", logged.name
        )


@pytest.mark.ray
def test_the_models_tab_lists_the_trials_models_with_their_final_metrics(sweep: SweepRun) -> None:
    """What the experiment's Models tab shows: one model per trial that logged one, each
    named after its trial and carrying its run's final values (the validation metrics with
    the validation data set), sorted by the objective; the champion's tagged as such."""
    client = sweep.client
    by_objective = client.search_logged_models(
        [sweep.experiment_id], order_by=[{"field_name": f"metrics.{METRIC}", "ascending": False}]
    )
    runs = {run.info.run_id: run for run in sweep.children}
    with_models = [run for run in sweep.children if TAG_MODEL_URI in run.data.tags]
    assert sorted(model.source_run_id for model in by_objective) == sorted(
        run.info.run_id for run in with_models
    )
    names = [model.name for model in by_objective]
    assert len(set(names)) == len(names)
    final = []
    for model in by_objective:
        run = runs[model.source_run_id]
        assert model.model_uri == run.data.tags[TAG_MODEL_URI]
        linked = {metric.key: metric for metric in model.metrics}
        for key in (METRIC, ui_layout.OBJECTIVE_BEST, "val/linear_top1", "train/temperature"):
            assert linked[key].value == pytest.approx(run.data.metrics[key]), key
        last_epoch = max(entry.step for entry in client.get_metric_history(run.info.run_id, METRIC))
        assert linked[METRIC].step == last_epoch
        assert linked[METRIC].dataset_name == "digits-cluttered-validation"
        assert linked[ui_layout.OBJECTIVE_BEST].dataset_name == "digits-cluttered-validation"
        assert linked["train/temperature"].dataset_name is None
        final.append(linked[METRIC].value)
    assert final == sorted(final, reverse=True)
    version = client.get_model_version_by_alias(EXPERIMENT, CHAMPION_ALIAS)
    best_run = client.get_run(sweep.parent.data.tags[TAG_BEST_RUN])
    champion = client.get_logged_model(logged_model_id(best_run.data.tags[TAG_MODEL_URI]))
    assert champion.tags[TAG_CHAMPION] == f"models:/{EXPERIMENT}/{version.version}"
    assert [model.name for model in by_objective if TAG_CHAMPION in model.tags] == [champion.name]


@pytest.mark.ray
def test_champion_alias_loads_and_embeds_a_batch(sweep: SweepRun) -> None:
    version = sweep.client.get_model_version_by_alias(EXPERIMENT, CHAMPION_ALIAS)
    assert version.run_id == sweep.parent.data.tags[TAG_BEST_RUN]
    uri = f"models:/{EXPERIMENT}@{CHAMPION_ALIAS}"
    with tracking_scope(resolve_tracking_target(sweep.uri, environ={})):
        info = mlflow.models.get_model_info(uri)
        model = mlflow.pytorch.load_model(uri)
    shape = info.signature.inputs.inputs[0].shape
    assert tuple(shape[1:]) == (1, 32, 32)  # cluttered digits: 1 channel at 32 px
    assert info.signature.inputs.inputs[0].name == "images"
    assert info.signature.outputs.inputs[0].name == "embeddings"
    card = read_model_metadata(info.metadata)
    assert (card["method"], card["data_set"], card["image_size"]) == (
        "simclr",
        "digits-cluttered",
        32,
    )
    assert len(card["mean"]) == len(card["std"]) == 1
    described = sweep.client.get_model_version(EXPERIMENT, version.version).description
    assert "preprocessing inside the model" in described and "simclr" in described
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(5, *shape[1:], generator=generator)
    with torch.no_grad():
        embeddings = model(batch)
    assert embeddings.shape[0] == 5 and embeddings.ndim == 2
    assert torch.isfinite(embeddings).all()
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(5), atol=1e-4, rtol=0)
    assert not torch.allclose(embeddings[0], embeddings[1])


@pytest.mark.ray
def test_champion_scores_its_logged_knn_on_raw_validation_images(sweep: SweepRun) -> None:
    """The registered model, loaded fresh, fed the images as a user holds them (uint8 at the
    trained size, no normalisation), reproduces the kNN top-1 its trial logged."""
    version = sweep.client.get_model_version_by_alias(EXPERIMENT, CHAMPION_ALIAS)
    run = sweep.client.get_run(version.run_id)
    # The config as `tauray report` rebuilds it (params less the searched values' short keys).
    record = trial_record(
        run_id=run.info.run_id,
        run_status=run.info.status,
        tags=run.data.tags,
        params=run.data.params,
        metrics=run.data.metrics,
        epoch=EPOCHS,
        position=1,
    )
    config = record.config
    assert config is not None, record.config_error
    with tracking_scope(resolve_tracking_target(sweep.uri, environ={})):
        model = mlflow.pytorch.load_model(f"models:/{EXPERIMENT}@{CHAMPION_ALIAS}")
    bundle = build_data(build_config(config))
    train_images, train_labels = raw_images(bundle.train_eval, bundle.image_size)
    val_images, val_labels = raw_images(bundle.val, bundle.image_size)
    assert train_images.dtype == torch.uint8
    with torch.no_grad():
        knn = knn_top1(
            model(train_images),
            train_labels,
            model(val_images),
            val_labels,
            k=config["eval"]["knn_k"],
            temperature=config["eval"]["knn_temperature"],
            num_classes=bundle.num_classes,
        )
        as_floats = model(val_images.float() / 255)
    logged = run.data.metrics["val/knn_top1"]
    print(f"champion kNN top-1 on raw validation images {knn:.4f}, logged {logged:.4f}")
    assert abs(knn - logged) <= 0.005
    torch.testing.assert_close(as_floats, model(val_images))


@pytest.mark.ray
def test_best_config_file_trains_with_tauray_train(sweep: SweepRun) -> None:
    files = list(sweep.storage.glob("*/best_config.yaml"))
    assert len(files) == 1
    run = prepare_run(config_path=files[0])
    assert run.workers == 2
    best_run = sweep.client.get_run(sweep.parent.data.tags[TAG_BEST_RUN])
    assert run.config.temperature.mode == best_run.data.params["temperature.mode"]
    assert str(run.config.optimizer.lr) == best_run.data.params["optimizer.lr"]


# ---- fail fast, no cluster --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_tracking_server_fails_before_ray_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    code = main(
        [
            "tune",
            "--space",
            "simclr-temperature",
            "--tracking-uri",
            uri,
            "--storage-path",
            str(tmp_path),
        ]
    )
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tauray: error: ")
    assert f"MLflow tracking server {uri} is unreachable" in err
    assert not ray.is_initialized()
    assert not list(tmp_path.iterdir())
    print(f"unreachable tracking server reported after {elapsed:.1f} s")


def test_bad_set_fails_before_ray_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        [
            "tune",
            "--space",
            "simclr-temperature",
            "--tracking-uri",
            f"http://127.0.0.1:{_free_port()}",
            "--set",
            "optimizer.learning_rate=0.1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "optimizer.learning_rate" in err or "learning_rate" in err
    assert not ray.is_initialized()

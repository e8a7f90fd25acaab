"""tauray.tracking: where runs go, fail-fast checks, and the MLflow writes of a sweep.

The recorder and the Tune callback (:mod:`tauray.sweep.mlflow_logger`) are tested against a
real ``mlflow server`` (SQLite backend, served artifacts) on a loopback port. Trials are Ray Tune
``Trial`` objects built as stubs (no Ray cluster): the callbacks only read their id and config.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
import yaml
from ray.tune.experiment import Trial

from tauray import layout, tracking_models, training_record, ui_layout
from tauray.layout import (
    CHAMPION_ALIAS,
    TAG_FAILURE_KIND,
    TAG_FAILURE_REASON,
    TAG_KIND,
    TAG_METHOD,
    TAG_MODEL_URI,
    TAG_PARENT_RUN_ID,
    TAG_SPACE,
    TAG_STATUS,
    TAG_TRIAL_ID,
    config_params,
)
from tauray.layout.models import TAG_CHAMPION, read_model_metadata
from tauray.sweep import ledger as ledger_module
from tauray.sweep import mlflow_logger
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.mlflow_logger import MlflowTrialLogger
from tauray.tracking import (
    SweepRecorder,
    TrackingTarget,
    check_tracking_reachable,
    resolve_tracking_target,
    tracking_scope,
)
from tauray_trainers.config import build_config
from tauray_trainers.models import EmbeddingModel, ExportedModel, ModelCard

README = Path(__file__).resolve().parents[2] / "README.md"
FIXED = {
    "method": "simclr",
    "epochs": 2,
    "data": {"name": "digits-cluttered", "max_train_samples": 64},
}

# What Ray writes to a failed trial's error.txt (shape taken from a real Ray 2.60 run): Tune's
# task error, Ray Train's worker-group error, then the worker's own exception last.
RAY_ERROR_TEXT = """Failure # 1 (occurred at 2026-11-28_01-05-06)
ray::ImplicitFunc.train() (pid=10923, ip=192.0.2.2, repr=tauray_trial)
  File "/x/ray/tune/trainable/function_trainable.py", line 249, in _trainable_func
    output = fn()
  File "/x/tauray/tuning.py", line 310, in tauray_trial
    trainer.fit()
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
  File "/x/tauray_trainers/loop.py", line 586, in train_one_epoch
    raise NonFiniteLossError(step, epoch, temperature, float(loss.detach()))
tauray_trainers.loop.NonFiniteLossError: non-finite loss (nan) at step 7 (epoch 1)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TinyEncoder(torch.nn.Module):
    """Conv + BatchNorm + projection to 4 dimensions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(images))).mean(dim=(2, 3)))


TINY_CARD = ModelCard(
    method="simclr",
    backbone="tiny",
    data_set="digits-cluttered",
    image_size=8,
    channels=1,
    mean=(0.2765,),
    std=(0.1586,),
    temperature=0.1,
    temperature_mode="fixed",
    embedding_dim=4,
    embeds_text=False,
)


def _tiny_model() -> ExportedModel:
    torch.manual_seed(0)
    model = EmbeddingModel(TinyEncoder(), mean=(0.2765,), std=(0.1586,), image_size=8)
    return ExportedModel(model=model, example=torch.rand(3, 1, 8, 8), card=TINY_CARD)


def _trial(trial_id: str, sampled: dict) -> Trial:
    return Trial(
        "tauray_trial", config={"train_loop_config": sampled}, trial_id=trial_id, stub=True
    )


@pytest.fixture
def server_target(mlflow_uri: str) -> TrackingTarget:
    return resolve_tracking_target(mlflow_uri, environ={})


@pytest.fixture
def recorder(server_target: TrackingTarget) -> SweepRecorder:
    return SweepRecorder(server_target, f"test-{uuid.uuid4().hex[:8]}")


# ---- where runs go ----------------------------------------------------------------------------


def test_default_target_is_absolute_sqlite_with_artifacts_beside_it(tmp_path: Path) -> None:
    target = resolve_tracking_target(None, cwd=tmp_path, environ={})
    assert target.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert target.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert target.source == "default"
    assert "mlflow ui --backend-store-uri sqlite:////" in target.ui_hint("3", "abc")
    assert "#/experiments/3/runs/abc" in target.ui_hint("3", "abc")


def test_flag_beats_environment_and_environment_beats_default(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000/"}
    from_env = resolve_tracking_target(None, cwd=tmp_path, environ=env)
    assert (from_env.uri, from_env.source, from_env.artifact_location) == (
        "http://mlflow.example:5000",
        "env",
        None,
    )
    from_flag = resolve_tracking_target("sqlite:///runs/m.db", cwd=tmp_path, environ=env)
    assert from_flag.source == "flag"
    assert from_flag.uri == f"sqlite:///{tmp_path.resolve() / 'runs' / 'm.db'}"
    assert from_flag.artifact_location == (tmp_path.resolve() / "runs" / "mlartifacts").as_uri()
    assert from_env.ui_hint("7", "r1") == "open http://mlflow.example:5000/#/experiments/7/runs/r1"


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "empty"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://relative.db", "sqlite:///PATH"),
        ("http://", "no host"),
        ("mlruns", "not a tracking URI"),
        ("ftp://host/x", "not a tracking URI"),
    ],
)
def test_bad_tracking_uris_are_one_line_errors(tmp_path: Path, uri: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        resolve_tracking_target(uri, cwd=tmp_path, environ={})
    assert "\n" not in str(caught.value)


def test_unreachable_server_fails_fast_with_a_clear_message() -> None:
    target = resolve_tracking_target(f"http://127.0.0.1:{_free_port()}", environ={})
    with pytest.raises(ConnectionError, match="unreachable") as caught:
        check_tracking_reachable(target, timeout_s=2.0)
    assert target.uri in str(caught.value)
    assert "--tracking-uri" in str(caught.value)


def test_sqlite_in_a_missing_folder_is_rejected(tmp_path: Path) -> None:
    target = resolve_tracking_target(f"sqlite:///{tmp_path}/nope/mlflow.db", environ={})
    with pytest.raises(ValueError, match="does not exist"):
        check_tracking_reachable(target)
    check_tracking_reachable(resolve_tracking_target(None, cwd=tmp_path, environ={}))


def test_running_server_passes_the_check(server_target: TrackingTarget) -> None:
    check_tracking_reachable(server_target, timeout_s=10.0)


def test_tracking_scope_sets_and_restores_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://before.example:5000")
    mlflow.set_tracking_uri("http://before.example:5000")
    target = resolve_tracking_target(None, cwd=tmp_path, environ={})
    with tracking_scope(target):
        assert mlflow.get_tracking_uri() == target.uri
        assert os.environ["MLFLOW_TRACKING_URI"] == target.uri
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://before.example:5000"
    assert mlflow.get_tracking_uri() == "http://before.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    with tracking_scope(target):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_config_params_flatten_with_dots() -> None:
    params = config_params({"epochs": 2, "temperature": {"mode": "fixed", "start": None}})
    assert params == {"epochs": "2", "temperature.mode": "fixed", "temperature.start": "null"}


# ---- the recorder -----------------------------------------------------------------------------


def test_experiment_is_created_once_and_a_deleted_one_is_refused(
    server_target: TrackingTarget,
) -> None:
    name = f"exp-{uuid.uuid4().hex[:8]}"
    first = SweepRecorder(server_target, name)
    assert SweepRecorder(server_target, name).experiment_id == first.experiment_id
    first.client.delete_experiment(first.experiment_id)
    with pytest.raises(ValueError, match="was deleted"):
        SweepRecorder(server_target, name)


def test_trial_runs_are_children_found_again_by_trial_id(recorder: SweepRecorder) -> None:
    parent = recorder.start_sweep_run("sweep", {"space": "s"}, {"tauray.sweep": "sweep"})
    params = {f"p{index:03d}": index for index in range(150)}  # more than one log_batch
    run_id, created = recorder.start_trial_run(parent, "t1", "trial-001", params, {})
    again, created_again = recorder.start_trial_run(parent, "t1", "trial-001", params, {})
    other, _ = recorder.start_trial_run(parent, "t2", "trial-002", {}, {})
    assert (created, created_again, again) == (True, False, run_id)
    assert other != run_id
    run = recorder.client.get_run(run_id)
    assert run.data.tags[TAG_PARENT_RUN_ID] == parent
    assert run.data.tags[TAG_TRIAL_ID] == "t1"
    assert run.data.tags[TAG_KIND] == "trial"
    assert len(run.data.params) == 150
    assert recorder.client.get_run(parent).data.tags[TAG_KIND] == "sweep"


def test_model_is_logged_registered_and_loads_as_champion(recorder: SweepRecorder) -> None:
    parent = recorder.start_sweep_run("sweep", {}, {})
    run_id, _ = recorder.start_trial_run(parent, "t1", "trial-001", {}, {})
    exported = _tiny_model()
    model_uri = tracking_models.log_model(recorder, run_id, exported, name="t001-fixed-tau=0p100")
    name = f"champ-{uuid.uuid4().hex[:8]}"
    version = tracking_models.register_champion(recorder, model_uri, name)
    assert recorder.client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == (
        version.version
    )
    # The champion's logged model keeps its trial's name and says which version it became.
    logged = recorder.client.get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.name == "t001-fixed-tau=0p100" and logged.source_run_id == run_id
    assert logged.tags[TAG_CHAMPION] == f"models:/{name}/{version.version}"
    # The same model again (a finished sweep resumed again): the same version, no new one.
    again = tracking_models.register_champion(recorder, model_uri, name)
    assert again.version == version.version
    with pytest.raises(ValueError, match="models:/<model_id>"):
        tracking_models.register_champion(recorder, f"models:/{name}/1", name)
    assert len(recorder.client.search_model_versions(f"name='{name}'")) == 1
    champion_uri = f"models:/{name}@{CHAMPION_ALIAS}"
    with tracking_scope(recorder.target):
        loaded = mlflow.pytorch.load_model(champion_uri)
        info = mlflow.models.get_model_info(champion_uri)
    # Raw pixels in, either dtype: the model normalises them itself.
    pixels = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        expected = exported.model(pixels)
        embedded = loaded(pixels)
        from_floats = loaded(pixels.float() / 255)
    assert embedded.shape == (5, 4)
    torch.testing.assert_close(embedded, expected)
    torch.testing.assert_close(from_floats, expected)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(5))
    # A named signature, the real example images, the card as metadata, a description.
    inputs, outputs = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert [(spec.name, spec.shape) for spec in inputs] == [("images", (-1, 1, 8, 8))]
    assert [(spec.name, spec.shape) for spec in outputs] == [("embeddings", (-1, 4))]
    with tracking_scope(recorder.target):
        local = mlflow.artifacts.download_artifacts(model_uri)
    example = mlflow.models.Model.load(local).load_input_example(local)
    example = example["images"] if isinstance(example, dict) else example
    np.testing.assert_allclose(example, exported.example.numpy())
    card = read_model_metadata(info.metadata)
    assert card["mean"] == (0.2765,) and card["std"] == (0.1586,)
    assert (card["method"], card["temperature"], card["temperature_mode"]) == (
        "simclr",
        0.1,
        "fixed",
    )
    description = recorder.client.get_model_version(name, version.version).description
    assert "mean [0.2765], std [0.1586]" in description and "raw pixels" in description
    assert recorder.client.get_registered_model(name).description


# ---- the Tune callback ----------------------------------------------------------------------


def _run_readme_models_example(recorder: SweepRecorder) -> tuple[list[str], torch.nn.Module]:
    """Run README.md's logged-models example on ``recorder``'s experiment: its printed lines
    and the model it loads."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [block for block in blocks if "search_logged_models" in block]
    assert block.count('"tauray-demo"') == 1
    block = block.replace('"tauray-demo"', repr(recorder.experiment_name))
    namespace: dict[str, Any] = {}
    out = io.StringIO()
    with tracking_scope(recorder.target), contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)
    return out.getvalue().splitlines(), namespace["best"]


def _result(epoch: int, knn: float, temperature: float, checkpoint: str | None = None) -> dict:
    result = {
        "epoch": epoch,
        "training_iteration": epoch,
        "train/loss": 5.0 - epoch,
        "train/temperature": temperature,
        "val/knn_top1": knn,
        "cost/samples_seen": 64 * epoch,
        "time_total_s": 1.5 * epoch,
        "trial_id": "ignored",
        "config": {"train_loop_config": {}},
    }
    if checkpoint:
        result["checkpoint_path"] = checkpoint
    return result


def test_callback_writes_children_metrics_statuses_and_models(
    recorder: SweepRecorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded_from: list[str] = []

    def fake_load(path: str) -> ExportedModel:
        loaded_from.append(path)
        return _tiny_model()

    monkeypatch.setattr(mlflow_logger, "_load_embedding_model", fake_load)
    monkeypatch.setattr(ledger_module, "_error_text", lambda trial: RAY_ERROR_TEXT)
    parent = recorder.start_sweep_run("sweep", {}, {})
    ledger = TrialLedger(FIXED)
    logger = MlflowTrialLogger(
        recorder,
        ledger,
        parent,
        "simclr-temperature",
        objective=("val/knn_top1", "max"),
        first_rung=1,
    )
    callbacks = [ledger, logger]

    def emit(event: str, trial: Trial, **kwargs) -> None:
        for callback in callbacks:
            getattr(callback, event)(iteration=0, trials=[], trial=trial, **kwargs)

    done = _trial("aaaa0001", {"temperature": {"mode": "fixed", "value": 0.1}})
    stopped = _trial("aaaa0002", {"temperature": {"mode": "learnable", "value": 0.07}})
    failed = _trial("aaaa0003", {"temperature": {"mode": "fixed", "value": 0.02}})
    for trial in (done, stopped, failed):
        emit("on_trial_start", trial)
    emit("on_trial_result", done, result=_result(1, 0.30, 0.1, "/ckpt/a1"))
    emit("on_trial_result", done, result=_result(2, 0.40, 0.1, "/ckpt/a2"))
    emit("on_trial_result", done, result=_result(2, 0.40, 0.1, "/ckpt/a2"))  # re-reported
    emit("on_trial_result", stopped, result=_result(1, 0.20, 0.08, "/ckpt/b1"))
    emit("on_trial_result", failed, result=_result(1, 0.10, 0.02))
    emit("on_trial_complete", done)
    emit("on_trial_complete", stopped)
    emit("on_trial_error", failed)

    assert logger.errors == 0
    # Only the trial that ran all its epochs logged its model; the early-stopped one logs it
    # when the sweep picks it as the best, once.
    assert loaded_from == ["/ckpt/a2"]
    assert set(logger.model_uris) == {"aaaa0001"}
    stopped_uri = logger.log_model(ledger.records["aaaa0002"])
    assert logger.log_model(ledger.records["aaaa0002"]) == stopped_uri
    assert loaded_from == ["/ckpt/a2", "/ckpt/b1"]
    assert logger.log_model(ledger.records["aaaa0003"]) is None  # failed: no checkpoint
    client = recorder.client
    done_run = client.get_run(logger.run_ids["aaaa0001"])
    assert done_run.info.status == "FINISHED"
    assert done_run.data.tags[TAG_STATUS] == "completed"
    assert done_run.data.tags[TAG_SPACE] == "simclr-temperature"
    assert done_run.data.tags[TAG_METHOD] == "simclr"
    assert done_run.data.tags[TAG_MODEL_URI] == logger.model_uris["aaaa0001"]
    assert done_run.info.run_name == "t001 fixed τ=0.100"
    assert ui_layout.TAG_STOPPED_AT_EPOCH not in done_run.data.tags
    assert done_run.data.params["temperature.mode"] == "fixed"
    assert done_run.data.params["temperature.value"] == "0.1"
    assert done_run.data.params["data.max_train_samples"] == "64"
    # The searched values under short keys; only the sections SimCLR uses; the whole config
    # as an artifact.
    assert (done_run.data.params["tau"], done_run.data.params["tau_mode"]) == ("0.1", "fixed")
    assert not [key for key in done_run.data.params if key.startswith(("dino.", "model.text_"))]
    config_file = mlflow.artifacts.download_artifacts(
        run_id=done_run.info.run_id,
        artifact_path=ui_layout.CONFIG_FILE,
        dst_path=str(tmp_path),
        tracking_uri=recorder.target.uri,
    )
    config = yaml.safe_load(Path(config_file).read_text())
    assert config == ledger.records["aaaa0001"].config
    # MLflow's context: the User, Source and Dataset columns.
    assert done_run.data.tags["mlflow.source.name"] == "tauray tune"
    assert done_run.data.tags["mlflow.user"]
    inputs = {
        item.dataset.name: {tag.key: tag.value for tag in item.tags}
        for item in done_run.inputs.dataset_inputs
    }
    assert inputs == {
        "digits-cluttered-train": {"mlflow.data.context": "train"},
        "digits-cluttered-validation": {"mlflow.data.context": "validation"},
    }
    knn = client.get_metric_history(done_run.info.run_id, "val/knn_top1")
    assert [(m.step, m.value) for m in knn] == [(1, 0.30), (2, 0.40)]
    best = client.get_metric_history(done_run.info.run_id, ui_layout.OBJECTIVE_BEST)
    assert [(m.step, m.value) for m in best] == [(1, 0.30), (2, 0.40)]
    at_rung = client.get_metric_history(done_run.info.run_id, ui_layout.OBJECTIVE_AT_FIRST_RUNG)
    assert [(m.step, m.value) for m in at_rung] == [(1, 0.30)]
    assert [
        m.step for m in client.get_metric_history(done_run.info.run_id, "train/temperature")
    ] == [1, 2]
    assert "time_total_s" not in done_run.data.metrics
    assert "epoch" not in done_run.data.metrics

    # The Models tab: each model named after its trial, its run's final values linked to it
    # (the validation metrics with the validation data set), sortable by the objective.
    found = client.search_logged_models(
        [recorder.experiment_id],
        order_by=[{"field_name": f"metrics.{ui_layout.OBJECTIVE_BEST}", "ascending": False}],
    )
    assert [model.name for model in found] == ["t001-fixed-tau=0p100", "t002-learnable-tau0=0p070"]
    assert [model.model_uri for model in found] == [logger.model_uris["aaaa0001"], stopped_uri]
    assert [model.source_run_id for model in found] == [
        logger.run_ids["aaaa0001"],
        logger.run_ids["aaaa0002"],
    ]
    validation = "digits-cluttered-validation"
    linked = {m.key: (m.value, m.step, m.dataset_name) for m in found[0].metrics}
    assert linked == {
        "val/knn_top1": (0.40, 2, validation),
        ui_layout.OBJECTIVE_BEST: (0.40, 2, validation),
        ui_layout.OBJECTIVE_AT_FIRST_RUNG: (0.30, 1, validation),
        "train/loss": (3.0, 2, None),
        "train/temperature": (0.1, 2, None),
        "cost/samples_seen": (128.0, 2, None),
    }
    digests = {item.dataset.name: item.dataset.digest for item in done_run.inputs.dataset_inputs}
    assert {m.dataset_digest for m in found[0].metrics if m.dataset_name} == {digests[validation]}
    stopped_linked = {m.key: (m.value, m.step) for m in found[1].metrics}
    assert stopped_linked["val/knn_top1"] == (0.20, 1)
    assert stopped_linked["train/temperature"] == (0.08, 1)
    ascending = client.search_logged_models(
        [recorder.experiment_id],
        order_by=[{"field_name": "metrics.val/knn_top1", "ascending": True}],
    )
    assert [model.name for model in ascending] == [model.name for model in reversed(found)]
    better = client.search_logged_models(
        [recorder.experiment_id], filter_string="metrics.`val/knn_top1` > 0.3"
    )
    assert [model.name for model in better] == ["t001-fixed-tau=0p100"]
    # The README's example lists them the same way and loads the best.
    printed, best_model = _run_readme_models_example(recorder)
    assert [line.split()[:3] for line in printed] == [
        ["t001-fixed-tau=0p100", "0.4000", "τ"],
        ["t002-learnable-tau0=0p070", "0.2000", "τ"],
    ]
    assert printed[0].endswith("τ 0.1000") and printed[1].endswith("τ 0.0800")
    assert best_model(torch.rand(2, 1, 8, 8)).shape == (2, 4)

    stopped_run = client.get_run(logger.run_ids["aaaa0002"])
    assert stopped_run.data.tags[TAG_STATUS] == "stopped"
    assert stopped_run.data.tags[TAG_MODEL_URI] == stopped_uri
    assert stopped_run.info.status == "FINISHED"
    assert stopped_run.info.run_name == "t002 learnable τ0=0.070 stopped@1"
    assert stopped_run.data.tags[ui_layout.TAG_STOPPED_AT_EPOCH] == "1"
    assert stopped_run.data.metrics[ui_layout.OBJECTIVE_AT_FIRST_RUNG] == 0.20
    assert stopped_run.data.metrics[ui_layout.OBJECTIVE_BEST] == 0.20

    recorder.log_metric_history(parent, ui_layout.OBJECTIVE_BEST_SO_FAR, [(1, 0.4), (2, 0.4)])
    curve = client.get_metric_history(parent, ui_layout.OBJECTIVE_BEST_SO_FAR)
    assert [(m.step, m.value) for m in curve] == [(1, 0.4), (2, 0.4)]

    failed_run = client.get_run(logger.run_ids["aaaa0003"])
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags[TAG_STATUS] == "failed"
    assert failed_run.data.tags[TAG_FAILURE_REASON].startswith(
        "NonFiniteLossError: non-finite loss (nan) at step 7"
    )
    assert failed_run.data.tags[TAG_FAILURE_KIND] == "non_finite"
    assert failed_run.info.run_name == "t003 fixed τ=0.020"
    assert TAG_MODEL_URI not in failed_run.data.tags

    children = client.search_runs(
        [recorder.experiment_id], filter_string=f"tags.`{TAG_PARENT_RUN_ID}` = '{parent}'"
    )
    assert len(children) == 3

    # A restarted driver (sweep restore) finds the runs and does not log epoch 2 twice.
    again = MlflowTrialLogger(recorder, TrialLedger(FIXED), parent, "simclr-temperature")
    again.on_trial_result(0, [], done, _result(2, 0.40, 0.1))
    again.on_trial_result(0, [], done, _result(3, 0.45, 0.1))
    assert again.run_ids["aaaa0001"] == logger.run_ids["aaaa0001"]
    steps = [m.step for m in client.get_metric_history(done_run.info.run_id, "val/knn_top1")]
    assert steps == [1, 2, 3]


def test_runs_of_lost_trials_are_ended_and_the_report_skips_them(recorder: SweepRecorder) -> None:
    from tauray.report import read_trials

    parent = recorder.start_sweep_run("sweep", {}, {})
    ledger = TrialLedger(FIXED)
    logger = MlflowTrialLogger(recorder, ledger, parent, "simclr-temperature")
    known = _trial("dddd0001", {"temperature": {"mode": "fixed", "value": 0.1}})
    pending = _trial("dddd0002", {"temperature": {"mode": "fixed", "value": 0.2}})
    for callback in (ledger, logger):
        callback.on_trial_start(0, [], known)
    logger.on_trial_result(0, [], known, _result(1, 0.30, 0.1))
    # A previous driver created this trial's run, then died before Ray Tune saved the trial.
    lost_id, _ = recorder.start_trial_run(
        parent, "dddd0099", "trial-003-dddd0099", {}, {layout.TAG_TRIAL_INDEX: "3"}
    )
    recorder.log_metrics(lost_id, {"val/knn_top1": 0.99}, step=1)
    # A nested run tauray did not create (no trial id) is not ours to end.
    foreign = recorder.client.create_run(
        recorder.experiment_id, tags={TAG_PARENT_RUN_ID: parent}
    ).info.run_id

    logger.on_experiment_end(trials=[known, pending])

    assert logger.errors == 0
    assert logger.lost_run_ids == [lost_id]
    client = recorder.client
    lost = client.get_run(lost_id)
    assert lost.info.status == "KILLED"
    assert lost.data.tags[TAG_STATUS] == layout.STATUS_LOST
    assert "suggested a new trial" in lost.data.tags[layout.TAG_LOST_REASON]
    assert client.get_run(logger.run_ids["dddd0001"]).info.status == "RUNNING"
    assert client.get_run(foreign).info.status == "RUNNING"
    client.delete_run(foreign)
    records, run_ids = read_trials(client, recorder.experiment_id, parent)
    assert [record.trial_id for record in records] == ["dddd0001"]
    assert lost_id not in run_ids.values()

    # Ctrl-C: the unfinished trial's run ends KILLED; a resumed driver reopens it.
    logger.interrupt(ledger.ordered())
    known_run = logger.run_ids["dddd0001"]
    assert client.get_run(known_run).info.status == "KILLED"
    assert client.get_run(known_run).data.tags[TAG_STATUS] == "running"
    resumed = MlflowTrialLogger(recorder, TrialLedger(FIXED), parent, "simclr-temperature")
    resumed.set_state(logger.get_state())
    resumed.on_trial_result(0, [], known, _result(1, 0.30, 0.1))  # re-reported: skipped
    resumed.on_trial_result(0, [], known, _result(2, 0.35, 0.1))
    assert client.get_run(known_run).info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(known_run, "val/knn_top1")] == [1, 2]
    resumed.on_experiment_end(trials=[known])
    assert resumed.lost_run_ids == []  # the lost run is ended already


def test_callback_survives_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenRecorder:
        def start_trial_run(self, *args, **kwargs):
            raise ConnectionError("tracking server went away")

    ledger = TrialLedger(FIXED)
    logger = MlflowTrialLogger(BrokenRecorder(), ledger, "parent", "space")  # type: ignore[arg-type]
    trial = _trial("bbbb0001", {})
    ledger.on_trial_start(0, [], trial)
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, _result(1, 0.1, 0.1))
    assert logger.errors == 2
    assert ledger.records["bbbb0001"].status == "running"


# ---- a `tauray train` run ---------------------------------------------------------------------


def test_a_training_run_logs_its_data_and_a_model_named_after_it(
    server_target: TrackingTarget, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(training_record, "_load_exported", lambda path: _tiny_model())
    config = build_config({**FIXED, "temperature": {"mode": "learnable", "value": 0.07}})
    experiment = f"train-{uuid.uuid4().hex[:8]}"
    record = training_record.TrainingRunRecord(
        server_target,
        experiment,
        config,
        "train-simclr-20260102-030405-000006",
        {"workers": 2, "gpus_per_worker": 0.0, "cpus_per_worker": 1.0},
    )
    record.epoch(_result(1, 0.30, 0.07))
    record.epoch(_result(2, 0.45, 0.05))
    model_uri = record.finish("/ckpt/final")
    assert model_uri is not None
    client = record.recorder.client
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_MODEL_URI] == model_uri
    # A trial's context: the User and Source columns, the full config as config.yaml.
    assert run.data.tags["mlflow.source.name"] == "tauray train" and run.data.tags["mlflow.user"]
    config_file = mlflow.artifacts.download_artifacts(
        run_id=record.run_id,
        artifact_path=ui_layout.CONFIG_FILE,
        dst_path=str(tmp_path),
        tracking_uri=server_target.uri,
    )
    assert yaml.safe_load(Path(config_file).read_text()) == config.to_dict()
    inputs = {
        item.dataset.name: [tag.value for tag in item.tags] for item in run.inputs.dataset_inputs
    }
    assert inputs == {
        "digits-cluttered-train": ["train"],
        "digits-cluttered-validation": ["validation"],
    }
    (logged,) = client.search_logged_models([record.recorder.experiment_id])
    assert logged.name == "train-simclr-20260102-030405-000006"
    assert logged.model_uri == model_uri and logged.source_run_id == record.run_id
    linked = {m.key: (m.value, m.step, m.dataset_name) for m in logged.metrics}
    assert linked["val/knn_top1"] == (0.45, 2, "digits-cluttered-validation")
    assert linked["train/temperature"] == (0.05, 2, None)
    assert [m.step for m in client.get_metric_history(record.run_id, "val/knn_top1")] == [1, 2]
    with tracking_scope(server_target):
        loaded = mlflow.pytorch.load_model(model_uri)
    assert loaded(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_linked_final_metrics_are_each_metric_last_entry_by_step_then_time(
    recorder: SweepRecorder,
) -> None:
    from mlflow.entities import Metric

    client = recorder.client
    run_id = client.create_run(recorder.experiment_id).info.run_id
    client.log_batch(
        run_id,
        metrics=[
            Metric("val/knn_top1", 0.3, 100, 1),
            Metric("val/knn_top1", 0.4, 90, 2),  # a higher step wins over a later time
            Metric("train/temperature", 0.10, 100, 2),
            Metric("train/temperature", 0.08, 120, 2),  # re-logged later at the same step
        ],
    )
    model = client.create_logged_model(recorder.experiment_id, source_run_id=run_id)
    config = build_config(FIXED).to_dict()
    tracking_models.link_final_metrics(
        recorder, run_id, f"models:/{model.model_id}", config, "val/knn_top1"
    )
    linked = {
        m.key: (m.value, m.step, m.timestamp, m.dataset_name)
        for m in client.get_logged_model(model.model_id).metrics
    }
    assert linked == {
        "val/knn_top1": (0.4, 2, 90, f"{FIXED['data']['name']}-validation"),
        "train/temperature": (0.08, 2, 120, None),
    }
    # The linked entries repeat the run's last points: its curves gain no point.
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/knn_top1")) == [1, 2]

"""Platform training helpers that need no running Ray: scheduling arithmetic, run files,
validation before Ray starts, failure unwrapping and the progress line."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
import ray
import yaml

from tauray.cli import main
from tauray.cluster import (
    DRIVER_CPU_FRACTION,
    DRIVER_RESOURCE,
    ClusterInfo,
    driver_resources,
    max_concurrent_trials,
)
from tauray.run_file import load_run_file
from tauray.training import (
    build_trainer,
    describe_failure,
    format_metrics,
    is_out_of_memory,
    prepare_run,
    worker_errors,
)
from tauray_trainers import metrics as names
from tauray_trainers.loop import NonFiniteLossError, TrialOutOfMemoryError

LOCAL = ClusterInfo(cpus=2, gpus=0, local=True, address=None, driver_resource=True)
REMOTE = ClusterInfo(cpus=16, gpus=4, local=False, address="head:6379", driver_resource=False)


# ---- cluster arithmetic -------------------------------------------------------------------------


def test_drivers_never_take_a_whole_cpu() -> None:
    assert driver_resources(LOCAL) == {"CPU": 0.0, DRIVER_RESOURCE: 1.0}
    assert driver_resources(REMOTE) == {"CPU": DRIVER_CPU_FRACTION}


def test_two_worker_trials_fit_a_two_cpu_machine() -> None:
    assert max_concurrent_trials(LOCAL, workers_per_trial=2, gpus_per_worker=0) == 1
    assert max_concurrent_trials(LOCAL, workers_per_trial=1, gpus_per_worker=0) == 2
    assert max_concurrent_trials(LOCAL, 1, 0, cpus_per_worker=0.5) == 4


def test_gpu_trials_are_limited_by_gpus() -> None:
    assert max_concurrent_trials(REMOTE, workers_per_trial=2, gpus_per_worker=1) == 2
    assert max_concurrent_trials(REMOTE, workers_per_trial=1, gpus_per_worker=0.5) == 8
    # Without the driver resource each driver costs a hundredth of a CPU.
    assert max_concurrent_trials(REMOTE, workers_per_trial=4, gpus_per_worker=0) == 3


def test_a_trial_that_never_fits_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"one trial needs 3 worker\(s\) x 1 CPU") as info:
        max_concurrent_trials(LOCAL, workers_per_trial=3, gpus_per_worker=0)
    assert "cluster has 2 CPU and 0 GPU" in str(info.value)
    with pytest.raises(ValueError, match="1 x 1 GPU"):
        max_concurrent_trials(LOCAL, workers_per_trial=1, gpus_per_worker=1)
    with pytest.raises(ValueError, match="workers_per_trial must be an int >= 1, got 0"):
        max_concurrent_trials(LOCAL, workers_per_trial=0, gpus_per_worker=0)
    with pytest.raises(ValueError, match="cpus_per_worker must be a finite number > 0, got 0"):
        max_concurrent_trials(LOCAL, workers_per_trial=1, gpus_per_worker=0, cpus_per_worker=0)


# ---- run files and validation -------------------------------------------------------------------


def test_run_file_accepts_both_forms(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"method": "dino", "epochs": 3}))
    assert load_run_file(plain) == ({"method": "dino", "epochs": 3}, {})
    best = tmp_path / "best.yaml"
    best.write_text(
        yaml.safe_dump(
            {
                "train_loop_config": {"method": "clip", "epochs": 2},
                "workers": 4,
                "gpus_per_worker": 1,
            }
        )
    )
    assert load_run_file(best) == (
        {"method": "clip", "epochs": 2},
        {"workers": 4, "gpus_per_worker": 1},
    )
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump({"train_loop_config": {}, "objective": 0.9}))
    with pytest.raises(ValueError, match="unknown top-level key\\(s\\) objective"):
        load_run_file(odd)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run_file(tmp_path / "missing.yaml")


def test_prepare_run_merges_file_method_and_overrides(tmp_path: Path) -> None:
    best = tmp_path / "best.yaml"
    best.write_text(
        yaml.safe_dump({"train_loop_config": {"method": "clip", "epochs": 2}, "workers": 4})
    )
    request = prepare_run(
        method="dino", config_path=best, overrides=["epochs=7", "temperature.value=0.2"]
    )
    assert request.config.method == "dino"
    assert request.config.epochs == 7
    assert request.config.temperature.value == 0.2
    assert request.workers == 4
    assert prepare_run(config_path=best, workers=1).workers == 1


def test_bad_runs_fail_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # No Ray is running in this module: each error comes from validation alone.
    assert main(["train", "--set", "optimizer.momentun=0.5"]) == 2
    assert "unknown config key 'optimizer.momentun'" in capsys.readouterr().err
    assert main(["train", "--workers", "3", "--set", "global_batch_size=64"]) == 2
    assert "not divisible by the 3 workers" in capsys.readouterr().err
    assert main(["train", "--workers", "0"]) == 2
    assert "workers must be an int >= 1" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_checks_tracking_as_tune_does_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["train", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"http://127.0.0.1:{port} is unreachable" in err
    assert main(["train", "--tracking-uri", "sqlite://"]) == 2
    assert "write SQLite URIs as sqlite:///PATH" in capsys.readouterr().err
    assert main(["train", "--no-tracking", "--experiment", "x"]) == 2
    assert "--no-tracking records nothing" in capsys.readouterr().err
    assert main(["train", "--experiment", " "]) == 2
    assert "--experiment is empty" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "mlflow.db").exists()  # nothing was recorded


def test_build_trainer_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        build_trainer(
            {"bogus": 1}, workers=1, gpus_per_worker=0, run_name="x", storage_path=tmp_path
        )
    with pytest.raises(ValueError, match="run_name"):
        build_trainer({}, workers=1, gpus_per_worker=0, run_name="a/b", storage_path=tmp_path)
    with pytest.raises(ValueError, match="gpus_per_worker must be a finite number >= 0"):
        build_trainer({}, workers=1, gpus_per_worker=-1, run_name="x", storage_path=tmp_path)
    trainer = build_trainer(
        {"epochs": 2, "checkpoint": {"keep": 3}},
        workers=2,
        gpus_per_worker=0,
        run_name="x",
        storage_path=tmp_path,
        max_failures=2,
        worker_env={"A": "1"},
    )
    assert trainer.train_loop_config["epochs"] == 2
    assert trainer.scaling_config.num_workers == 2
    assert trainer.scaling_config.resources_per_worker == {"CPU": 1.0}
    assert trainer.run_config.failure_config.max_failures == 2
    assert trainer.run_config.checkpoint_config.num_to_keep == 3
    assert trainer.run_config.worker_runtime_env == {"env_vars": {"A": "1"}}
    assert trainer.run_config.storage_path == str(tmp_path.resolve())


# ---- failures and progress ----------------------------------------------------------------------


class _TaskError(Exception):
    """Stands in for Ray's RayTaskError: the worker's exception sits in ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"ray::RayTrainWorker.run()\n{type(cause).__name__}: {cause}")
        self.cause = cause


class _GroupError(Exception):
    """Stands in for ray.train.WorkerGroupError: failures per rank."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_worker_errors_unwrap_to_the_root_cause() -> None:
    nan = NonFiniteLossError(step=7, epoch=1, temperature=0.01, loss=float("nan"))
    oom = TrialOutOfMemoryError(256, 512, "cuda:0")
    error = _GroupError({1: _TaskError(oom), 0: _TaskError(nan)})
    roots = worker_errors(error)
    assert roots == [nan, oom]
    assert is_out_of_memory(error)
    assert not is_out_of_memory(_GroupError({0: _TaskError(nan)}))
    assert describe_failure(error).startswith("NonFiniteLossError: non-finite loss (nan) at step 7")
    # Errors crossing process boundaries keep their fields.
    assert pickle.loads(pickle.dumps(oom)).global_batch_size == 512


def test_progress_line_shows_the_key_metrics() -> None:
    line = format_metrics(
        {
            names.EPOCH: 3,
            names.TRAIN_LOSS: 2.5,
            names.TRAIN_TEMPERATURE: 0.07,
            names.TRAIN_LR: 0.0003,
            names.VAL_ZEROSHOT_TOP1: 0.5,
            names.PERF_SAMPLES_PER_SECOND: 812.4,
        },
        epochs=10,
    )
    assert line == (
        "epoch 3/10  loss 2.5000  τ 0.0700  lr 0.0003  zero-shot@1 0.5000  samples/s 812"
    )


@pytest.mark.parametrize(
    ("workers", "gpus", "cpus", "bad"),
    [
        (0, 0.0, 1.0, "workers"),
        (1, float("nan"), 1.0, "gpus"),
        (1, -1.0, 1.0, "gpus"),
        (1, 0.0, 0.0, "cpus"),
        (1, 0.0, float("inf"), "cpus"),
    ],
)
def test_train_tune_and_the_cluster_agree_on_resources(
    tmp_path: Path, workers: int, gpus: float, cpus: float, bad: str
) -> None:
    from tauray.sweep import SweepRequest, plan_sweep

    with pytest.raises(ValueError, match=bad) as train:
        prepare_run(workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus)
    with pytest.raises(ValueError, match=bad) as tune:
        plan_sweep(
            SweepRequest(
                space="simclr-temperature",
                workers_per_trial=workers,
                gpus_per_worker=gpus,
                cpus_per_worker=cpus,
            ),
            cwd=tmp_path,
            environ={},
            check_tracking=False,
        )
    with pytest.raises(ValueError, match=bad) as cluster:
        max_concurrent_trials(LOCAL, workers, gpus, cpus)
    # One rule, worded for where the value came from (tune names its options).
    assert str(tune.value).startswith("--")
    rule = str(train.value).split(" must be ", 1)[1]
    assert str(tune.value).split(" must be ", 1)[1] == rule
    assert str(cluster.value).split(" must be ", 1)[1] == rule

"""``tauray tune --resume`` after the sweep's driver was SIGKILLed, and a worker killed mid-trial.

The module runs one sweep (3 trials of simclr-temperature, one CPU worker each, 2 tiny epochs,
no early stopping, ``--max-failures 1``) as a real ``tauray tune`` subprocess (console script) in
its own process group and SIGKILLs the whole group (the driver and the local Ray it started) as
soon as MLflow shows one finished trial and another one running with epoch 1 logged. Ray Tune
saves its experiment state every second (``TUNE_GLOBAL_CHECKPOINT_S=1``) so the kill lands after
a save, as it would in a long sweep.

Then ``tauray tune --resume <sweep folder>`` runs in this process with the trainer's fault hook
set to SIGKILL rank 0's worker process halfway through epoch 2 of the first trial to get there
(its pid goes to the marker file): that trial must restart from its epoch-1 checkpoint
(``FailureConfig``).

Checked through MLflow: the same parent run, FINISHED; one child run per trial, all completed;
every metric of every trial logged exactly once per epoch (steps 1..2, none twice).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from tauray.cli import main
from tauray.tracking import TAG_KIND, TAG_PARENT_RUN_ID, TAG_STATUS, TAG_TRIAL_ID
from tauray.tuning import SWEEP_FILE
from tauray_trainers.loop import FAULT_INJECTION_ENV

EXPERIMENT = "resume-after-kill"
TRIALS = 3
EPOCHS = 2


@dataclass(frozen=True)
class Resumed:
    exit_code: int
    stdout: str
    client: MlflowClient
    first_parent_id: str
    finished_before_kill: int
    unfinished_at_kill: list[str]
    parents: list[mlflow.entities.Run]
    children: list[mlflow.entities.Run]
    kill_marker: Path


def _runs(client: MlflowClient) -> list[mlflow.entities.Run]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=100)


def _kill_tree(group: int, ray_tmp: str) -> None:
    """SIGKILL the sweep's process group, then any Ray process of its temp dir that left it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if ray_tmp in command:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def resumed(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    root = tmp_path_factory.mktemp("resume")
    storage = root / "results"
    ray_tmp = tempfile.mkdtemp(prefix="trs", dir="/tmp")  # short: Ray's socket paths
    argv = [
        str(Path(sys.executable).parent / "tauray"), "tune", "--space", "simclr-temperature",
        "--experiment", EXPERIMENT, "--trials", str(TRIALS), "--workers-per-trial", "1",
        "--tracking-uri", mlflow_uri, "--storage-path", str(storage), "--num-cpus", "2",
        "--seed", "0", "--scheduler", "none", "--max-failures", "1",
        "--set", f"epochs={EPOCHS}", "--set", "batch_size_per_worker=32",
        "--set", "data.max_train_samples=256", "--set", "data.max_val_samples=64",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RAY_TMPDIR": ray_tmp,
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
    }
    env.pop(FAULT_INJECTION_ENV, None)
    log = root / "first-session.log"
    client = MlflowClient(mlflow_uri)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300
            finished, unfinished = 0, []
            while time.monotonic() < deadline and process.poll() is None:
                children = [r for r in _runs(client) if r.data.tags.get(TAG_KIND) == "trial"]
                finished = sum(r.info.status == "FINISHED" for r in children)
                # A trial that is running with epoch 1 logged (so it has a checkpoint).
                unfinished = [
                    r.data.tags[TAG_TRIAL_ID]
                    for r in children
                    if r.info.status == "RUNNING" and "train/loss" in r.data.metrics
                ]
                if finished >= 1 and unfinished:
                    time.sleep(1.5)  # past Ray Tune's next experiment-state save
                    break
                time.sleep(0.5)
        finally:
            _kill_tree(process.pid, ray_tmp)
            process.wait(timeout=30)
    assert finished >= 1 and unfinished, log.read_text()[-3000:]
    parents = [r for r in _runs(client) if r.data.tags.get(TAG_KIND) == "sweep"]
    assert len(parents) == 1, log.read_text()[-3000:]
    (sweep_dir,) = [path.parent for path in storage.glob(f"*/{SWEEP_FILE}")]

    marker = root / "worker-kill" / "killed"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=2,marker={marker},action=kill,rank=0")
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.chdir(root)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(["tune", "--resume", str(sweep_dir), "--num-cpus", "2"])
    runs = _runs(client)
    return Resumed(
        exit_code=exit_code,
        stdout=stdout.getvalue(),
        client=client,
        first_parent_id=parents[0].info.run_id,
        finished_before_kill=finished,
        unfinished_at_kill=unfinished,
        parents=[r for r in runs if r.data.tags.get(TAG_KIND) == "sweep"],
        children=[r for r in runs if r.data.tags.get(TAG_KIND) == "trial"],
        kill_marker=marker,
    )


@pytest.mark.ray
def test_resumed_sweep_continues_the_same_parent_run(resumed: Resumed) -> None:
    assert resumed.exit_code == 0, resumed.stdout[-3000:]
    assert "resuming sweep" in resumed.stdout
    assert [run.info.run_id for run in resumed.parents] == [resumed.first_parent_id]
    parent = resumed.parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials/completed"] == TRIALS


@pytest.mark.ray
def test_every_trial_done_with_one_child_run(resumed: Resumed) -> None:
    children = resumed.children
    trial_ids = [run.data.tags[TAG_TRIAL_ID] for run in children]
    assert len(trial_ids) == TRIALS, trial_ids
    assert len(set(trial_ids)) == TRIALS, trial_ids
    for run in children:
        assert run.data.tags[TAG_PARENT_RUN_ID] == resumed.first_parent_id
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags[TAG_STATUS] == "completed"


@pytest.mark.ray
def test_trial_unfinished_at_the_kill_kept_its_run(resumed: Resumed) -> None:
    by_trial = {run.data.tags[TAG_TRIAL_ID]: run for run in resumed.children}
    assert resumed.unfinished_at_kill
    for trial_id in resumed.unfinished_at_kill:
        run = by_trial[trial_id]
        assert run.info.status == "FINISHED"
        steps = [m.step for m in resumed.client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == list(range(1, EPOCHS + 1)), steps


@pytest.mark.ray
def test_metric_steps_are_continuous_without_duplicates(resumed: Resumed) -> None:
    for run in resumed.children:
        assert "train/loss" in run.data.metrics
        for metric in run.data.metrics:
            steps = [m.step for m in resumed.client.get_metric_history(run.info.run_id, metric)]
            assert len(steps) == len(set(steps)), (metric, steps)
            if metric.startswith("train/"):
                assert sorted(steps) == list(range(1, EPOCHS + 1)), (metric, steps)


@pytest.mark.ray
def test_worker_killed_mid_trial_recovers_from_its_checkpoint(resumed: Resumed) -> None:
    marker = Path(f"{resumed.kill_marker}.rank0")
    # The hook wrote the pid of the worker process it then SIGKILLed.
    assert marker.is_file(), "no trial reached epoch 2 in the resumed session"
    assert int(marker.read_text()) > 0
    assert "failed" not in {run.data.tags[TAG_STATUS] for run in resumed.children}

"""``tauray tune --resume`` after the driver was SIGKILLed, after Ctrl-C, and after a head restart.

Every sweep here is simclr-temperature with tiny data, one CPU worker per trial, no early
stopping, run as a real ``tauray tune`` subprocess (console script) in its own process group, and
checked through a real ``mlflow server``.

**SIGKILL** (3 trials of 2 epochs, ``--max-failures 1``): the whole process group (the driver
and the local Ray it started) is SIGKILLed as soon as MLflow shows one finished trial and another
one running with epoch 1 logged. Ray Tune saves its experiment state every second
(``TUNE_GLOBAL_CHECKPOINT_S=1``) so the kill lands after a save, as it would in a long sweep.
Then ``tauray tune --resume <sweep folder>`` runs in this process with the trainer's fault hook
set to SIGKILL rank 0's worker process halfway through epoch 2 of the first trial to get there
(its pid goes to the marker file): that trial must restart from its epoch-1 checkpoint
(``FailureConfig``). Checked: the same parent run, FINISHED; one child run per trial, all
completed; every metric of every trial logged exactly once per epoch (steps 1..2, none twice).

**Ctrl-C** (2 trials of 3 epochs, one at a time): SIGINT goes to the sweep's process group, as a
terminal sends it, once one trial finished and the other has logged an epoch. The sweep must exit
with 130 after Ray Tune saved its state, say in one line how to resume, and end its parent run as
KILLED tagged ``interrupted`` (no traceback). Before resuming, the test adds what a driver killed
at the wrong moment leaves behind: a RUNNING child run of a trial Ray Tune never saved. The
resumed sweep must finish every trial in the same runs, end that run as KILLED / ``lost``, and
``tauray report`` must not count it. The sweep has a time budget (never reached): the resumed
session must run with what the first one left of it.

**Head restarted** (``slow``; 2 trials of 3 epochs, one at a time): the sweep runs against a
token-authenticated ``ray start --head`` (``--address``); the driver is SIGKILLed mid-trial,
the head is stopped (its process group, by PID) and started again on the same ports, and
``tauray tune --resume <folder> --address ...`` finishes the sweep from the storage path.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from process_helpers import kill_tree

from tauray.cli import main
from tauray.layout import (
    STATUS_LOST,
    TAG_KIND,
    TAG_LOST_REASON,
    TAG_PARENT_RUN_ID,
    TAG_RESUME_COMMAND,
    TAG_STATUS,
    TAG_TRIAL_ID,
    TAG_TRIAL_INDEX,
)
from tauray.sweep.console import graceful_ctrl_c
from tauray.sweep.state import SWEEP_FILE, spent_tune_seconds
from tauray.tracking import SweepRecorder, resolve_tracking_target
from tauray_trainers.loop import FAULT_INJECTION_ENV

if TYPE_CHECKING:
    from conftest import RayHeads  # tests/platform/conftest.py: the ray_heads fixture

TAURAY = str(Path(sys.executable).parent / "tauray")

EXPERIMENT = "resume-after-kill"
TRIALS = 3
EPOCHS = 2

CTRL_C_EXPERIMENT = "resume-after-ctrl-c"
CTRL_C_TRIALS = 2
CTRL_C_EPOCHS = 3
CTRL_C_BUDGET_S = 3600  # never reached: the resumed session must get 3600 s minus what was spent
LOST_TRIAL_ID = "0dd0a11f"  # what Ray Tune's trial ids look like: 8 hex digits

HEAD_EXPERIMENT = "resume-after-head-restart"
HEAD_TRIALS = 2
HEAD_EPOCHS = 3


def _sweep_argv(
    experiment: str, trials: int, epochs: int, tracking_uri: str, storage: Path, *extra: str
) -> list[str]:
    return [
        TAURAY, "tune", "--space", "simclr-temperature", "--experiment", experiment,
        "--trials", str(trials), "--workers-per-trial", "1", "--tracking-uri", tracking_uri,
        "--storage-path", str(storage), "--seed", "0", "--scheduler", "none", "--confirm-top", "0",
        "--set", f"epochs={epochs}", "--set", "batch_size_per_worker=32",
        "--set", "data.max_train_samples=256", "--set", "data.max_val_samples=64",
        *extra,
    ]  # fmt: skip


def _runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], max_results=100)


def _is_child(run: Run) -> bool:
    return run.data.tags.get(TAG_KIND) == "trial"


def _trial_runs(runs: list[Run]) -> list[Run]:
    """The child runs that are trials of the sweep (not runs of trials it lost)."""
    return [run for run in runs if _is_child(run) and run.data.tags.get(TAG_STATUS) != STATUS_LOST]


def _parents(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.data.tags.get(TAG_KIND) == "sweep"]


def _one_done_one_midway(runs: list[Run]) -> list[str] | None:
    """Trial ids running with epoch 1 logged, once at least one trial finished; else None."""
    children = _trial_runs(runs)
    finished = sum(run.info.status == "FINISHED" for run in children)
    midway = [
        run.data.tags[TAG_TRIAL_ID]
        for run in children
        if run.info.status == "RUNNING" and "train/loss" in run.data.metrics
    ]
    return midway if finished >= 1 and midway else None


def _start_sweep(
    argv: list[str], cwd: Path, env: dict[str, str], out: IO[bytes]
) -> subprocess.Popen[bytes]:
    """A ``tauray tune`` subprocess in its own process group (signals go to it and its Ray)."""
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for(
    process: subprocess.Popen[bytes],
    client: MlflowClient,
    experiment: str,
    condition: Callable[[list[Run]], list[str] | None],
    timeout_s: float = 300.0,
) -> list[str] | None:
    """Poll MLflow until ``condition`` holds (its value) or the process ends (None)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        found = condition(_runs(client, experiment))
        if found:
            return found
        time.sleep(0.5)
    return None


def _local_env(ray_tmp: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp, **extra}
    env.pop(FAULT_INJECTION_ENV, None)
    return env


def _sweep_dir(storage: Path) -> Path:
    (sweep_dir,) = [path.parent for path in storage.glob(f"*/{SWEEP_FILE}")]
    return sweep_dir


def _steps(client: MlflowClient, run: Run, metric: str) -> list[int]:
    return [entry.step for entry in client.get_metric_history(run.info.run_id, metric)]


def _assert_trials_complete_once(
    client: MlflowClient, runs: list[Run], parent_id: str, trials: int, epochs: int
) -> None:
    """One FINISHED, completed child run per trial; each metric once per epoch."""
    children = _trial_runs(runs)
    trial_ids = [run.data.tags[TAG_TRIAL_ID] for run in children]
    assert len(trial_ids) == trials and len(set(trial_ids)) == trials, trial_ids
    for run in children:
        assert run.data.tags[TAG_PARENT_RUN_ID] == parent_id
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags[TAG_STATUS] == "completed"
        assert "train/loss" in run.data.metrics
        for metric in run.data.metrics:
            steps = _steps(client, run, metric)
            assert len(steps) == len(set(steps)), (metric, steps)
            if metric.startswith("train/"):
                assert sorted(steps) == list(range(1, epochs + 1)), (metric, steps)


# ---- SIGKILL -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resumed:
    exit_code: int
    stdout: str
    client: MlflowClient
    first_parent_id: str
    unfinished_at_kill: list[str]
    runs: list[Run]
    kill_marker: Path


@pytest.fixture(scope="module")
def resumed(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    root = tmp_path_factory.mktemp("resume")
    storage = root / "results"
    ray_tmp = tempfile.mkdtemp(prefix="trs", dir="/tmp")  # short: Ray's socket paths
    argv = _sweep_argv(
        EXPERIMENT, TRIALS, EPOCHS, mlflow_uri, storage, "--num-cpus", "2", "--max-failures", "1"
    )
    env = _local_env(ray_tmp, TUNE_GLOBAL_CHECKPOINT_S="1")
    log = root / "first-session.log"
    client = MlflowClient(mlflow_uri)
    with log.open("wb") as out:
        process = _start_sweep(argv, root, env, out)
        try:
            unfinished = _wait_for(process, client, EXPERIMENT, _one_done_one_midway)
            if unfinished:
                time.sleep(1.5)  # past Ray Tune's next experiment-state save
        finally:
            kill_tree(process.pid, ray_tmp)
            process.wait(timeout=30)
    assert unfinished, log.read_text()[-3000:]
    parents = _parents(_runs(client, EXPERIMENT))
    assert len(parents) == 1, log.read_text()[-3000:]

    marker = root / "worker-kill" / "killed"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=2,marker={marker},action=kill,rank=0")
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.chdir(root)
        with contextlib.redirect_stdout(stdout):
            exit_code = main(["tune", "--resume", str(_sweep_dir(storage)), "--num-cpus", "2"])
    return Resumed(
        exit_code=exit_code,
        stdout=stdout.getvalue(),
        client=client,
        first_parent_id=parents[0].info.run_id,
        unfinished_at_kill=unfinished,
        runs=_runs(client, EXPERIMENT),
        kill_marker=marker,
    )


@pytest.mark.ray
def test_resumed_sweep_continues_the_same_parent_run(resumed: Resumed) -> None:
    assert resumed.exit_code == 0, resumed.stdout[-3000:]
    assert "resuming sweep" in resumed.stdout
    parents = _parents(resumed.runs)
    assert [run.info.run_id for run in parents] == [resumed.first_parent_id]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags[TAG_STATUS] == "finished"
    assert parents[0].data.metrics["trials/completed"] == TRIALS


@pytest.mark.ray
def test_every_trial_done_with_one_child_run_and_no_duplicated_steps(resumed: Resumed) -> None:
    _assert_trials_complete_once(
        resumed.client, resumed.runs, resumed.first_parent_id, TRIALS, EPOCHS
    )
    # A trial whose run the killed driver created just before the kill, but that Ray Tune had
    # not saved yet, is lost: its run must not stay RUNNING (the kill timing decides whether
    # there is one; the Ctrl-C test below makes one for sure).
    for run in resumed.runs:
        if _is_child(run) and run.data.tags.get(TAG_STATUS) == STATUS_LOST:
            assert run.info.status == "KILLED"
    assert all(run.info.status != "RUNNING" for run in resumed.runs)


@pytest.mark.ray
def test_trial_unfinished_at_the_kill_kept_its_run(resumed: Resumed) -> None:
    by_trial = {run.data.tags[TAG_TRIAL_ID]: run for run in _trial_runs(resumed.runs)}
    for trial_id in resumed.unfinished_at_kill:
        run = by_trial[trial_id]
        assert run.info.status == "FINISHED"
        assert _steps(resumed.client, run, "train/loss") == list(range(1, EPOCHS + 1))


@pytest.mark.ray
def test_worker_killed_mid_trial_recovers_from_its_checkpoint(resumed: Resumed) -> None:
    marker = Path(f"{resumed.kill_marker}.rank0")
    # The hook wrote the pid of the worker process it then SIGKILLed.
    assert marker.is_file(), "no trial reached epoch 2 in the resumed session"
    assert int(marker.read_text()) > 0
    assert "failed" not in {run.data.tags[TAG_STATUS] for run in _trial_runs(resumed.runs)}


# ---- Ctrl-C --------------------------------------------------------------------------------------


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process and give Python a moment to run its handler."""
    os.kill(os.getpid(), signum)
    for _ in range(50):
        time.sleep(0.01)


def test_ctrl_c_before_ray_tune_runs_stops_at_once() -> None:
    env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    announced: list[str] = []
    with graceful_ctrl_c(announced.append) as state:
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Ray Tune leaves SIGINT to us
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)  # Ray Tune's loop has not started: nothing to save yet
    assert state.requested and announced == []
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == env_before


# SIGTERM is how a sweep is stopped from outside: `tauray jobs stop`, a deleted pod, `kill`.
@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")]
)
def test_signal_stops_ray_tune_after_a_save_and_a_second_one_at_once(
    signum: signal.Signals, name: str
) -> None:
    before = signal.getsignal(signum)
    announced: list[str] = []
    stops: list[int] = []
    with graceful_ctrl_c(announced.append) as state:
        # What Ray Tune's loop installs when it starts: SIGUSR1 ends the loop after a save.
        signal.signal(signal.SIGUSR1, lambda signum, frame: stops.append(signum))
        _deliver(signum)
        assert state.requested and stops == [signal.SIGUSR1]
        assert announced == [
            f"{name}: stopping the sweep after Ray Tune saves its state "
            "(press Ctrl-C again to stop at once)"
        ]
        with pytest.raises(KeyboardInterrupt):
            _deliver(signum)
        assert stops == [signal.SIGUSR1]
    assert signal.getsignal(signum) is before


@dataclass(frozen=True)
class Interrupted:
    exit_code: int
    output: str  # stdout and stderr of the interrupted `tauray tune`
    sweep_dir: Path
    runs_after_interrupt: list[Run]
    midway_at_interrupt: list[str]
    lost_run_id: str
    resume_exit_code: int
    resume_output: str
    runs: list[Run]
    client: MlflowClient
    report_exit_code: int
    report: dict
    session_seconds: float  # wall time of the interrupted `tauray tune`
    clock_after_interrupt: float  # Ray Tune seconds the sweep's clock file held then
    clock_after_resume: float


@pytest.fixture(scope="module")
def interrupted(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    root = tmp_path_factory.mktemp("ctrl-c")
    storage = root / "results"
    ray_tmp = tempfile.mkdtemp(prefix="trc", dir="/tmp")
    argv = _sweep_argv(
        CTRL_C_EXPERIMENT, CTRL_C_TRIALS, CTRL_C_EPOCHS, mlflow_uri, storage,
        "--num-cpus", "2", "--max-concurrent-trials", "1", "--time-budget", str(CTRL_C_BUDGET_S),
    )  # fmt: skip
    log = root / "interrupted-session.log"
    client = MlflowClient(mlflow_uri)
    with log.open("wb") as out:
        # Ray Tune's default save period: Ctrl-C saves anyway.
        started = time.monotonic()
        process = _start_sweep(argv, root, _local_env(ray_tmp), out)
        try:
            midway = _wait_for(process, client, CTRL_C_EXPERIMENT, _one_done_one_midway)
            if midway:
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
                exit_code = process.wait(timeout=180)
                session_seconds = time.monotonic() - started
        finally:
            kill_tree(process.pid, ray_tmp)
            process.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert midway, output[-3000:]
    sweep_dir = _sweep_dir(storage)
    clock_after_interrupt = spent_tune_seconds(sweep_dir)
    runs_after_interrupt = _runs(client, CTRL_C_EXPERIMENT)
    (parent,) = _parents(runs_after_interrupt)

    # What a driver killed right after creating a trial's run, before Ray Tune saved the trial,
    # leaves: a RUNNING child run the resumed sweep cannot know. It reports a value better than
    # any real trial's, so a report that counted it would pick it as the best.
    recorder = SweepRecorder(resolve_tracking_target(mlflow_uri, environ={}), CTRL_C_EXPERIMENT)
    lost_run_id, created = recorder.start_trial_run(
        parent.info.run_id,
        LOST_TRIAL_ID,
        run_name=f"trial-{CTRL_C_TRIALS + 1:03d}-{LOST_TRIAL_ID}",
        params={"temperature.mode": "fixed", "temperature.value": "0.1"},
        tags={TAG_STATUS: "running", TAG_TRIAL_INDEX: str(CTRL_C_TRIALS + 1)},
    )
    assert created
    recorder.log_metrics(lost_run_id, {"val/knn_top1": 1.0, "train/loss": 0.1}, step=1)

    captured = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.delenv(FAULT_INJECTION_ENV, raising=False)
        patch.chdir(root)
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            resume_exit_code = main(["tune", "--resume", str(sweep_dir), "--num-cpus", "2"])
    report_dir = root / "report"
    with contextlib.redirect_stdout(io.StringIO()):
        report_exit_code = main(
            ["report", CTRL_C_EXPERIMENT, "--tracking-uri", mlflow_uri, "--output", str(report_dir)]
        )
    report_file = report_dir / "report.json"
    return Interrupted(
        exit_code=exit_code,
        output=output,
        sweep_dir=sweep_dir,
        runs_after_interrupt=runs_after_interrupt,
        midway_at_interrupt=midway,
        lost_run_id=lost_run_id,
        resume_exit_code=resume_exit_code,
        resume_output=captured.getvalue(),
        runs=_runs(client, CTRL_C_EXPERIMENT),
        client=client,
        report_exit_code=report_exit_code,
        report=json.loads(report_file.read_text()) if report_file.is_file() else {},
        session_seconds=session_seconds,
        clock_after_interrupt=clock_after_interrupt,
        clock_after_resume=spent_tune_seconds(sweep_dir),
    )


@pytest.mark.ray
def test_ctrl_c_exits_130_with_one_line_saying_how_to_resume(interrupted: Interrupted) -> None:
    output = interrupted.output
    assert interrupted.exit_code == 130, output[-3000:]
    assert "Ctrl-C: stopping the sweep after Ray Tune saves its state" in output
    hints = [line for line in output.splitlines() if "--resume" in line]
    assert hints == [
        f"tauray: error: sweep {interrupted.sweep_dir.name} was interrupted; Ray Tune saved its "
        f"state in {interrupted.sweep_dir}: continue it with "
        f"`tauray tune --resume {interrupted.sweep_dir}`"
    ], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "Tuner.restore" not in output  # Ray's own hint is not how tauray resumes


@pytest.mark.ray
def test_ctrl_c_ends_the_runs_as_interrupted(interrupted: Interrupted) -> None:
    (parent,) = _parents(interrupted.runs_after_interrupt)
    assert parent.info.status == "KILLED"
    assert parent.data.tags[TAG_STATUS] == "interrupted"
    assert parent.data.tags[TAG_RESUME_COMMAND] == f"tauray tune --resume {interrupted.sweep_dir}"
    assert "trials/completed" not in parent.data.metrics  # results come when the sweep ends
    children = {
        run.data.tags[TAG_TRIAL_ID]: run for run in _trial_runs(interrupted.runs_after_interrupt)
    }
    assert any(run.info.status == "FINISHED" for run in children.values())
    for trial_id in interrupted.midway_at_interrupt:
        assert children[trial_id].info.status == "KILLED"
        assert children[trial_id].data.tags[TAG_STATUS] == "running"


@pytest.mark.ray
def test_resume_after_ctrl_c_finishes_every_trial_in_the_same_runs(
    interrupted: Interrupted,
) -> None:
    assert interrupted.resume_exit_code == 0, interrupted.resume_output[-3000:]
    assert "resuming sweep" in interrupted.resume_output
    (parent_before,) = _parents(interrupted.runs_after_interrupt)
    (parent,) = _parents(interrupted.runs)
    assert parent.info.run_id == parent_before.info.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_STATUS] == "finished"
    assert parent.data.metrics["trials/completed"] == CTRL_C_TRIALS
    _assert_trials_complete_once(
        interrupted.client, interrupted.runs, parent.info.run_id, CTRL_C_TRIALS, CTRL_C_EPOCHS
    )
    before = {
        run.data.tags[TAG_TRIAL_ID]: run for run in _trial_runs(interrupted.runs_after_interrupt)
    }
    after = {run.data.tags[TAG_TRIAL_ID]: run for run in _trial_runs(interrupted.runs)}
    for trial_id, run in before.items():  # no trial got a second run
        assert after[trial_id].info.run_id == run.info.run_id


@pytest.mark.ray
def test_resumed_sweep_gets_what_is_left_of_its_time_budget(interrupted: Interrupted) -> None:
    spent = interrupted.clock_after_interrupt
    # The interrupted session's Ray Tune time was recorded (less than its whole wall time,
    # which includes start-up and the end of the runs) ...
    assert 0 < spent < interrupted.session_seconds
    # ... and the resumed session ran with the rest of the budget, and added its own time.
    assert (
        f"time budget: {CTRL_C_BUDGET_S - spent:.0f} s left of {CTRL_C_BUDGET_S} s "
        f"({spent:.0f} s spent in earlier sessions)"
    ) in interrupted.resume_output
    assert interrupted.clock_after_resume > spent


@pytest.mark.ray
def test_run_of_a_lost_trial_is_ended_and_not_counted(interrupted: Interrupted) -> None:
    lost = interrupted.client.get_run(interrupted.lost_run_id)
    assert lost.info.status == "KILLED"
    assert lost.data.tags[TAG_STATUS] == STATUS_LOST
    reason = lost.data.tags[TAG_LOST_REASON]
    assert "before Ray Tune saved the trial" in reason and "suggested a new trial" in reason
    assert "ended 1 run(s) of trials lost" in interrupted.resume_output
    (parent,) = _parents(interrupted.runs)
    assert LOST_TRIAL_ID not in parent.data.tags.get("tauray.best_trial_id", "")

    assert interrupted.report_exit_code == 0
    report = interrupted.report
    trial_ids = [trial["trial_id"] for trial in report["trials"]]
    assert len(trial_ids) == CTRL_C_TRIALS and LOST_TRIAL_ID not in trial_ids
    assert report["best"] != LOST_TRIAL_ID and report["best"] in trial_ids


# ---- the Ray head restarted --------------------------------------------------------------------


@dataclass(frozen=True)
class HeadRestarted:
    resume_exit_code: int
    resume_output: str
    first_parent_id: str
    midway_at_kill: list[str]
    runs: list[Run]
    client: MlflowClient


@pytest.fixture(scope="module")
def head_restarted(
    ray_heads: RayHeads, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> HeadRestarted:
    root = tmp_path_factory.mktemp("head-restart")
    storage = root / "results"  # outlives the head, as a shared volume would
    head = ray_heads.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(head.client_env(), OMP_NUM_THREADS="1", TUNE_GLOBAL_CHECKPOINT_S="1")
    env.pop(FAULT_INJECTION_ENV, None)
    argv = _sweep_argv(
        HEAD_EXPERIMENT, HEAD_TRIALS, HEAD_EPOCHS, mlflow_uri, storage,
        "--address", head.gcs_address, "--max-concurrent-trials", "1",
    )  # fmt: skip
    log = root / "first-session.log"
    client = MlflowClient(mlflow_uri)
    try:
        with log.open("wb") as out:
            process = _start_sweep(argv, root, env, out)
            try:
                midway = _wait_for(process, client, HEAD_EXPERIMENT, _one_done_one_midway)
                if midway:
                    time.sleep(1.5)  # past Ray Tune's next experiment-state save
            finally:
                kill_tree(process.pid)
                process.wait(timeout=30)
        assert midway, log.read_text(errors="replace")[-3000:]
        (parent,) = _parents(_runs(client, HEAD_EXPERIMENT))

        head = ray_heads.restart(head)  # stopped by PID, started again on the same ports
        resume = subprocess.run(
            [TAURAY, "tune", "--resume", str(_sweep_dir(storage)), "--address", head.gcs_address],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
    finally:
        ray_heads.stop(head, remove=True)
    return HeadRestarted(
        resume_exit_code=resume.returncode,
        resume_output=resume.stdout + resume.stderr,
        first_parent_id=parent.info.run_id,
        midway_at_kill=midway,
        runs=_runs(client, HEAD_EXPERIMENT),
        client=client,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_resume_on_a_restarted_head_finishes_the_sweep(head_restarted: HeadRestarted) -> None:
    assert head_restarted.resume_exit_code == 0, head_restarted.resume_output[-3000:]
    assert "resuming sweep" in head_restarted.resume_output
    (parent,) = _parents(head_restarted.runs)
    assert parent.info.run_id == head_restarted.first_parent_id
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials/completed"] == HEAD_TRIALS
    _assert_trials_complete_once(
        head_restarted.client, head_restarted.runs, parent.info.run_id, HEAD_TRIALS, HEAD_EPOCHS
    )
    by_trial = {run.data.tags[TAG_TRIAL_ID]: run for run in _trial_runs(head_restarted.runs)}
    for trial_id in head_restarted.midway_at_kill:  # continued in its own run
        steps = _steps(head_restarted.client, by_trial[trial_id], "train/loss")
        assert steps == list(range(1, HEAD_EPOCHS + 1))

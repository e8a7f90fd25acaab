"""``tauray submit`` and ``tauray jobs`` against a real token-authenticated Ray head.

The unit tests check address/token/tracking-URI resolution offline. The ``ray`` tests start one
``ray start --head`` per module with ``RAY_AUTH_MODE=token`` (as a production cluster runs), its own
free ports and temp dir (the ``ray_heads`` fixture of ``conftest.py``), prove that the dashboard
refuses requests without the token, and drive the real CLI through ``tauray.cli.main``. The head is
stopped by the PIDs this module started (its process group, then every process carrying this
cluster's marker in its environment), never with ``ray stop``, which would stop every engineer's
Ray on the machine.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from tauray import jobs
from tauray.cli import main

if TYPE_CHECKING:
    from conftest import RayHead, RayHeads  # tests/platform/conftest.py: the ray_heads fixture


# ---- offline: addresses, tokens, tracking URIs, the request ----------------------------------


def test_address_explicit_wins_over_environment() -> None:
    environ = {"RAY_ADDRESS": "http://elsewhere:8265"}
    assert jobs.resolve_address("http://head:8265/", environ) == "http://head:8265"
    assert jobs.resolve_address("head:9000", environ) == "http://head:9000"
    assert jobs.resolve_address(None, environ) == "http://elsewhere:8265"


def test_address_ignores_gcs_address_in_environment() -> None:
    # Inside a Ray job RAY_ADDRESS is the GCS address, not the dashboard.
    assert jobs.resolve_address(None, {"RAY_ADDRESS": "10.0.0.5:6379"}) == jobs.DEFAULT_ADDRESS
    assert jobs.resolve_address(None, {}) == "http://127.0.0.1:8265"
    api = {"RAY_API_SERVER_ADDRESS": "https://ray.example:443", "RAY_ADDRESS": "http://x:1"}
    assert jobs.resolve_address(None, api) == "https://ray.example:443"


@pytest.mark.parametrize("bad", ["ray://head:10001", "http://", "ftp://head:8265", "head:port"])
def test_address_rejects_non_dashboard_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="--address"):
        jobs.resolve_address(bad, {})


def test_token_lookup_order(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit"
    explicit.write_text("from-file\n")
    by_path = tmp_path / "by_path"
    by_path.write_text("from-path")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home")
    environ = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(by_path), "HOME": str(home)}

    token = jobs.resolve_token(explicit, environ)
    assert token is not None and token.value == "from-file" and "--token-file" in token.source
    assert jobs.resolve_token(None, environ).value == "from-env"  # type: ignore[union-attr]
    del environ["RAY_AUTH_TOKEN"]
    assert jobs.resolve_token(None, environ).value == "from-path"  # type: ignore[union-attr]
    del environ["RAY_AUTH_TOKEN_PATH"]
    home_token = jobs.resolve_token(None, environ)
    assert home_token is not None and home_token.value == "from-home"
    assert home_token.headers() == {"Authorization": "Bearer from-home"}
    assert "from-home" not in repr(home_token)  # the secret never lands in logs via repr
    assert jobs.resolve_token(None, {**environ, "RAY_AUTH_MODE": "disabled"}) is None
    assert jobs.resolve_token(None, {"HOME": str(tmp_path / "nobody")}) is None


def test_token_files_that_are_missing_or_empty_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--token-file"):
        jobs.resolve_token(tmp_path / "missing", {})
    with pytest.raises(FileNotFoundError, match="RAY_AUTH_TOKEN_PATH"):
        jobs.resolve_token(None, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        jobs.resolve_token(empty, {})


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///mlflow.db", "sqlite:///:memory:", "mlruns", "file:./mlruns", "file:mlruns", " "],
)
def test_tracking_uris_the_cluster_cannot_use_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="tracking"):
        jobs.build_submit_request(["tauray", "tune"], tracking_uri=uri, environ={})


def test_tracking_uri_missing_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"--tracking-uri .*MLFLOW_TRACKING_URI"):
        jobs.build_submit_request(["tauray", "tune"], environ={})


def test_tracking_uri_sources_must_agree() -> None:
    command = ["tauray", "tune", "--tracking-uri", "http://a:5000"]
    with pytest.raises(ValueError, match="differs"):
        jobs.build_submit_request(command, tracking_uri="http://b:5000", environ={})
    with pytest.raises(ValueError, match="differs"):
        jobs.build_submit_request(
            ["tauray", "tune"],
            tracking_uri="http://b:5000",
            env=["MLFLOW_TRACKING_URI=http://c:5000"],
            environ={},
        )
    same = jobs.build_submit_request(command, tracking_uri="http://a:5000", environ={})
    assert same.tracking_uri == "http://a:5000"
    from_command = jobs.build_submit_request(command, environ={})
    assert from_command.tracking_uri == "http://a:5000"


def test_request_carries_tracking_uri_env_and_no_working_dir() -> None:
    command = ["tauray", "tune", "--set", "train_loop_config/epochs=1", "--name", "it's mine"]
    request = jobs.build_submit_request(
        command,
        env=["SEED=3", "EMPTY=", "SEED=4"],
        pip=["rich==13.7.1"],
        submission_id="sweep-1",
        environ={"MLFLOW_TRACKING_URI": "http://mlflow.team:5000"},
    )
    runtime_env = request.runtime_env()
    assert runtime_env["env_vars"] == {
        "PYTHONUNBUFFERED": "1",
        "RAY_JOB_STOP_WAIT_TIME_S": "60",  # time for a graceful stop (Ray's default: 3 s)
        "SEED": "4",
        "EMPTY": "",
        "MLFLOW_TRACKING_URI": "http://mlflow.team:5000",
    }
    assert runtime_env["pip"] == ["rich==13.7.1"]
    assert "working_dir" not in runtime_env and "py_modules" not in runtime_env
    assert shlex.split(request.entrypoint) == command  # quoting survives the shell
    assert request.submission_id == "sweep-1"
    assert request.metadata()["submitted_by"] == "tauray"
    absolute = jobs.build_submit_request(["x"], tracking_uri="sqlite:////shared/m.db", environ={})
    assert absolute.tracking_uri == "sqlite:////shared/m.db"


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value", "1X=2", "A-B=1"])
def test_env_assignments_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="--env"):
        jobs.parse_env_assignments([bad])


def test_submit_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["submit", "--tracking-uri", "http://127.0.0.1:5000", "--", ""])
    assert code == 2
    assert "no command to run" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_unreachable_cluster_is_one_line_exit_2_fast(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"http://127.0.0.1:{_closed_port()}"
    code = main(
        ["submit", "--address", address, "--tracking-uri", "http://127.0.0.1:5000", "--", "true"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tauray: error: cannot reach the Ray dashboard at " + address)
    assert "--address" in err and len(err.splitlines()) == 1
    assert main(["jobs", "list", "--address", address]) == 2


def test_a_silent_server_is_given_up_on_after_the_timeout() -> None:
    # A socket that listens but never answers: the kernel completes the TCP handshake and the
    # HTTP request then goes unanswered, as with a hung head or a half-open port-forward.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(jobs.ClusterUnreachableError, match="does not answer HTTP"):
            jobs.connect(address, timeout_s=0.5, environ={})


class _NotRay(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"not here")

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


def test_a_server_that_is_not_ray_is_named_as_such() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotRay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(jobs.ClusterUnreachableError, match="not a Ray dashboard"):
            jobs.connect(address, environ={})
    finally:
        server.shutdown()
        server.server_close()


# ---- a real token-authenticated Ray head -----------------------------------------------------


@pytest.fixture(scope="module")
def ray_head(ray_heads: RayHeads) -> Iterator[RayHead]:
    """``ray start --head`` with token auth on, 2 CPUs, free ports and a private temp dir."""
    head = ray_heads.start()
    try:
        yield head
    finally:
        ray_heads.stop(head, remove=True)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token from this process's environment or ~/.ray: only what a test passes explicitly."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def head_from_env(
    ray_head: RayHead, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, no_ambient_token: None
) -> RayHead:
    """The head, its token and MLflow named only by the environment, as Ray's own tools read
    them (``RAY_ADDRESS``, ``RAY_AUTH_TOKEN_PATH``, ``MLFLOW_TRACKING_URI``)."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head.token_file))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("RAY_ADDRESS", ray_head.url)
    return ray_head


@pytest.mark.ray
def test_dashboard_enforces_token_auth(ray_head: RayHead, ray_heads: RayHeads) -> None:
    """The cluster really is token-authenticated: raw HTTP without the token gets 401."""
    jobs_url = f"{ray_head.url}/api/jobs/"
    status = ray_heads.http_status
    assert status(jobs_url) == 401
    assert status(jobs_url, {"Authorization": "Bearer not-the-token"}) == 403
    token = ray_head.token_file.read_text()
    assert status(jobs_url, {"Authorization": f"Bearer {token}"}) == 200


@pytest.mark.ray
@pytest.mark.usefixtures("no_ambient_token")
def test_missing_or_wrong_token_is_a_clear_error(
    ray_head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "jobs", "list", "--address", ray_head.url)
    assert code == 2
    assert "requires a token (HTTP 401) and none was found" in err
    assert "--token-file" in err and len(err.strip().splitlines()) == 1

    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    code, _, err = _cli(
        capsys, "jobs", "list", "--address", ray_head.url, "--token-file", str(wrong)
    )
    assert code == 2
    assert f"rejected the token from --token-file {wrong}" in err

    code, _, err = _cli(
        capsys,
        "jobs",
        "status",
        "raysubmit_doesnotexist",
        "--address",
        ray_head.url,
        "--token-file",
        str(ray_head.token_file),
    )
    assert code == 2
    assert "has no job 'raysubmit_doesnotexist'" in err and "tauray jobs list" in err


@pytest.mark.ray
@pytest.mark.usefixtures("no_ambient_token")
def test_jobs_list_status_logs_and_a_failed_follow(
    ray_head: RayHead,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An explicit --address wins over RAY_ADDRESS (Ray's SDK alone would let the env win).
    monkeypatch.setenv("RAY_ADDRESS", f"http://127.0.0.1:{_closed_port()}")
    connection = ["--address", ray_head.url, "--token-file", str(ray_head.token_file)]
    job_id = f"tauray-test-{secrets.token_hex(4)}"
    script = (
        "import os, sys; "
        "print('job sees', os.environ['MLFLOW_TRACKING_URI'], os.environ['TAURAY_PROBE']); "
        "sys.exit(3)"
    )
    submit = [
        "submit",
        *connection,
        "--tracking-uri",
        mlflow_uri,
        "--env",
        "TAURAY_PROBE=probe-value",
        "--submission-id",
        job_id,
        "--follow",
        "--",
        "python",
        "-c",
        script,
    ]
    code, out, err = _cli(capsys, *submit)
    assert code == 1, err  # the job FAILED: --follow must not report success
    assert out.splitlines()[0].strip() == job_id
    assert f"job sees {mlflow_uri} probe-value" in out  # the runtime env reached the job
    assert f"tauray: job {job_id} FAILED" in err and "exit code 3" in err

    code, _, err = _cli(capsys, *submit)  # the same submission id again
    assert code == 2
    assert job_id in err and "already" in err and len(err.strip().splitlines()) == 1

    code, out, _ = _cli(capsys, "jobs", "list", *connection)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(job_id))
    assert "FAILED" in row

    code, out, _ = _cli(capsys, "jobs", "status", job_id, *connection, "--json")
    assert code == 0
    status = json.loads(out)
    assert status["id"] == job_id and status["status"] == "FAILED"
    assert status["tracking_uri"] == mlflow_uri
    assert status["metadata"]["submitted_by"] == "tauray"

    code, out, _ = _cli(capsys, "jobs", "logs", job_id, *connection)
    assert code == 0 and f"job sees {mlflow_uri} probe-value" in out


@pytest.mark.ray
def test_sweep_a_remote_cluster_cannot_fit_is_refused_before_anything_is_written(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """Three one-CPU workers per trial on the 2-CPU head: the sweep is refused once Ray answers,
    in one line, with no MLflow store, sweep folder or run created."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(ray_head.client_env())
    store, results = tmp_path / "mlflow.db", tmp_path / "results"
    command = [
        str(Path(sys.executable).parent / "tauray"), "tune", "--space", "simclr-temperature",
        "--trials", "1", "--address", ray_head.gcs_address,
        "--workers-per-trial", "3", "--tracking-uri", f"sqlite:///{store}",
        "--storage-path", str(results),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "one trial needs 3 worker(s) x 1 CPU" in line and "the cluster has 2 CPU" in line, line
    assert list(tmp_path.iterdir()) == []
    assert time.monotonic() - started < 60


@pytest.mark.ray
@pytest.mark.usefixtures("head_from_env")
def test_stop_a_long_running_job(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(
        capsys, "submit", "--", "python", "-c", "import time; print('sleeping'); time.sleep(600)"
    )
    assert code == 0, err
    job_id = out.strip()
    client = jobs.connect()
    deadline = time.monotonic() + 60
    while (status := client.status(job_id)) != "RUNNING":
        assert status == "PENDING" and time.monotonic() < deadline, status
        time.sleep(0.5)

    code, out, err = _cli(capsys, "jobs", "stop", job_id)
    assert code == 0, err
    assert out.strip() == f"{job_id} STOPPED"
    assert client.status(job_id) == "STOPPED"
    code, _, err = _cli(capsys, "jobs", "logs", job_id, "--follow")
    assert code == 1  # following a finished, stopped job ends at once and is not a success
    assert f"job {job_id} STOPPED" in err


@pytest.mark.ray
@pytest.mark.usefixtures("no_ambient_token")
def test_submit_follow_sweep_succeeds_and_logs_to_mlflow(
    ray_head: RayHead, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tauray submit --follow -- tauray tune ...` of a tiny sweep: the job succeeds, its parent
    run and both trials land in MLflow."""
    from mlflow.tracking import MlflowClient

    experiment = f"submit-{secrets.token_hex(4)}"
    sweep = [
        "tauray",
        "tune",
        "--space",
        "simclr-temperature",
        "--experiment",
        experiment,
        "--trials",
        "2",
        "--scheduler",
        "none",
        "--seed",
        "0",
        "--confirm-top",
        "0",
        "--storage-path",
        str(ray_head.temp_dir / "results"),
        "--set",
        "epochs=1",
        "--set",
        "data.max_train_samples=64",
        "--set",
        "data.max_val_samples=64",
        "--set",
        "batch_size_per_worker=32",
    ]
    code, out, err = _cli(
        capsys,
        "submit",
        "--address",
        ray_head.url,
        "--token-file",
        str(ray_head.token_file),
        "--tracking-uri",
        mlflow_uri,
        "--follow",
        "--",
        *sweep,
    )
    assert code == 0, (out + err)[-4000:]
    job_id = out.splitlines()[0].strip()
    assert f"tauray: job {job_id} SUCCEEDED" in err

    client = MlflowClient(tracking_uri=mlflow_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}; job output:\n{out[-3000:]}"
    runs = client.search_runs([found.experiment_id])
    trials = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and len(trials) == 2
    assert {run.data.tags["mlflow.parentRunId"] for run in trials} == {parents[0].info.run_id}
    for run in trials:
        assert 0.0 <= run.data.metrics["val/knn_top1"] <= 1.0


@pytest.mark.ray
def test_stopping_a_sweep_job_stops_the_sweep_gracefully(
    head_from_env: RayHead, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tauray jobs stop``: Ray's supervisor sends SIGTERM; the sweep lets Ray Tune save its
    state and ends its MLflow runs as interrupted, with the command that resumes it, within the
    grace ``tauray submit`` gave the job (Ray's default 3 s would SIGKILL it first)."""
    from mlflow.tracking import MlflowClient

    from tauray.layout import TAG_KIND, TAG_RESUME_COMMAND, TAG_STATUS

    experiment = f"stop-{secrets.token_hex(4)}"
    sweep = [
        "tauray", "tune", "--space", "simclr-temperature", "--experiment", experiment,
        "--trials", "2", "--scheduler", "none", "--seed", "0", "--confirm-top", "0",
        "--storage-path", str(head_from_env.temp_dir / "results"),
        "--set", "epochs=200", "--set", "data.max_train_samples=64",
        "--set", "data.max_val_samples=32", "--set", "batch_size_per_worker=32",
    ]  # fmt: skip
    code, out, err = _cli(capsys, "submit", "--", *sweep)  # MLflow from the environment
    assert code == 0, err
    job_id = out.strip()
    client = MlflowClient(tracking_uri=mlflow_uri)

    def runs() -> list:
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id]) if found else []

    deadline = time.monotonic() + 240
    while not any("train/loss" in run.data.metrics for run in runs()):
        assert time.monotonic() < deadline, "no trial logged an epoch within 240 s"
        time.sleep(1)

    code, out, err = _cli(capsys, "jobs", "stop", job_id)
    assert code == 0, err
    assert out.strip() == f"{job_id} STOPPED"
    _, logs, _ = _cli(capsys, "jobs", "logs", job_id)
    assert "SIGTERM: stopping the sweep after Ray Tune saves its state" in logs, logs[-3000:]
    (parent,) = [run for run in runs() if run.data.tags.get(TAG_KIND) == "sweep"]
    assert parent.info.status == "KILLED"
    assert parent.data.tags[TAG_STATUS] == "interrupted"
    assert parent.data.tags[TAG_RESUME_COMMAND].startswith("tauray tune --resume ")
    assert all(run.info.status != "RUNNING" for run in runs())


# ---- log following over a dropped connection (the SDK's stream replaced by a scripted one) -------


class _ScriptedSdk:
    """Stands in for ``JobSubmissionClient``: each log stream replays the log so far, and the
    first one drops mid-way the way Ray's websocket does on an abnormal closure."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.streams = 0

    def get_job_info(self, job_id: str) -> object:
        status = "SUCCEEDED" if self.streams >= 2 else "RUNNING"
        return SimpleNamespace(status=status, submission_id=job_id, job_id="01000000")

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        self.streams += 1
        yield self.log[:4]
        if self.streams == 1:
            raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")
        yield self.log[4:]


def test_follow_resumes_a_dropped_stream_without_repeating_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    sdk = _ScriptedSdk("line 1\nline 2\n")
    client = jobs.JobsClient(sdk, "http://127.0.0.1:8265", None)  # type: ignore[arg-type]
    written: list[str] = []
    final = client.follow("job-1", written.append)
    assert "".join(written) == "line 1\nline 2\n"
    assert sdk.streams == 2 and str(final.status) == "SUCCEEDED"

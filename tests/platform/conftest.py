"""Fixtures for platform tests: a real ``mlflow server`` on a loopback port.

The server uses a SQLite backend store and serves artifacts from a temporary folder, exactly as a
team would run it (only smaller). It is started once per test session, on first use, and stopped
by the process-group id of the process this fixture started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# `mlflow server` needs about 30 s to come up on 2 busy cores; allow for a loaded machine.
_STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URI, storage locations and log file."""

    uri: str
    backend_store_uri: str
    artifacts_destination: Path
    log_path: Path
    pid: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and the workers it forked (its own process group), by PID."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # its job-runner child ignores SIGTERM for a while
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on a free 127.0.0.1 port; yield it; stop it at session end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    backend_store_uri = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = root / "artifacts"
    artifacts.mkdir()
    log_path = root / "server.log"
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not _healthy(uri):
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {process.returncode}:\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not healthy after {_STARTUP_TIMEOUT_S:.0f} s:\n"
                    f"{_log_tail(log_path)}"
                )
            time.sleep(0.5)
        yield MlflowServer(
            uri=uri,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts,
            log_path=log_path,
            pid=process.pid,
        )
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_server: MlflowServer) -> str:
    """The tracking URI of the session's ``mlflow server``."""
    return mlflow_server.uri

"""Fixtures for platform tests: a real ``mlflow server``, real ``ray start --head`` clusters and a
real S3 endpoint.

The MLflow server uses a SQLite backend store and serves artifacts from a temporary folder,
exactly as a team would run it (only smaller). It is started once per test session, on first
use, and stopped by the process-group id of the process this fixture started.

``ray_heads`` starts token-authenticated Ray heads on free loopback ports with their own temp dir
(and can start one again on the same ports, as a restarted head). A head is stopped by the PIDs
the fixture started (its process group, then every process carrying the head's marker in its
environment), never with ``ray stop``, which would stop every engineer's Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# ---- token-authenticated Ray heads ------------------------------------------------------------

VENV_BIN = Path(sys.executable).parent
_HEAD_MARKER_ENV = "TAURAY_TEST_RAY_HEAD"
_HEAD_PORTS = (
    "port",
    "dashboard-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "min-worker-port",
)


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3 endpoint and the environment that reaches it (as MinIO's does in a cluster)."""

    env: dict[str, str]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real S3 endpoint (moto's server, no buckets yet) on a free 127.0.0.1 port; stopped at
    session end by its process group."""
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    port = _free_port()
    endpoint = S3Endpoint(
        env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "tauray-test",
            "AWS_SECRET_ACCESS_KEY": "tauray-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        },
    )
    server = Path(sys.executable).with_name("moto_server")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = endpoint.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"S3 server did not start:\n{_log_tail(log_path)}") from None
                time.sleep(0.5)
        yield endpoint
    finally:
        _stop(process)


@dataclass(frozen=True)
class RayHead:
    """A running ``ray start --head``: its addresses, token file, ports and process.

    Attributes:
        url: the dashboard (Ray job submission) URL.
        gcs_address: ``127.0.0.1:PORT`` for ``ray.init(address=...)`` / ``tauray tune --address``.
        token_file: the cluster's auth token (``RAY_AUTH_TOKEN_PATH``).
        marker: ``NAME=VALUE`` in the environment of every process the head starts.
        temp_dir: the head's own folder (Ray's temp dir, token, log).
        ports: the ports it listens on, in :data:`_HEAD_PORTS` order (a restart reuses them).
        process: the ``ray start --block`` process (leader of its process group).
    """

    url: str
    gcs_address: str
    token_file: Path
    marker: str
    temp_dir: Path
    ports: tuple[int, ...]
    process: subprocess.Popen[bytes]
    num_cpus: int = 2

    def client_env(self) -> dict[str, str]:
        """Variables a driver or SDK client needs to reach this token-authenticated head."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


_WORKER_PORTS = 100
"""Width of a head's worker port range (``--min-worker-port`` .. ``--max-worker-port``)."""


def _worker_port_range_start(taken: Sequence[int]) -> int:
    """A free port whose range of :data:`_WORKER_PORTS` ports holds none of ``taken``.

    Ray refuses to start when a component's port falls inside the worker port range (seen in CI
    with ports chosen independently).
    """
    for start in free_ports(32):
        if start + _WORKER_PORTS < 65536 and not any(
            start <= port <= start + _WORKER_PORTS for port in taken
        ):
            return start
    raise RuntimeError(f"no worker port range clear of {sorted(taken)}")


def pids_with_marker(marker: str) -> list[int]:
    """PIDs of this user's processes whose environment holds ``marker`` (Ray's and the jobs')."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (4xx/5xx included)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _http_status_or_none(url: str, headers: dict[str, str]) -> int | None:
    try:
        return http_status(url, headers)
    except (urllib.error.URLError, OSError):
        return None


def start_ray_head(
    temp_dir: Path,
    token_file: Path,
    ports: Sequence[int] | None = None,
    *,
    num_cpus: int = 2,
    timeout_s: float = 120.0,
) -> RayHead:
    """``ray start --head`` with token auth, ``num_cpus`` CPUs and tauray's driver resource.

    Args:
        temp_dir: the head's folder (short: Ray's unix sockets live under it).
        token_file: the token the cluster requires.
        ports: the ports to use (a previous head's, to restart it); default: free ones.
        num_cpus: logical CPUs of the head.
        timeout_s: how long to wait for the dashboard to answer.

    Raises:
        RuntimeError: the head exited or did not answer in time (with its log's tail).
    """
    from tauray.cluster import DRIVER_RESOURCE, DRIVER_RESOURCE_UNITS

    if ports is None:
        components = free_ports(len(_HEAD_PORTS) - 1)
        ports = [*components, _worker_port_range_start(components)]
    chosen = tuple(ports)
    by_name = dict(zip(_HEAD_PORTS, chosen, strict=True))
    marker_value = temp_dir.name
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_", "MLFLOW_")) and key != _HEAD_MARKER_ENV
    }
    env.update(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_file),
            _HEAD_MARKER_ENV: marker_value,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir / 'ray'}",
        "--object-store-memory=150000000",
        # Trial drivers reserve this instead of a CPU (see tauray.cluster), as on a real cluster.
        f"--resources={json.dumps({DRIVER_RESOURCE: DRIVER_RESOURCE_UNITS})}",
        *(f"--{name}={port}" for name, port in by_name.items()),
        f"--max-worker-port={by_name['min-worker-port'] + _WORKER_PORTS}",
    ]
    log_path = temp_dir / "head.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=temp_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    head = RayHead(
        url=f"http://127.0.0.1:{by_name['dashboard-port']}",
        gcs_address=f"127.0.0.1:{by_name['port']}",
        token_file=token_file,
        marker=f"{_HEAD_MARKER_ENV}={marker_value}",
        temp_dir=temp_dir,
        ports=chosen,
        process=process,
        num_cpus=num_cpus,
    )
    headers = {"Authorization": f"Bearer {token_file.read_text()}"}
    deadline = time.monotonic() + timeout_s
    while _http_status_or_none(f"{head.url}/api/jobs/", headers) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_ray_head(head)
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ray head did not come up (exit {process.poll()}):\n{tail}")
        time.sleep(0.5)
    return head


def stop_ray_head(head: RayHead) -> None:
    """Stop a head: SIGTERM its process group, then SIGKILL whatever carries its marker.

    Ray job drivers and worker processes run in other sessions, hence the marker in the
    environment (set for the head and inherited by every process it starts) rather than the
    process group alone.
    """
    try:
        os.killpg(head.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 3  # a throwaway cluster: no need for Ray's long grace period
    while time.monotonic() < deadline and pids_with_marker(head.marker):
        time.sleep(0.5)
    for pid in pids_with_marker(head.marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        head.process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL above makes this rare
        pass


class RayHeads:
    """Starts token-authenticated Ray heads for tests and stops those still running at the end."""

    http_status = staticmethod(http_status)  # for tests that probe a head's dashboard

    def __init__(self) -> None:
        self._running: list[RayHead] = []
        self._folders: list[Path] = []

    def start(self, *, num_cpus: int = 2) -> RayHead:
        """A new head: its own short temp dir under /tmp, a random token, free ports."""
        temp_dir = Path(tempfile.mkdtemp(prefix="tauray-ray-", dir="/tmp"))
        self._folders.append(temp_dir)
        token_file = temp_dir / "auth_token"
        token_file.write_text(secrets.token_hex(32))
        head = start_ray_head(temp_dir, token_file, num_cpus=num_cpus)
        self._running.append(head)
        return head

    def restart(self, head: RayHead) -> RayHead:
        """Stop ``head`` (if running) and start it again: same folder, token and ports."""
        self.stop(head)
        again = start_ray_head(head.temp_dir, head.token_file, head.ports, num_cpus=head.num_cpus)
        self._running.append(again)
        return again

    def stop(self, head: RayHead, *, remove: bool = False) -> None:
        """Stop ``head``; with ``remove``, delete its folder too (no restart after that)."""
        stop_ray_head(head)
        if head in self._running:
            self._running.remove(head)
        if remove:
            shutil.rmtree(head.temp_dir, ignore_errors=True)

    def close(self) -> None:
        for head in list(self._running):
            self.stop(head)
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_heads() -> Iterator[RayHeads]:
    """Start (and restart) ``ray start --head`` clusters; every one is stopped at session end."""
    heads = RayHeads()
    try:
        yield heads
    finally:
        heads.close()

"""Submit tauray sweeps to a Ray cluster as Ray jobs, and look after them.

A thin, strict layer over Ray Job Submission (``ray.job_submission.JobSubmissionClient``):

- the dashboard address comes from ``--address``, else ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``
  when they hold an ``http(s)://`` URL, else ``http://127.0.0.1:8265``; an explicit address always
  wins (the Ray SDK on its own lets ``RAY_ADDRESS`` override the address it is given);
- Ray token authentication (Ray >= 2.52): the token is looked up like Ray's own loader does
  (``RAY_AUTH_TOKEN``, then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``),
  after an explicit ``--token-file``, and sent as ``Authorization: Bearer`` on every request;
- the job's runtime environment carries ``MLFLOW_TRACKING_URI``, which must be a URI the cluster
  can reach (never a relative SQLite or file path, which would resolve on the head node's cwd);
- nothing is shipped as a ``working_dir``: the cluster's image (or, for a local cluster, the venv
  it was started from) has tauray installed;
- failures become one of three errors that say what to do: :class:`ClusterUnreachableError`,
  :class:`ClusterAuthError` and :class:`JobNotFoundError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tauray import __version__

if TYPE_CHECKING:  # pragma: no cover - imported lazily: ray takes seconds to import
    from ray.job_submission import JobDetails, JobSubmissionClient

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""Where a Ray head's dashboard (and its Job Submission API) listens by default."""

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
"""Ray's default token file (``ray get-auth-token --generate`` writes it)."""

_ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SDK_ENV_LOCK = threading.Lock()

_REACH_HINT = (
    "start the cluster, or pass --address http://HEAD:8265 (or set RAY_ADDRESS) with the head's "
    "dashboard address; on Kubernetes, `kubectl port-forward svc/<cluster>-head-svc 8265:8265`"
)
_TOKEN_HINT = (
    "pass --token-file PATH or set RAY_AUTH_TOKEN (on the head, `ray get-auth-token` prints the "
    "cluster's token; KubeRay keeps it in the cluster's Secret)"
)


class JobsError(RuntimeError):
    """A Ray job operation failed for a reason the user can act on (the message says how)."""


class ClusterUnreachableError(JobsError, ConnectionError):
    """Nothing answers at the dashboard address, or it is not a Ray dashboard."""


class ClusterAuthError(JobsError):
    """The cluster wants a token and none was sent (HTTP 401), or it rejected the token (403)."""


class JobNotFoundError(JobsError, LookupError):
    """The cluster has no job with the given submission or job id."""


@dataclasses.dataclass(frozen=True)
class ClusterToken:
    """A Ray authentication token and where it came from (the source is safe to print)."""

    value: str = dataclasses.field(repr=False)
    source: str

    def headers(self) -> dict[str, str]:
        """The HTTP headers that carry the token."""
        return {"Authorization": f"Bearer {self.value}"}


STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
"""Read by Ray's job supervisor: seconds between a stop's SIGTERM and its SIGKILL (default 3)."""

STOP_WAIT_S = 60
"""What a submitted job gets: a sweep stops on SIGTERM after Ray Tune saved its state and the
MLflow runs are ended, which takes longer than Ray's 3 s."""


@dataclasses.dataclass(frozen=True)
class SubmitRequest:
    """Everything one ``tauray submit`` sends to the cluster.

    Args:
        command: The job's command line as words, e.g. ``["tauray", "tune", "--space", "x"]``.
        tracking_uri: The MLflow tracking URI the job writes to (already validated).
        env_vars: Extra environment variables for the job (``--env``).
        pip: Extra pip requirements Ray installs for the job (``--pip``); empty for none.
        submission_id: A caller-chosen job id (Ray refuses a duplicate); None lets Ray pick one.
    """

    command: tuple[str, ...]
    tracking_uri: str
    env_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pip: tuple[str, ...] = ()
    submission_id: str | None = None

    @property
    def entrypoint(self) -> str:
        """The shell command Ray runs: the words quoted so that they arrive unchanged."""
        return shlex.join(self.command)

    def runtime_env(self) -> dict[str, Any]:
        """The job's Ray runtime environment: env vars (tracking URI included), pip if asked.

        No ``working_dir``: the job runs the tauray installed on the cluster. The job's
        supervisor runs in the same environment, so :data:`STOP_WAIT_ENV` here is how long
        ``tauray jobs stop`` lets the sweep stop gracefully (unless ``--env`` sets it).
        """
        env = {
            "PYTHONUNBUFFERED": "1",
            STOP_WAIT_ENV: str(STOP_WAIT_S),
            **self.env_vars,
            TRACKING_URI_ENV: self.tracking_uri,
        }
        runtime_env: dict[str, Any] = {"env_vars": env}
        if self.pip:
            runtime_env["pip"] = list(self.pip)
        return runtime_env

    def metadata(self) -> dict[str, str]:
        """Labels stored with the job, shown by ``tauray jobs status``."""
        return {"submitted_by": "tauray", "tauray_version": __version__}


# ---- resolving address, token, tracking URI, environment -----------------------------------


def resolve_address(address: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The dashboard URL to talk to: ``address``, else an http(s) URL in the env, else the default.

    ``RAY_API_SERVER_ADDRESS`` and ``RAY_ADDRESS`` are used only when they hold an ``http(s)://``
    URL: inside a Ray job ``RAY_ADDRESS`` is the GCS address (``host:6379``), not the dashboard.

    Args:
        address: The ``--address`` value: ``http(s)://HOST[:PORT]`` or ``HOST:PORT`` (http).
        environ: The environment to read (default ``os.environ``).

    Returns:
        The URL without a trailing slash.

    Raises:
        ValueError: If ``address`` is not an http(s) URL or ``HOST:PORT``.
    """
    environ = os.environ if environ is None else environ
    if address is None or not address.strip():
        for name in _ADDRESS_ENVS:
            value = environ.get(name, "").strip()
            if value.startswith(("http://", "https://")):
                return value.rstrip("/")
            if value:
                logger.debug("ignoring %s=%s: not a dashboard http(s) URL", name, value)
        return DEFAULT_ADDRESS
    text = address.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--address must be the Ray dashboard's URL, http(s)://HOST[:PORT] (default port of "
            f"a Ray head: 8265), got {address!r}"
        )
    return text.rstrip("/")


def _read_token_file(path: Path, what: str) -> str:
    expanded = path.expanduser()
    if not expanded.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist or is not a file")
    value = expanded.read_text().strip()
    if not value:
        raise ValueError(f"{what} {str(path)!r} is empty; it must hold the cluster's token")
    return value


def resolve_token(
    token_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> ClusterToken | None:
    """The Ray auth token to send, looked up in Ray's order after an explicit file.

    Order: ``token_file`` (``--token-file``), ``RAY_AUTH_TOKEN``, the file named by
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``. With ``RAY_AUTH_MODE=disabled`` only an explicit
    file is sent.

    Args:
        token_file: A file holding the token (surrounding whitespace is ignored), or None.
        environ: The environment to read (default ``os.environ``).

    Returns:
        The token and its source, or None when there is none.

    Raises:
        FileNotFoundError: If ``token_file`` or ``RAY_AUTH_TOKEN_PATH`` names a missing file.
        ValueError: If such a file is empty.
    """
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        return ClusterToken(_read_token_file(path, "--token-file"), f"--token-file {path}")
    if environ.get(AUTH_MODE_ENV, "").strip().lower() == "disabled":
        return None
    value = environ.get(TOKEN_ENV, "").strip()
    if value:
        return ClusterToken(value, TOKEN_ENV)
    path_text = environ.get(TOKEN_PATH_ENV, "").strip()
    if path_text:
        path = Path(path_text)
        return ClusterToken(_read_token_file(path, TOKEN_PATH_ENV), f"{TOKEN_PATH_ENV}={path}")
    home = environ.get("HOME")
    default = Path(home) / ".ray" / "auth_token" if home else DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file() and default.read_text().strip():
        return ClusterToken(default.read_text().strip(), str(DEFAULT_TOKEN_PATH))
    return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_tracking_uri(uri: str, address: str | None = None) -> str:
    """Check that an MLflow tracking URI makes sense for a job that runs on the cluster.

    Refused: an empty URI, a relative SQLite URI (``sqlite:///mlflow.db`` has three slashes and
    resolves against the job's working directory on the cluster), an in-memory SQLite database,
    and a relative file path. A loopback http URI sent to a non-loopback cluster is allowed (a
    server on the head node) but logged as a warning.

    Args:
        uri: The tracking URI.
        address: The dashboard URL the job goes to, for the loopback warning.

    Returns:
        The URI, stripped.

    Raises:
        ValueError: If the URI is refused; the message names the fix.
    """
    text = uri.strip()
    if not text:
        raise ValueError(
            "the MLflow tracking URI is empty: pass --tracking-uri http://MLFLOW_HOST:5000 "
            "(a server the cluster can reach)"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if not text.startswith("sqlite:////") or ":memory:" in text:
            raise ValueError(
                f"--tracking-uri {text!r} is a relative or in-memory SQLite database, which the "
                "job would open on the cluster relative to its own working directory; pass an "
                "MLflow server URL (http://MLFLOW_HOST:5000) or an absolute "
                "sqlite:////shared/path/mlflow.db on storage every node mounts"
            )
        logger.warning(
            "tracking URI %s is a SQLite file: every node of the cluster must see the same file, "
            "and concurrent trials writing to SQLite are slow; an MLflow server is better",
            text,
        )
    elif scheme in ("", "file"):
        path = parts.path if scheme == "file" else text
        if not path.startswith("/"):
            raise ValueError(
                f"--tracking-uri {text!r} is a relative path, which the job would resolve on the "
                "cluster relative to its own working directory; pass an MLflow server URL "
                "(http://MLFLOW_HOST:5000) or an absolute path on storage every node mounts"
            )
    elif scheme in ("http", "https"):
        cluster_host = urlsplit(address).hostname if address else None
        if _is_loopback(parts.hostname) and cluster_host and not _is_loopback(cluster_host):
            logger.warning(
                "tracking URI %s is a loopback address: the job on %s will look for MLflow on "
                "the head node itself, not on this machine",
                text,
                address,
            )
    return text


def parse_env_assignments(assignments: Sequence[str]) -> dict[str, str]:
    """Parse ``--env KEY=VALUE`` options into a dict (a later KEY wins).

    Raises:
        ValueError: If an item has no ``=`` or KEY is not a valid environment variable name.
    """
    env: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key or key[0].isdigit() or not set(key) <= _ENV_NAME_CHARS:
            raise ValueError(
                f"--env must be KEY=VALUE with KEY made of letters, digits and _ (not starting "
                f"with a digit), got {item!r}"
            )
        env[key] = value
    return env


def _tracking_uri_in_command(command: Sequence[str]) -> str | None:
    """The value of a ``--tracking-uri`` option inside the job's own command line, if any."""
    for index, word in enumerate(command):
        if word == "--tracking-uri" and index + 1 < len(command):
            return command[index + 1]
        if word.startswith("--tracking-uri="):
            return word.split("=", 1)[1]
    return None


def build_submit_request(
    command: Sequence[str],
    *,
    tracking_uri: str | None = None,
    env: Sequence[str] = (),
    pip: Sequence[str] = (),
    submission_id: str | None = None,
    address: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SubmitRequest:
    """Check the user's ``tauray submit`` input and build the request.

    The tracking URI comes from ``tracking_uri`` (``--tracking-uri``), ``--env
    MLFLOW_TRACKING_URI=...`` or a ``--tracking-uri`` inside ``command``; these must agree when
    several are given. Failing all of them, ``MLFLOW_TRACKING_URI`` of this process is used.

    Args:
        command: The job's command line as words (what follows ``--``).
        tracking_uri: The ``--tracking-uri`` value or None.
        env: ``--env KEY=VALUE`` items.
        pip: ``--pip`` requirements.
        submission_id: ``--submission-id`` or None.
        address: The dashboard URL (for the loopback warning on the tracking URI).
        environ: The environment to read (default ``os.environ``).

    Raises:
        ValueError: On an empty command, a malformed ``--env``, disagreeing or missing tracking
            URIs, or a tracking URI the cluster cannot use (see :func:`validate_tracking_uri`).
    """
    environ = os.environ if environ is None else environ
    words = tuple(command)
    if not words or not words[0].strip():
        raise ValueError(
            "no command to run: put it after `--`, e.g. "
            "`tauray submit --address http://HEAD:8265 -- tauray tune --space simclr`"
        )
    env_vars = parse_env_assignments(env)
    stated = {
        "--tracking-uri": tracking_uri,
        f"--env {TRACKING_URI_ENV}": env_vars.pop(TRACKING_URI_ENV, None),
        "the job's own --tracking-uri": _tracking_uri_in_command(words),
    }
    given = {source: value.strip() for source, value in stated.items() if value is not None}
    if len(set(given.values())) > 1:
        listing = ", ".join(f"{source} {value!r}" for source, value in given.items())
        raise ValueError(f"the MLflow tracking URI is given more than once and differs: {listing}")
    chosen = next(iter(given.values()), None) or environ.get(TRACKING_URI_ENV, "").strip()
    if not chosen:
        raise ValueError(
            "no MLflow tracking URI for the job: pass --tracking-uri http://MLFLOW_HOST:5000 or "
            f"set {TRACKING_URI_ENV}; the job runs on the cluster, so it must be a server the "
            "cluster can reach, not a local file"
        )
    if submission_id is not None and not submission_id.strip():
        raise ValueError("--submission-id must not be empty")
    return SubmitRequest(
        command=words,
        tracking_uri=validate_tracking_uri(chosen, address),
        env_vars=env_vars,
        pip=tuple(pip),
        submission_id=submission_id.strip() if submission_id else None,
    )


# ---- talking to the cluster -------------------------------------------------------------------


@contextlib.contextmanager
def _address_env_hidden() -> Iterator[None]:
    """Hide ``RAY_ADDRESS``/``RAY_API_SERVER_ADDRESS`` while the SDK resolves its address.

    ``JobSubmissionClient`` lets those variables override the address it is given; tauray's
    ``--address`` must win. The variables are restored at once (under a lock).
    """
    with _SDK_ENV_LOCK:
        saved = {name: os.environ.pop(name) for name in _ADDRESS_ENVS if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)


def _status_name(details: JobDetails) -> str:
    status = details.status
    return str(getattr(status, "value", status))


def job_id_of(details: JobDetails) -> str:
    """The id users pass to ``tauray jobs``: the submission id, or the driver's job id."""
    return str(details.submission_id or details.job_id)


@contextlib.contextmanager
def _translate_errors(
    address: str, token: ClusterToken | None, job_id: str | None = None
) -> Iterator[None]:
    """Turn the Ray SDK's and requests' errors into :class:`JobsError` subclasses."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as error:
        status = 401 if str(error).startswith("Authentication required") else 403
        raise _auth_error(address, token, status) from error
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise ClusterUnreachableError(
            f"lost the connection to the Ray dashboard at {address}: {_REACH_HINT}"
        ) from error
    except RuntimeError as error:
        if isinstance(error, JobsError):
            raise
        if job_id is not None and "status code 404" in str(error):
            raise JobNotFoundError(
                f"the cluster at {address} has no job {job_id!r}: "
                f"`tauray jobs list --address {address}` shows its jobs"
            ) from error
        raise JobsError(f"the Ray cluster at {address} refused: {error}") from error


class JobsClient:
    """A connection to one Ray cluster's Job Submission API, with errors that say what to do.

    Create it with :func:`connect`; every method raises :class:`JobsError` subclasses only for
    problems with the cluster, the token or the job id.
    """

    def __init__(
        self, client: JobSubmissionClient, address: str, token: ClusterToken | None
    ) -> None:
        self._client = client
        self.address = address
        self.token = token

    def _translated(self, job_id: str | None = None) -> contextlib.AbstractContextManager[None]:
        return _translate_errors(self.address, self.token, job_id)

    def submit(self, request: SubmitRequest) -> str:
        """Submit ``request`` as a Ray job and return its submission id.

        Raises:
            JobsError: If the cluster refuses the job (e.g. a duplicate submission id).
        """
        with self._translated():
            job_id = self._client.submit_job(
                entrypoint=request.entrypoint,
                runtime_env=request.runtime_env(),
                metadata=request.metadata(),
                submission_id=request.submission_id,
            )
        logger.info("submitted %s to %s: %s", job_id, self.address, request.entrypoint)
        return str(job_id)

    def list_jobs(self, include_drivers: bool = False) -> list[JobDetails]:
        """The cluster's jobs, oldest first; drivers not started by job submission only if asked."""
        with self._translated():
            jobs = self._client.list_jobs()
        if not include_drivers:
            jobs = [job for job in jobs if job.submission_id]
        return sorted(jobs, key=lambda job: (job.start_time or 0, job_id_of(job)))

    def details(self, job_id: str) -> JobDetails:
        """Status, message, times, entrypoint and metadata of one job.

        Raises:
            JobNotFoundError: If the cluster has no such job.
        """
        with self._translated(job_id):
            return self._client.get_job_info(job_id)

    def status(self, job_id: str) -> str:
        """The job's status name: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
        return _status_name(self.details(job_id))

    def logs(self, job_id: str) -> str:
        """Everything the job's driver has written to stdout/stderr so far."""
        self.details(job_id)  # a clear error for an unknown id
        with self._translated(job_id):
            return str(self._client.get_job_logs(job_id))

    def stop(self, job_id: str, wait_s: float | None = 60.0) -> JobDetails:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL) and wait until it has ended.

        Args:
            job_id: The submission id.
            wait_s: Seconds to wait for a terminal status; None or 0 returns at once.

        Raises:
            JobNotFoundError: If the cluster has no such job.
            JobsError: If the job is still not stopped after ``wait_s`` seconds.
        """
        self.details(job_id)
        with self._translated(job_id):
            self._client.stop_job(job_id)
        if not wait_s:
            return self.details(job_id)
        return self.wait(job_id, timeout_s=wait_s)

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.5) -> JobDetails:
        """Poll until the job reaches a terminal status.

        Raises:
            JobsError: If it has not after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            details = self.details(job_id)
            if _status_name(details) in TERMINAL_STATUSES:
                return details
            if time.monotonic() >= deadline:
                raise JobsError(
                    f"job {job_id} is still {_status_name(details)} after {timeout_s:g} s; "
                    f"`tauray jobs status {job_id}` shows it"
                )
            time.sleep(poll_s)

    def follow(
        self,
        job_id: str,
        write: Callable[[str], None],
        max_reconnects: int = 5,
    ) -> JobDetails:
        """Stream the job's logs to ``write`` until it ends; return its final details.

        Ray's log stream starts from the beginning of the log on each connection, so after a
        dropped connection the stream is reopened and the part already written is skipped.

        Args:
            job_id: The submission id.
            write: Called with each new chunk of log text.
            max_reconnects: Dropped or early-closed streams tolerated before giving up.

        Raises:
            JobNotFoundError: If the cluster has no such job.
            JobsError: If the stream keeps failing (the job itself keeps running).
        """
        import aiohttp

        self.details(job_id)
        written = [0]  # characters of the log already written, across connections
        failures = 0
        while True:
            try:
                asyncio.run(self._tail(job_id, write, written))
            except aiohttp.ClientResponseError as error:
                if error.status in (401, 403):
                    raise _auth_error(self.address, self.token, error.status) from error
                problem: Exception | None = error
            except (RuntimeError, OSError, aiohttp.ClientError) as error:
                if isinstance(error, JobsError):
                    raise
                problem = error
            else:
                details = self.details(job_id)
                if _status_name(details) in TERMINAL_STATUSES:
                    return details
                problem = None  # closed while the job runs (a proxy's idle timeout, say)
            failures += 1
            if failures > max_reconnects:
                raise JobsError(
                    f"lost the log stream of job {job_id} {failures} times ({problem or 'closed'});"
                    f" the job keeps running: `tauray jobs logs {job_id} --follow` reattaches"
                ) from problem
            logger.warning("log stream of %s ended early (%s); reconnecting", job_id, problem)
            time.sleep(min(2.0**failures, 10.0))

    async def _tail(self, job_id: str, write: Callable[[str], None], written: list[int]) -> None:
        """One log-stream connection: write only what lies beyond ``written[0]`` characters.

        ``written[0]`` is updated as text is written, so it is right even if the stream drops.
        """
        position = 0  # characters of the log this connection has received
        stream = self._client.tail_job_logs(job_id)
        try:
            async for chunk in stream:
                start = max(0, written[0] - position)
                position += len(chunk)
                if start < len(chunk):
                    write(chunk[start:])
                    written[0] = position
        finally:
            await stream.aclose()


def _auth_error(address: str, token: ClusterToken | None, status: int) -> ClusterAuthError:
    """The message for HTTP 401 (no token, or one the server did not see) or 403 (wrong token)."""
    if token is None:
        return ClusterAuthError(
            f"the Ray cluster at {address} requires a token (HTTP {status}) and none was found: "
            f"{_TOKEN_HINT}"
        )
    if status == 401:
        return ClusterAuthError(
            f"the Ray cluster at {address} did not see a token (HTTP 401) although one from "
            f"{token.source} was sent (a proxy may drop the Authorization header): {_TOKEN_HINT}"
        )
    return ClusterAuthError(
        f"the Ray cluster at {address} rejected the token from {token.source} (HTTP {status}): "
        f"it is not this cluster's token; {_TOKEN_HINT}"
    )


def _probe(address: str, token: ClusterToken | None, timeout_s: float) -> None:
    """Fail fast, with a clear message, when the dashboard is unreachable or refuses the token."""
    import requests

    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterUnreachableError(
            f"cannot reach the Ray dashboard at {address} ({reason}): {_REACH_HINT}"
        ) from error
    headers = token.headers() if token else {}
    try:
        response = requests.get(f"{address}/api/version", headers=headers, timeout=timeout_s)
    except requests.exceptions.RequestException as error:
        raise ClusterUnreachableError(
            f"the Ray dashboard at {address} does not answer HTTP ({type(error).__name__}): "
            f"{_REACH_HINT}"
        ) from error
    if response.status_code in (401, 403):
        raise _auth_error(address, token, response.status_code)
    try:
        version = response.json()["ray_version"] if response.ok else None
    except (ValueError, KeyError, TypeError):
        version = None
    if version is None:
        raise ClusterUnreachableError(
            f"{address} answered HTTP {response.status_code} but is not a Ray dashboard (no Ray "
            f"version at /api/version): {_REACH_HINT}"
        )
    logger.debug("Ray %s at %s", version, address)


def connect(
    address: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    timeout_s: float = 10.0,
    environ: Mapping[str, str] | None = None,
) -> JobsClient:
    """Connect to a Ray cluster's Job Submission API.

    Args:
        address: The dashboard URL (see :func:`resolve_address`); None for the environment's or
            ``http://127.0.0.1:8265``.
        token_file: A file with the cluster's token (see :func:`resolve_token`).
        timeout_s: Seconds to wait for the dashboard to accept a connection and answer.
        environ: The environment to read (default ``os.environ``).

    Raises:
        ValueError: On a malformed address or an empty token file.
        FileNotFoundError: If a named token file does not exist.
        ClusterUnreachableError: If nothing answers at the address, or it is not Ray.
        ClusterAuthError: If the cluster needs a token and none was found, or rejects it.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    url = resolve_address(address, environ)
    token = resolve_token(token_file, environ)
    logger.debug("connecting to %s (token: %s)", url, token.source if token else "none")
    _probe(url, token, timeout_s)

    from ray.job_submission import JobSubmissionClient

    with _translate_errors(url, token), _address_env_hidden():
        client = JobSubmissionClient(url, headers=token.headers() if token else None)
    return JobsClient(client, url, token)


def describe(details: JobDetails) -> dict[str, Any]:
    """The fields of a job worth showing, as plain JSON-ready values (times in UTC ISO 8601)."""

    def iso(milliseconds: int | None) -> str | None:
        if not milliseconds:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(milliseconds / 1000))

    runtime_env = details.runtime_env or {}
    return {
        "id": job_id_of(details),
        "status": _status_name(details),
        "message": details.message,
        "entrypoint": details.entrypoint,
        "start_time": iso(details.start_time),
        "end_time": iso(details.end_time),
        "duration_s": _duration_s(details),
        "driver_exit_code": getattr(details, "driver_exit_code", None),
        "tracking_uri": (runtime_env.get("env_vars") or {}).get(TRACKING_URI_ENV),
        "metadata": dict(details.metadata or {}),
    }


def first_line(message: str | None) -> str:
    """The first line of a Ray job message, without the copy of the logs Ray appends on failure."""
    lines = (message or "").strip().splitlines()
    return lines[0].split(", last available logs", 1)[0].strip() if lines else ""


def _duration_s(details: JobDetails) -> float | None:
    if not details.start_time:
        return None
    end = details.end_time or time.time() * 1000
    return round((end - details.start_time) / 1000, 1)

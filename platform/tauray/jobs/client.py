"""A connection to a Ray cluster's Job Submission API: submit, list, logs, stop, follow.

A thin, strict layer over ``ray.job_submission.JobSubmissionClient``: it probes the dashboard
before use, sends the token on every request, and turns the SDK's failures into the errors of
:mod:`tauray.jobs.errors`, whose messages say what to do.

Ray, requests and aiohttp are imported inside the functions that use them: the CLI imports this
package for every command, and Ray alone takes seconds to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tauray.jobs.access import ADDRESS_ENVS, ClusterToken, resolve_address, resolve_token
from tauray.jobs.details import TERMINAL_STATUSES, job_id_of, status_name
from tauray.jobs.errors import (
    REACH_HINT,
    ClusterUnreachableError,
    JobNotFoundError,
    JobsError,
    auth_error,
)
from tauray.jobs.request import SubmitRequest

if TYPE_CHECKING:  # pragma: no cover - imported lazily: ray takes seconds to import
    from ray.job_submission import JobDetails, JobSubmissionClient

logger = logging.getLogger(__name__)

_SDK_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _address_env_hidden() -> Iterator[None]:
    """Hide ``RAY_ADDRESS``/``RAY_API_SERVER_ADDRESS`` while the SDK resolves its address.

    ``JobSubmissionClient`` lets those variables override the address it is given; tauray's
    ``--address`` must win. The variables are restored at once (under a lock).
    """
    with _SDK_ENV_LOCK:
        saved = {name: os.environ.pop(name) for name in ADDRESS_ENVS if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)


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
        raise auth_error(address, token, status) from error
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise ClusterUnreachableError(
            f"lost the connection to the Ray dashboard at {address}: {REACH_HINT}"
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
        return status_name(self.details(job_id))

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
            if status_name(details) in TERMINAL_STATUSES:
                return details
            if time.monotonic() >= deadline:
                raise JobsError(
                    f"job {job_id} is still {status_name(details)} after {timeout_s:g} s; "
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
                    raise auth_error(self.address, self.token, error.status) from error
                problem: Exception | None = error
            except (RuntimeError, OSError, aiohttp.ClientError) as error:
                if isinstance(error, JobsError):
                    raise
                problem = error
            else:
                details = self.details(job_id)
                if status_name(details) in TERMINAL_STATUSES:
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
            f"cannot reach the Ray dashboard at {address} ({reason}): {REACH_HINT}"
        ) from error
    headers = token.headers() if token else {}
    try:
        response = requests.get(f"{address}/api/version", headers=headers, timeout=timeout_s)
    except requests.exceptions.RequestException as error:
        raise ClusterUnreachableError(
            f"the Ray dashboard at {address} does not answer HTTP ({type(error).__name__}): "
            f"{REACH_HINT}"
        ) from error
    if response.status_code in (401, 403):
        raise auth_error(address, token, response.status_code)
    try:
        version = response.json()["ray_version"] if response.ok else None
    except (ValueError, KeyError, TypeError):
        version = None
    if version is None:
        raise ClusterUnreachableError(
            f"{address} answered HTTP {response.status_code} but is not a Ray dashboard (no Ray "
            f"version at /api/version): {REACH_HINT}"
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

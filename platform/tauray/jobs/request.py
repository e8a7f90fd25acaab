"""What one ``tauray submit`` sends to the cluster, checked before anything is sent.

- The job's runtime environment carries ``MLFLOW_TRACKING_URI``, which must be a URI the cluster
  can reach (never a relative SQLite or file path, which would resolve on the head node's cwd).
- Nothing is shipped as a ``working_dir``: the cluster's image (or, for a local cluster, the venv
  it was started from) has tauray installed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from tauray import __version__

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

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
    blank = [item for item in pip if not item.strip()]
    if blank:
        raise ValueError(
            f"--pip must name a requirement (e.g. 'torchvision==0.29.1'), got {blank[0]!r}"
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

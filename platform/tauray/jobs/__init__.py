"""Submit tauray sweeps to a Ray cluster as Ray jobs, and look after them.

A thin, strict layer over Ray Job Submission, in four parts:

- :mod:`~tauray.jobs.access`: the dashboard address (an explicit ``--address`` always wins over
  ``RAY_ADDRESS``) and the Ray auth token, looked up the way Ray's own loader does;
- :mod:`~tauray.jobs.request`: the job's command, runtime environment and MLflow tracking URI,
  which must be one the cluster can reach; nothing is shipped as a ``working_dir``, the cluster
  runs the tauray it has installed;
- :mod:`~tauray.jobs.client`: submit, list, logs, stop and follow through the Ray SDK;
- :mod:`~tauray.jobs.details`: a job's id, status and the fields worth showing.

Failures become one of three errors that say what to do (:mod:`~tauray.jobs.errors`):
:class:`ClusterUnreachableError`, :class:`ClusterAuthError` and :class:`JobNotFoundError`.
Importing this package imports no Ray.
"""

from tauray.jobs.access import (
    AUTH_MODE_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_TOKEN_PATH,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    ClusterToken,
    resolve_address,
    resolve_token,
)
from tauray.jobs.client import JobsClient, connect
from tauray.jobs.details import TERMINAL_STATUSES, describe, first_line, job_id_of, status_name
from tauray.jobs.errors import (
    ClusterAuthError,
    ClusterUnreachableError,
    JobNotFoundError,
    JobsError,
)
from tauray.jobs.request import (
    STOP_WAIT_ENV,
    STOP_WAIT_S,
    TRACKING_URI_ENV,
    SubmitRequest,
    build_submit_request,
    parse_env_assignments,
    validate_tracking_uri,
)

__all__ = [
    "AUTH_MODE_ENV",
    "DEFAULT_ADDRESS",
    "DEFAULT_TOKEN_PATH",
    "STOP_WAIT_ENV",
    "STOP_WAIT_S",
    "TERMINAL_STATUSES",
    "TOKEN_ENV",
    "TOKEN_PATH_ENV",
    "TRACKING_URI_ENV",
    "ClusterAuthError",
    "ClusterToken",
    "ClusterUnreachableError",
    "JobNotFoundError",
    "JobsClient",
    "JobsError",
    "SubmitRequest",
    "build_submit_request",
    "connect",
    "describe",
    "first_line",
    "job_id_of",
    "parse_env_assignments",
    "resolve_address",
    "resolve_token",
    "status_name",
    "validate_tracking_uri",
]

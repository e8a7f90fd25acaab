"""Reading a Ray job's details: its id, its status and the fields worth showing a user."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tauray.jobs.request import TRACKING_URI_ENV

if TYPE_CHECKING:  # pragma: no cover - imported lazily: ray takes seconds to import
    from ray.job_submission import JobDetails

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def status_name(details: JobDetails) -> str:
    """The job's status as a plain name: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    status = details.status
    return str(getattr(status, "value", status))


def job_id_of(details: JobDetails) -> str:
    """The id users pass to ``tauray jobs``: the submission id, or the driver's job id."""
    return str(details.submission_id or details.job_id)


def describe(details: JobDetails) -> dict[str, Any]:
    """The fields of a job worth showing, as plain JSON-ready values (times in UTC ISO 8601)."""

    def iso(milliseconds: int | None) -> str | None:
        if not milliseconds:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(milliseconds / 1000))

    runtime_env = details.runtime_env or {}
    return {
        "id": job_id_of(details),
        "status": status_name(details),
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

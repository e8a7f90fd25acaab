"""The errors of Ray job operations: each names the cluster and says what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - for annotations only
    from tauray.jobs.access import ClusterToken

REACH_HINT = (
    "start the cluster, or pass --address http://HEAD:8265 (or set RAY_ADDRESS) with the head's "
    "dashboard address; on Kubernetes, `kubectl port-forward svc/<cluster>-head-svc 8265:8265`"
)
TOKEN_HINT = (
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


def auth_error(address: str, token: ClusterToken | None, status: int) -> ClusterAuthError:
    """The message for HTTP 401 (no token, or one the server did not see) or 403 (wrong token)."""
    if token is None:
        return ClusterAuthError(
            f"the Ray cluster at {address} requires a token (HTTP {status}) and none was found: "
            f"{TOKEN_HINT}"
        )
    if status == 401:
        return ClusterAuthError(
            f"the Ray cluster at {address} did not see a token (HTTP 401) although one from "
            f"{token.source} was sent (a proxy may drop the Authorization header): {TOKEN_HINT}"
        )
    return ClusterAuthError(
        f"the Ray cluster at {address} rejected the token from {token.source} (HTTP {status}): "
        f"it is not this cluster's token; {TOKEN_HINT}"
    )

"""Where a Ray cluster's Job Submission API listens, and the token that opens it.

- The dashboard address comes from ``--address``, else ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``
  when they hold an ``http(s)://`` URL, else ``http://127.0.0.1:8265``; an explicit address always
  wins (the Ray SDK on its own lets ``RAY_ADDRESS`` override the address it is given).
- Ray token authentication (Ray >= 2.52): the token is looked up like Ray's own loader does
  (``RAY_AUTH_TOKEN``, then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``),
  after an explicit ``--token-file``, and sent as ``Authorization: Bearer`` on every request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""Where a Ray head's dashboard (and its Job Submission API) listens by default."""

ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
"""Variables that may hold the dashboard's URL (the Ray SDK reads them too)."""

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
"""Ray's default token file (``ray get-auth-token --generate`` writes it)."""


@dataclasses.dataclass(frozen=True)
class ClusterToken:
    """A Ray authentication token and where it came from (the source is safe to print)."""

    value: str = dataclasses.field(repr=False)
    source: str

    def headers(self) -> dict[str, str]:
        """The HTTP headers that carry the token."""
        return {"Authorization": f"Bearer {self.value}"}


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
        for name in ADDRESS_ENVS:
            value = environ.get(name, "").strip()
            if value.startswith(("http://", "https://")):
                return value.rstrip("/")
            if value:
                logger.debug("ignoring %s=%s: not a dashboard http(s) URL", name, value)
        return DEFAULT_ADDRESS
    text = address.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:  # a malformed port or IPv6 literal
        parts = urlsplit("")
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

"""Checks of local and database MLflow stores that must pass before anything is created.

MLflow opens a store lazily and then retries for minutes (a database nobody serves, an SQLite
file in a folder it cannot write), or fails with a traceback (a missing database driver, a file
that is not a database, the retired file store). :func:`tauray.tracking.check_tracking_reachable`
runs these checks first so that each of those is one line, within seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# The import name of a SQLAlchemy database driver -> the package that provides it.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


def is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is empty or starts with SQLite's header (what MLflow can open)."""
    try:
        with path.open("rb") as file:
            header = file.read(16)
    except OSError:
        return False
    return not header or header == b"SQLite format 3\x00"


def check_writable_folder(folder: Path, what: str) -> None:
    """``folder`` must exist and accept a new file: a probe file is made there and removed at
    once (``os.access`` calls ``/proc`` and read-only mounts writable for root).

    Raises:
        ValueError: one line naming ``what`` and the folder.
    """
    import tempfile

    if not folder.is_dir():
        raise ValueError(f"{what}: folder {folder} does not exist; create it or pick another path")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".tauray-probe-", dir=folder)
    except OSError as error:
        raise ValueError(
            f"{what}: folder {folder} is not writable ({error.strerror or error})"
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def check_database_server(uri: str, timeout_s: float) -> None:
    """A database tracking URI needs its SQLAlchemy driver installed and its server to answer
    within ``timeout_s`` (MLflow itself retries for minutes).

    Raises:
        ValueError: a malformed URI, or a missing driver (naming the package to install).
        ConnectionError: nothing answers at the URI's host and port.
    """
    import socket

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = uri.split("@")[-1] if "@" in uri else uri  # no credentials in messages
    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise ValueError(
            f"tracking URI {shown} is not a database URI SQLAlchemy knows: {error}"
        ) from None
    except ImportError as error:
        module = (error.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "its driver")
        raise ValueError(
            f"tracking URI {shown} needs the database driver {module!r}, which is not "
            f"installed: pip install {package}"
        ) from None
    host = url.host or "localhost"
    port = url.port or _DEFAULT_PORTS.get(url.get_backend_name(), 0)
    if not port:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as error:
        raise ConnectionError(
            f"tracking URI {shown}: no database answers at {host}:{port} within "
            f"{timeout_s:g} s ({error.strerror or error})"
        ) from None

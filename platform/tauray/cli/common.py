"""What the ``tauray`` commands share: the debug switch, one-line errors, numeric options."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

_DEBUG = {"on": False}


def set_debug(on: bool) -> None:
    """Remember whether ``--debug`` was given (errors then show their traceback)."""
    _DEBUG["on"] = on


def debug_requested() -> bool:
    """Whether ``--debug`` was given."""
    return _DEBUG["on"]


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def echo_error(message: str) -> None:
    """Print ``message`` as the CLI prints every error: one line on stderr."""
    print(f"tauray: error: {message}", file=sys.stderr)


def _shown(text: object) -> str:
    """An option's value as an error quotes it: its repr, cut to 40 characters."""
    shown = repr(text)
    return shown if len(shown) <= 40 else f"{shown[:37]}... ({len(str(text))} characters)"


def whole_number(text: str) -> int:
    """Parse an integer option; the error names the value (click prefixes the option's name).

    Values past 18 digits are refused here: none is a sensible count or seed, and Python's
    int conversion would otherwise report its own digit limit instead of the value.
    """
    digits = str(text).strip().lstrip("+-")
    if len(digits) > 18 and digits.isdigit():
        raise typer.BadParameter(f"{_shown(text)} is too large (more than 18 digits)")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{_shown(text)} is not a whole number") from None


def number(text: str) -> float:
    """Parse a real-number option; the error names the value (click prefixes the option's name)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{_shown(text)} is not a number") from None


TrackingUriOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here on 3.10
    typer.Option(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (http://HOST:5000, sqlite:///PATH/mlflow.db). Default: "
        "MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db with artifacts in ./mlartifacts.",
    ),
]

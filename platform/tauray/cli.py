"""The ``tauray`` command line. The only module that uses typer/click.

Every command is callable in tests as ``main(["tune", ...])``, which returns the exit code.
Errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import click
import typer

from tauray import __version__

app = typer.Typer(
    name="tauray",
    help="Find the best temperature and training hyperparameters for contrastive learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": False}


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tauray {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],  # noqa: UP045 - typer needs Optional here on 3.10
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """tauray: temperature and hyperparameter search for contrastive learning on Ray."""
    _DEBUG["on"] = debug


# ---- train (issue 3) --------------------------------------------------------------------------

# ---- tune, spaces, demo (issue 4) -------------------------------------------------------------

# ---- submit, jobs, report (issue 5) -----------------------------------------------------------

# ---- end of commands --------------------------------------------------------------------------


def click_command() -> click.Command:
    """The click command behind the app (tests parse arguments with it without running)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG["on"] = "--debug" in args
    try:
        result = click_command().main(args=args, prog_name="tauray", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return int(stop.exit_code)
    except click.exceptions.Abort:
        print("tauray: aborted", file=sys.stderr)
        return 130
    except click.ClickException as error:
        print(f"tauray: error: {error.format_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tauray: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, TypeError, FileNotFoundError, ConnectionError) as error:
        if _DEBUG["on"]:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tauray: error: {message}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

"""The ``tauray`` command line: the only package that uses typer/click.

Every command is callable in tests as ``main(["tune", ...])``, which returns the exit code.
Errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.

This module holds the root app, its table of commands and the entry points; each command lives in
the module named after it (``train``, ``spaces``, ``tune`` with ``demo``, ``report``, ``jobs``
with ``submit``), and :mod:`tauray.cli.common` holds what they share. Commands import Ray, torch,
MLflow, Optuna and the sweep driver inside their bodies, so that ``tauray --help`` and a mistyped
option answer without loading them.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click

from tauray import __version__
from tauray.cli import jobs, report, spaces, train, tune
from tauray.cli.common import CliError, debug_requested, set_debug

__all__ = ["CliError", "app", "click_command", "main", "run"]

app = typer.Typer(
    name="tauray",
    help="Find the best temperature and training hyperparameters for contrastive learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    set_debug(debug)


# The commands, in the order `tauray --help` lists them (groups come after single commands).
app.command("train")(train.train_command)
app.add_typer(spaces.app, name="spaces")
app.command("tune")(tune.tune_command)
app.command("demo")(tune.demo_command)
app.command("report")(report.report_command)
app.command(
    "submit",
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)(jobs.submit_command)
app.add_typer(jobs.app, name="jobs")


def click_command() -> typer.core.TyperGroup:
    """The click command behind the app (tests parse arguments with it without running)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    set_debug("--debug" in args)
    try:
        result = click_command().main(args=args, prog_name="tauray", standalone_mode=False)
    except typer.Exit as stop:
        return int(stop.exit_code)
    except typer.Abort:
        print("tauray: aborted", file=sys.stderr)
        return 130
    except click_errors.NoArgsIsHelpError as error:
        error.show()  # no arguments: the help text, then the usage exit code
        return 2
    except click_errors.ClickException as error:
        print(f"tauray: error: {' '.join(error.format_message().split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tauray: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, TypeError, FileNotFoundError, ConnectionError) as error:
        if debug_requested():
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tauray: error: {message}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

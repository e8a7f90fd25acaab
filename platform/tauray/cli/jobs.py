"""``tauray submit`` and ``tauray jobs list | status | logs | stop``: sweeps as Ray jobs."""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import sys
from collections.abc import Iterator
from typing import Annotated, Optional

import typer
from typer._click import core as click_core  # typer 0.29 vendors click
from typer._click import exceptions as click_errors

from tauray import jobs as tauray_jobs
from tauray.cli.common import CliError

_AddressOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here on 3.10
    typer.Option(
        "--address",
        metavar="URL",
        help="The Ray head's dashboard, http://HEAD:8265. Default: RAY_ADDRESS when it is an "
        "http(s) URL, else http://127.0.0.1:8265.",
    ),
]
_TokenFileOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--token-file",
        metavar="PATH",
        help="File holding the cluster's Ray auth token (`ray get-auth-token` on the head prints "
        "it). Default: RAY_AUTH_TOKEN, then the file named by RAY_AUTH_TOKEN_PATH, then "
        "~/.ray/auth_token.",
    ),
]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@contextlib.contextmanager
def _jobs_errors_as_cli_errors() -> Iterator[None]:
    """A :class:`tauray.jobs.JobsError` becomes a one-line CLI error (exit 2)."""
    try:
        yield
    except tauray_jobs.JobsError as error:
        raise CliError(str(error)) from error


# Options whose callbacks print and exit while a command line is parsed: a job command holding
# one is sent unchecked (parsing it here would print the version or help instead of submitting).
_EAGER_OPTIONS = frozenset({"--help", "--version"})


def _check_job_command(root: click_core.Command, words: list[str]) -> None:
    """Parse a ``tauray ...`` job command with this CLI, as the cluster will, without running it.

    What parsing finds (an unknown option or command, a value of the wrong type, a missing
    argument) is refused here, before the job is sent, instead of failing on the cluster a
    minute later. What only running finds (a space file that exists on the cluster's image, a
    value out of range) is checked there, when the job starts; ``tauray jobs logs`` shows that
    line. Other commands (``python train.py``) are sent as they are.

    Args:
        root: the ``tauray`` click command (the root of the context ``submit`` runs in).
        words: the job's command line.

    Raises:
        CliError: the tauray command does not parse (one line naming it and the reason).
    """
    if not words or words[0].rsplit("/", 1)[-1] != "tauray" or _EAGER_OPTIONS & set(words):
        return
    command, name, rest = root, "tauray", list(words[1:])
    try:
        # Down the command groups (tauray, tauray jobs) to the command the words name.
        while isinstance(command, typer.core.TyperGroup) and rest and not rest[0].startswith("-"):
            resolved, sub, rest = command.resolve_command(
                command.make_context(name, list(rest)), rest
            )
            if sub is None or resolved is None:
                break
            command, name = sub, resolved
        if isinstance(command, typer.core.TyperGroup) and not rest:
            raise CliError(
                f"the job's command {shlex.join(words)!r} names no command: e.g. "
                "`tauray tune --space simclr-temperature`"
            )
        command.make_context(name, list(rest))
    except click_errors.ClickException as error:
        raise CliError(
            f"the job's command {shlex.join(words)!r} does not parse: "
            f"{' '.join(error.format_message().split())}"
        ) from None


def _connect(address: str | None, token_file: str | None) -> tauray_jobs.JobsClient:
    client = tauray_jobs.connect(address, token_file)
    # The Ray SDK sets its loggers to INFO when imported and logs routine lines (a websocket
    # closed) to stderr: quiet them once imported.
    for name in ("ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return client


def _follow_to_end(client: tauray_jobs.JobsClient, job_id: str) -> int:
    """Stream a job's logs to stdout until it ends; 0 only if it SUCCEEDED."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        details = client.follow(job_id, write)
    except KeyboardInterrupt:
        print(
            f"tauray: stopped following; job {job_id} keeps running "
            f"(`tauray jobs logs {job_id} --follow` reattaches, `tauray jobs stop {job_id}` "
            "stops it)",
            file=sys.stderr,
        )
        raise
    info = tauray_jobs.describe(details)
    message = tauray_jobs.first_line(info["message"])
    suffix = f": {message}" if message else ""
    print(f"tauray: job {job_id} {info['status']}{suffix}", file=sys.stderr)
    return 0 if info["status"] == "SUCCEEDED" else 1


def submit_command(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="COMMAND...",
            help="The job's command, after `--`: e.g. `-- tauray tune --space simclr`.",
            show_default=False,
        ),
    ],
    address: _AddressOption = None,
    token_file: _TokenFileOption = None,
    tracking_uri: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--tracking-uri",
            metavar="URI",
            help="MLflow tracking URI the job logs to, reachable from the cluster (an MLflow "
            "server URL). Default: MLFLOW_TRACKING_URI. Relative SQLite/file URIs are refused.",
        ),
    ] = None,
    env: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--env",
            "-e",
            metavar="KEY=VALUE",
            help="Environment variable for the job (repeat). Values show in the job's details on "
            "the dashboard: keep secrets (MLflow passwords) in the cluster's own environment.",
        ),
    ] = None,
    pip: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--pip",
            metavar="REQUIREMENT",
            help="Extra pip requirement Ray installs for the job (repeat). tauray itself must "
            "already be installed on the cluster.",
        ),
    ] = None,
    submission_id: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--submission-id", help="Job id to use (must be new on the cluster). Default: Ray's."
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Stream the job's logs until it ends; exit 0 only if it SUCCEEDED, 1 otherwise.",
        ),
    ] = False,
) -> int:
    """Submit a sweep to a Ray cluster as a Ray job: tauray submit [OPTIONS] -- tauray tune ...

    Prints the job id on stdout. The job runs the tauray installed on the cluster (nothing is
    uploaded as a working_dir), with MLFLOW_TRACKING_URI in its environment.
    """
    url = tauray_jobs.resolve_address(address)
    _check_job_command(ctx.find_root().command, command)
    request = tauray_jobs.build_submit_request(
        command,
        tracking_uri=tracking_uri,
        env=env or (),
        pip=pip or (),
        submission_id=submission_id,
        address=url,
    )
    with _jobs_errors_as_cli_errors():
        client = _connect(url, token_file)
        job_id = client.submit(request)
        print(job_id)
        sys.stdout.flush()
        if not follow:
            print(
                f"tauray: submitted to {client.address}; `tauray jobs logs {job_id} --follow` "
                "follows it",
                file=sys.stderr,
            )
            return 0
        return _follow_to_end(client, job_id)


app = typer.Typer(
    help="What runs on a Ray cluster: list, status, logs and stop of submitted jobs.",
    no_args_is_help=True,
)


@app.command("list")
def jobs_list_command(
    address: _AddressOption = None,
    token_file: _TokenFileOption = None,
    include_drivers: Annotated[
        bool, typer.Option("--all", help="Also list drivers that were not submitted as jobs.")
    ] = False,
    as_json: _JsonOption = False,
) -> int:
    """List the cluster's jobs, oldest first."""
    with _jobs_errors_as_cli_errors():
        found = _connect(address, token_file).list_jobs(include_drivers)
    listed = [tauray_jobs.describe(job) for job in found]
    if as_json:
        print(json.dumps(listed, indent=2))
        return 0
    if not listed:
        print("no jobs")
        return 0
    rows = [("ID", "STATUS", "START (UTC)", "DURATION_S", "ENTRYPOINT")]
    for job in listed:
        duration = "" if job["duration_s"] is None else f"{job['duration_s']:g}"
        entry = job["entrypoint"] or ""
        entry = entry if len(entry) <= 60 else entry[:57] + "..."
        rows.append((job["id"], job["status"], job["start_time"] or "", duration, entry))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        cells = [row[column].ljust(widths[column]) for column in range(4)]
        print("  ".join([*cells, row[4]]))
    return 0


@app.command("status")
def jobs_status_command(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The submission id.")],
    address: _AddressOption = None,
    token_file: _TokenFileOption = None,
    as_json: _JsonOption = False,
) -> int:
    """Show one job's status, message, times, entrypoint and tracking URI."""
    with _jobs_errors_as_cli_errors():
        info = tauray_jobs.describe(_connect(address, token_file).details(job_id))
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "metadata":
            value = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or None
        elif key == "message":
            value = tauray_jobs.first_line(value) or None
        if value is not None:
            print(f"{key}: {value}")
    return 0


@app.command("logs")
def jobs_logs_command(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The submission id.")],
    address: _AddressOption = None,
    token_file: _TokenFileOption = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep streaming until the job ends; exit 0 only if SUCCEEDED."
        ),
    ] = False,
) -> int:
    """Print a job's logs (its driver's stdout and stderr)."""
    with _jobs_errors_as_cli_errors():
        client = _connect(address, token_file)
        if follow:
            return _follow_to_end(client, job_id)
        sys.stdout.write(client.logs(job_id))
        sys.stdout.flush()
    return 0


@app.command("stop")
def jobs_stop_command(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The submission id.")],
    address: _AddressOption = None,
    token_file: _TokenFileOption = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the job has stopped.")
    ] = True,
) -> int:
    """Stop a running job (Ray sends SIGTERM, then SIGKILL) and report its final status."""
    with _jobs_errors_as_cli_errors():
        info = tauray_jobs.describe(
            _connect(address, token_file).stop(job_id, wait_s=60.0 if wait else None)
        )
    print(f"{job_id} {info['status']}")
    return 0

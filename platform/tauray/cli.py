"""The ``tauray`` command line. The only module that uses typer/click.

Every command is callable in tests as ``main(["tune", ...])``, which returns the exit code.
Errors print one line on stderr and exit with code 2; ``--debug`` shows the traceback.

One section per command, in the order ``train``, ``spaces``, ``tune``, ``demo``, ``report``,
``submit``, ``jobs``; each command's helpers sit beside it. Commands import Ray, torch, MLflow,
Optuna and the sweep driver inside their bodies, so that ``tauray --help`` and a mistyped option
answer without loading them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Annotated, Optional

import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click

from tauray import __version__
from tauray import jobs as tauray_jobs  # no Ray at import: the jobs client loads it on connect

app = typer.Typer(
    name="tauray",
    help="Find the best temperature and training hyperparameters for contrastive learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ---- shared: error reporting, option parsing, common options --------------------------------

_DEBUG = {"on": False}


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _echo_error(message: str) -> None:
    print(f"tauray: error: {message}", file=sys.stderr)


def _whole_number(text: str) -> int:
    """Parse an integer option; the error names the value (click prefixes the option's name)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    """Parse a real-number option; the error names the value (click prefixes the option's name)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{text!r} is not a number") from None


_TrackingUriOption = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here on 3.10
    typer.Option(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (http://HOST:5000, sqlite:///PATH/mlflow.db). Default: "
        "MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db with artifacts in ./mlartifacts.",
    ),
]
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


# ---- train ----------------------------------------------------------------------------------


@app.command("train")
def train_command(
    method: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional here on 3.10
        typer.Option(
            "--method",
            metavar="simclr|clip|dino",
            help="simclr, clip or dino. Default: the config file's, else simclr.",
        ),
    ] = None,
    config: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--config",
            metavar="FILE",
            help="Run YAML: a training config, or `train_loop_config:` (+ workers, "
            "gpus_per_worker) as `tauray tune` prints for its best trial.",
        ),
    ] = None,
    overrides: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a setting (repeatable): --set epochs=5 --set temperature.value=0.2",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--workers",
            help="DDP workers. Default: the config file's, else 1.",
            parser=_whole_number,
        ),
    ] = None,
    gpus_per_worker: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--gpus-per-worker", help="GPUs per worker (0: CPU). Default: 0.", parser=_number
        ),
    ] = None,
    cpus_per_worker: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--cpus-per-worker", help="CPUs per worker. Default: 1.", parser=_number),
    ] = None,
    address: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--address",
            help="A running Ray cluster (HOST:6379, ray://HOST:10001, auto). "
            "Default: start a local Ray for this run and stop it afterwards.",
        ),
    ] = None,
    storage_path: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--storage-path",
            metavar="DIR|URI",
            help="Where checkpoints go (shared storage on multi-node clusters: a shared volume "
            "or s3://bucket/prefix). Default: ./tauray_results.",
        ),
    ] = None,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--name", help="Run name (reusing one resumes that run)."),
    ] = None,
    max_failures: Annotated[
        int,
        typer.Option(
            "--max-failures", help="Restarts from the last checkpoint.", parser=_whole_number
        ),
    ] = 0,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the workers' own log output.")
    ] = False,
) -> None:
    """Train one model with Ray Train: tauray train --method simclr --workers 2 --set epochs=5

    Prints one line per epoch, then the final metrics and the checkpoint path.
    """
    from tauray.training import TrainingFailed, prepare_run, run_training

    request = prepare_run(
        method=method,
        config_path=config,
        overrides=list(overrides or []),
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )
    try:
        run_training(
            request,
            address=address,
            storage_path=storage_path,
            run_name=name,
            max_failures=max_failures,
            verbose=verbose,
            echo=typer.echo,
        )
    except TrainingFailed as error:
        raise CliError(str(error)) from error


# ---- spaces ---------------------------------------------------------------------------------

spaces_app = typer.Typer(
    help="Search spaces: the built-ins and YAML space files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(spaces_app, name="spaces")


@spaces_app.command("list")
def spaces_list_command() -> None:
    """List the built-in search spaces (name, method, parameter count, objective, summary)."""
    from tauray_spaces import format_space_list, list_spaces

    typer.echo(format_space_list(list_spaces()))


@spaces_app.command("show")
def spaces_show_command(
    name: Annotated[str, typer.Argument(help="A built-in space's name or a .yaml space file.")],
    as_yaml: Annotated[
        bool, typer.Option("--yaml", help="Print the space as a YAML file to copy and edit.")
    ] = False,
) -> None:
    """Show a space: its parameters, their conditions and help, fixed settings and objective."""
    from tauray_spaces import format_space, get_space

    space = get_space(name)
    typer.echo(space.to_yaml() if as_yaml else format_space(space), nl=not as_yaml)


# ---- tune -----------------------------------------------------------------------------------


@app.command("tune")
def tune_command(
    space: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--space",
            metavar="NAME|FILE",
            help="A built-in space or a .yaml file (required unless --resume).",
        ),
    ] = None,
    experiment: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="MLflow experiment name. Default: tauray-<space>."),
    ] = None,
    trials: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Number of trials. Default: 10, or unlimited with --time-budget.",
            parser=_whole_number,
        ),
    ] = None,
    time_budget: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--time-budget",
            metavar="SECONDS",
            help="Stop the sweep after this long (running trials end as stopped early); a "
            "resumed sweep gets what its earlier sessions left.",
            parser=_number,
        ),
    ] = None,
    workers_per_trial: Annotated[
        int, typer.Option(help="Workers (DDP ranks) per trial.", parser=_whole_number)
    ] = 1,
    gpus_per_worker: Annotated[
        float, typer.Option(help="GPUs per worker (0: CPU).", parser=_number)
    ] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker.", parser=_number)] = 1.0,
    scheduler: Annotated[
        str, typer.Option(help="Early stopping: asha, hyperband or none.")
    ] = "asha",
    tracking_uri: _TrackingUriOption = None,
    address: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="A running Ray cluster (HOST:6379, ray://HOST:10001, auto). "
            "Default: start a local Ray for the sweep."
        ),
    ] = None,
    overrides: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Pin a training setting for every trial (repeatable), e.g. --set epochs=3 "
            "--set data.max_train_samples=512; a key the space searches becomes a constant.",
        ),
    ] = None,
    storage_path: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="DIR|URI",
            help="The sweep's folder: Ray Tune's state, the checkpoints, best_config.yaml, the "
            "plots (what --resume continues from). On a multi-node cluster, a folder every node "
            "and the driver mount (NFS, a shared volume) or an object store (s3://bucket/prefix, "
            "credentials and AWS_ENDPOINT_URL from the environment), not the head's own disk. "
            "Default: ./tauray_results.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.", parser=_whole_number)] = 0,
    num_cpus: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="CPUs of the local Ray. Default: all of this machine's.", parser=_whole_number
        ),
    ] = None,
    max_concurrent_trials: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="At most this many trials at once. Default: what the cluster fits.",
            parser=_whole_number,
        ),
    ] = None,
    model_name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Registered model name of the champion. Default: the experiment."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show Ray Tune's own tables and tracebacks.")
    ] = False,
    objectives: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--objective",
            metavar="METRIC:max|min",
            help="What to optimise instead of the space's objective; repeat for a "
            "multi-objective search (Pareto front, no early stopping), e.g. "
            "--objective val/knn_top1:max --objective cost/cpu_seconds:min.",
        ),
    ] = None,
    max_failures: Annotated[
        int,
        typer.Option(
            help="Restarts of a trial from its last checkpoint when a worker fails (a killed "
            "process, a lost node); errors in training are retried too. Default: 0.",
            parser=_whole_number,
        ),
    ] = 0,
    trial_runner: Annotated[
        str,
        typer.Option(
            metavar="in-trial|ray-train",
            help="Where a trial trains. in-trial (default): in its Ray Tune trial actor, with "
            "one helper actor per further CPU worker, all kept for the next trial (no process "
            "start or import per trial: 16-20 s less fixed cost per 1- or 2-worker trial on 2 "
            "cores, benchmarks/README.md). ray-train: a Ray Train "
            "worker group per trial. Several GPU workers always use Ray Train.",
        ),
    ] = "in-trial",
    resume: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--resume",
            metavar="SWEEP_DIR|NAME",
            help="Continue an interrupted sweep (Ctrl-C, a killed driver, a restarted Ray head): "
            "its folder, or its name under --storage-path. Finished trials kept, unfinished ones "
            "from their last checkpoint, same MLflow runs. Needs the sweep's folder and MLflow "
            "store, not the same Ray cluster (--address if the head moved).",
        ),
    ] = None,
) -> int:
    """Search a space with Ray Tune + Optuna: each trial a training run, all of it in MLflow."""
    from tauray import tuning

    if resume is not None:
        return tuning.resume_command(
            resume,
            tracking_uri=tracking_uri,
            storage_path=storage_path,
            address=address,
            num_cpus=num_cpus,
            verbose=(verbose or _DEBUG["on"]) or None,
            echo=typer.echo,
            echo_error=_echo_error,
        )
    if space is None:
        raise ValueError("--space is required (or --resume SWEEP_DIR to continue a sweep)")
    return tuning.sweep_command(
        tuning.SweepRequest(
            space=space,
            experiment=experiment,
            trials=trials,
            time_budget_s=time_budget,
            workers_per_trial=workers_per_trial,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            scheduler=scheduler,
            tracking_uri=tracking_uri,
            address=address,
            overrides=tuple(overrides or ()),
            storage_path=storage_path,
            seed=seed,
            num_cpus=num_cpus,
            max_concurrent_trials=max_concurrent_trials,
            model_name=model_name,
            verbose=verbose or _DEBUG["on"],
            objectives=tuple(objectives or ()),
            max_failures=max_failures,
            trial_runner=trial_runner,
        ),
        echo=typer.echo,
        echo_error=_echo_error,
    )


# ---- demo -----------------------------------------------------------------------------------


@app.command("demo")
def demo_command(
    tracking_uri: _TrackingUriOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show Ray Tune's own tables and tracebacks.")
    ] = False,
) -> int:
    """A real sweep of simclr-temperature on the bundled digits, about 5 minutes on 2 cores."""
    from tauray import tuning

    request = tuning.demo_request(tracking_uri=tracking_uri, verbose=verbose or _DEBUG["on"])
    typer.echo(tuning.DEMO_INTRO)
    return tuning.sweep_command(request, echo=typer.echo, echo_error=_echo_error)


# ---- report ---------------------------------------------------------------------------------


@app.command("report")
def report_command(
    experiment: Annotated[
        str,
        typer.Argument(
            metavar="EXPERIMENT",
            help="The MLflow experiment of the sweep (tauray tune --experiment; default there: "
            "tauray-<space>).",
            show_default=False,
        ),
    ],
    tracking_uri: _TrackingUriOption = None,
    output: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--output",
            metavar="DIR",
            help="Folder for best_config.yaml, the PNG pictures and report.json. "
            "Default: ./tauray_reports/<sweep name>.",
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", metavar="N", help="Ranked trials shown in the table.", parser=_whole_number
        ),
    ] = 10,
    objectives: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--objective",
            metavar="METRIC:max|min",
            help="Rank by these instead of the sweep's objective(s) (repeat for a Pareto front), "
            "e.g. --objective val/knn_top1:max --objective cost/gpu_seconds:min.",
        ),
    ] = None,
    sweep: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--sweep",
            metavar="NAME|RUN_ID",
            help="Which sweep of the experiment (its name or MLflow run id). Default: the latest.",
        ),
    ] = None,
) -> int:
    """What a sweep found and what it cost, read from MLflow: top trials, the best config as a
    `tauray train --config` file, objective-vs-τ and quality-vs-cost pictures, the Pareto front."""
    from tauray.report import ReportRequest
    from tauray.report import report_command as run_report

    return run_report(
        ReportRequest(
            experiment=experiment,
            tracking_uri=tracking_uri,
            output=output,
            top=top,
            objectives=tuple(objectives or ()),
            sweep=sweep,
        ),
        echo=typer.echo,
        echo_error=_echo_error,
    )


# ---- submit (its helpers serve the jobs commands too) ---------------------------------------


@contextlib.contextmanager
def _jobs_errors_as_cli_errors() -> Iterator[None]:
    """A :class:`tauray.jobs.JobsError` becomes a one-line CLI error (exit 2)."""
    try:
        yield
    except tauray_jobs.JobsError as error:
        raise CliError(str(error)) from error


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


@app.command(
    "submit",
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
def submit_command(
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


# ---- jobs list | status | logs | stop -------------------------------------------------------

jobs_app = typer.Typer(
    help="What runs on a Ray cluster: list, status, logs and stop of submitted jobs.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
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


@jobs_app.command("status")
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


@jobs_app.command("logs")
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


@jobs_app.command("stop")
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


# ---- entry points ---------------------------------------------------------------------------


def click_command() -> typer.core.TyperGroup:
    """The click command behind the app (tests parse arguments with it without running)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG["on"] = "--debug" in args
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
        if _DEBUG["on"]:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tauray: error: {message}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

"""``tauray train``: one training run with Ray Train."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tauray.cli.common import CliError, TrackingUriOption, number, whole_number


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
            parser=whole_number,
        ),
    ] = None,
    gpus_per_worker: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--gpus-per-worker", help="GPUs per worker (0: CPU). Default: 0.", parser=number
        ),
    ] = None,
    cpus_per_worker: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--cpus-per-worker", help="CPUs per worker. Default: 1.", parser=number),
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
            "--max-failures", help="Restarts from the last checkpoint.", parser=whole_number
        ),
    ] = 0,
    tracking_uri: TrackingUriOption = None,
    experiment: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--experiment",
            help="MLflow experiment to record the run in. Default: tauray-train.",
        ),
    ] = None,
    no_tracking: Annotated[
        bool,
        typer.Option("--no-tracking", help="Record nothing in MLflow (no run, no model)."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the workers' own log output.")
    ] = False,
) -> None:
    """Train one model with Ray Train: tauray train --method simclr --workers 2 --set epochs=5

    Prints one line per epoch, then the final metrics and the checkpoint path. The run is
    recorded in MLflow as a sweep trial is (params, per-epoch metrics with τ, cost, the model),
    with the same tracking URI rules as `tauray tune`.
    """
    from tauray.training import (
        TrainingFailed,
        check_run_options,
        default_run_name,
        prepare_run,
        run_training,
    )
    from tauray.training_record import TrainingRunRecord

    request = prepare_run(
        method=method,
        config_path=config,
        overrides=list(overrides or []),
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )
    if no_tracking and (tracking_uri is not None or experiment is not None):
        raise CliError("--no-tracking records nothing: leave out --tracking-uri and --experiment")
    # Everything refusable is refused before the MLflow run is created or Ray starts.
    check_run_options(
        request,
        address=address,
        storage_path=storage_path,
        run_name=name,
        max_failures=max_failures,
    )
    run_name = name or default_run_name(request.config)
    record = None
    if not no_tracking:
        resources = {
            "workers": request.workers,
            "gpus_per_worker": request.gpus_per_worker,
            "cpus_per_worker": request.cpus_per_worker,
        }
        record = TrainingRunRecord.open(
            tracking_uri, experiment, request.config, run_name, resources
        )
    try:
        run_training(
            request,
            address=address,
            storage_path=storage_path,
            run_name=run_name,
            record=record,
            max_failures=max_failures,
            verbose=verbose,
            echo=typer.echo,
        )
    except TrainingFailed as error:
        raise CliError(str(error)) from error

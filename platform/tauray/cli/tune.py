"""``tauray tune`` and ``tauray demo``: a sweep with Ray Tune + Optuna, logged to MLflow."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tauray.cli.common import (
    TrackingUriOption,
    debug_requested,
    echo_error,
    number,
    whole_number,
)


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
            parser=whole_number,
        ),
    ] = None,
    time_budget: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--time-budget",
            metavar="SECONDS",
            help="Stop the sweep after this long (running trials end as stopped early); a "
            "resumed sweep gets what its earlier sessions left.",
            parser=number,
        ),
    ] = None,
    workers_per_trial: Annotated[
        int, typer.Option(help="Workers (DDP ranks) per trial.", parser=whole_number)
    ] = 1,
    gpus_per_worker: Annotated[
        float, typer.Option(help="GPUs per worker (0: CPU).", parser=number)
    ] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per worker.", parser=number)] = 1.0,
    scheduler: Annotated[
        str, typer.Option(help="Early stopping: asha, hyperband or none.")
    ] = "asha",
    early_signal: Annotated[
        str,
        typer.Option(
            metavar="SIGNAL",
            help="What early stopping compares at its rungs: objective (its value then), curve "
            "(the objective predicted for the last epoch by a learning curve fitted to the "
            "trial's values so far, logged as rung/predicted_final) or METRIC:MODE, e.g. "
            "val/alignment:min. The searcher and the champion still use the objective.",
        ),
    ] = "objective",
    tracking_uri: TrackingUriOption = None,
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
    seed: Annotated[int, typer.Option(help="Seed of the sampler.", parser=whole_number)] = 0,
    sampler: Annotated[
        str,
        typer.Option(
            metavar="tpe|random",
            help="tpe (default): Optuna's multivariate TPE, conditional parameters modelled "
            "jointly; random: Optuna's random sampler, the baseline a model-based search must "
            "beat (same seed, early stopping and budget).",
        ),
    ] = "tpe",
    num_cpus: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="CPUs of the local Ray. Default: all of this machine's.", parser=whole_number
        ),
    ] = None,
    max_concurrent_trials: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="At most this many trials at once. Default: what the cluster fits.",
            parser=whole_number,
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
            parser=whole_number,
        ),
    ] = 0,
    trial_runner: Annotated[
        str,
        typer.Option(
            metavar="in-trial|ray-train",
            help="Where a one-worker trial trains. in-trial (default): in its Ray Tune trial "
            "actor, kept for the next trial (no process start or import per trial: about 16 s "
            "less fixed cost per trial on 2 cores, benchmarks/README.md). ray-train: a Ray "
            "Train worker group. Trials with several workers are DDP jobs and always run as "
            "Ray Train worker groups.",
        ),
    ] = "in-trial",
    confirm_top: Annotated[
        int,
        typer.Option(
            metavar="K",
            help="After the search, train the K best distinct configurations again for all "
            "their epochs under fresh seeds (model initialisation, augmentations, data order; "
            "same train/validation split); the champion is the best mean, with a 95% interval "
            "and Welch's test against the runner-up. 0: no confirmation. Default: 3.",
            parser=whole_number,
        ),
    ] = 3,
    confirm_seeds: Annotated[
        int,
        typer.Option(
            metavar="S",
            help="Fresh seeds per confirmed configuration (S runs each, plus its search run). "
            "Default: 2.",
            parser=whole_number,
        ),
    ] = 2,
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
    from tauray import sweep

    if resume is not None:
        return sweep.resume_command(
            resume,
            tracking_uri=tracking_uri,
            storage_path=storage_path,
            address=address,
            num_cpus=num_cpus,
            verbose=(verbose or debug_requested()) or None,
            echo=typer.echo,
            echo_error=echo_error,
        )
    if space is None:
        raise ValueError("--space is required (or --resume SWEEP_DIR to continue a sweep)")
    return sweep.sweep_command(
        sweep.SweepRequest(
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
            verbose=verbose or debug_requested(),
            objectives=tuple(objectives or ()),
            max_failures=max_failures,
            trial_runner=trial_runner,
            sampler=sampler,
            early_signal=early_signal,
            confirm_top=confirm_top,
            confirm_seeds=confirm_seeds,
        ),
        echo=typer.echo,
        echo_error=echo_error,
    )


def demo_command(
    tracking_uri: TrackingUriOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show Ray Tune's own tables and tracebacks.")
    ] = False,
) -> int:
    """A real sweep of simclr-temperature on the bundled digits, about 5 minutes on 2 cores."""
    from tauray import sweep

    request = sweep.demo_request(tracking_uri=tracking_uri, verbose=verbose or debug_requested())
    typer.echo(sweep.DEMO_INTRO)
    return sweep.sweep_command(request, echo=typer.echo, echo_error=echo_error)

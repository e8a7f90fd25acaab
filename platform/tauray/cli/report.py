"""``tauray report``: what a sweep found and what it cost, read back from MLflow."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tauray.cli.common import TrackingUriOption, echo_error, whole_number


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
    tracking_uri: TrackingUriOption = None,
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
            "--top", metavar="N", help="Ranked trials shown in the table.", parser=whole_number
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
        echo_error=echo_error,
    )

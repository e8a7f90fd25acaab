"""``tauray tune`` and ``tauray tune --resume`` as functions: plan, run, print, exit code."""

from __future__ import annotations

from tauray.sweep.console import Echo
from tauray.sweep.driver import run_sweep
from tauray.sweep.plan import SweepPlan, SweepRequest, plan_sweep
from tauray.sweep.state import interrupted_message, plan_resume
from tauray.sweep.summary import format_summary


def _run_and_summarise(plan: SweepPlan, *, echo: Echo, echo_error: Echo, resume: bool) -> int:
    """Run a planned sweep, print its summary, and return the CLI exit code.

    Interrupted (Ctrl-C): the summary so far, then one line on stderr saying how to continue
    (:func:`interrupted_message`), exit code 130.
    """
    try:
        summary = run_sweep(plan, echo=echo, resume=resume)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside Ray Tune's loop
        echo_error(interrupted_message(plan))
        return 130
    echo(format_summary(summary))
    if summary.interrupted:
        echo_error(interrupted_message(plan))
        return 130
    if summary.best is None:
        echo_error(
            f"no trial of sweep {plan.sweep_name} finished with a value of {plan.objective.metric}"
        )
        return 1
    return 0


def sweep_command(request: SweepRequest, *, echo: Echo = print, echo_error: Echo = print) -> int:
    """``tauray tune``: validate (before Ray starts), run, print the summary.

    Returns:
        0; 1 when no trial finished with a value of the objective; 130 when interrupted.

    Raises:
        ValueError, ConnectionError: from :func:`plan_sweep` / :func:`run_sweep`.
    """
    plan = plan_sweep(request)
    return _run_and_summarise(plan, echo=echo, echo_error=echo_error, resume=False)


def resume_command(
    target: str,
    *,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool | None = None,
    echo: Echo = print,
    echo_error: Echo = print,
) -> int:
    """``tauray tune --resume``: continue an interrupted sweep, print the summary.

    Returns:
        As :func:`sweep_command`.

    Raises:
        ValueError, ConnectionError: from :func:`plan_resume` / :func:`run_sweep`.
    """
    plan = plan_resume(
        target,
        tracking_uri=tracking_uri,
        storage_path=storage_path,
        address=address,
        num_cpus=num_cpus,
        verbose=verbose,
    )
    return _run_and_summarise(plan, echo=echo, echo_error=echo_error, resume=True)

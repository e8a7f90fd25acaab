"""Sweeps: Ray Tune + Optuna over contrastive trials, every trial and model tracked in MLflow.

One module per concern:

- :mod:`~tauray.sweep.plan`: the request (the ``tauray tune`` options) and its validation;
- :mod:`~tauray.sweep.state`: the sweep folder between sessions (saved request, clock, resume);
- :mod:`~tauray.sweep.trial`: what runs in a Ray Tune trial actor; one-worker trials train in
  the actor (:mod:`~tauray.sweep.in_trial`), several workers as a Ray Train worker group;
- :mod:`~tauray.sweep.search`: the TPE sampler, ``OptunaSearch`` and the early-stopping scheduler;
- :mod:`~tauray.sweep.console`: progress lines, quieting Ray Tune, Ctrl-C and SIGTERM;
- :mod:`~tauray.sweep.reaper`: freeing the placement groups of stopped Ray Train trials;
- :mod:`~tauray.sweep.ledger` and :mod:`~tauray.sweep.mlflow_logger`: the Ray Tune callbacks that
  keep a record per trial and write each trial to MLflow (:mod:`tauray.layout`);
- :mod:`~tauray.sweep.driver`: build the Tuner, run it, record the results;
- :mod:`~tauray.sweep.confirm`: the confirmation phase (the best configurations under fresh
  seeds) and the champion by mean;
- :mod:`~tauray.sweep.summary`: the end-of-sweep text;
- :mod:`~tauray.sweep.commands` and :mod:`~tauray.sweep.demo`: ``tauray tune`` and ``tauray demo``.

This module is the public API: :func:`plan_sweep` validates a :class:`SweepRequest` without
starting Ray, :func:`run_sweep` runs it and returns a :class:`SweepSummary`,
:func:`format_summary` prints it.
"""

from tauray.sweep.commands import resume_command, sweep_command
from tauray.sweep.console import graceful_ctrl_c
from tauray.sweep.demo import DEMO_INTRO, demo_request
from tauray.sweep.driver import run_sweep
from tauray.sweep.plan import (
    DEFAULT_TRIALS,
    SweepPlan,
    SweepRequest,
    plan_sweep,
    runs_in_trial,
)
from tauray.sweep.state import SWEEP_FILE, plan_resume, spent_tune_seconds
from tauray.sweep.summary import SweepSummary, format_summary
from tauray.sweep.trial import TrialSetup, tauray_trial, trial_name, trial_resources

__all__ = [
    "DEFAULT_TRIALS",
    "DEMO_INTRO",
    "SWEEP_FILE",
    "SweepPlan",
    "SweepRequest",
    "SweepSummary",
    "TrialSetup",
    "demo_request",
    "format_summary",
    "graceful_ctrl_c",
    "plan_resume",
    "plan_sweep",
    "resume_command",
    "run_sweep",
    "runs_in_trial",
    "spent_tune_seconds",
    "sweep_command",
    "tauray_trial",
    "trial_name",
    "trial_resources",
]

"""The terminal while a sweep runs: tauray's progress lines, Ray Tune kept quiet, Ctrl-C/SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray import tune

from tauray.sweep.ledger import TrialLedger
from tauray.tracking import dropped_messages
from tauray.trials import format_number as _number
from tauray.trials import result_step
from tauray_trainers import metrics as names

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from tauray_spaces import Objective

Echo = Callable[[str], None]


class ProgressPrinter(tune.Callback):
    """One line per trial event (start, epoch, end) and a running tally; no Ray tables.

    Put it after the :class:`~tauray.sweep.ledger.TrialLedger`, whose records it reads.
    """

    def __init__(self, ledger: TrialLedger, objective: Objective, echo: Echo) -> None:
        self.ledger = ledger
        self.objective = objective
        self.echo = echo
        self.start = time.monotonic()
        self._printed: dict[str, int] = {}

    def line(self, text: str) -> None:
        """Print ``text`` after the time since the sweep started."""
        elapsed = int(time.monotonic() - self.start)
        self.echo(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}")

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        params = "  ".join(f"{key}={_number(value)}" for key, value in record.sampled.items())
        self.line(f"trial {record.index:3d} started   {params}")

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        record = self.ledger.record_for(trial)
        step = result_step(result)
        if record.infeasible or step <= self._printed.get(trial.trial_id, 0):
            return  # an epoch reported again (a restored trial's last one) is printed once
        self._printed[trial.trial_id] = step
        parts = [f"epoch {record.epoch}/{record.planned_epochs or '?'}"]
        for key in (self.objective.metric, names.TRAIN_LOSS, names.TRAIN_TEMPERATURE):
            if key in result:
                label = "τ" if key == names.TRAIN_TEMPERATURE else key
                parts.append(f"{label} {_number(result[key])}")
        self.line(f"trial {record.index:3d} " + "  ".join(parts))

    def _tally(self) -> str:
        counts = self.ledger.counts()
        done = counts["completed"] + counts["stopped"] + counts["failed"]
        return (
            f"{done} done: {counts['completed']} completed, {counts['stopped']} stopped early, "
            f"{counts['failed']} failed; {counts['running']} running"
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        if record.infeasible:
            self.line(
                f"trial {record.index:3d} FAILED (infeasible): {record.error}  ({self._tally()})"
            )
            return
        value = record.value(self.objective.metric)
        word = "completed" if record.status == "completed" else "stopped early"
        self.line(
            f"trial {record.index:3d} {word} at epoch {record.epoch}/"
            f"{record.planned_epochs or '?'}  {self.objective.metric} {_number(value)}  "
            f"({self._tally()})"
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        record = self.ledger.record_for(trial)
        self.line(
            f"trial {record.index:3d} FAILED at epoch {record.epoch}: {record.error}  "
            f"({self._tally()})"
        )


# Ray Tune's legacy output engine at verbosity 0 prints no tables; failed trials' tracebacks
# are left out (the ledger records each failure's one-line reason and prints it).
_QUIET_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
_QUIET_TUNE_MESSAGES = (
    "Trials did not complete",
    "Trial task failed",
    "Wrote the latest version of all result files",
    "Failed to fetch metrics for",  # a trial the time budget stopped before its first epoch
    "Reached timeout of",  # the time budget: the progress lines say which trials it stopped
    # Ctrl-C: tauray says what happens and how to resume (Ray's hint names Tuner.restore).
    "Stop signal received",
    "Experiment has been interrupted",
)
# Filters apply to records of the logger they are attached to, not to its children's.
_QUIET_TUNE_LOGGERS = (
    "ray",  # ray.tune.stopper.timeout logs to it
    "ray.tune",
    "ray.tune.tune",
    "ray.tune.execution.tune_controller",
    "ray.tune.analysis.experiment_analysis",
)


@contextlib.contextmanager
def quiet_ray_tune(enabled: bool = True) -> Iterator[None]:
    """Leave the terminal to tauray's progress lines while Ray Tune runs, then restore.

    Switches Ray Tune to its legacy output engine (silent at verbosity 0), stops it printing
    each failed trial's traceback (:class:`~tauray.sweep.ledger.TrialLedger` keeps the reason),
    drops Tune's end-of-run file and failure notices and Optuna's per-study info lines.
    """
    if not enabled:
        yield
        return
    import optuna

    saved_env = {key: os.environ.get(key) for key in _QUIET_TUNE_ENV}
    os.environ.update(_QUIET_TUNE_ENV)
    optuna_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with dropped_messages(_QUIET_TUNE_LOGGERS, _QUIET_TUNE_MESSAGES):
            yield
    finally:
        optuna.logging.set_verbosity(optuna_verbosity)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@dataclass
class Interruption:
    """Whether Ctrl-C or SIGTERM stopped Ray Tune's loop (see :func:`graceful_ctrl_c`)."""

    requested: bool = False


def _not_running_yet(signum: int, frame: Any) -> None:
    """SIGUSR1 before Ray Tune's loop installs its own handler: stop like Ctrl-C."""
    raise KeyboardInterrupt


_STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""The signals that stop a sweep gracefully, and how the announcement names each."""


@contextlib.contextmanager
def graceful_ctrl_c(announce: Callable[[str], None]) -> Iterator[Interruption]:
    """Ctrl-C or SIGTERM while ``Tuner.fit`` runs: the first one stops the sweep after Ray
    Tune saved its state, a second one stops at once; the yielded object says whether it
    happened.

    Ray Tune handles SIGINT itself (ends its loop, saves the experiment state, stops the
    trials, returns normally) but does not say that it did, and it does not handle SIGTERM,
    which is how a sweep is usually stopped from outside: ``tauray jobs stop`` (Ray's job
    supervisor sends SIGTERM, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``), a deleted
    Kubernetes pod (SIGTERM, then SIGKILL after the grace period), ``kill``. Here Tune's own
    SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``) and tauray's handles both
    signals: it records the request, announces it, and stops Tune's loop the way Tune's handler
    would (Tune listens for SIGUSR1 too, with the same handler). Before Tune's loop has started,
    and for a second signal, it raises ``KeyboardInterrupt``. Ray's own processes block SIGINT,
    so a Ctrl-C sent to the terminal's whole process group reaches only this driver.

    Signal handlers can only be set in the main thread; elsewhere this does nothing (and Ray
    Tune does not handle SIGINT either).

    Args:
        announce: called with a one-line message when the first signal arrives.
    """
    state = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_stop_signal(signum: int, frame: Any) -> None:
        stop_tune = signal.getsignal(signal.SIGUSR1)
        if state.requested or stop_tune is _not_running_yet or not callable(stop_tune):
            state.requested = True
            raise KeyboardInterrupt
        state.requested = True
        announce(
            f"{_STOP_SIGNALS[signum]}: stopping the sweep "
            "after Ray Tune saves its state (press Ctrl-C again to stop at once)"
        )
        stop_tune(signal.SIGUSR1, frame)

    saved_env = os.environ.get(_TUNE_SIGINT_ENV)
    saved = {signum: signal.signal(signum, on_stop_signal) for signum in _STOP_SIGNALS}
    saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _not_running_yet)
    os.environ[_TUNE_SIGINT_ENV] = "1"
    try:
        yield state
    finally:
        # None: a handler set outside Python; the default is the closest one can restore.
        for signum, handler in saved.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if saved_env is None:
            os.environ.pop(_TUNE_SIGINT_ENV, None)
        else:
            os.environ[_TUNE_SIGINT_ENV] = saved_env


def write_stderr(text: str) -> None:
    """Write one line to stderr from a signal handler (no buffered stream: it may be mid-write)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{text}\n".encode())

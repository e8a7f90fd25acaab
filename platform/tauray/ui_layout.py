"""How a sweep reads in the MLflow UI: run names, objective summaries.

Part of the MLflow layout (:mod:`tauray.layout` uses it and documents the whole layout); what is
here makes the runs table readable without changing how tauray finds its runs again (trials are
found by their tags, never by their names):

- a trial run's **name** says what differs between trials: its index and its temperature setting
  (``t002 fixed τ=0.100``, ``t010 learnable τ0=0.182``, ``t004 cosine τ 0.500→0.030``,
  ``t003 dino τs=0.100 τt=0.040``); a confirmation run names the search trial it repeats and
  its seed (``t012 confirm t003 seed=2``). A trial stopped early gets `` stopped@<epoch>``
  appended and the tag ``tauray.stopped_at_epoch``;
- a trial logs, beside the training loop's metrics, :data:`OBJECTIVE_BEST` (the best value of
  the sweep's objective so far, step = epoch: its last value is the trial's best) and, in a
  sweep with early stopping, :data:`OBJECTIVE_AT_FIRST_RUNG` (the objective at the scheduler's
  first rung, logged at that epoch: every trial not stopped before the rung has it), so
  stopped and completed trials compare fairly on these two columns;
- the parent run logs the sweep's objective under the trials' own key (the best trial's value,
  :func:`tauray.layout.result_metrics`) and :data:`OBJECTIVE_BEST_SO_FAR` with step = trial
  index: the best objective over the search trials up to that one (each trial's last value,
  as the sweep ranks them), the optimisation history as a native MLflow chart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tauray.trials import PHASE_CONFIRM, PHASE_SEARCH, TrialRecord

#: A trial run's tag: the last epoch of a trial stopped early.
TAG_STOPPED_AT_EPOCH = "tauray.stopped_at_epoch"
#: Trial metrics: the objective's best value so far (step = epoch), and its value at the first
#: early-stopping rung (logged at that epoch).
OBJECTIVE_BEST = "objective/best"
OBJECTIVE_AT_FIRST_RUNG = "objective/at_first_rung"
#: Parent-run metric: the best objective over the search trials so far, step = trial index.
OBJECTIVE_BEST_SO_FAR = "objective/best_so_far"

# ---- run names -----------------------------------------------------------------------------------


def _tau(value: Any) -> str:
    number = float(value)
    return f"{number:.3f}" if 0.001 <= abs(number) < 100 else f"{number:.3g}"


def _temperature_text(config: Mapping[str, Any]) -> str:
    if config.get("method") == "dino":
        dino = config["dino"]
        teacher = _tau(dino["teacher_temperature"])
        if float(dino["teacher_temperature_start"]) != float(dino["teacher_temperature"]):
            teacher = f"{_tau(dino['teacher_temperature_start'])}→{teacher}"
        return f"dino τs={_tau(dino['student_temperature'])} τt={teacher}"
    temperature = config["temperature"]
    mode = temperature["mode"]
    if mode == "fixed":
        return f"fixed τ={_tau(temperature['value'])}"
    if mode == "learnable":
        return f"learnable τ0={_tau(temperature['value'])}"
    schedule = temperature["schedule"]
    if schedule == "cosine":
        return f"cosine τ {_tau(temperature['max'])}→{_tau(temperature['min'])}"
    if schedule == "linear_warmup":
        start = temperature.get("start")
        begin = _tau(start) if start is not None else "?"
        return f"warmup τ {begin}→{_tau(temperature['value'])}"
    if schedule == "step":
        return f"step τ0={_tau(temperature['value'])} ×{temperature['gamma']:g}"
    return f"{schedule} τ={_tau(temperature['value'])}"


def trial_run_name(record: TrialRecord, confirmed_index: int | None = None) -> str:
    """A trial run's name: ``t<index>`` and what differs (see the module docstring).

    Args:
        record: the trial.
        confirmed_index: of a confirmation run, the index of the search trial it repeats.
    """
    prefix = f"t{record.index:03d}"
    config = record.config
    if record.phase == PHASE_CONFIRM:
        repeated = f" t{confirmed_index:03d}" if confirmed_index is not None else ""
        seed = f" seed={config['seed']}" if config else ""
        return f"{prefix} confirm{repeated}{seed}"
    if config is None:
        return f"{prefix} invalid combination"
    return f"{prefix} {_temperature_text(config)}"


def stopped_run_name(name: str, epoch: int) -> str:
    """The name of a run whose trial was stopped early after ``epoch`` epochs."""
    return f"{name} stopped@{epoch}"


def stopped_tags(epoch: int) -> dict[str, str]:
    """The tags of a trial run stopped early after ``epoch`` epochs."""
    return {TAG_STOPPED_AT_EPOCH: str(epoch)}


# ---- objective columns ---------------------------------------------------------------------------


def _better(mode: str) -> Any:
    return max if mode == "max" else min


def objective_progress(
    history: Sequence[tuple[int, float]], mode: str, first_rung: int | None, step: int
) -> dict[str, float]:
    """A trial's objective columns at ``step`` (an epoch), from its objective's history.

    Args:
        history: ``(epoch, value)`` pairs of the objective, as reported.
        mode: ``max`` or ``min``.
        first_rung: the early-stopping scheduler's first rung in epochs (None: no early stopping).
        step: the epoch just reported.

    Returns:
        :data:`OBJECTIVE_BEST` over the finite values up to ``step`` (absent if none), and
        :data:`OBJECTIVE_AT_FIRST_RUNG` when ``step`` is the first rung and has a value.
    """
    upto = [(epoch, value) for epoch, value in history if epoch <= step and math.isfinite(value)]
    columns: dict[str, float] = {}
    if upto:
        columns[OBJECTIVE_BEST] = float(_better(mode)(value for _, value in upto))
    if first_rung is not None and step == first_rung:
        at_rung = [value for epoch, value in upto if epoch == first_rung]
        if at_rung:
            columns[OBJECTIVE_AT_FIRST_RUNG] = float(at_rung[-1])
    return columns


def best_so_far(records: Iterable[TrialRecord], metric: str, mode: str) -> list[tuple[int, float]]:
    """The parent run's :data:`OBJECTIVE_BEST_SO_FAR` points: ``(trial index, best value)`` for
    every search trial from the first one with a value on (a failed trial repeats the best)."""
    points: list[tuple[int, float]] = []
    best: float | None = None
    for record in sorted(records, key=lambda each: each.index):
        if record.phase != PHASE_SEARCH:
            continue
        value = record.value(metric)
        if value is not None:
            best = value if best is None else float(_better(mode)(best, value))
        if best is not None:
            points.append((record.index, best))
    return points

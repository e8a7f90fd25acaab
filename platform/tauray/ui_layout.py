"""How a sweep reads in the MLflow UI: what its runs are named.

Part of the MLflow layout (:mod:`tauray.layout` uses it and documents the whole layout); what is
here makes the runs table readable without changing how tauray finds its runs again (trials are
found by their tags, never by their names):

- a trial run's **name** says what differs between trials: its index and its temperature setting
  (``t002 fixed τ=0.100``, ``t010 learnable τ0=0.182``, ``t004 cosine τ 0.500→0.030``,
  ``t003 dino τs=0.100 τt=0.040``); a confirmation run names the search trial it repeats and
  its seed (``t012 confirm t003 seed=2``). A trial stopped early gets `` stopped@<epoch>``
  appended and the tag ``tauray.stopped_at_epoch``;
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tauray.trials import PHASE_CONFIRM, TrialRecord

#: A trial run's tag: the last epoch of a trial stopped early.
TAG_STOPPED_AT_EPOCH = "tauray.stopped_at_epoch"

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

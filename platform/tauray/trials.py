"""What a sweep knows about one trial, and the rules every view of a sweep shares about it.

A :class:`TrialRecord` is one trial: its sampled parameters, the resolved ``train_loop_config``
the workers train with, the last metrics, the objective and temperature trajectories, how it
ended and why. The sweep driver's ledger (:class:`tauray.sweep.ledger.TrialLedger`) builds the
records from Ray Tune's events; ``tauray report`` builds them again from MLflow
(:mod:`tauray.layout`); the MLflow logger, the progress printer, the plots, the end-of-sweep
summary and the report all read them, so every view of a sweep agrees on what happened. Nothing
here imports Ray.

A trial *completed* when it reported every epoch of its config, was *stopped early* when it
ended without error before that (the early-stopping scheduler or the time budget stopped it),
and *failed* when it raised (an error, a non-finite loss, out of memory).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tauray_trainers import metrics as names
from tauray_trainers.config import TRAIN_LOOP_CONFIG, build_config, deep_merge, flatten
from tauray_trainers.failures import mentions_out_of_memory

#: A Ray Train trial's report carries the URI of its checkpoint under this key (the name Ray
#: Train's ``TuneReportCallback`` uses).
CHECKPOINT_PATH = "checkpoint_path"
#: A trial driver's last report carries this key (the reason, one line) when the trial was
#: infeasible (out of memory at its batch size): the report tells the searcher the worst value of
#: every objective, and the ledger records the trial as failed instead of keeping those values.
INFEASIBLE = "tauray_infeasible"
#: The per-worker batch size that ran out of memory, in an infeasible trial's last report.
INFEASIBLE_BATCH_SIZE = "tauray_oom_batch_size_per_worker"

#: A trial's phase: proposed by the search, or a confirmation run of a search trial's config.
PHASE_SEARCH = "search"
PHASE_CONFIRM = "confirm"

TrialStatus = Literal["running", "completed", "stopped", "failed"]
STATUS_WORDS: dict[str, str] = {
    "running": "running",
    "completed": "completed",
    "stopped": "stopped early",
    "failed": "failed",
}

# Metric namespaces a trial reports (``train/loss`` -> ``train``), from the one list of names.
_REPORTED = (*names.ALL_METRICS, names.RUNG_PREDICTED_FINAL)
_METRIC_NAMESPACES = frozenset(name.split("/", 1)[0] for name in _REPORTED if "/" in name)
_ERROR_LINE = re.compile(
    r"^\s*(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Failure))(?::\s*(.*))?$"
)


def sampled_train_loop_config(trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested ``train_loop_config`` a search algorithm chose for one trial.

    Raises:
        ValueError: if the trial config has keys other than ``train_loop_config`` (search spaces
            sample only the trainer's config; infrastructure is bound to the trainable).
    """
    extra = sorted(set(trial_config) - {TRAIN_LOOP_CONFIG})
    if extra:
        raise ValueError(
            f"trial config has keys {extra}; a search space may only set "
            f"'{TRAIN_LOOP_CONFIG}/...' names"
        )
    sampled = trial_config.get(TRAIN_LOOP_CONFIG) or {}
    if not isinstance(sampled, Mapping):
        raise TypeError(f"trial config '{TRAIN_LOOP_CONFIG}' must be a mapping, got {sampled!r}")
    return dict(sampled)


def resolve_train_loop_config(
    fixed: Mapping[str, Any], trial_config: Mapping[str, Any]
) -> dict[str, Any]:
    """The full, validated ``train_loop_config`` of a trial: fixed settings + sampled values.

    Args:
        fixed: the sweep's fixed nested config (the space's fixed settings and ``--set``).
        trial_config: the config Ray Tune gives the trial (``{"train_loop_config": {...}}``).

    Returns:
        Every field of :class:`tauray_trainers.config.TrainConfig`, defaults filled in, as the
        JSON-compatible nested dict the workers build their config from.

    Raises:
        ValueError: if the combination is not a valid trainer config (names the key and value).
    """
    merged = deep_merge(fixed, sampled_train_loop_config(trial_config))
    return build_config(merged).to_dict()


def sampled_key(sampled: Mapping[str, Any]) -> str:
    """A trial's sampled values (``a/b`` keys) as one text: equal for equal configurations."""
    return json.dumps(flatten(dict(sampled)), sort_keys=True, default=str)


def is_metric(key: str, value: Any) -> bool:
    """Whether a result entry is a trainer metric (a number under a known metric namespace)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return key in names.ALL_METRICS or key.split("/", 1)[0] in _METRIC_NAMESPACES


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The trainer metrics of one reported result (what a trial's run logs at the epoch)."""
    return {
        key: float(value)
        for key, value in result.items()
        if is_metric(key, value) and key != names.EPOCH
    }


def result_step(result: Mapping[str, Any]) -> int:
    """The step a result belongs to: the completed epoch (1-based), else Tune's iteration."""
    for key in (names.EPOCH, "training_iteration"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return 0


def failure_reason(error_text: str | None) -> str:
    """One line saying why a trial failed, from Ray's error text (innermost exception last).

    Ray wraps a worker's exception in several layers (the Tune task error, Ray Train's worker
    group error); the user's exception (``NonFiniteLossError: non-finite loss at step 12 ...``)
    is the last ``SomethingError: message`` line of the text.
    """
    if not error_text:
        return "unknown error (no error text recorded)"
    best: str | None = None
    for line in error_text.splitlines():
        match = _ERROR_LINE.match(line)
        if match and match.group(1) not in ("TuneError", "RayTaskError"):
            message = (match.group(2) or "").strip()
            best = f"{match.group(1)}: {message}" if message else match.group(1)
    if best is None:
        lines = [line.strip() for line in error_text.splitlines() if line.strip()]
        best = lines[-1] if lines else "unknown error"
    return " ".join(best.split())[:500]


def count_statuses(records: Iterable[TrialRecord]) -> dict[str, int]:
    """How many trials are running, completed, stopped early and failed."""
    counts = dict.fromkeys(STATUS_WORDS, 0)
    for record in records:
        counts[record.status] += 1
    return counts


def failure_kind(reason: str) -> Literal["out_of_memory", "non_finite", "error"]:
    """Classify a failure reason: out of memory, non-finite loss, or any other error."""
    lowered = reason.lower()
    if mentions_out_of_memory(reason):
        return "out_of_memory"
    if "nonfinite" in lowered.replace("-", "").replace("_", "") or "non-finite" in lowered:
        return "non_finite"
    return "error"


@dataclass
class TrialRecord:
    """Everything the sweep driver knows about one trial.

    Attributes:
        trial_id: Ray Tune's trial id (stable across a sweep restore).
        index: 1-based order in which the trial started (what the progress table shows).
        sampled: the values the search space chose, ``temperature/mode`` style keys.
        config: the resolved nested ``train_loop_config`` (None if the combination is invalid).
        config_error: why the combination is invalid, if it is.
        status: ``running``, ``completed``, ``stopped`` (early) or ``failed``.
        epoch: the last epoch the trial reported (0 before the first report).
        metrics: the trial's last value of every metric it reported.
        history: per metric, ``(epoch, value)`` pairs in reporting order.
        checkpoint_path: the last checkpoint the trial reported.
        error: one-line failure reason of a failed trial.
        infeasible: the trial ran out of memory (``error`` names the batch size); the searcher
            was told the worst value of every objective for it.
        oom_batch_size: the per-worker batch size that ran out of memory.
        phase: ``search`` (a trial the search algorithm proposed) or ``confirm`` (a
            configuration of the search trained again under a fresh seed).
        confirms: of a confirmation run, the trial id of the search trial it repeats.
    """

    trial_id: str
    index: int
    sampled: dict[str, Any]
    config: dict[str, Any] | None
    config_error: str | None = None
    status: TrialStatus = "running"
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    checkpoint_path: str | None = None
    error: str | None = None
    infeasible: bool = False
    oom_batch_size: int | None = None
    phase: str = PHASE_SEARCH
    confirms: str | None = None

    @property
    def planned_epochs(self) -> int | None:
        """The number of epochs the trial's config asks for."""
        return int(self.config["epochs"]) if self.config else None

    @property
    def method(self) -> str | None:
        return str(self.config["method"]) if self.config else None

    @property
    def temperature_mode(self) -> str | None:
        """``fixed``, ``learnable`` or ``scheduled`` (DINO trials have a teacher schedule)."""
        return str(self.config["temperature"]["mode"]) if self.config else None

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def value(self, metric: str) -> float | None:
        """The trial's last reported value of ``metric`` (None if never reported or not finite)."""
        value = self.metrics.get(metric)
        if value is None or not math.isfinite(value):
            return None
        return float(value)

    def final_temperature(self) -> float | None:
        """The temperature at the trial's last report (for DINO: the student's)."""
        value = self.value(names.TRAIN_TEMPERATURE)
        if value is not None:
            return value
        if self.config is None:
            return None
        if self.config["method"] == "dino":
            return float(self.config["dino"]["student_temperature"])
        return float(self.config["temperature"]["value"])


def format_number(value: Any, digits: int = 4) -> str:
    """A metric or parameter value for tables: ``digits`` significant digits, ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"

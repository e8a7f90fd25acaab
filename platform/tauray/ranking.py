"""Which trial of a sweep is best: the one ranking rule of the sweep's summary and of the report.

Only trials that completed or were stopped early rank, by their last reported value of every
objective; failed and unfinished trials never rank, whatever values they logged before they
ended. With one objective the best value ranks first (ties: the trial that started first). With
several, the Pareto front comes first, each part ordered by the first objective; the best trial
is the first of the ranking, so it is always on the front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tauray.trials import TrialRecord
from tauray_trainers import metrics as names

if TYPE_CHECKING:
    from tauray_spaces import Objective

#: Statuses of trials that rank (their last values are results).
RANKABLE = ("completed", "stopped")


def dominates(first: Sequence[float], second: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether ``first`` is no worse than ``second`` in every objective and better in one.

    Args:
        first, second: objective values, one per objective.
        modes: ``max`` or ``min`` per objective.

    Raises:
        ValueError: if the lengths differ or a mode is not ``max``/``min``.
    """
    if not len(first) == len(second) == len(modes):
        raise ValueError(
            f"dominates: {len(first)} and {len(second)} values for {len(modes)} objectives"
        )
    better = False
    for a, b, mode in zip(first, second, modes, strict=True):
        if mode not in ("max", "min"):
            raise ValueError(f"objective mode {mode!r} is not one of: max, min")
        if (a < b) if mode == "max" else (a > b):
            return False
        if a != b:
            better = True
    return better


def pareto_front(values: Mapping[str, Sequence[float]], modes: Sequence[str]) -> list[str]:
    """The keys whose values no other entry dominates (Pareto-optimal), in input order.

    Trials with identical values are all kept. Quadratic in the number of trials, which is fine
    for sweeps (hundreds of trials).

    Args:
        values: per trial id, its value of each objective.
        modes: ``max`` or ``min`` per objective.
    """
    return [
        key
        for key, point in values.items()
        if not any(dominates(other, point, modes) for name, other in values.items() if name != key)
    ]


@dataclass(frozen=True)
class Ranking:
    """The trials that rank, best first, and the Pareto front among them.

    Attributes:
        ranked: trials with a value of every objective that completed or stopped early, best
            first (for several objectives: the Pareto front first, each part by the first one).
        front: trial ids on the Pareto front, in ranking order (empty for a single objective).
    """

    ranked: list[TrialRecord] = field(default_factory=list)
    front: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrialRecord | None:
        """The best trial (the first of :attr:`ranked`), or None when no trial ranks."""
        return self.ranked[0] if self.ranked else None


def _values(record: TrialRecord, objectives: Sequence[Objective]) -> list[float] | None:
    values = [record.value(objective.metric) for objective in objectives]
    return None if any(value is None for value in values) else values  # type: ignore[return-value]


def _order_key(record: TrialRecord, objective: Objective) -> tuple[float, int]:
    value = record.value(objective.metric) or 0.0
    return (-value if objective.mode == "max" else value, record.index)


def rank_trials(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> Ranking:
    """Rank a sweep's trials by ``objectives`` (the first one orders them and picks the best).

    Raises:
        ValueError: ``objectives`` is empty.
    """
    if not objectives:
        raise ValueError("rank_trials needs at least one objective, got none")
    candidates = {
        record.trial_id: values
        for record in records
        if record.status in RANKABLE and (values := _values(record, objectives)) is not None
    }
    by_id = {record.trial_id: record for record in records}
    primary = objectives[0]
    if len(objectives) == 1:
        ranked = sorted((by_id[key] for key in candidates), key=lambda r: _order_key(r, primary))
        return Ranking(ranked=ranked)
    front = pareto_front(candidates, [objective.mode for objective in objectives])
    on_front = sorted((by_id[key] for key in front), key=lambda r: _order_key(r, primary))
    rest = sorted(
        (by_id[key] for key in candidates if key not in front),
        key=lambda r: _order_key(r, primary),
    )
    return Ranking(ranked=on_front + rest, front=[record.trial_id for record in on_front])


def pick_cost_metric(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> str | None:
    """The trade-off's cost axis: a ``cost/*`` objective other than the first, else GPU-seconds
    when any trial used a GPU, else CPU-seconds, else worker-seconds (None when none recorded)."""
    for objective in objectives[1:]:
        if objective.metric.startswith("cost/"):
            return objective.metric
    if any((record.value(names.COST_GPU_SECONDS) or 0.0) > 0 for record in records):
        return names.COST_GPU_SECONDS
    for metric in (names.COST_CPU_SECONDS, names.COST_WORKER_SECONDS):
        if any((record.value(metric) or 0.0) > 0 for record in records):
            return metric
    return None


def cost_frontier(
    ranked: Sequence[TrialRecord], objective: Objective, cost_metric: str
) -> list[str]:
    """Ids of the ranked trials that no other one beats on both ``objective`` and the cost."""
    priced = {
        record.trial_id: [record.value(objective.metric), record.value(cost_metric)]
        for record in ranked
        if record.value(cost_metric) is not None
    }
    return pareto_front(priced, [objective.mode, "min"])  # type: ignore[arg-type]

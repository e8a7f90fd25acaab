"""The confirmation phase: the search's best configurations trained again under fresh seeds.

A search over a noisy plateau picks its luckiest draw: at one τ the final kNN top-1 varies with
the seed about as much as the seed-averaged objective varies over a wide τ range
(``benchmarks/README.md``). After the search, the ``--confirm-top`` best distinct configurations
are trained again for all their epochs under ``--confirm-seeds`` fresh seeds each. A seed is the
trainer config's ``seed`` (model initialisation, augmentations, data order); ``data.seed`` (the
bundled data's generation and the train/validation split) stays, so every run of a
configuration is scored on the same validation set.

The runs are trials of the same sweep, in a second Ray Tune experiment in the sweep's folder
(:data:`CONFIRM_FOLDER`): the same trial function, resources and ``--max-failures``, no early
stopping, what the search left of the time budget, and the same ledger and MLflow logger, so
they are child runs of the sweep (tag ``tauray.phase = confirm``, ``tauray.confirms``). When the
search ends, :data:`CONFIRM_FILE` records the runs to make and the search's records: a sweep
interrupted in the confirmation phase resumes there without repeating the search.

The champion is the configuration with the best mean over its search run (when it ran all its
epochs) and its completed confirmation runs; its best-scoring run gives the model and config.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tauray import layout
from tauray.layout import confirmation as confirmation_layout
from tauray.plots import ConfirmedPoint
from tauray.ranking import rank_trials
from tauray.stats import Comparison, SampleSummary, summarize, verdict_text, welch_test
from tauray.storage import StoragePath, write_text_atomic
from tauray.trials import PHASE_SEARCH, TrialRecord, format_number, sampled_key
from tauray_trainers.config import TRAIN_LOOP_CONFIG, flatten, unflatten

if TYPE_CHECKING:
    from tauray.sweep.ledger import TrialLedger
    from tauray.sweep.mlflow_logger import MlflowTrialLogger
    from tauray.sweep.plan import SweepPlan
    from tauray_spaces import Objective, ParameterSpec

logger = logging.getLogger(__name__)

CONFIRM_FOLDER = "confirm"
"""The confirmation phase's Ray Tune experiment, inside the sweep's folder."""
CONFIRM_FILE = "tauray_confirm.json"
"""Written when the search ends: the confirmation runs to make and the search's records."""
SEED_KEY = "seed"


def fresh_seeds(search_seed: int, count: int) -> list[int]:
    """The seeds of a configuration's confirmation runs: the ``count`` seeds after its search
    run's (never the search run's own, so every run is a new draw)."""
    return [search_seed + offset for offset in range(1, count + 1)]


SAME_CONFIGURATION_SHARE = 0.02
"""Two search trials are one configuration when every continuous parameter's values lie closer
than this share of its range (on a log scale for a log parameter) and all others are equal.

Confirming both of two such trials spends seeds on a difference no confirmation can resolve. On
the bundled benchmark (``benchmarks/README.md``, search efficiency round 2) the seed-averaged
objective varies by at most 0.03 over two thirds of τ's log range [0.02, 1] while one seed's SD
is 0.029: a step of 2% of the range (a factor 1.08 in τ) moves the mean by at most about 0.001, a
thirtieth of one seed's noise. Under one seed, τ 0.1686, 0.1712 and 0.1758 (1.1% of the range
apart) scored 0.4875, 0.4958 and 0.5181: a small step redraws the outcome as a new seed would,
so the better of two such trials is mostly the luckier draw. Searches on that benchmark put
such pairs among their best trials (τ 0.1098 and 0.1101, 0.1101 and 0.1148).
"""


def same_configuration(
    a: Mapping[str, Any], b: Mapping[str, Any], parameters: Sequence[ParameterSpec]
) -> bool:
    """Whether two trials' sampled values (``a/b`` keys) are one configuration
    (:data:`SAME_CONFIGURATION_SHARE`); a key without a continuous range must be equal."""
    from tauray_spaces import same_scalar

    first, second = flatten(dict(a)), flatten(dict(b))
    if first.keys() != second.keys():
        return False
    specs = {spec.key: spec for spec in parameters}
    for key, value in first.items():
        spec = specs.get(key)
        here = spec.range_position(value) if spec is not None else None
        there = spec.range_position(second[key]) if spec is not None else None
        if here is None or there is None:
            if not same_scalar(value, second[key]):
                return False
        elif abs(here - there) >= SAME_CONFIGURATION_SHARE:
            return False
    return True


def pick_configurations(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    top: int,
    parameters: Sequence[ParameterSpec] = (),
) -> list[TrialRecord]:
    """The ``top`` best search trials of distinct configurations, best first.

    Only trials that rank (completed or stopped early, :func:`tauray.ranking.rank_trials`)
    are candidates; of two trials of one configuration (:func:`same_configuration` over the
    space's ``parameters``; without them, equal sampled values) the better one stands for both.
    """
    picked: list[TrialRecord] = []
    search = [record for record in records if record.phase == PHASE_SEARCH]
    for record in rank_trials(search, objectives).ranked:
        if record.config is None or any(
            same_configuration(record.sampled, other.sampled, parameters) for other in picked
        ):
            continue
        picked.append(record)
        if len(picked) == top:
            break
    return picked


@dataclass(frozen=True)
class ConfirmationJob:
    """One confirmation run to make.

    Attributes:
        confirms: the trial id of the search trial whose configuration it repeats.
        seed: its trainer seed.
        sampled: the search trial's sampled values (``a/b`` keys) with ``seed`` set.
    """

    confirms: str
    seed: int
    sampled: dict[str, Any]

    def trial_config(self) -> dict[str, Any]:
        """The Ray Tune trial config: ``{"train_loop_config": {...nested values...}}``."""
        return {TRAIN_LOOP_CONFIG: unflatten(self.sampled)}


def plan_jobs(picked: Sequence[TrialRecord], seeds_each: int) -> list[ConfirmationJob]:
    """A run per picked configuration and fresh seed (:func:`fresh_seeds`), best first."""
    jobs = []
    for record in picked:
        search_seed = int((record.config or {}).get(SEED_KEY, 0))
        for seed in fresh_seeds(search_seed, seeds_each):
            sampled = {**record.sampled, SEED_KEY: seed}
            jobs.append(ConfirmationJob(record.trial_id, seed, sampled))
    return jobs


@dataclass
class ConfirmationPhase:
    """The confirmation phase of one sweep, as :data:`CONFIRM_FILE` keeps it.

    Attributes:
        jobs: the runs to make, best configuration first.
        ledger_state, logger_state: the search's trial ledger and MLflow logger
            (``get_state()``), brought back when a sweep resumes in this phase.
    """

    jobs: list[ConfirmationJob]
    ledger_state: dict[str, Any] = field(default_factory=dict)
    logger_state: dict[str, Any] = field(default_factory=dict)

    @property
    def confirmed(self) -> list[str]:
        """The search trial ids whose configurations are confirmed, best first."""
        return list(dict.fromkeys(job.confirms for job in self.jobs))

    def confirmations(self) -> dict[str, str]:
        """:func:`~tauray.trials.sampled_key` of each run's values -> the trial it repeats."""
        return {sampled_key(job.sampled): job.confirms for job in self.jobs}

    def save(self, sweep_dir: StoragePath) -> None:
        document = {
            "jobs": [
                {"confirms": job.confirms, "seed": job.seed, "sampled": job.sampled}
                for job in self.jobs
            ],
            "ledger": self.ledger_state,
            "mlflow": self.logger_state,
        }
        write_text_atomic(sweep_dir / CONFIRM_FILE, json.dumps(document, indent=1, default=str))

    @classmethod
    def load(cls, sweep_dir: StoragePath) -> ConfirmationPhase | None:
        """The phase the sweep in ``sweep_dir`` reached, or None when its search never ended.

        Raises:
            ValueError: the file is damaged (one line naming it).
        """
        path = sweep_dir / CONFIRM_FILE
        if not path.is_file():
            return None
        try:
            document = json.loads(path.read_text())
            jobs = [
                ConfirmationJob(str(job["confirms"]), int(job["seed"]), dict(job["sampled"]))
                for job in document["jobs"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"--resume: cannot read {path}: {error}") from None
        return cls(jobs, document.get("ledger") or {}, document.get("mlflow") or {})


def phase_text(phase: ConfirmationPhase, epochs: int, budget_left: float | None) -> str:
    """The line that opens the confirmation phase."""
    configurations = len(phase.confirmed)
    seeds = len(phase.jobs) // max(configurations, 1)
    budget = "" if budget_left is None else f"; {budget_left:.0f} s of the time budget left"
    return (
        f"confirmation: the {configurations} best configuration(s) x {seeds} fresh seed(s), "
        f"{len(phase.jobs)} runs of {epochs} epochs, no early stopping{budget}"
    )


# ---- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmedConfiguration:
    """One confirmed configuration and what its runs say.

    Attributes:
        search: its search trial.
        runs: the runs that count (the search run if it ran all its epochs, and every
            confirmation run that did), in start order.
        stats: the objective over :attr:`runs`.
    """

    search: TrialRecord
    runs: list[TrialRecord]
    stats: SampleSummary

    def values(self, metric: str) -> list[float]:
        return [value for run in self.runs if (value := run.value(metric)) is not None]

    def name(self) -> str:
        """How the summary names it: ``trial 3, τ 0.07 fixed``."""
        temperature = self.search.final_temperature()
        text = f"trial {self.search.index}"
        if temperature is not None:
            text += f", τ {format_number(temperature)} {self.search.temperature_mode}"
        return text


@dataclass(frozen=True)
class ConfirmationResult:
    """What the confirmation phase found.

    Attributes:
        configurations: every confirmed configuration, best mean first (those without a
            counted run last).
        champion: the best mean (None when no configuration has a counted run).
        champion_run: the champion's best-scoring run (its model is the registered one).
        comparison: Welch's t-test of the champion against the runner-up.
        verdict: one sentence on whether the champion beats the runner-up beyond seed noise.
        cut: what the time budget cut, in words (None when it cut nothing).
        metric: the objective.
    """

    configurations: list[ConfirmedConfiguration]
    champion: ConfirmedConfiguration | None
    champion_run: TrialRecord | None
    comparison: Comparison | None
    verdict: str
    metric: str
    cut: str | None = None

    def plot_points(self) -> list[ConfirmedPoint]:
        """The confirmed configurations for the objective-vs-τ plot."""
        return [
            ConfirmedPoint(
                temperature,
                item.stats.mean,
                item.stats.ci95_low,
                item.stats.ci95_high,
                item.search.temperature_mode or "unknown",
            )
            for item in self.configurations
            if (temperature := item.search.final_temperature()) is not None and item.stats.n
        ]

    def csv_text(self, run_ids: Mapping[str, str]) -> str:
        """:data:`tauray.layout.CONFIRMATION_FILE`: a row per configuration."""
        rows = []
        for item in self.configurations:
            temperature = item.search.final_temperature()
            rows.append(
                {
                    "search_run_id": run_ids.get(item.search.trial_id, ""),
                    "temperature_mode": item.search.temperature_mode or "",
                    "temperature": repr(temperature) if temperature is not None else "",
                    **{name: repr(getattr(item.stats, name)) for name in layout.CHAMPION_STATS},
                }
            )
        return confirmation_layout.confirmation_csv(rows)


def _counts(run: TrialRecord) -> bool:
    return run.status == "completed"


def confirmation_result(
    records: Sequence[TrialRecord],
    phase: ConfirmationPhase,
    objective: Objective,
    *,
    cut: str | None = None,
) -> ConfirmationResult:
    """Group the sweep's runs by confirmed configuration and pick the champion.

    A run counts when it ran all its epochs: an early-stopped search run's value is a truncated
    one, and a failed or time-cut confirmation run has none.
    """
    by_id = {record.trial_id: record for record in records}
    configurations = []
    for trial_id in phase.confirmed:
        search = by_id.get(trial_id)
        if search is None:
            continue
        runs = [
            run
            for run in records
            if (run.trial_id == trial_id or run.confirms == trial_id)
            and _counts(run)
            and run.value(objective.metric) is not None
        ]
        values = [run.value(objective.metric) for run in runs]
        configurations.append(
            ConfirmedConfiguration(search, runs, summarize(values))  # type: ignore[arg-type]
        )
    sign = -1.0 if objective.mode == "max" else 1.0
    configurations.sort(
        key=lambda item: (item.stats.n == 0, sign * item.stats.mean if item.stats.n else 0.0)
    )
    ranked = [item for item in configurations if item.stats.n > 0]
    champion = ranked[0] if ranked else None
    runner_up = ranked[1] if len(ranked) > 1 else None
    champion_run = None
    comparison = None
    verdict = "No confirmed configuration has a run that finished all its epochs."
    if champion is not None:
        champion_run = rank_trials(champion.runs, [objective]).best
        if runner_up is not None:
            comparison = welch_test(
                champion.values(objective.metric), runner_up.values(objective.metric)
            )
        verdict = verdict_text(champion.name(), runner_up.name() if runner_up else None, comparison)
    return ConfirmationResult(
        configurations, champion, champion_run, comparison, verdict, objective.metric, cut
    )


def budget_cut_text(records: Sequence[TrialRecord], phase: ConfirmationPhase) -> str | None:
    """What the time budget left undone of the confirmation (None when it cut no run)."""
    runs = [record for record in records if record.confirms is not None]
    statuses = [record.status for record in runs]
    never = len(phase.jobs) - len(runs)
    if not never and "stopped" not in statuses:
        return None
    return (
        f"the time budget ended the confirmation: {statuses.count('completed')} of "
        f"{len(phase.jobs)} runs completed ({statuses.count('stopped')} stopped, "
        f"{statuses.count('failed')} failed, {never} never started)"
    )


def result_lines(result: ConfirmationResult) -> list[str]:
    """The summary's confirmation paragraph."""
    lines = [f"Confirmation ({result.metric}, mean and 95% t-interval over seeds):"]
    for item in result.configurations:
        stats = item.stats
        sd = format_number(stats.sd) if math.isfinite(stats.sd) else "-"
        interval = (
            f", 95% CI [{format_number(stats.ci95_low)}, {format_number(stats.ci95_high)}]"
            if math.isfinite(stats.ci95_low)
            else ""
        )
        marker = " <- champion" if item is result.champion else ""
        lines.append(
            f"  {item.name()}: mean {format_number(stats.mean)}, sd {sd}, "
            f"n {stats.n}{interval}{marker}"
        )
    lines.append(result.verdict)
    if result.cut:
        lines.append(f"Note: {result.cut}.")
    return lines


def start_confirmation(
    plan: SweepPlan, ledger: TrialLedger, mlflow_logger: MlflowTrialLogger
) -> tuple[ConfirmationPhase | None, str | None]:
    """Plan the confirmation phase when the search has ended, and save it in the sweep folder.

    Returns the phase, or None and why there is none (no search trial ranks, or the search
    spent the whole time budget).
    """
    from tauray.sweep.state import spent_tune_seconds

    request = plan.request
    budget = request.time_budget_s
    if budget is not None and spent_tune_seconds(plan.sweep_dir) >= budget:
        return None, "confirmation: none, the search spent the whole time budget"
    picked = pick_configurations(
        ledger.ordered(), plan.objectives, request.confirm_top, plan.space.parameters()
    )
    if not picked:
        return None, "confirmation: none, no search trial finished with a value to confirm"
    phase = ConfirmationPhase(
        plan_jobs(picked, request.confirm_seeds),
        ledger_state=ledger.get_state() or {},
        logger_state=mlflow_logger.get_state() or {},
    )
    phase.save(plan.sweep_dir)
    return phase, None

"""``tauray report``, reading: a sweep and its trials from MLflow, ranked.

Everything is read through :mod:`tauray.layout`, the module the sweep driver writes through.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tauray import layout
from tauray.layout import confirmation as confirmation_layout
from tauray.layout import parse_objective
from tauray.ranking import Ranking, cost_frontier, pick_cost_metric, rank_trials
from tauray.tracking import TrackingTarget, check_tracking_reachable, resolve_tracking_target
from tauray.trials import TrialRecord, count_statuses

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment, Run

    from tauray_spaces import Objective

logger = logging.getLogger(__name__)

DEFAULT_TOP = 10
_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ReportRequest:
    """What ``tauray report`` was asked for.

    Args:
        experiment: MLflow experiment name (or id).
        tracking_uri: MLflow tracking URI (else ``MLFLOW_TRACKING_URI``, else local SQLite).
        output: folder for the files (default ``tauray_reports/<sweep name>``).
        top: trials shown in the table (ranked ones; failed and unfinished are always listed).
        objectives: ``metric:mode`` texts overriding the sweep's own objective(s).
        sweep: which sweep of the experiment (its name or parent run id; default: the latest).
    """

    experiment: str
    tracking_uri: str | None = None
    output: str | None = None
    top: int = DEFAULT_TOP
    objectives: tuple[str, ...] = ()
    sweep: str | None = None


@dataclass(frozen=True)
class SweepRun:
    """The sweep's MLflow parent run."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepReport:
    """Everything the report shows, read from MLflow and ranked.

    Attributes:
        experiment: the experiment's name; experiment_id: its id.
        target: where it was read from.
        sweep: the parent run.
        other_sweeps: names of the experiment's other sweeps, newest first.
        objectives: what trials are ranked by (the first orders the table and picks the best).
        objectives_source: ``sweep`` (the parent run's param), ``--objective`` or ``method
            default`` (an older sweep without the param).
        records: every trial, in start order.
        run_ids: MLflow run id per trial id.
        ranking: the trials ranked by ``objectives`` (:func:`tauray.ranking.rank_trials`).
        cost_metric: the cost axis of the trade-off (a ``cost/*`` objective, else GPU-seconds
            when the sweep used GPUs, else CPU-seconds), or None when nothing was recorded.
        frontier: trial ids no other ranked trial beats on both the first objective and the cost.
        confirmation: the confirmation phase's configurations (the rows of
            :data:`~tauray.layout.CONFIRMATION_FILE`, champion first; empty without one).
    """

    experiment: str
    experiment_id: str
    target: TrackingTarget
    sweep: SweepRun
    other_sweeps: list[str]
    objectives: tuple[Objective, ...]
    objectives_source: str
    records: list[TrialRecord]
    run_ids: dict[str, str]
    ranking: Ranking = field(default_factory=Ranking)
    cost_metric: str | None = None
    frontier: list[str] = field(default_factory=list)
    confirmation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def objective(self) -> Objective:
        """The primary objective."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def ranked(self) -> list[TrialRecord]:
        """Trials that rank, best first (see :class:`~tauray.ranking.Ranking`)."""
        return self.ranking.ranked

    @property
    def front(self) -> list[str]:
        """Trial ids on the Pareto front of ``objectives`` (empty for a single objective)."""
        return self.ranking.front

    @property
    def champion_runs(self) -> list[TrialRecord]:
        """The champion configuration's runs (its search trial and the confirmation runs that
        repeat it), best first; empty without a confirmation phase."""
        if not self.confirmation:
            return []
        by_run = {run_id: trial_id for trial_id, run_id in self.run_ids.items()}
        search_trial = by_run.get(self.confirmation[0]["search_run_id"])
        if search_trial is None:
            return []
        return [
            record for record in self.ranked if search_trial in (record.trial_id, record.confirms)
        ]

    @property
    def best(self) -> TrialRecord | None:
        """The run to recommend: with a confirmation phase the champion configuration's best
        run (the registered model's), else the best trial (the first of ``ranked``), or None."""
        champion = self.champion_runs
        return champion[0] if champion else self.ranking.best

    def counts(self) -> dict[str, int]:
        """Trials per status (``running``, ``completed``, ``stopped``, ``failed``)."""
        return count_statuses(self.records)


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str, **kw: Any) -> list:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=_PAGE_SIZE,
            page_token=token,
            **kw,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def open_experiment(client: MlflowClient, name: str, target: TrackingTarget) -> Experiment:
    """The experiment called ``name`` (or with id ``name``).

    Raises:
        ValueError: it does not exist or was deleted; the message lists experiments that do
            and says how to list them all.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None and name.isdigit():
        try:
            experiment = client.get_experiment(name)
        except MlflowException:
            experiment = None
    if experiment is not None and experiment.lifecycle_stage != "deleted":
        return experiment
    found = client.search_experiments(max_results=50, order_by=["last_update_time DESC"])
    listed = [each.name for each in found if each.name != "Default"]
    shown = ", ".join(repr(each) for each in listed[:8]) or "none"
    more = f" (+{len(listed) - 8} more)" if len(listed) > 8 else ""
    state = "was deleted" if experiment is not None else "does not exist"
    raise ValueError(
        f"MLflow experiment {name!r} {state} at {target.uri}; experiments there: {shown}{more}; "
        f"list them all with `MLFLOW_TRACKING_URI={target.uri} mlflow experiments search` "
        f"or {target.ui_hint()}"
    )


def _sweep_run(run: Run) -> SweepRun:
    tags = dict(run.data.tags)
    return SweepRun(
        run_id=run.info.run_id,
        name=layout.sweep_name(tags, run.info.run_name, run.info.run_id),
        status=run.info.status,
        params=dict(run.data.params),
        tags=tags,
        metrics=dict(run.data.metrics),
    )


def find_sweep(
    client: MlflowClient, experiment: Experiment, sweep: str | None
) -> tuple[SweepRun, list[str]]:
    """The sweep to report (``sweep``: its name or parent run id; default the latest).

    Returns:
        The sweep and the names of the experiment's other sweeps, newest first.

    Raises:
        ValueError: the experiment has no sweep, or none called ``sweep``.
    """
    runs = _search_all(
        client,
        experiment.experiment_id,
        layout.sweep_runs_filter(),
        order_by=["attributes.start_time DESC"],
    )
    sweeps = [_sweep_run(run) for run in runs]
    if not sweeps:
        raise ValueError(
            f"MLflow experiment {experiment.name!r} holds no tauray sweep (no run tagged "
            f"{layout.TAG_KIND}={layout.KIND_SWEEP}); run `tauray tune --experiment "
            f"{experiment.name} ...` first"
        )
    if sweep is None:
        chosen = sweeps[0]
    else:
        matches = [each for each in sweeps if sweep in (each.run_id, each.name)]
        if not matches:
            listed = ", ".join(each.name for each in sweeps[:8])
            raise ValueError(
                f"--sweep {sweep!r} is not a sweep of experiment {experiment.name!r}; its sweeps, "
                f"newest first: {listed}"
            )
        chosen = matches[0]
    others = [each.name for each in sweeps if each.run_id != chosen.run_id]
    return chosen, others


def _last_step(run: Run) -> int:
    """The highest step of the run's latest metrics: the last epoch it reported (0: none).

    Search results carry each metric's latest value with its step (MLflow keeps the value at
    the highest step), so no per-run history request is needed.
    """
    return max((int(metric.step) for metric in run.data.to_proto().metrics), default=0)


def read_trials(
    client: MlflowClient, experiment_id: str, parent_run_id: str
) -> tuple[list[TrialRecord], dict[str, str]]:
    """The sweep's child runs as trial records, in start order, and their run ids.

    A record's ``epoch`` is its metrics' highest step (step = epoch in tauray's layout); its
    ``metrics`` are the last value of each metric; ``history`` is left empty. Runs of trials the
    sweep lost (a trial a killed driver created but Ray Tune never saved, see
    :meth:`tauray.tracking.SweepRecorder.end_lost_runs`) are not trials of the sweep: skipped.
    """
    runs = _search_all(
        client,
        experiment_id,
        layout.trial_runs_filter(parent_run_id),
        order_by=["attributes.start_time ASC"],
    )
    records: list[TrialRecord] = []
    run_ids: dict[str, str] = {}
    lost = [run for run in runs if layout.is_lost(run.data.tags)]
    if lost:
        logger.info("skipping %d run(s) of trials the sweep lost", len(lost))
        runs = [run for run in runs if not layout.is_lost(run.data.tags)]
    for position, run in enumerate(runs, start=1):
        record = layout.trial_record(
            run_id=run.info.run_id,
            run_status=run.info.status,
            tags=dict(run.data.tags),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            epoch=_last_step(run),
            position=position,
        )
        records.append(record)
        run_ids[record.trial_id] = run.info.run_id
    trial_of_run = {run_id: trial_id for trial_id, run_id in run_ids.items()}
    for record in records:  # the tag names the repeated trial's run: name its trial instead
        if record.confirms is not None:
            record.confirms = trial_of_run.get(record.confirms, record.confirms)
    records.sort(key=lambda record: record.index)
    return records, run_ids


def rank(report: SweepReport) -> None:
    """Fill ``ranking``, ``cost_metric`` and ``frontier`` of ``report``."""
    report.ranking = rank_trials(report.records, report.objectives)
    report.cost_metric = pick_cost_metric(report.records, report.objectives)
    report.frontier = []
    if report.cost_metric is not None:
        report.frontier = cost_frontier(report.ranked, report.objective, report.cost_metric)


def build_report(
    request: ReportRequest, *, environ: Mapping[str, str] | None = None
) -> SweepReport:
    """Read a sweep from MLflow and rank its trials.

    Args:
        request: what to report.
        environ: environment for ``MLFLOW_TRACKING_URI`` (default: ``os.environ``).

    Raises:
        ValueError: a bad option, an unknown experiment or sweep, a missing SQLite file, an
            objective no trial reported.
        ConnectionError: the tracking server does not answer (checked in at most 5 seconds).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    if request.top < 1:
        raise ValueError(f"--top must be >= 1, got {request.top}")
    if not request.experiment.strip():
        raise ValueError("EXPERIMENT is empty: pass an MLflow experiment name")
    for text in request.objectives:  # a malformed --objective fails before any connection
        parse_objective(text)
    target = resolve_tracking_target(request.tracking_uri, environ=environ)
    if urllib.parse.urlparse(target.uri).scheme == "sqlite":
        database = Path(target.uri[len("sqlite:///") :])
        if not database.is_file():
            raise ValueError(
                f"no MLflow database at {database} (tracking URI {target.uri}, from "
                f"{target.source}); pass --tracking-uri http://HOST:PORT or the sweep's "
                "sqlite:///PATH/mlflow.db"
            )
    check_tracking_reachable(target, timeout_s=5.0)
    client = MlflowClient(tracking_uri=target.uri)
    try:
        experiment = open_experiment(client, request.experiment.strip(), target)
        sweep, others = find_sweep(client, experiment, request.sweep)
        objectives, source = layout.sweep_objectives(sweep.params, request.objectives)
        records, run_ids = read_trials(client, experiment.experiment_id, sweep.run_id)
    except (MlflowException, SQLAlchemyError) as error:
        message = " ".join(str(getattr(error, "message", error)).split())[:300]
        raise ConnectionError(f"MLflow at {target.uri} could not be read: {message}") from None
    reported = {key for record in records for key in record.metrics}
    for objective in objectives:
        if records and objective.metric not in reported and source == "--objective":
            known = ", ".join(sorted(reported)) or "none"
            raise ValueError(
                f"--objective {objective.metric}:{objective.mode}: no trial of sweep "
                f"{sweep.name} reported {objective.metric!r}; metrics reported: {known}"
            )
    report = SweepReport(
        experiment=experiment.name,
        experiment_id=experiment.experiment_id,
        target=target,
        sweep=sweep,
        other_sweeps=others,
        objectives=objectives,
        objectives_source=source,
        records=records,
        run_ids=run_ids,
        confirmation=read_confirmation(client, sweep),
    )
    rank(report)
    return report


def read_confirmation(client: MlflowClient, sweep: SweepRun) -> list[dict[str, Any]]:
    """The sweep's :data:`~tauray.layout.CONFIRMATION_FILE` rows (empty when it has none or
    the artifact cannot be read: the rest of the report stands without it)."""
    import tempfile

    if f"{layout.CHAMPION_PREFIX}mean" not in sweep.metrics:
        return []
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(sweep.run_id, layout.CONFIRMATION_FILE, folder)
            return confirmation_layout.read_confirmation_csv(Path(path).read_text())
    except Exception as error:  # a missing artifact, an unreachable artifact store
        logger.warning(
            "could not read %s of sweep %s: %s", layout.CONFIRMATION_FILE, sweep.name, error
        )
        return []

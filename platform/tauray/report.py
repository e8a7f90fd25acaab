"""``tauray report``: what a sweep found and what it cost, read back from MLflow.

The report reads only the tracking store (never Ray's result folders, which may be on another
machine or gone), in the layout :mod:`tauray.tracking` writes: the sweep's parent run (params
``objective``, ``method``, ``workers_per_trial``, ...; tag ``tauray.kind = sweep``) and one child
run per trial (tags ``tauray.trial_id``, ``tauray.trial_index``, ``tauray.status``,
``tauray.failure_reason``; the resolved ``train_loop_config`` as dotted params; every metric per
epoch, the cumulative ``cost/*`` counters included). Each child run becomes a
:class:`~tauray.trials.TrialRecord` again, so the report ranks and draws trials exactly as the
sweep's own summary and plots do.

What it shows, in the terminal and as files in ``--output``:

- the top trials as a table: rank, status, objective(s), temperature mode and final τ, the
  sampled parameters, epochs and cost (worker-seconds, GPU- or CPU-seconds, samples seen);
- the best configuration as a ``tauray train --config`` file (``best_config.yaml``; for a
  multi-objective sweep also one file per Pareto-optimal trial under ``pareto/``);
- the objective against the temperature and the objective against the cost, as PNG files and as
  text scatter plots;
- for a multi-objective sweep (``tauray tune --objective A:max --objective B:min``) the Pareto
  front: the trials no other trial dominates, marked in the table and drawn in the trade-off
  picture. A single-objective sweep still reports each trial's cost, and the trade-off picture
  marks the trials that no other trial beats on both quality and cost.

Ranking follows the sweep driver: trials that completed or were stopped early rank by their last
reported value; failed and unfinished trials are listed but never ranked, whatever values they
logged before they ended.
"""

from __future__ import annotations

import json
import logging
import math
import re
import typing
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tauray.trials import STATUS_WORDS, TrialRecord
from tauray.trials import format_number as _number
from tauray_trainers import metrics as names
from tauray_trainers.config import TrainConfig, build_config, set_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment, Run

    from tauray.tracking import TrackingTarget
    from tauray_spaces import Objective

logger = logging.getLogger(__name__)

Echo = Callable[[str], None]

DEFAULT_TOP = 10
DEFAULT_OUTPUT = "tauray_reports"
#: Sampled parameters shown as table columns (the rest are in MLflow and the YAML files).
MAX_PARAM_COLUMNS = 4
COST_METRICS = (
    names.COST_WORKER_SECONDS,
    names.COST_GPU_SECONDS,
    names.COST_CPU_SECONDS,
    names.COST_SAMPLES_SEEN,
)
_RANKABLE = ("completed", "stopped")
_MODE_LETTERS = {"fixed": "f", "learnable": "l", "scheduled": "s"}
_INT_TEXT = re.compile(r"^[+-]?\d+$")
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
        ranked: trials with a value of every objective that completed or stopped early, best
            first (for several objectives: the Pareto front first, each part by the first one).
        front: trial ids on the Pareto front of ``objectives`` (empty for a single objective).
        best: the best trial (the first of ``ranked``), or None.
        cost_metric: the cost axis of the trade-off (a ``cost/*`` objective, else GPU-seconds
            when the sweep used GPUs, else CPU-seconds), or None when nothing was recorded.
        frontier: trial ids no other ranked trial beats on both the first objective and the cost.
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
    ranked: list[TrialRecord] = field(default_factory=list)
    front: list[str] = field(default_factory=list)
    best: TrialRecord | None = None
    cost_metric: str | None = None
    frontier: list[str] = field(default_factory=list)

    @property
    def objective(self) -> Objective:
        """The primary objective."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def counts(self) -> dict[str, int]:
        """Trials per status (``running``, ``completed``, ``stopped``, ``failed``)."""
        counts = dict.fromkeys(STATUS_WORDS, 0)
        for record in self.records:
            counts[record.status] += 1
        return counts


# ---- the Pareto front ----------------------------------------------------------------------------


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


# ---- reading MLflow ------------------------------------------------------------------------------


def _field_annotation(key: str) -> Any:
    """The type annotation of a dotted ``TrainConfig`` key, or None for an unknown key."""
    from pydantic import BaseModel

    model: Any = TrainConfig
    *sections, leaf = key.split(".")
    for part in sections:
        section = model.model_fields.get(part)
        if section is None or not (
            isinstance(section.annotation, type) and issubclass(section.annotation, BaseModel)
        ):
            return None
        model = section.annotation
    leaf_field = model.model_fields.get(leaf)
    return None if leaf_field is None else leaf_field.annotation


def _param_value(key: str, text: str) -> Any:
    """An MLflow param's text back as the value :func:`tauray.tracking.config_params` wrote.

    Text fields stay text; ``null``/``true``/``false`` and numbers become values again.
    """
    if text == "null":
        return None
    annotation = _field_annotation(key)
    if annotation is str or str in typing.get_args(annotation):
        return text
    if text in ("true", "false"):
        return text == "true"
    if _INT_TEXT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def config_from_params(params: Mapping[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """Rebuild a trial's full ``train_loop_config`` from its MLflow params (dotted keys).

    Returns:
        ``(config, None)`` with the validated nested config, or ``(None, reason)`` when the params
        do not make a valid :class:`TrainConfig` (a trial whose sampled combination was invalid
        logged only its sampled values; a newer or older tauray may have other keys).
    """
    if not params:
        return None, "the trial's run has no params"
    tree: dict[str, Any] = {}
    try:
        for key, text in params.items():
            if "/" in key:  # an invalid combination: tracking logged the sampled values only
                return None, "the trial logged only its sampled values (invalid combination)"
            set_path(tree, key, _param_value(key, text))
        return build_config(tree).to_dict(), None
    except (ValueError, TypeError) as error:
        return None, str(error)


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
    from tauray.tracking import TAG_RUN_NAME, TAG_SWEEP

    tags = dict(run.data.tags)
    return SweepRun(
        run_id=run.info.run_id,
        name=tags.get(TAG_SWEEP) or tags.get(TAG_RUN_NAME) or run.info.run_name or run.info.run_id,
        status=run.info.status,
        params=dict(run.data.params),
        tags=tags,
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
    from tauray.tracking import TAG_KIND

    runs = _search_all(
        client,
        experiment.experiment_id,
        f"tags.`{TAG_KIND}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
    )
    sweeps = [_sweep_run(run) for run in runs]
    if not sweeps:
        raise ValueError(
            f"MLflow experiment {experiment.name!r} holds no tauray sweep (no run tagged "
            f"{TAG_KIND}=sweep); run `tauray tune --experiment {experiment.name} ...` first"
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


def _trial_status(tags: Mapping[str, str], run_status: str) -> str:
    from tauray.tracking import TAG_STATUS

    status = tags.get(TAG_STATUS, "")
    if status in STATUS_WORDS and status != "running":
        return status
    if run_status == "FAILED":
        return "failed"
    return "running"  # still running, or its driver died before the trial ended


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
    ``metrics`` are the last value of each metric; ``history`` is left empty. Runs tagged
    ``tauray.status = lost`` (a trial a killed driver created but Ray Tune never saved, see
    :meth:`tauray.tracking.SweepRecorder.end_lost_runs`) are not trials of the sweep: skipped.
    """
    from tauray.tracking import (
        STATUS_LOST,
        TAG_FAILURE_REASON,
        TAG_PARENT_RUN_ID,
        TAG_SAMPLED,
        TAG_STATUS,
        TAG_TRIAL_ID,
        TAG_TRIAL_INDEX,
    )

    runs = _search_all(
        client,
        experiment_id,
        f"tags.`{TAG_PARENT_RUN_ID}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    records: list[TrialRecord] = []
    run_ids: dict[str, str] = {}
    lost = [run for run in runs if run.data.tags.get(TAG_STATUS) == STATUS_LOST]
    if lost:
        logger.info("skipping %d run(s) of trials the sweep lost", len(lost))
        runs = [run for run in runs if run.data.tags.get(TAG_STATUS) != STATUS_LOST]
    for position, run in enumerate(runs, start=1):
        tags = dict(run.data.tags)
        params = dict(run.data.params)
        trial_id = tags.get(TAG_TRIAL_ID) or run.info.run_id
        index_text = tags.get(TAG_TRIAL_INDEX, "")
        index = int(index_text) if index_text.isdigit() else position
        config, config_error = config_from_params(params)
        sampled_keys = [key for key in tags.get(TAG_SAMPLED, "").split(",") if key]
        sampled: dict[str, Any] = {}
        for key in sampled_keys:
            dotted = key.replace("/", ".")
            if key in params:
                sampled[key] = _param_value(dotted, params[key])
            elif dotted in params:
                sampled[key] = _param_value(dotted, params[dotted])
        status = _trial_status(tags, run.info.status)
        record = TrialRecord(
            trial_id=trial_id,
            index=index,
            sampled=sampled,
            config=config,
            config_error=config_error,
            status=status,  # type: ignore[arg-type]
            epoch=_last_step(run),
            metrics={key: float(value) for key, value in run.data.metrics.items()},
        )
        if status == "failed":
            record.error = tags.get(TAG_FAILURE_REASON) or config_error or "unknown error"
        records.append(record)
        run_ids[trial_id] = run.info.run_id
    records.sort(key=lambda record: record.index)
    return records, run_ids


def sweep_objectives(
    params: Mapping[str, str], overrides: Sequence[str]
) -> tuple[tuple[Objective, ...], str]:
    """What to rank by: ``overrides`` (``--objective``), else the sweep's own objective(s).

    Returns:
        The objectives and where they came from (``--objective``, ``sweep``, ``method default``).

    Raises:
        ValueError: a malformed objective, or a sweep that names none and has no known method.
    """
    from tauray.sweep.plan import parse_objective
    from tauray_spaces import Objective

    if overrides:
        return tuple(parse_objective(text) for text in overrides), "--objective"
    text = params.get("objective", "").strip()
    if text:
        return tuple(parse_objective(part) for part in text.split(",") if part.strip()), "sweep"
    method = params.get("method", "")
    if method in names.DEFAULT_OBJECTIVE:
        metric, mode = names.DEFAULT_OBJECTIVE[method]
        return (Objective(metric, mode),), "method default"  # type: ignore[arg-type]
    raise ValueError(
        "the sweep's run names no objective (param 'objective') and no known method; pass "
        "--objective METRIC:max|min"
    )


# ---- ranking -------------------------------------------------------------------------------------


def _values(record: TrialRecord, objectives: Sequence[Objective]) -> list[float] | None:
    values = [record.value(objective.metric) for objective in objectives]
    return None if any(value is None for value in values) else values  # type: ignore[return-value]


def _order_key(record: TrialRecord, objective: Objective) -> tuple[float, int]:
    value = record.value(objective.metric) or 0.0
    return (-value if objective.mode == "max" else value, record.index)


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


def rank(report: SweepReport) -> None:
    """Fill ``ranked``, ``front``, ``best``, ``cost_metric`` and ``frontier`` of ``report``."""
    objectives = report.objectives
    candidates = {
        record.trial_id: values
        for record in report.records
        if record.status in _RANKABLE and (values := _values(record, objectives)) is not None
    }
    by_id = {record.trial_id: record for record in report.records}
    primary = report.objective
    if len(objectives) > 1:
        front = pareto_front(candidates, [objective.mode for objective in objectives])
        on_front = sorted((by_id[key] for key in front), key=lambda r: _order_key(r, primary))
        rest = sorted(
            (by_id[key] for key in candidates if key not in front),
            key=lambda r: _order_key(r, primary),
        )
        report.front = [record.trial_id for record in on_front]
        report.ranked = on_front + rest
    else:
        report.front = []
        report.ranked = sorted(
            (by_id[key] for key in candidates), key=lambda r: _order_key(r, primary)
        )
    report.best = report.ranked[0] if report.ranked else None
    report.cost_metric = pick_cost_metric(report.records, objectives)
    report.frontier = []
    if report.cost_metric is not None:
        priced = {
            record.trial_id: [record.value(primary.metric), record.value(report.cost_metric)]
            for record in report.ranked
            if record.value(report.cost_metric) is not None
        }
        report.frontier = pareto_front(priced, [primary.mode, "min"])  # type: ignore[arg-type]


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

    from tauray.sweep.plan import parse_objective
    from tauray.tracking import check_tracking_reachable, resolve_tracking_target

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
    else:
        check_tracking_reachable(target, timeout_s=5.0)
    client = MlflowClient(tracking_uri=target.uri)
    try:
        experiment = open_experiment(client, request.experiment.strip(), target)
        sweep, others = find_sweep(client, experiment, request.sweep)
        objectives, source = sweep_objectives(sweep.params, request.objectives)
        records, run_ids = read_trials(client, experiment.experiment_id, sweep.run_id)
    except MlflowException as error:
        message = " ".join(str(error.message).split())[:300]
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
    )
    rank(report)
    return report


# ---- text ----------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


_HEADER_ALIASES = {"batch_size_per_worker": "batch", "temperature": "τ"}


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Column headers: the last path segment, or the last two where the last is ambiguous;
    ``temperature/x`` reads ``τ.x`` and ``batch_size_per_worker`` reads ``batch``."""

    def alias(part: str) -> str:
        return _HEADER_ALIASES.get(part, part)

    last = [key.rsplit("/", 1)[-1] for key in keys]
    short = {}
    for key, leaf in zip(keys, last, strict=True):
        parts = key.split("/")
        if parts[0] == "temperature" or last.count(leaf) > 1:
            short[key] = ".".join(alias(part) for part in parts[-2:])
        else:
            short[key] = alias(leaf)
    return short


def _cost_label(metric: str | None) -> str:
    return {
        names.COST_GPU_SECONDS: "GPU-s",
        names.COST_CPU_SECONDS: "CPU-s",
        names.COST_WORKER_SECONDS: "worker-s",
        names.COST_SAMPLES_SEEN: "samples",
    }.get(metric or "", metric or "cost")


def _table(rows: list[list[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            (cell.rjust(width) if align else cell.ljust(width))
            for cell, width, align in zip(row, widths, right, strict=True)
        ).rstrip()
        for row in rows
    ]


def trial_table(report: SweepReport, top: int = DEFAULT_TOP) -> str:
    """The top ``top`` ranked trials, then every failed or unfinished one, as a text table."""
    objectives = report.objectives
    keys: list[str] = []
    for record in report.records:
        for key in record.sampled:
            if key not in keys and key != "temperature/mode":
                keys.append(key)
    # The training parameters first: the temperature's own are summed up by "τ mode"/"τ end".
    keys.sort(key=lambda key: key.startswith("temperature/"))
    shown = keys[:MAX_PARAM_COLUMNS]
    short = _short_names(shown)
    gpu = any((record.value(names.COST_GPU_SECONDS) or 0.0) > 0 for record in report.records)
    device_metric = names.COST_GPU_SECONDS if gpu else names.COST_CPU_SECONDS
    front = set(report.front)
    header = ["rank", "trial", "status"]
    if report.multi_objective:
        header.append("front")
    header += [objective.metric for objective in objectives]
    header += ["τ mode", "τ end", *[short[key] for key in shown], "epochs"]
    # Cost columns, except those an objective column already shows.
    objective_metrics = {objective.metric for objective in objectives}
    costs = [
        metric
        for metric in (names.COST_WORKER_SECONDS, device_metric, names.COST_SAMPLES_SEEN)
        if metric not in objective_metrics
    ]
    header += [_cost_label(metric) for metric in costs]
    rows = [header]
    listed = report.ranked[:top]
    ranked_ids = {record.trial_id for record in report.ranked}
    unranked = [record for record in report.records if record.trial_id not in ranked_ids]
    for position, record in enumerate([*listed, *unranked], start=1):
        ranked = position <= len(listed)
        status = STATUS_WORDS.get(record.status, record.status)
        row = [str(position) if ranked else "-", f"#{record.index}", status]
        if report.multi_objective:
            row.append("*" if record.trial_id in front else "")
        for objective in objectives:  # a failed trial's last values are not results
            failed = record.status == "failed"
            row.append("-" if failed else _number(record.value(objective.metric)))
        temperature = record.final_temperature() if record.status != "failed" else None
        row += [record.temperature_mode or "-", _number(temperature, 3)]
        row += [_number(record.sampled.get(key), 3) for key in shown]
        row.append(f"{record.epoch}/{record.planned_epochs or '?'}")
        row += [
            (_count if metric == names.COST_SAMPLES_SEEN else _seconds)(record.value(metric))
            for metric in costs
        ]
        rows.append(row)
    right = [True, True, False] + ([False] if report.multi_objective else [])
    right += [True] * len(objectives) + [False, True] + [True] * (len(shown) + 1 + len(costs))
    lines = _table(rows, right)
    hidden = len(report.ranked) - len(listed)
    notes = []
    if hidden > 0:
        notes.append(f"{hidden} more ranked trial(s) not shown (--top {len(report.ranked)})")
    if len(keys) > len(shown):
        notes.append(f"{len(keys) - len(shown)} more sampled parameter(s) per trial in MLflow")
    if notes:
        lines.append("(" + "; ".join(notes) + ")")
    return "\n".join(lines)


def text_scatter(
    points: Sequence[tuple[float, float, str]],
    *,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    width: int = 60,
    height: int = 12,
) -> str:
    """A scatter plot drawn with characters, for the terminal.

    Args:
        points: ``(x, y, mark)``; a later point's mark wins where two share a cell.
        x_label: name of the horizontal axis; y_label: of the vertical one.
        log_x: logarithmic horizontal axis (non-positive x are left out).
        width: plot columns; height: plot rows.

    Raises:
        ValueError: with no point to draw or a too small ``width``/``height``.
    """
    if width < 10 or height < 3:
        raise ValueError(f"text_scatter needs width >= 10 and height >= 3, got {width}x{height}")
    usable = [
        (x, y, mark)
        for x, y, mark in points
        if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
    ]
    if not usable:
        raise ValueError("text_scatter: no finite point to draw")

    def scale_x(x: float) -> float:
        return math.log10(x) if log_x else x

    xs = [scale_x(x) for x, _, _ in usable]
    ys = [y for _, y, _ in usable]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    x_span = x_high - x_low or 1.0
    y_span = y_high - y_low or 1.0
    grid = [[" "] * width for _ in range(height)]
    for (_, y, mark), x in zip(usable, xs, strict=True):
        column = round((x - x_low) / x_span * (width - 1)) if x_high > x_low else width // 2
        row = round((y_high - y) / y_span * (height - 1)) if y_high > y_low else height // 2
        grid[row][column] = mark[:1]
    y_texts = [_number(y_high), _number((y_high + y_low) / 2), _number(y_low)]
    margin = max(len(text) for text in y_texts)
    lines = [f"{y_label}"]
    for row_index, row in enumerate(grid):
        if row_index == 0:
            label = y_texts[0]
        elif row_index == (height - 1) // 2 and y_high > y_low:
            label = y_texts[1]
        elif row_index == height - 1 and y_high > y_low:
            label = y_texts[2]
        else:
            label = ""
        lines.append(f"{label.rjust(margin)} |{''.join(row).rstrip()}")
    lines.append(" " * margin + " +" + "-" * width)

    def unscale(value: float) -> float:
        return 10**value if log_x else value

    left, middle, right = (
        _number(unscale(x_low), 3),
        _number(unscale((x_low + x_high) / 2), 3),
        _number(unscale(x_high), 3),
    )
    axis = [" "] * (width + 2)
    for text, start in (
        (left, 0),
        (middle, (width - len(middle)) // 2),
        (right, width - len(right)),
    ):
        if x_high > x_low or text is left:
            for offset, char in enumerate(text):
                if 0 <= start + offset < len(axis):
                    axis[start + offset] = char
    lines.append(" " * (margin + 2) + "".join(axis).rstrip())
    scale = " (log scale)" if log_x else ""
    lines.append(" " * (margin + 2) + f"{x_label}{scale}".center(width).rstrip())
    return "\n".join(lines)


def temperature_text(report: SweepReport) -> str | None:
    """The objective against the final temperature as a text scatter (None: nothing to draw)."""
    metric = report.objective.metric
    points = []
    for record in report.ranked:
        temperature, value = record.final_temperature(), record.value(metric)
        if temperature is None or value is None or temperature <= 0:
            continue
        letter = _MODE_LETTERS.get(record.temperature_mode or "", "?")
        points.append(
            (temperature, value, letter.upper() if record.status == "completed" else letter)
        )
    if not points:
        return None
    title = (
        f"{metric} vs final temperature τ (F fixed, L learnable, S scheduled; "
        "lower case: stopped early)"
    )
    return (
        title
        + "\n"
        + text_scatter(points, x_label="τ at the end of the trial", y_label=metric, log_x=True)
    )


def cost_text(report: SweepReport) -> str | None:
    """Quality against cost as a text scatter plus the front as a sorted list (None: no cost)."""
    cost_metric, metric = report.cost_metric, report.objective.metric
    if cost_metric is None:
        return None
    marked = set(report.front if report.multi_objective else report.frontier)
    points: list[tuple[float, float, str]] = []
    for record in report.ranked:
        cost, value = record.value(cost_metric), record.value(metric)
        if cost is None or value is None:
            continue
        points.append((cost, value, "o" if record.status == "completed" else "v"))
    for record in report.ranked:  # the front's marks last: they win a shared cell
        cost, value = record.value(cost_metric), record.value(metric)
        if record.trial_id in marked and cost is not None and value is not None:
            points.append((cost, value, "*"))
    if not points:
        return None
    if report.multi_objective:
        legend = "* Pareto front of the sweep's objectives"
    else:
        legend = "* no other trial is both better and cheaper"
    costs = [x for x, _, _ in points]
    log_x = min(costs) > 0 and max(costs) / min(costs) > 30
    lines = [
        f"{metric} vs {_cost_label(cost_metric)} ({legend}; o completed, v stopped early)",
        text_scatter(points, x_label=cost_metric, y_label=metric, log_x=log_x),
    ]
    on_front = [record for record in report.ranked if record.trial_id in marked]
    if on_front:
        on_front.sort(key=lambda record: (record.value(cost_metric) or 0.0, record.index))
        rows = [[_cost_label(cost_metric), metric, "trial", "τ mode", "τ end"]]
        for record in on_front:
            rows.append(
                [
                    _seconds(record.value(cost_metric))
                    if cost_metric != names.COST_SAMPLES_SEEN
                    else _count(record.value(cost_metric)),
                    _number(record.value(metric)),
                    f"#{record.index}",
                    record.temperature_mode or "-",
                    _number(record.final_temperature(), 3),
                ]
            )
        title = "Pareto front" if report.multi_objective else "Cheapest trial at each quality"
        lines.append(f"{title}, by cost:")
        lines.extend("  " + line for line in _table(rows, [True, True, True, False, True]))
    return "\n".join(lines)


def _best_lines(report: SweepReport, files: ReportFiles | None) -> list[str]:
    from tauray.sweep.summary import changed_settings

    best = report.best
    objective = report.objective
    if best is None:
        return [f"No trial finished with a value of {objective.metric}: nothing to recommend."]
    temperature = best.final_temperature()
    how = "best on the Pareto front by" if report.multi_objective else "best by"
    lines = [
        f"Best trial ({how} {objective.metric}): #{best.index} ({best.trial_id}), "
        + ", ".join(
            f"{each.metric} = {_number(best.value(each.metric))}" for each in report.objectives
        )
        + f" at epoch {best.epoch}/{best.planned_epochs or '?'}"
        + (f", τ {_number(temperature, 3)} ({best.temperature_mode})" if temperature else ""),
        "  cost: "
        + ", ".join(
            [
                f"{_seconds(best.value(names.COST_WORKER_SECONDS))} worker-s",
                *(
                    [f"{_seconds(best.value(names.COST_GPU_SECONDS))} GPU-s"]
                    if (best.value(names.COST_GPU_SECONDS) or 0.0) > 0
                    else []
                ),
                f"{_seconds(best.value(names.COST_CPU_SECONDS))} CPU-s",
                f"{_count(best.value(names.COST_SAMPLES_SEEN))} samples seen",
            ]
        ),
    ]
    if best.status == "stopped":
        lines.append(
            f"  (stopped early at epoch {best.epoch}: its value was measured then; the file "
            "trains it for the full epochs)"
        )
    if best.config is None:
        lines.append(f"  its configuration cannot be rebuilt from MLflow: {best.config_error}")
        return lines
    lines.append("Its configuration, settings that differ from the defaults (train_loop_config):")
    changed = yaml.safe_dump(changed_settings(best.config), sort_keys=False).rstrip()
    lines.extend("  " + line for line in changed.splitlines())
    if files is not None and files.best_config is not None:
        lines.append(f"Train it: tauray train --config {files.best_config}")
    return lines


def format_report(
    report: SweepReport, top: int = DEFAULT_TOP, files: ReportFiles | None = None
) -> str:
    """The whole report as terminal text."""
    sweep = report.sweep
    counts = report.counts()
    total = len(report.records)
    unfinished = f", {counts['running']} unfinished" if counts["running"] else ""
    objective_text = ", ".join(f"{o.metric} ({o.mode})" for o in report.objectives)
    source = {"sweep": "the sweep's", "--objective": "from --objective"}.get(
        report.objectives_source, report.objectives_source
    )
    lines = [
        f"Sweep {sweep.name} (experiment {report.experiment!r}, run {sweep.run_id}, "
        f"{sweep.status.lower()}): space {sweep.params.get('space', '?')}, method "
        f"{sweep.params.get('method', '?')}, {total} trials: {counts['completed']} completed, "
        f"{counts['stopped']} stopped early, {counts['failed']} failed{unfinished}.",
        f"Objective{'s' if report.multi_objective else ''} ({source}): {objective_text}.",
    ]
    if report.other_sweeps:
        lines.append(
            f"The experiment holds {len(report.other_sweeps)} other sweep(s) (newest: "
            f"{report.other_sweeps[0]}); --sweep NAME reports another."
        )
    lines.append("")
    if not report.records:
        lines.append("The sweep has no trial runs yet.")
    else:
        heading = (
            f"Top trials: the Pareto front (*) first, each part by {report.objective.metric}"
            if report.multi_objective
            else f"Top trials by {report.objective.metric} ({report.objective.mode})"
        )
        lines += [heading + "; cost is cumulative per trial:", trial_table(report, top)]
    failed = [record for record in report.records if record.status == "failed"]
    if failed:
        lines.append("")
        lines.extend(f"trial #{record.index} failed: {record.error}" for record in failed)
    if report.multi_objective:
        lines.append("")
        front = [record for record in report.ranked if record.trial_id in set(report.front)]
        lines.append(
            f"Pareto front: {len(front)} of {len(report.ranked)} ranked trials are not dominated "
            f"on {objective_text}: " + ", ".join(f"#{record.index}" for record in front)
        )
    lines.append("")
    lines.extend(_best_lines(report, files))
    for picture in (temperature_text(report), cost_text(report)):
        if picture:
            lines += ["", picture]
    if report.cost_metric is None and report.records:
        lines += ["", "No trial recorded its cost (cost/* metrics): no trade-off to show."]
    if files is not None:
        lines.append("")
        written = [str(path.relative_to(files.folder)) for path in files.paths()]
        lines.append(f"Files in {files.folder}: " + ", ".join(written))
        if files.pareto_configs:
            lines.append(
                f"  pareto/: a tauray train --config file per Pareto-optimal trial "
                f"({', '.join(path.name for path in files.pareto_configs)})"
            )
        lines.extend(f"  {name} not drawn: {why}" for name, why in files.skipped.items())
    lines.append(f"MLflow: {report.target.ui_hint(report.experiment_id, report.sweep.run_id)}")
    return "\n".join(lines)


# ---- files ---------------------------------------------------------------------------------------


@dataclass
class ReportFiles:
    """Files :func:`write_report` wrote, and pictures it skipped (name -> reason)."""

    folder: Path
    best_config: Path | None = None
    pictures: dict[str, Path] = field(default_factory=dict)
    pareto_configs: list[Path] = field(default_factory=list)
    summary: Path | None = None
    text: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """The files written at the top of the folder."""
        found = [self.best_config, *self.pictures.values(), self.summary, self.text]
        return [path for path in found if path is not None]


def _run_request(report: SweepReport) -> Any:
    """The resources of the sweep's trials, as the request :func:`best_config_yaml` reads."""
    from tauray.sweep.plan import SweepRequest

    params = report.sweep.params

    def number(key: str, default: float) -> float:
        try:
            return float(params.get(key, default))
        except ValueError:
            return default

    return SweepRequest(
        space=params.get("space", "unknown"),
        workers_per_trial=int(number("workers_per_trial", 1)),
        gpus_per_worker=number("gpus_per_worker", 0.0),
        cpus_per_worker=number("cpus_per_worker", 1.0),
    )


def _config_yaml(report: SweepReport, record: TrialRecord, what: str) -> str:
    from tauray.sweep.summary import best_config_yaml

    values = ", ".join(
        f"{each.metric} = {_number(record.value(each.metric))}" for each in report.objectives
    )
    header = (
        f"{what} of sweep {report.sweep.name} (trial {record.index}, {record.trial_id}, MLflow run "
        f"{report.run_ids.get(record.trial_id, '?')}): {values}\n"
        "Train it: tauray train --config THIS_FILE"
    )
    return best_config_yaml(record.config or {}, _run_request(report), header)


def _summary(report: SweepReport) -> dict[str, Any]:
    def trial(record: TrialRecord) -> dict[str, Any]:
        return {
            "index": record.index,
            "trial_id": record.trial_id,
            "run_id": report.run_ids.get(record.trial_id),
            "status": record.status,
            "epoch": record.epoch,
            "planned_epochs": record.planned_epochs,
            "temperature_mode": record.temperature_mode,
            "final_temperature": record.final_temperature(),
            "sampled": record.sampled,
            "objectives": {o.metric: record.value(o.metric) for o in report.objectives},
            "cost": {metric: record.value(metric) for metric in COST_METRICS},
            "on_front": record.trial_id in report.front,
            "error": record.error,
        }

    return {
        "experiment": report.experiment,
        "experiment_id": report.experiment_id,
        "tracking_uri": report.target.uri,
        "sweep": report.sweep.name,
        "sweep_run_id": report.sweep.run_id,
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in report.objectives],
        "objectives_source": report.objectives_source,
        "cost_metric": report.cost_metric,
        "best": report.best.trial_id if report.best else None,
        "ranked": [record.trial_id for record in report.ranked],
        "pareto_front": list(report.front),
        "cost_frontier": list(report.frontier),
        "trials": [trial(record) for record in report.records],
    }


def write_report(report: SweepReport, folder: str | Path) -> ReportFiles:
    """Write the best configuration, the pictures and ``report.json`` into ``folder``.

    Files: ``best_config.yaml`` (``tauray train --config``), ``pareto/trial-NNN.yaml`` per
    Pareto-optimal trial (multi-objective sweeps), ``objective_vs_temperature.png``,
    ``quality_vs_cost.png``, ``optimization_history.png``, ``pareto_front.png`` (two objectives
    that are not the trade-off's axes), ``report.json`` (every trial's values and costs).
    A picture that cannot be drawn is skipped with its reason.
    """
    from tauray import plots

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(folder=out)
    best = report.best
    if best is not None and best.config is not None:
        files.best_config = out / "best_config.yaml"
        files.best_config.write_text(_config_yaml(report, best, "Best trial"))
    if report.multi_objective:
        pareto_dir = out / "pareto"
        if pareto_dir.is_dir():  # a previous report of this sweep may have had another front
            for old in pareto_dir.glob("trial-*.yaml"):
                old.unlink()
        for record in report.ranked:
            if record.trial_id in report.front and record.config is not None:
                pareto_dir.mkdir(exist_ok=True)
                path = pareto_dir / f"trial-{record.index:03d}.yaml"
                path.write_text(_config_yaml(report, record, "Pareto-optimal trial"))
                files.pareto_configs.append(path)

    primary = report.objective
    pictures: dict[str, Callable[[], Any]] = {
        "objective_vs_temperature": lambda: plots.objective_vs_temperature(
            report.records, primary.metric
        ),
        "optimization_history": lambda: plots.optimization_history(
            report.records, primary.metric, primary.mode
        ),
    }
    cost_metric = report.cost_metric
    if cost_metric is not None:
        metrics = {o.metric for o in report.objectives}
        axes_are_objectives = report.multi_objective and metrics == {primary.metric, cost_metric}
        pictures["quality_vs_cost"] = lambda: plots.quality_vs_cost(
            report.records,
            primary.metric,
            cost_metric,
            report.front if report.multi_objective else report.frontier,
            front_label="Pareto front"
            if report.multi_objective
            else "no other trial better and cheaper",
            staircase=axes_are_objectives or not report.multi_objective,
        )
    else:
        files.skipped["quality_vs_cost"] = "no trial recorded its cost (cost/* metrics)"
    if len(report.objectives) >= 2:
        second = report.objectives[1]
        if second.metric != cost_metric:  # else quality_vs_cost already shows these two axes
            pictures["pareto_front"] = lambda: plots.objective_pair(
                report.records, primary.metric, second.metric, report.front
            )
    for name, make in pictures.items():
        try:
            figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            files.skipped[name] = str(error)
            continue
        path = out / f"{name}.png"
        figure.savefig(path)
        files.pictures[name] = path
    files.summary = out / "report.json"
    files.summary.write_text(json.dumps(_summary(report), indent=2, allow_nan=False, default=str))
    return files


def default_output(report: SweepReport) -> Path:
    """``tauray_reports/<sweep name>`` under the working directory."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", report.sweep.name).strip("-") or "sweep"
    return Path(DEFAULT_OUTPUT) / safe


def report_command(request: ReportRequest, *, echo: Echo = print, echo_error: Echo = print) -> int:
    """``tauray report``: read the sweep, write the files, print the report.

    Returns:
        0; 1 when no trial finished with a value of the objective (the table still prints).

    Raises:
        ValueError, ConnectionError: from :func:`build_report` (one line each).
    """
    report = build_report(request)
    folder = Path(request.output).expanduser() if request.output else default_output(report)
    files = write_report(report, folder)
    files.text = folder / "report.txt"
    text = format_report(report, request.top, files)
    files.text.write_text(text + "\n")
    echo(text)
    if report.best is None:
        echo_error(
            f"no trial of sweep {report.sweep.name} finished with a value of "
            f"{report.objective.metric}"
        )
        return 1
    return 0

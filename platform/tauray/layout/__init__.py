"""The MLflow layout of a sweep: every name tauray writes to MLflow, encoded and decoded here.

The sweep driver writes through this module and ``tauray report`` reads through it, so the two
cannot drift apart. It imports no Ray: the report reads a sweep without a Ray cluster.

One experiment per ``--experiment`` name holds the sweeps:

- the **parent run** is the sweep (tag ``tauray.kind = sweep``; tags ``tauray.sweep`` (its name),
  ``tauray.space``, ``tauray.storage_path`` (its folder), ``tauray.status`` (``running``,
  ``interrupted`` with ``tauray.resume_command``, ``finished`` with ``tauray.best_trial_id`` and
  ``tauray.best_run_id``), ``tauray.resumed`` when a session resumed it); params
  (:func:`sweep_params`, :func:`search_params`: ``space``, ``method``, ``objective``
  (``metric:mode`` texts, comma-separated), ``trials``, ``time_budget_s``, resources,
  ``code_version``, the sampler, ...); at the end the metrics ``trials/*``, ``<objective>``
  and ``best/<objective>`` (the best value), params ``best/<parameter>``, the best trial's
  data as MLflow datasets, artifacts ``best_config.yaml`` and ``plots/*.png``; with a
  confirmation phase also ``champion/mean|sd|n|ci95_low|ci95_high``, the tag
  ``tauray.confirmation_verdict`` and ``confirmation.csv`` (:mod:`tauray.layout.confirmation`);
- each **trial** is a child run (tag ``mlflow.parentRunId``, ``tauray.kind = trial``; its name
  and what makes it read well in the UI: :mod:`tauray.ui_layout`) with tags
  ``tauray.trial_id``, ``tauray.trial_index``, ``tauray.method``, ``tauray.space``,
  ``tauray.sampled_params``, ``tauray.phase`` (``search``, or ``confirm`` with
  ``tauray.confirms``: the run id of the search trial it repeats) and ``tauray.status`` (a
  trial status; ``tauray.failure_reason``, ``tauray.failure_kind`` and
  ``tauray.oom_batch_size_per_worker`` when it failed), params (the searched values' short
  keys and its config's dotted keys that apply to its method; only the sampled ``a/b`` values
  when the combination was invalid), its config as ``config.yaml``, its data as MLflow
  datasets and MLflow's context tags (:mod:`tauray.run_context`), every metric of the
  training loop (:mod:`tauray_trainers.metrics`) at every epoch (step = epoch), and, when it
  ended without error, its model, named after it and carrying its final metrics
  (:mod:`tauray.layout.models`; tag ``tauray.model_uri``, or ``tauray.model_error``);
- a ``tauray train`` run is a trial without a sweep (``tauray.kind = train``, no parent, its
  resources as params, its data as datasets; experiment ``tauray-train`` or ``--experiment``);
- the best trial's model (the champion configuration's best run's) is registered: ``champion``.

A child run a killed driver created but Ray Tune never saved is ended with ``tauray.status =
lost`` and ``tauray.lost_reason``: it is not a trial of the sweep.
"""

from __future__ import annotations

import datetime as _dt
import re
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tauray import ui_layout
from tauray.trials import PHASE_SEARCH, STATUS_WORDS, TrialRecord, TrialStatus, failure_kind
from tauray_trainers import metrics as names
from tauray_trainers.config import TrainConfig, build_config, flatten, set_path

if TYPE_CHECKING:
    from tauray_spaces import Objective

# ---- names -------------------------------------------------------------------------------------

TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_KIND = "tauray.kind"
TAG_SWEEP = "tauray.sweep"
TAG_SPACE = "tauray.space"
TAG_METHOD = "tauray.method"
TAG_TRIAL_ID = "tauray.trial_id"
TAG_TRIAL_INDEX = "tauray.trial_index"
TAG_STATUS = "tauray.status"
TAG_FAILURE_REASON = "tauray.failure_reason"
TAG_FAILURE_KIND = "tauray.failure_kind"
TAG_SAMPLED = "tauray.sampled_params"
TAG_MODEL_URI = "tauray.model_uri"
TAG_MODEL_ERROR = "tauray.model_error"
TAG_BEST_TRIAL = "tauray.best_trial_id"
TAG_BEST_RUN = "tauray.best_run_id"
TAG_STORAGE = "tauray.storage_path"
TAG_OOM_BATCH_SIZE = "tauray.oom_batch_size_per_worker"
TAG_RESUMED = "tauray.resumed"
TAG_LOST_REASON = "tauray.lost_reason"
TAG_RESUME_COMMAND = "tauray.resume_command"
TAG_PHASE = "tauray.phase"  # search | confirm (tauray.trials.PHASE_*)
TAG_CONFIRMS = "tauray.confirms"  # a confirmation run's: the run id of the search trial
TAG_VERDICT = "tauray.confirmation_verdict"  # the parent's: champion vs runner-up, in words

#: ``tauray.kind`` of a sweep's parent run and of its trials' runs.
KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
#: ``tauray.kind`` of a ``tauray train`` run, and its experiment without ``--experiment``.
KIND_TRAINING = "train"
DEFAULT_TRAINING_EXPERIMENT = "tauray-train"

#: ``tauray.status`` of a parent run (a trial run's is a trial status, or ``lost``).
SWEEP_RUNNING = "running"
SWEEP_INTERRUPTED = "interrupted"
SWEEP_FINISHED = "finished"
#: ``tauray.status`` of a child run of a trial the sweep lost.
STATUS_LOST = "lost"
LOST_REASON = (
    "the sweep's driver stopped after this trial's run was created but before Ray Tune saved the "
    "trial in the sweep's state: the resumed sweep never knew the trial, and its searcher "
    "suggested a new trial in its place (this run is not one of the sweep's trials)"
)

#: Model Registry alias of a sweep's best model.
CHAMPION_ALIAS = "champion"
#: Artifacts of the parent run.
BEST_CONFIG_FILE = "best_config.yaml"
CONFIRMATION_FILE = "confirmation.csv"
CHAMPION_PREFIX = "champion/"
CHAMPION_STATS = ("mean", "sd", "n", "ci95_low", "ci95_high")
PLOTS_FOLDER = "plots"

#: Parent-run params the report reads back.
PARAM_SPACE = "space"
PARAM_METHOD = "method"
PARAM_OBJECTIVE = "objective"
PARAM_WORKERS = "workers_per_trial"
PARAM_GPUS_PER_WORKER = "gpus_per_worker"
PARAM_CPUS_PER_WORKER = "cpus_per_worker"
#: Prefix of the parent run's best-trial params and metric.
BEST_PREFIX = "best/"
#: Parent-run metrics: trials per way they ended.
METRIC_COMPLETED = "trials/completed"
METRIC_STOPPED = "trials/stopped_early"
METRIC_FAILED = "trials/failed"

_MAX_PARAM_LENGTH = 6000
_MAX_TAG_LENGTH = 5000
_INT_TEXT = re.compile(r"^[+-]?\d+$")


# ---- values --------------------------------------------------------------------------------------


def param_text(value: Any) -> str:
    """A value as MLflow param text: ``null``, ``true``/``false``, else ``str`` (cut at 6,000)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def tag_text(value: Any) -> str:
    """A value as MLflow tag text (cut at 5,000 characters)."""
    return str(value)[:_MAX_TAG_LENGTH]


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A nested config as MLflow params: dotted keys (``temperature.mode``), text values."""
    return {key: param_text(value) for key, value in flatten(config, separator=".").items()}


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


def param_value(key: str, text: str) -> Any:
    """An MLflow param's text back as the value :func:`config_params` wrote (dotted ``key``).

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
            if "/" in key:  # an invalid combination: the run has the sampled values only
                return None, "the trial logged only its sampled values (invalid combination)"
            set_path(tree, key, param_value(key, text))
        return build_config(tree).to_dict(), None
    except (ValueError, TypeError) as error:
        return None, str(error)


# ---- objectives ----------------------------------------------------------------------------------


def parse_objective(text: str) -> Objective:
    """``val/knn_top1:max`` -> ``Objective("val/knn_top1", "max")``.

    Raises:
        ValueError: without ``:max``/``:min``, with an empty metric or more than one ``:``.
    """
    from tauray_spaces import Objective

    metric, sep, mode = text.rpartition(":")
    if not sep or not metric.strip() or ":" in metric or mode not in ("max", "min"):
        raise ValueError(f"objective {text!r} must look like METRIC:max or METRIC:min")
    return Objective(metric.strip(), mode)  # type: ignore[arg-type]


def objectives_text(objectives: Sequence[Objective]) -> str:
    """The ``objective`` param: ``metric:mode`` texts joined by commas."""
    return ",".join(f"{objective.metric}:{objective.mode}" for objective in objectives)


def sweep_objectives(
    params: Mapping[str, str], overrides: Sequence[str] = ()
) -> tuple[tuple[Objective, ...], str]:
    """What to rank a sweep by: ``overrides`` (``--objective``), else its own objective(s).

    Args:
        params: the parent run's params.
        overrides: ``metric:mode`` texts.

    Returns:
        The objectives and where they came from (``--objective``, ``sweep``, ``method default``).

    Raises:
        ValueError: a malformed objective, or a sweep that names none and has no known method.
    """
    from tauray_spaces import Objective

    if overrides:
        return tuple(parse_objective(text) for text in overrides), "--objective"
    text = params.get(PARAM_OBJECTIVE, "").strip()
    if text:
        return tuple(parse_objective(part) for part in text.split(",") if part.strip()), "sweep"
    method = params.get(PARAM_METHOD, "")
    if method in names.DEFAULT_OBJECTIVE:
        metric, mode = names.DEFAULT_OBJECTIVE[method]
        return (Objective(metric, mode),), "method default"  # type: ignore[arg-type]
    raise ValueError(
        f"the sweep's run names no objective (param {PARAM_OBJECTIVE!r}) and no known method; "
        "pass --objective METRIC:max|min"
    )


# ---- the parent run ------------------------------------------------------------------------------


def sweep_params(
    *,
    space: str,
    space_source: str,
    method: str,
    objectives: Sequence[Objective],
    trials: int,
    time_budget_s: float | None,
    epochs: int,
    workers_per_trial: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    seed: int,
    overrides: Sequence[str],
    storage_path: str,
    code_version: str,
) -> dict[str, Any]:
    """The parent run's params when a sweep starts (``trials`` <= 0: until the time budget)."""
    return {
        PARAM_SPACE: space,
        "space_source": space_source,
        PARAM_METHOD: method,
        PARAM_OBJECTIVE: objectives_text(objectives),
        "trials": trials if trials > 0 else "until time budget",
        "time_budget_s": time_budget_s,
        "epochs": epochs,
        PARAM_WORKERS: workers_per_trial,
        PARAM_GPUS_PER_WORKER: gpus_per_worker,
        PARAM_CPUS_PER_WORKER: cpus_per_worker,
        "seed": seed,
        "overrides": " ".join(overrides) or "none",
        "storage_path": storage_path,
        "code_version": code_version,
    }


def search_params(
    *,
    sampler: str,
    scheduler: str,
    max_concurrent_trials: int,
    cluster_cpus: float,
    cluster_gpus: float,
    ray_address: str | None,
    max_failures: int,
    in_trial: bool,
) -> dict[str, Any]:
    """The parent run's params once Ray is up: the search, the cluster, where trials train."""
    return {
        "sampler": sampler,
        "scheduler": scheduler,
        "max_concurrent_trials": max_concurrent_trials,
        "cluster_cpus": cluster_cpus,
        "cluster_gpus": cluster_gpus,
        "ray_address": ray_address or "local",
        "max_failures": max_failures,
        "trial_runner": "in-trial" if in_trial else "ray-train",
    }


def sweep_tags(sweep_name: str, space: str, storage_path: str) -> dict[str, str]:
    """The parent run's tags when a sweep starts (besides ``tauray.kind``)."""
    return {
        TAG_SWEEP: sweep_name,
        TAG_SPACE: space,
        TAG_STORAGE: storage_path,
        TAG_STATUS: SWEEP_RUNNING,
    }


def resumed_tags(when: _dt.datetime) -> dict[str, str]:
    """The parent run's tags when a session resumes the sweep."""
    return {TAG_RESUMED: when.isoformat(), TAG_STATUS: SWEEP_RUNNING}


def interrupted_tags(resume_command: str) -> dict[str, str]:
    """The parent run's tags when the sweep was interrupted (how to continue it)."""
    return {TAG_STATUS: SWEEP_INTERRUPTED, TAG_RESUME_COMMAND: resume_command}


def finished_tags(best_trial_id: str | None, best_run_id: str | None) -> dict[str, str]:
    """The parent run's tags when the sweep finished."""
    return {
        TAG_BEST_TRIAL: best_trial_id or "",
        TAG_BEST_RUN: best_run_id or "",
        TAG_STATUS: SWEEP_FINISHED,
    }


def best_params(sampled: Mapping[str, Any]) -> dict[str, str]:
    """The best trial's sampled values as parent-run params ``best/<key>``."""
    return {f"{BEST_PREFIX}{key}": param_text(value) for key, value in sorted(sampled.items())}


def result_metrics(
    counts: Mapping[str, int], objective_metric: str | None = None, best_value: float | None = None
) -> dict[str, float]:
    """The parent run's metrics at the end: trials per way they ended, the best trial's value of
    the objective (as ``best/<objective>`` and as ``<objective>``).

    Args:
        counts: trials per status (:func:`tauray.trials.count_statuses`).
        objective_metric: the objective, when the sweep has a best trial.
        best_value: the best trial's value of it (NaN when None).
    """
    metrics: dict[str, float] = {
        METRIC_COMPLETED: counts["completed"],
        METRIC_STOPPED: counts["stopped"],
        METRIC_FAILED: counts["failed"],
    }
    if objective_metric is not None:  # also under the trials' own key: one column in the UI
        value = best_value if best_value is not None else float("nan")
        metrics[f"{BEST_PREFIX}{objective_metric}"] = metrics[objective_metric] = value
    return metrics


def sweep_name(tags: Mapping[str, str], run_name: str | None, run_id: str) -> str:
    """A parent run's sweep name: its ``tauray.sweep`` tag, else the run's name or id."""
    return tags.get(TAG_SWEEP) or tags.get(TAG_RUN_NAME) or run_name or run_id


def sweep_resources(params: Mapping[str, str]) -> tuple[int, float, float]:
    """``(workers, gpus_per_worker, cpus_per_worker)`` of a sweep's trials, from its params
    (1, 0 and 1 where a param is missing or not a number)."""

    def number(key: str, default: float) -> float:
        try:
            return float(params.get(key, default))
        except ValueError:
            return default

    return (
        int(number(PARAM_WORKERS, 1)),
        number(PARAM_GPUS_PER_WORKER, 0.0),
        number(PARAM_CPUS_PER_WORKER, 1.0),
    )


# ---- trial runs ----------------------------------------------------------------------------------


def trial_run_name(record: TrialRecord, confirmed_index: int | None = None) -> str:
    """A trial run's name (:func:`tauray.ui_layout.trial_run_name`: ``t002 fixed τ=0.100``)."""
    return ui_layout.trial_run_name(record, confirmed_index)


def trial_identity_tags(parent_run_id: str, trial_id: str) -> dict[str, str]:
    """The tags that make a run a trial of a sweep (what a resumed sweep finds it by)."""
    return {TAG_KIND: KIND_TRIAL, TAG_PARENT_RUN_ID: parent_run_id, TAG_TRIAL_ID: trial_id}


def trial_params(record: TrialRecord) -> dict[str, str]:
    """A trial run's params as text (:func:`tauray.ui_layout.trial_params`)."""
    return {key: param_text(value) for key, value in ui_layout.trial_params(record).items()}


def trial_tags(
    record: TrialRecord, space: str, confirms_run_id: str | None = None
) -> dict[str, str]:
    """A trial run's tags when it starts (besides :func:`trial_identity_tags`); a
    confirmation run's name the run of the search trial it repeats (``confirms_run_id``)."""
    tags = {
        TAG_PHASE: record.phase,
        TAG_SPACE: space,
        TAG_TRIAL_INDEX: str(record.index),
        TAG_STATUS: "running",
        TAG_SAMPLED: ",".join(sorted(record.sampled)),
    }
    if record.method:
        tags[TAG_METHOD] = record.method
    if confirms_run_id is not None:
        tags[TAG_CONFIRMS] = confirms_run_id
    return tags


def training_run_params(
    config: Mapping[str, Any], workers: int, gpus_per_worker: float, cpus_per_worker: float
) -> dict[str, str]:
    """A ``tauray train`` run's params: its full config encoded as a trial's
    (:func:`config_params`), plus the resources a sweep keeps on its parent run."""
    return {
        **config_params(config),
        PARAM_WORKERS: param_text(workers),
        PARAM_GPUS_PER_WORKER: param_text(gpus_per_worker),
        PARAM_CPUS_PER_WORKER: param_text(cpus_per_worker),
    }


def training_run_tags(method: str) -> dict[str, str]:
    """A ``tauray train`` run's tags when it starts: a trial's, less the sweep's."""
    return {TAG_KIND: KIND_TRAINING, TAG_METHOD: method, TAG_STATUS: "running"}


def training_failure_tags(reason: str) -> dict[str, str]:
    """A failed ``tauray train`` run's tags: status, reason, kind (as a failed trial's)."""
    return {
        TAG_STATUS: "failed",
        TAG_FAILURE_REASON: reason,
        TAG_FAILURE_KIND: failure_kind(reason),
    }


def champion_metrics(stats: Any) -> dict[str, float]:
    """The parent run's ``champion/<statistic>`` metrics from a
    :class:`tauray.stats.SampleSummary` of the champion's runs."""
    return {f"{CHAMPION_PREFIX}{name}": float(getattr(stats, name)) for name in CHAMPION_STATS}


def ended_tags(record: TrialRecord) -> dict[str, str]:
    """A trial run's tags when the trial ended without error (completed, stopped early)."""
    return {TAG_STATUS: record.status}


def failure_tags(record: TrialRecord) -> dict[str, str]:
    """A failed (or infeasible: out of memory) trial run's tags: status, reason, kind."""
    reason = record.error or "unknown error"
    tags = {
        TAG_STATUS: "failed",
        TAG_FAILURE_REASON: reason,
        TAG_FAILURE_KIND: "out_of_memory" if record.infeasible else failure_kind(reason),
    }
    if record.oom_batch_size is not None:
        tags[TAG_OOM_BATCH_SIZE] = str(record.oom_batch_size)
    return tags


def model_tags(model_uri: str) -> dict[str, str]:
    """A trial run's tag pointing at its logged model."""
    return {TAG_MODEL_URI: model_uri}


def model_error_tags(error: BaseException) -> dict[str, str]:
    """A trial run's tag saying why its model could not be logged (one line)."""
    return {TAG_MODEL_ERROR: " ".join(str(error).split())[:500]}


def lost_tags() -> dict[str, str]:
    """The tags of a child run of a trial the sweep lost."""
    return {TAG_STATUS: STATUS_LOST, TAG_LOST_REASON: LOST_REASON}


def is_lost(tags: Mapping[str, str]) -> bool:
    """Whether a child run belongs to a trial the sweep lost (not a trial of the sweep)."""
    return tags.get(TAG_STATUS) == STATUS_LOST


def trial_status(tags: Mapping[str, str], run_status: str) -> TrialStatus:
    """A trial's status from its run: the ``tauray.status`` tag once it ended, else ``failed``
    for a FAILED run and ``running`` (still running, or its driver died before it ended)."""
    status = tags.get(TAG_STATUS, "")
    if status in STATUS_WORDS and status != "running":
        return status  # type: ignore[return-value]
    if run_status == "FAILED":
        return "failed"
    return "running"


def trial_record(
    *,
    run_id: str,
    run_status: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    epoch: int,
    position: int,
) -> TrialRecord:
    """A trial run read back as a :class:`TrialRecord` (its config: the params over defaults).

    Args:
        run_id: the run's id (the trial id when the run has no ``tauray.trial_id``).
        run_status: MLflow's status of the run (``RUNNING``, ``FINISHED``, ``FAILED``, ...).
        tags, params: the run's.
        metrics: the last value of each metric.
        epoch: the highest step of its metrics (step = epoch).
        position: the run's place among the sweep's runs (the index when it has no tag).

    The record's ``history`` is left empty; a confirmation run's ``confirms`` holds the run id
    of the search trial it repeats (the caller knows the runs' trial ids).
    """
    index_text = tags.get(TAG_TRIAL_INDEX, "")
    sampled_keys = [key for key in tags.get(TAG_SAMPLED, "").split(",") if key]
    config, config_error = config_from_params(ui_layout.config_params(params, sampled_keys))
    sampled: dict[str, Any] = {}
    for key in sampled_keys:
        text = params.get(key, params.get(key.replace("/", ".")))
        if text is not None:
            sampled[key] = param_value(key.replace("/", "."), text)
    status = trial_status(tags, run_status)
    record = TrialRecord(
        trial_id=tags.get(TAG_TRIAL_ID) or run_id,
        index=int(index_text) if index_text.isdigit() else position,
        sampled=sampled,
        config=config,
        config_error=config_error,
        status=status,
        epoch=epoch,
        metrics={key: float(value) for key, value in metrics.items()},
    )
    if status == "failed":
        record.error = tags.get(TAG_FAILURE_REASON) or config_error or "unknown error"
    record.phase = tags.get(TAG_PHASE, PHASE_SEARCH)
    record.confirms = tags.get(TAG_CONFIRMS)
    return record


# ---- searches ------------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def sweep_runs_filter(tag: str | None = None, value: str | None = None) -> str:
    """MLflow filter for an experiment's sweeps (with ``tag``: those whose tag is ``value``)."""
    text = f"tags.`{TAG_KIND}` = {_quoted(KIND_SWEEP)}"
    if tag is not None and value is not None:
        text += f" and tags.`{tag}` = {_quoted(value)}"
    return text


def trial_runs_filter(
    parent_run_id: str, *, trial_id: str | None = None, running: bool = False
) -> str:
    """MLflow filter for a sweep's child runs (one trial's; only RUNNING ones)."""
    text = f"tags.`{TAG_PARENT_RUN_ID}` = '{parent_run_id}'"
    if trial_id is not None:
        text += f" and tags.`{TAG_TRIAL_ID}` = '{trial_id}'"
    if running:
        text += " and attributes.status = 'RUNNING'"
    return text

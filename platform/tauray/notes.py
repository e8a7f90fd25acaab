"""The Markdown descriptions a sweep writes (MLflow's ``mlflow.note.content``).

Part of the MLflow layout (:mod:`tauray.layout`): the **experiment**'s description says what
its runs are and which columns to show, and names the latest finished sweep, its best value
and the best run; the **parent run**'s description says what the sweep searched, how its trials
ended, the best value with its τ and a link to the best run, and what the champion model holds.
Links are the UI's own relative links (``#/experiments/<id>/runs/<run id>``), so they work
whatever host serves the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tauray import ui_layout
from tauray.trials import TrialRecord, format_number

#: MLflow's tag of a run's or an experiment's Markdown description.
NOTE_TAG = "mlflow.note.content"
#: Runs-table columns worth showing for a sweep (besides the objective).
COLUMNS = (
    "tau",
    "tau_mode",
    "lr",
    "batch_size_per_worker",
    ui_layout.OBJECTIVE_BEST,
    ui_layout.OBJECTIVE_AT_FIRST_RUNG,
    "train/temperature",
    ui_layout.TAG_STOPPED_AT_EPOCH,
)


@dataclass(frozen=True)
class SweepOutcome:
    """What the descriptions say about a finished sweep.

    Attributes:
        sweep_name, space, method: the sweep's.
        metric, mode: its (primary) objective.
        experiment_id: the experiment holding it (for links).
        parent_run_id: the sweep's parent run.
        counts: trials per status (:func:`tauray.trials.count_statuses`).
        best: the best trial (with a confirmation phase: the champion's best run), if any.
        best_run_id: its run.
        best_run_name: its run's name.
        champion: the registered model's URI and version, if one was registered.
    """

    sweep_name: str
    space: str
    method: str
    metric: str
    mode: str
    experiment_id: str
    parent_run_id: str
    counts: Mapping[str, int]
    best: TrialRecord | None
    best_run_id: str | None
    best_run_name: str | None
    champion: tuple[str, str] | None


def run_link(experiment_id: str, run_id: str, text: str) -> str:
    """A Markdown link to a run in the MLflow UI (relative: any host)."""
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})"


def _temperature(best: TrialRecord) -> str:
    config = best.config or {}
    mode = best.temperature_mode or "?"
    start = (config.get("temperature") or {}).get("value")
    final = best.final_temperature()
    if mode == "fixed" or start is None:
        return f"τ {format_number(final)} ({mode})"
    return f"τ {format_number(final)} at the end ({mode}, from {format_number(start)})"


def _model(outcome: SweepOutcome) -> str:
    if outcome.champion is None:
        return "No model was registered (model logging off, or no trial ended with a checkpoint)."
    uri, version = outcome.champion
    config: dict[str, Any] = (outcome.best.config if outcome.best else None) or {}
    data, model = config.get("data") or {}, config.get("model") or {}
    holds = (
        f"the best run's {outcome.method} image encoder ({model.get('backbone', '?')}) trained "
        f"on {data.get('name', '?')} at {data.get('image_size', '?')} px: a batch of images "
        f"(N x C x H x W) in, {model.get('embedding_dim', '?')}-dimensional L2-normalised "
        "embeddings out"
    )
    return (
        f"Champion model `{uri}` (version {version}): {holds}. Load it with "
        f"`mlflow.pytorch.load_model('{uri}')`; its signature and input example show the input."
    )


def _best_line(outcome: SweepOutcome) -> str:
    best = outcome.best
    if best is None or best.value(outcome.metric) is None:
        return "No trial reported the objective."
    value = format_number(best.value(outcome.metric))
    where = outcome.best_run_name or f"trial {best.index}"
    if outcome.best_run_id:
        where = run_link(outcome.experiment_id, outcome.best_run_id, where)
    return f"Best `{outcome.metric}` = **{value}** with {_temperature(best)}: {where}."


def sweep_note(outcome: SweepOutcome) -> str:
    """The parent run's description."""
    counts = outcome.counts
    total = sum(counts.values())
    return "\n".join(
        [
            f"### Sweep `{outcome.sweep_name}`",
            "",
            f"Search space `{outcome.space}` ({outcome.method}); objective `{outcome.metric}` "
            f"({outcome.mode}). {total} trials: {counts.get('completed', 0)} completed, "
            f"{counts.get('stopped', 0)} stopped early, {counts.get('failed', 0)} failed.",
            "",
            f"- {_best_line(outcome)}",
            f"- {_model(outcome)}",
            f"- This run's `{outcome.metric}` is the best trial's value; the chart "
            f"`{ui_layout.OBJECTIVE_BEST_SO_FAR}` is the best value over the trials so far "
            "(step = trial number). The child runs are the trials: compare them on "
            f"`{ui_layout.OBJECTIVE_BEST}` and `{ui_layout.OBJECTIVE_AT_FIRST_RUNG}` (the value "
            "at the first early-stopping rung, which stopped and completed trials both reached).",
        ]
    )


def experiment_note(outcome: SweepOutcome) -> str:
    """The experiment's description (rewritten by every sweep that finishes in it)."""
    columns = ", ".join(f"`{column}`" for column in COLUMNS)
    sweep = run_link(outcome.experiment_id, outcome.parent_run_id, outcome.sweep_name)
    return "\n".join(
        [
            "tauray temperature sweeps: each parent run (`tauray.kind = sweep`) is one sweep, "
            "its child runs are the trials, named by index and temperature (`t002 fixed "
            "τ=0.100`; `… stopped@2` when early stopping ended them at epoch 2).",
            "",
            f"Show the columns {columns} and the objective `{outcome.metric}`; group by "
            "parent run; chart `objective/best_so_far` on a sweep's run.",
            "",
            f"Latest finished sweep: {sweep} (space `{outcome.space}`). {_best_line(outcome)}",
            "",
            _model(outcome),
        ]
    )

"""The text table of a sweep's trials, printed by ``tauray tune`` at its end and ``tauray report``.

One table for both, so the two views of a sweep read alike: the ranked trials first (see
:mod:`tauray.ranking`), then every failed or unfinished one; per trial its objective(s), the
temperature mode and final τ, a few sampled parameters, epochs and cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tauray.trials import PHASE_CONFIRM, STATUS_WORDS, TrialRecord, format_number
from tauray_trainers import metrics as names

if TYPE_CHECKING:
    from tauray.ranking import Ranking
    from tauray_spaces import Objective

#: Sampled parameters shown as table columns (the rest are in MLflow and the YAML files).
MAX_PARAM_COLUMNS = 4
_HEADER_ALIASES = {"batch_size_per_worker": "batch", "temperature": "τ"}


def seconds_text(value: float | None) -> str:
    """Seconds of cost: no decimals from 100 on, one below."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def count_text(value: float | None) -> str:
    """A count (samples seen) with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def cost_label(metric: str | None) -> str:
    """The short name of a ``cost/*`` metric (``GPU-s``, ``CPU-s``, ``worker-s``, ``samples``)."""
    return {
        names.COST_GPU_SECONDS: "GPU-s",
        names.COST_CPU_SECONDS: "CPU-s",
        names.COST_WORKER_SECONDS: "worker-s",
        names.COST_SAMPLES_SEEN: "samples",
    }.get(metric or "", metric or "cost")


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Column headers of sampled parameters (``a/b/c`` keys): the last path segment, or the last
    two where the last is ambiguous; ``temperature/x`` reads ``τ.x`` and
    ``batch_size_per_worker`` reads ``batch``."""

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


def text_table(rows: list[list[str]], right: Sequence[bool]) -> list[str]:
    """Rows of cells as aligned lines: column ``i`` right-aligned where ``right[i]``."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            (cell.rjust(width) if align else cell.ljust(width))
            for cell, width, align in zip(row, widths, right, strict=True)
        ).rstrip()
        for row in rows
    ]


def trial_table(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    ranking: Ranking,
    top: int | None = None,
) -> str:
    """The top ``top`` ranked trials (all with None), then every failed or unfinished one.

    Args:
        records: every trial of the sweep.
        objectives: what the trials are ranked by (one column each).
        ranking: :func:`tauray.ranking.rank_trials` of ``records`` by ``objectives``.
        top: how many ranked trials to list.
    """
    multi_objective = len(objectives) > 1
    keys: list[str] = []
    for record in records:
        for key in sorted(record.sampled):  # as MLflow lists them: the same in every view
            if key not in keys and key != "temperature/mode":
                keys.append(key)
    # The training parameters first: the temperature's own are summed up by "τ mode"/"τ end".
    keys.sort(key=lambda key: key.startswith("temperature/"))
    shown = keys[:MAX_PARAM_COLUMNS]
    short = short_names(shown)
    gpu = any((record.value(names.COST_GPU_SECONDS) or 0.0) > 0 for record in records)
    device_metric = names.COST_GPU_SECONDS if gpu else names.COST_CPU_SECONDS
    front = set(ranking.front)
    header = ["rank", "trial", "status"]
    if multi_objective:
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
    header += [cost_label(metric) for metric in costs]
    rows = [header]
    listed = ranking.ranked if top is None else ranking.ranked[:top]
    ranked_ids = {record.trial_id for record in ranking.ranked}
    unranked = [record for record in records if record.trial_id not in ranked_ids]
    for position, record in enumerate([*listed, *unranked], start=1):
        ranked = position <= len(listed)
        status = STATUS_WORDS.get(record.status, record.status)
        label = f"#{record.index}" + ("c" if record.phase == PHASE_CONFIRM else "")
        row = [str(position) if ranked else "-", label, status]
        if multi_objective:
            row.append("*" if record.trial_id in front else "")
        for objective in objectives:  # a failed trial's last values are not results
            failed = record.status == "failed"
            row.append("-" if failed else format_number(record.value(objective.metric)))
        temperature = record.final_temperature() if record.status != "failed" else None
        row += [record.temperature_mode or "-", format_number(temperature, 3)]
        row += [format_number(record.sampled.get(key), 3) for key in shown]
        row.append(f"{record.epoch}/{record.planned_epochs or '?'}")
        row += [
            (count_text if metric == names.COST_SAMPLES_SEEN else seconds_text)(
                record.value(metric)
            )
            for metric in costs
        ]
        rows.append(row)
    right = [True, True, False] + ([False] if multi_objective else [])
    right += [True] * len(objectives) + [False, True] + [True] * (len(shown) + 1 + len(costs))
    lines = text_table(rows, right)
    hidden = len(ranking.ranked) - len(listed)
    notes = []
    if hidden > 0:
        notes.append(f"{hidden} more ranked trial(s) not shown (--top {len(ranking.ranked)})")
    if any(record.phase == PHASE_CONFIRM for record in records):
        notes.append("#Nc: a confirmation run (a search trial's configuration, a fresh seed)")
    if len(keys) > len(shown):
        notes.append(f"{len(keys) - len(shown)} more sampled parameter(s) per trial in MLflow")
    if notes:
        lines.append("(" + "; ".join(notes) + ")")
    return "\n".join(lines)

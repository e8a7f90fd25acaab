"""``tauray report``, the text: the trials' table, the best trial, the trade-offs as text plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import yaml

from tauray import layout
from tauray.report.build import DEFAULT_TOP, SweepReport
from tauray.run_file import changed_settings
from tauray.tables import cost_label, count_text, seconds_text, text_table, trial_table
from tauray.trials import format_number as _number
from tauray_trainers import metrics as names

if TYPE_CHECKING:
    from tauray.report.files import ReportFiles

_MODE_LETTERS = {"fixed": "f", "learnable": "l", "scheduled": "s"}


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
        f"{metric} vs {cost_label(cost_metric)} ({legend}; o completed, v stopped early)",
        text_scatter(points, x_label=cost_metric, y_label=metric, log_x=log_x),
    ]
    on_front = [record for record in report.ranked if record.trial_id in marked]
    if on_front:
        on_front.sort(key=lambda record: (record.value(cost_metric) or 0.0, record.index))
        rows = [[cost_label(cost_metric), metric, "trial", "τ mode", "τ end"]]
        for record in on_front:
            rows.append(
                [
                    seconds_text(record.value(cost_metric))
                    if cost_metric != names.COST_SAMPLES_SEEN
                    else count_text(record.value(cost_metric)),
                    _number(record.value(metric)),
                    f"#{record.index}",
                    record.temperature_mode or "-",
                    _number(record.final_temperature(), 3),
                ]
            )
        title = "Pareto front" if report.multi_objective else "Cheapest trial at each quality"
        lines.append(f"{title}, by cost:")
        lines.extend("  " + line for line in text_table(rows, [True, True, True, False, True]))
    return "\n".join(lines)


def _best_lines(report: SweepReport, files: ReportFiles | None) -> list[str]:
    best = report.best
    objective = report.objective
    if best is None:
        return [f"No trial finished with a value of {objective.metric}: nothing to recommend."]
    temperature = best.final_temperature()
    how = "best on the Pareto front by" if report.multi_objective else "best by"
    title = f"Best trial ({how} {objective.metric})"
    if report.champion_runs:
        title = "Champion configuration's best run (the best mean over seeds, see Confirmation)"
    lines = [
        f"{title}: #{best.index} ({best.trial_id}), "
        + ", ".join(
            f"{each.metric} = {_number(best.value(each.metric))}" for each in report.objectives
        )
        + f" at epoch {best.epoch}/{best.planned_epochs or '?'}"
        + (f", τ {_number(temperature, 3)} ({best.temperature_mode})" if temperature else ""),
        "  cost: "
        + ", ".join(
            [
                f"{seconds_text(best.value(names.COST_WORKER_SECONDS))} worker-s",
                *(
                    [f"{seconds_text(best.value(names.COST_GPU_SECONDS))} GPU-s"]
                    if (best.value(names.COST_GPU_SECONDS) or 0.0) > 0
                    else []
                ),
                f"{seconds_text(best.value(names.COST_CPU_SECONDS))} CPU-s",
                f"{count_text(best.value(names.COST_SAMPLES_SEEN))} samples seen",
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


def confirmation_lines(report: SweepReport) -> list[str]:
    """The confirmation phase's paragraph: each confirmed configuration's mean over seeds with
    its 95% t-interval, and whether the champion beats the runner-up beyond seed noise."""
    if not report.confirmation:
        return []
    by_run = {run_id: trial_id for trial_id, run_id in report.run_ids.items()}
    index = {record.trial_id: record.index for record in report.records}
    lines = ["", f"Confirmation ({report.objective.metric}, mean and 95% t-interval over seeds):"]
    for position, row in enumerate(report.confirmation):
        trial = index.get(by_run.get(row["search_run_id"], ""), "?")
        interval = (
            f", 95% CI [{_number(row['ci95_low'])}, {_number(row['ci95_high'])}]"
            if row["n"] > 1
            else ""
        )
        lines.append(
            f"  trial {trial}, τ {_number(row['temperature'])} {row['temperature_mode']}: mean "
            f"{_number(row['mean'])}, sd {_number(row['sd']) if row['n'] > 1 else '-'}, "
            f"n {row['n']}{interval}" + (" <- champion" if position == 0 and row["n"] > 0 else "")
        )
    verdict = report.sweep.tags.get(layout.TAG_VERDICT)
    if verdict:
        lines.append(verdict)
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
        lines += [
            heading + "; cost is cumulative per trial:",
            trial_table(report.records, report.objectives, report.ranking, top),
        ]
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
    lines.extend(confirmation_lines(report))
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

"""The sweep's pictures, rendered headless (matplotlib ``Figure`` + Agg canvas, no pyplot).

- :func:`objective_vs_temperature`: the objective against the temperature each trial ended with,
  coloured by temperature mode (fixed, learnable, scheduled); a learnable trial also shows where
  its τ started.
- :func:`optimization_history`: each trial's objective in start order and the best so far.
- :func:`parameter_importances`: Optuna's fANOVA importances of the sampled parameters, computed
  on a study rebuilt from the finished trials (needs at least two finished trials whose
  parameters vary).
- :func:`quality_vs_cost`: the objective against what each trial cost (worker-, GPU- or
  CPU-seconds), the Pareto front starred (``tauray report``).
- :func:`objective_pair`: two objectives of a multi-objective sweep, the Pareto front starred.

:func:`render_sweep_plots` writes the PNG files a sweep logs to its MLflow parent run and says
why it skipped any.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tauray.trials import TrialRecord
from tauray_trainers.config import TRAIN_LOOP_CONFIG

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MODE_COLOURS = {"fixed": "tab:blue", "learnable": "tab:orange", "scheduled": "tab:green"}
_OTHER_COLOUR = "tab:gray"
_PREFIX = TRAIN_LOOP_CONFIG + "/"


def _figure(width: float = 6.4, height: float = 4.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finished(records: Sequence[TrialRecord], metric: str) -> list[TrialRecord]:
    return [
        record
        for record in records
        if record.status in ("completed", "stopped") and record.value(metric) is not None
    ]


@dataclass(frozen=True)
class ConfirmedPoint:
    """A confirmed configuration on the objective-vs-τ plot: its mean over seeds and 95% CI.

    ``low``/``high`` are NaN when fewer than two runs counted (the mean is drawn without a bar).
    """

    temperature: float
    mean: float
    low: float
    high: float
    mode: str


def objective_vs_temperature(
    records: Sequence[TrialRecord], metric: str, confirmed: Sequence[ConfirmedPoint] = ()
) -> Figure:
    """Objective against final temperature (log scale), one colour per temperature mode.

    Args:
        records: the sweep's trials (failed and running ones are left out).
        metric: the objective's metric name, e.g. ``val/knn_top1``.
        confirmed: the confirmation phase's configurations, drawn as their mean over seeds
            (a diamond) with the 95% confidence interval as an error bar.

    Raises:
        ValueError: if no finished trial reported ``metric``.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finished = _finished(records, metric)
    if not finished:
        raise ValueError(f"no finished trial reported {metric!r}")
    figure = _figure()
    axes = figure.add_subplot()
    seen: set[str] = set()
    for record in finished:
        temperature = record.final_temperature()
        value = record.value(metric)
        if temperature is None or value is None or temperature <= 0:
            continue
        mode = record.temperature_mode or "unknown"
        colour = MODE_COLOURS.get(mode, _OTHER_COLOUR)
        start = record.config["temperature"]["value"] if record.config else None
        if mode == "learnable" and start and start > 0 and not math.isclose(start, temperature):
            axes.annotate(
                "",
                xy=(temperature, value),
                xytext=(float(start), value),
                arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.5},
            )
        label = mode if mode not in seen else None
        seen.add(mode)
        axes.scatter(
            [temperature],
            [value],
            color=colour,
            marker="o" if record.status == "completed" else "v",
            s=42,
            label=label,
            edgecolors="black",
            linewidths=0.4,
        )
        label_text = str(record.index)
        if record.status != "completed":
            label_text += f" @{record.epoch}"
        axes.annotate(
            label_text,
            (temperature, value),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    for point in confirmed:
        if not (point.temperature > 0 and math.isfinite(point.mean)):
            continue
        bar = (
            [[point.mean - point.low], [point.high - point.mean]]
            if math.isfinite(point.low) and math.isfinite(point.high)
            else None
        )
        axes.errorbar(
            [point.temperature],
            [point.mean],
            yerr=bar,
            fmt="D",
            color=MODE_COLOURS.get(point.mode, _OTHER_COLOUR),
            markeredgecolor="black",
            markersize=7,
            capsize=4,
            label="confirmed mean, 95% CI" if "confirmed" not in seen else None,
        )
        seen.add("confirmed")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("temperature τ at the end of the trial (arrow: from the initial τ)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs temperature (o completed, v stopped early @ epoch)")
    axes.grid(True, which="both", alpha=0.3)
    if seen:
        axes.legend(title="temperature mode", fontsize=8)
    return figure


def optimization_history(records: Sequence[TrialRecord], metric: str, mode: str) -> Figure:
    """Each trial's objective in start order, the best so far, and failed trials as red marks.

    Raises:
        ValueError: if no finished trial reported ``metric``.
    """
    from matplotlib.ticker import MaxNLocator

    if not _finished(records, metric):
        raise ValueError(f"no finished trial reported {metric!r}")
    ordered = sorted(records, key=lambda record: record.index)
    figure = _figure()
    axes = figure.add_subplot()
    best: float | None = None
    steps_x: list[int] = []
    steps_y: list[float] = []
    failed: list[int] = []
    for record in ordered:
        value = record.value(metric)
        if record.status == "failed":
            failed.append(record.index)
            continue
        if value is None or record.status == "running":
            continue
        colour = "tab:blue" if record.status == "completed" else "tab:gray"
        axes.scatter([record.index], [value], color=colour, s=28, zorder=3)
        better = best is None or (value > best if mode == "max" else value < best)
        best = value if better else best
        steps_x.append(record.index)
        steps_y.append(best)  # type: ignore[arg-type]
    axes.step(steps_x, steps_y, where="post", color="tab:red", label=f"best {metric} so far")
    if failed:
        bottom = min(steps_y)
        axes.scatter(failed, [bottom] * len(failed), marker="x", color="red", label="failed")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial (start order)")
    axes.set_ylabel(metric)
    axes.set_title("optimisation history (blue completed, grey stopped early)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def _distribution_names(distributions: Mapping[str, Any]) -> dict[str, Any]:
    return {name.removeprefix(_PREFIX): dist for name, dist in distributions.items()}


def study_from_records(
    records: Sequence[TrialRecord],
    metric: str,
    mode: str,
    distributions: Mapping[str, optuna.distributions.BaseDistribution],
) -> optuna.Study:
    """An in-memory Optuna study holding the finished trials (for Optuna's analyses).

    Args:
        records: the sweep's trials; those that finished with a value of ``metric`` are added.
        metric: the objective.
        mode: ``max`` or ``min``.
        distributions: the search space's distributions by name (``train_loop_config/...`` or
            bare config keys); constants a space returns are not parameters and are left out.
    """
    import optuna

    dists = _distribution_names(distributions)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for record in sorted(_finished(records, metric), key=lambda r: r.index):
        params = {key: value for key, value in record.sampled.items() if key in dists}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={key: dists[key] for key in params},
                value=record.value(metric),
            )
        )
    return study


def parameter_importances(study: optuna.Study, metric: str, seed: int = 0) -> Figure:
    """Horizontal bars of Optuna's fANOVA importances (fraction of the objective's variance).

    Raises:
        ValueError: with fewer than two finished trials or no parameter that varies.
    """
    import optuna

    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,), deepcopy=False)
    if len(completed) < 2:
        raise ValueError(f"importances need >= 2 finished trials, have {len(completed)}")
    varying = {
        name
        for name in {key for trial in completed for key in trial.params}
        if len({repr(trial.params.get(name)) for trial in completed}) > 1
    }
    if not varying:
        raise ValueError("importances need a parameter that varies between finished trials")
    if len({trial.value for trial in completed}) < 2:
        raise ValueError("importances need objective values that differ between trials")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
        )
    if not importances:
        raise ValueError("no parameter is shared by all finished trials (conditional space)")
    names = list(importances)[::-1]
    values = [importances[name] for name in names]
    figure = _figure(height=max(2.4, 0.45 * len(names) + 1.2))
    axes = figure.add_subplot()
    axes.barh(names, values, color="tab:blue")
    for position, value in enumerate(values):
        axes.text(value, position, f" {value:.2f}", va="center", fontsize=8)
    axes.set_xlim(0, max(1.0, max(values) * 1.15))
    axes.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)")
    axes.set_title(f"parameter importances over {len(completed)} trials")
    return figure


@dataclass
class PlotSet:
    """Files written by :func:`render_sweep_plots` and why any picture was skipped."""

    paths: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def render_sweep_plots(
    records: Sequence[TrialRecord],
    metric: str,
    mode: str,
    distributions: Mapping[str, Any],
    out_dir: str | Path,
    seed: int = 0,
    confirmed: Sequence[ConfirmedPoint] = (),
) -> PlotSet:
    """Write ``objective_vs_temperature.png`` (with the ``confirmed`` configurations' means and
    intervals), ``optimization_history.png`` and ``parameter_importances.png`` into
    ``out_dir``; skip (with a reason) what cannot be drawn."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    result = PlotSet()

    def save(name: str, make: Any) -> None:
        try:
            figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            result.skipped[name] = str(error)
            logger.info("plot %s skipped: %s", name, error)
            return
        path = folder / f"{name}.png"
        figure.savefig(path)
        result.paths[name] = path

    save("objective_vs_temperature", lambda: objective_vs_temperature(records, metric, confirmed))
    save("optimization_history", lambda: optimization_history(records, metric, mode))
    save(
        "parameter_importances",
        lambda: parameter_importances(
            study_from_records(records, metric, mode, distributions), metric, seed
        ),
    )
    return result


# ---- cost and multi-objective pictures (tauray report) ---------------------------------------


def _priced(
    records: Sequence[TrialRecord], metric: str, cost_metric: str
) -> list[tuple[TrialRecord, float, float]]:
    """``(record, cost, value)`` of the finished trials that reported both metrics."""
    priced = []
    for record in _finished(records, metric):
        cost, value = record.value(cost_metric), record.value(metric)
        if cost is not None and value is not None:
            priced.append((record, cost, value))
    return priced


def quality_vs_cost(
    records: Sequence[TrialRecord],
    metric: str,
    cost_metric: str,
    front: Collection[str] = (),
    *,
    front_label: str = "Pareto front",
    staircase: bool = True,
) -> Figure:
    """The objective against what each trial cost, the front's trials starred.

    Colour is the temperature mode, the marker says how the trial ended (o completed, v stopped
    early, * on the front). With ``staircase`` the front is joined as a step line in cost
    order: the best objective reachable within each budget. The cost axis is logarithmic when
    the costs span more than a factor of 30.

    Args:
        records: the sweep's trials (failed and unfinished ones are left out).
        metric: the quality objective, e.g. ``val/knn_top1``.
        cost_metric: what a trial consumed, e.g. ``cost/gpu_seconds`` (cumulative per trial).
        front: trial ids on the front.
        front_label: the legend's name for the front.
        staircase: join the front (only meaningful when it was computed on these two axes).

    Raises:
        ValueError: if no finished trial reported both ``metric`` and ``cost_metric``.
    """
    priced = _priced(records, metric, cost_metric)
    if not priced:
        raise ValueError(f"no finished trial reported both {metric!r} and {cost_metric!r}")
    figure = _figure()
    axes = figure.add_subplot()
    seen: set[str] = set()
    on_front: list[tuple[float, float]] = []
    for record, cost, value in priced:
        mode = record.temperature_mode or "unknown"
        starred = record.trial_id in front
        if starred:
            on_front.append((cost, value))
        axes.scatter(
            [cost],
            [value],
            color=MODE_COLOURS.get(mode, _OTHER_COLOUR),
            marker="*" if starred else ("o" if record.status == "completed" else "v"),
            s=150 if starred else 42,
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
        if mode not in seen:  # one legend entry per mode, drawn as a plain dot
            seen.add(mode)
            axes.scatter([], [], color=MODE_COLOURS.get(mode, _OTHER_COLOUR), label=mode)
        axes.annotate(
            str(record.index), (cost, value), textcoords="offset points", xytext=(5, 4), fontsize=7
        )
    if on_front:
        on_front.sort()
        xs, ys = [x for x, _ in on_front], [y for _, y in on_front]
        if staircase and len(on_front) > 1:
            axes.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1, zorder=2)
        axes.plot([], [], color="black", linestyle="--", marker="*", label=front_label)
    costs = [cost for _, cost, _ in priced]
    if min(costs) > 0 and max(costs) / min(costs) > 30:
        axes.set_xscale("log")
    axes.set_xlabel(cost_metric)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs cost (* front, o completed, v stopped early)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def objective_pair(
    records: Sequence[TrialRecord],
    first: str,
    second: str,
    front: Collection[str] = (),
) -> Figure:
    """Two objectives of a multi-objective sweep against each other, the Pareto front starred.

    Raises:
        ValueError: if no finished trial reported both metrics.
    """
    both = [record for record in _finished(records, first) if record.value(second) is not None]
    if not both:
        raise ValueError(f"no finished trial reported both {first!r} and {second!r}")
    figure = _figure()
    axes = figure.add_subplot()
    for record in both:
        x, y = record.value(second), record.value(first)
        starred = record.trial_id in front
        axes.scatter(
            [x],
            [y],
            color="tab:red" if starred else "tab:gray",
            marker="*" if starred else "o",
            s=150 if starred else 36,
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
        axes.annotate(
            str(record.index), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7
        )
    axes.set_xlabel(second)
    axes.set_ylabel(first)
    axes.set_title(f"Pareto front: {len(front)} trial(s) no other trial dominates (*)")
    axes.grid(True, alpha=0.3)
    return figure

"""What early stopping compares at its rungs (``tauray tune --early-signal``).

ASHA keeps, at each rung, the trials whose reported metric looks best there. With the objective
itself that is biased against small τ on contrastive tasks: they learn more slowly at first and
finish best, so the first rung stops the eventual winners (``benchmarks/README.md``, "How early
the metric ranks τ": kNN top-1 at epoch 2 ranked τ against the final ranking with Spearman
-0.21, +0.25, +0.59 in three seeds). A signal is a metric every trial reports each epoch, and
Ray Tune's schedulers read whatever metric they are given, so a signal needs no scheduler of
its own:

- ``objective``: the sweep's objective at the rung (plain ASHA);
- ``curve``: the objective predicted for the last epoch by a saturating learning curve
  ``y(t) = a - b * t**(-c)`` fitted to the trial's values so far (learning-curve extrapolation
  for early stopping: Domhan et al., IJCAI 2015), reported as :data:`PREDICTED_FINAL` next to
  the trial's metrics, so MLflow shows what each rung compared;
- ``METRIC:MODE``: any other metric the method reports, e.g. ``val/alignment:min``.

The signal only decides which trials stop; Optuna, the ranking and the champion still use the
objective.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tauray_trainers.metrics import EPOCH, RUNG_PREDICTED_FINAL

#: The metric ``curve`` reports: the objective predicted for the trial's last epoch.
PREDICTED_FINAL = RUNG_PREDICTED_FINAL

SIGNAL_OBJECTIVE = "objective"
SIGNAL_CURVE = "curve"
NAMED_SIGNALS = (SIGNAL_OBJECTIVE, SIGNAL_CURVE)
MODES = ("max", "min")


def predicted_final(points: Mapping[int, float], final_epoch: int) -> float:
    """The value at ``final_epoch`` of ``a - b * t**(-c)`` fitted to ``points`` (epoch ->
    value): ``c = 1`` through two points, the last value for one; with three or more, least
    squares with ``c`` in [0.05, 5] (a fit that fails falls back to the last two points)."""
    epochs = np.array(sorted(points), dtype=float)
    values = np.array([points[int(e)] for e in epochs])
    if len(epochs) == 1:
        return float(values[0])
    if len(epochs) == 2:
        b = (values[1] - values[0]) / (1 / epochs[0] - 1 / epochs[1])
        return float(values[1] + b / epochs[1] - b / final_epoch)
    from scipy.optimize import curve_fit

    def curve(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a - b * t ** (-c)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, b, c), _ = curve_fit(
                curve,
                epochs,
                values,
                p0=(values[-1], values[-1] - values[0], 1.0),
                bounds=([-np.inf, -np.inf, 0.05], [np.inf, np.inf, 5.0]),
                maxfev=5000,
            )
    except (RuntimeError, ValueError):
        last_two = {int(e): float(v) for e, v in zip(epochs[-2:], values[-2:], strict=True)}
        return predicted_final(last_two, final_epoch)
    return float(curve(np.array([final_epoch], dtype=float), a, b, c)[0])


@dataclass(frozen=True)
class EarlySignal:
    """A parsed ``--early-signal``: what the scheduler reads, and how to derive it.

    Attributes:
        name: ``objective``, ``curve`` or ``METRIC:MODE`` as given.
        metric, mode: what the scheduler compares.
        derived: the trials must compute ``metric`` from the objective (``curve``).
    """

    name: str
    metric: str
    mode: str
    derived: bool = False


def parse_signal(text: str, objective: tuple[str, str], known: tuple[str, ...]) -> EarlySignal:
    """``--early-signal``'s value for a sweep whose objective is ``(metric, mode)``.

    Raises:
        ValueError: one line naming the value and what is allowed (``known``: the metrics the
            method reports).
    """
    metric, mode = objective
    if text == SIGNAL_OBJECTIVE:
        return EarlySignal(text, metric, mode)
    if text == SIGNAL_CURVE:
        return EarlySignal(text, PREDICTED_FINAL, mode, derived=True)
    name, _, given_mode = text.rpartition(":")
    if not name or given_mode not in MODES or name not in known:
        raise ValueError(
            f"--early-signal {text!r} is not one of: {', '.join(NAMED_SIGNALS)}, or METRIC:MODE "
            f"with MODE max or min and METRIC one the method reports ({', '.join(known)})"
        )
    return EarlySignal(text, name, given_mode)


@dataclass
class CurveSignal:
    """One trial's :data:`PREDICTED_FINAL`, added to each report that carries the objective.

    Fitted to the values this process saw: a trial restored from a checkpoint fits the epochs
    after its restore point (one point: the value itself) -- a rung then judges it on fewer
    points, never on another trial's.
    """

    objective: str
    final_epoch: int
    points: dict[int, float] = field(default_factory=dict)

    def add(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        value, epoch = metrics.get(self.objective), metrics.get(EPOCH)
        out = dict(metrics)
        if value is None or epoch is None or not math.isfinite(float(value)):
            return out
        self.points[int(epoch)] = float(value)
        out[PREDICTED_FINAL] = predicted_final(self.points, self.final_epoch)
        return out

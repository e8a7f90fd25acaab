"""The parts of a search space: its parameters, their conditions, its objectives.

Parameter names are ``/`` paths under ``train_loop_config``
(``train_loop_config/temperature/mode``): Ray Tune's ``OptunaSearch`` turns them into the nested
``train_loop_config`` dict the trainer builds its config from. :func:`tied_temperature` is the
rule of a ``tied`` parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tauray_spaces.config_keys import same_scalar
from tauray_spaces.words import did_you_mean, value_text
from tauray_trainers.config import TRAIN_LOOP_CONFIG
from tauray_trainers.metrics import objective_metrics

Distribution = Literal["uniform", "loguniform", "int", "choice", "constant", "tied"]
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "loguniform", "int", "choice", "constant", "tied")


def trial_name(key: str) -> str:
    """The Optuna/Ray Tune name of a config key: ``temperature/mode`` ->
    ``train_loop_config/temperature/mode``."""
    return f"{TRAIN_LOOP_CONFIG}/{key}"


def tied_temperature(
    batch_size: int, reference_temperature: float, reference_batch_size: int, margin: float
) -> float:
    """The temperature that keeps a positive pair's softmax probability as the batch grows.

    Model: an anchor's positive has cosine similarity ``s`` and its ``N - 1`` negatives have
    ``s - margin``; the InfoNCE probability of the positive is then
    ``1 / (1 + (N - 1) * exp(-margin / τ))``. Holding it at its value for ``reference_batch_size``
    and ``reference_temperature`` while the number of negatives changes gives
    ``1/τ(B) = 1/τ_ref + ln((B - 1) / (B_ref - 1)) / margin``: larger batches get a smaller τ
    (sharper softmax), smaller batches a larger one. For SimCLR (2B - 2 negatives) and CLIP
    (B - 1) the ratio of negative counts is the same ``(B - 1) / (B_ref - 1)``. This is a
    heuristic derived from that model, not a published rule; a ``free`` τ lets the search decide.

    Args:
        batch_size: the global batch size B (>= 2).
        reference_temperature: τ at the reference batch size (> 0).
        reference_batch_size: B_ref (>= 2).
        margin: similarity gap between the positive and a typical negative (> 0; cosine
            similarities lie in [-1, 1], so sensible margins are about 0.3 to 2).

    Returns:
        τ(B), rounded to 6 significant digits.

    Raises:
        ValueError: if an argument is out of range or the rule gives no positive τ.
    """
    if batch_size < 2 or reference_batch_size < 2:
        raise ValueError(
            f"tied temperature needs batch sizes >= 2, got batch_size={batch_size}, "
            f"reference_batch_size={reference_batch_size}"
        )
    if not reference_temperature > 0 or not margin > 0:
        raise ValueError(
            f"tied temperature needs reference temperature > 0 and margin > 0, got "
            f"{reference_temperature} and {margin}"
        )
    inverse = (
        1.0 / reference_temperature
        + math.log((batch_size - 1) / (reference_batch_size - 1)) / margin
    )
    if not inverse > 0 or not math.isfinite(inverse):
        raise ValueError(
            f"tied temperature for batch size {batch_size} is not positive (1/τ = {inverse:g}); "
            f"raise the margin ({margin:g}) or lower the reference temperature "
            f"({reference_temperature:g})"
        )
    return float(f"{1.0 / inverse:.6g}")


@dataclass(frozen=True)
class Objective:
    """What a sweep optimises: a metric the trainer reports and its direction."""

    metric: str
    mode: Literal["max", "min"]


def check_objectives(
    objectives: Sequence[Objective], method: str, label: Callable[[int], str]
) -> tuple[Objective, ...]:
    """Refuse objectives a ``method`` run never reports, and a metric named twice.

    A metric the trainer never reports leaves every trial without a value (the sweep would run
    to its end and rank nothing); one metric both maximised and minimised is no objective.

    Args:
        objectives: what to optimise.
        method: the space's method (``simclr``, ``clip``, ``dino``).
        label: how an error names the objective at an index (``objective[1].metric``,
            ``--objective``).

    Raises:
        ValueError: one line naming the objective, the metric and the allowed ones.
    """
    allowed = objective_metrics(method)
    seen: dict[str, int] = {}
    for index, objective in enumerate(objectives):
        if objective.metric not in allowed:
            raise ValueError(
                f"{label(index)}={objective.metric!r} is not a metric the trainer reports for "
                f"{method}; allowed: {', '.join(allowed)}" + did_you_mean(objective.metric, allowed)
            )
        if objective.metric in seen:
            raise ValueError(
                f"{label(index)}={objective.metric!r} is listed twice (also "
                f"{label(seen[objective.metric])}); give each metric one direction"
            )
        seen[objective.metric] = index
    return tuple(objectives)


@dataclass(frozen=True)
class Condition:
    """``parameter`` (a config key, ``/`` path) has one of ``values`` in this trial."""

    parameter: str
    values: tuple[Any, ...]

    def holds(self, assigned: Mapping[str, Any]) -> bool:
        """Whether the condition holds given the values assigned so far (key -> value)."""
        if self.parameter not in assigned:
            return False
        return any(same_scalar(assigned[self.parameter], value) for value in self.values)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.parameter} == {value_text(self.values[0])}"
        return f"{self.parameter} in {{{', '.join(value_text(v) for v in self.values)}}}"


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a space.

    Args:
        key: the config key it sets, as a ``/`` path inside ``train_loop_config``.
        distribution: ``uniform``, ``loguniform``, ``int``, ``choice``, ``constant`` or ``tied``.
        low, high: the range (``uniform``, ``loguniform``, ``int``), both ends included.
        step: grid step of ``uniform`` / ``int`` (None: continuous, or 1 for ``int``).
        log: sampled on a log scale (``loguniform``, or ``int`` with ``log: true``).
        choices: the values of a ``choice`` (scalars).
        value: the value of a ``constant``; the reference τ of a ``tied`` parameter.
        tied_to: the batch-size key a ``tied`` temperature follows.
        reference_batch_size, margin: the ``tied`` rule's reference batch and similarity margin
            (see :func:`tied_temperature`).
        conditions: all must hold for the parameter to be sampled (empty: always).
        help: what the parameter does and how to tune it.
    """

    key: str
    distribution: Distribution
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None
    tied_to: str | None = None
    reference_batch_size: int | None = None
    margin: float | None = None
    conditions: tuple[Condition, ...] = ()
    help: str = ""

    @property
    def name(self) -> str:
        """The Optuna / Ray Tune name: ``train_loop_config/<key>``."""
        return trial_name(self.key)

    @property
    def sampled(self) -> bool:
        """Whether the sampler chooses it (``constant`` and ``tied`` are computed)."""
        return self.distribution not in ("constant", "tied")

    @property
    def condition(self) -> str | None:
        """The conditions as text (``temperature/mode == learnable``), None when unconditional."""
        if not self.conditions:
            return None
        return " and ".join(str(c) for c in self.conditions)

    def range_text(self) -> str:
        """The distribution's range or choices in words, e.g. ``[0.02, 1] log``."""
        if self.distribution in ("uniform", "loguniform", "int"):
            text = f"[{value_text(self.low)}, {value_text(self.high)}]"
            if self.step is not None and not (self.distribution == "int" and self.step == 1):
                text += f" step {value_text(self.step)}"
            if self.log:
                text += " log"
            return text
        if self.distribution == "choice":
            return "{" + ", ".join(value_text(c) for c in self.choices or ()) + "}"
        if self.distribution == "constant":
            return f"= {value_text(self.value)}"
        return (
            f"from {self.tied_to}: {value_text(self.value)} at {self.reference_batch_size}, "
            f"margin {value_text(self.margin)}"
        )

    def range_position(self, value: Any) -> float | None:
        """Where ``value`` lies in a continuous range, 0 at ``low`` and 1 at ``high``, on a log
        scale for a ``log`` parameter; None for a parameter without one (stepped, ``int``,
        ``choice``, ``constant``, ``tied``) or a value that is not a finite number."""
        if self.distribution not in ("uniform", "loguniform") or self.step is not None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        low, high, number = float(self.low or 0.0), float(self.high or 0.0), float(value)
        if not math.isfinite(number) or high <= low or (self.log and min(low, number) <= 0):
            return None
        if self.log:
            low, high, number = math.log(low), math.log(high), math.log(number)
        return (number - low) / (high - low)

    def to_dict(self) -> dict[str, Any]:
        """The parameter as written in a YAML space file."""
        entry: dict[str, Any] = {"key": self.key, "distribution": self.distribution}
        if self.distribution in ("uniform", "loguniform", "int"):
            entry["low"] = self.low
            entry["high"] = self.high
            if self.step is not None and not (self.distribution == "int" and self.step == 1):
                entry["step"] = self.step
            if self.distribution == "int" and self.log:
                entry["log"] = True
        elif self.distribution == "choice":
            entry["choices"] = list(self.choices or ())
        elif self.distribution == "constant":
            entry["value"] = self.value
        else:
            entry["to"] = self.tied_to
            entry["value"] = self.value
            entry["reference_batch_size"] = self.reference_batch_size
            entry["margin"] = self.margin
        if self.conditions:
            entry["when"] = {
                c.parameter: c.values[0] if len(c.values) == 1 else list(c.values)
                for c in self.conditions
            }
        if self.help:
            entry["help"] = self.help
        return entry

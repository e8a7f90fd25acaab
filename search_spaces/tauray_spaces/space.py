"""A search space: what a sweep samples, under which conditions, and what it optimises.

A :class:`SearchSpace` is an Optuna define-by-run space. :meth:`SearchSpace.define` asks the
trial for each parameter whose conditions hold, in an order where every parameter comes after
the parameters its conditions name, and returns the space's constants. Parameter names are
``/`` paths under ``train_loop_config`` (``train_loop_config/temperature/mode``): Ray Tune's
``OptunaSearch`` turns them into the nested ``train_loop_config`` dict the trainer builds its
config from. Spaces are made by :mod:`tauray_spaces.spacefile` from YAML (the built-ins too), so
every space has passed the same validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tauray_spaces.config_keys import _same_scalar, deep_merge, unflatten

if TYPE_CHECKING:
    import optuna

PREFIX = "train_loop_config"

Distribution = Literal["uniform", "loguniform", "int", "choice", "constant", "tied"]
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "loguniform", "int", "choice", "constant", "tied")


def trial_name(key: str) -> str:
    """The Optuna/Ray Tune name of a config key: ``temperature/mode`` ->
    ``train_loop_config/temperature/mode``."""
    return f"{PREFIX}/{key}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


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


@dataclass(frozen=True)
class Condition:
    """``parameter`` (a config key, ``/`` path) has one of ``values`` in this trial."""

    parameter: str
    values: tuple[Any, ...]

    def holds(self, assigned: Mapping[str, Any]) -> bool:
        """Whether the condition holds given the values assigned so far (key -> value)."""
        if self.parameter not in assigned:
            return False
        return any(_same_scalar(assigned[self.parameter], value) for value in self.values)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.parameter} == {_text(self.values[0])}"
        return f"{self.parameter} in {{{', '.join(_text(v) for v in self.values)}}}"


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
            text = f"[{_text(self.low)}, {_text(self.high)}]"
            if self.step is not None and not (self.distribution == "int" and self.step == 1):
                text += f" step {_text(self.step)}"
            if self.log:
                text += " log"
            return text
        if self.distribution == "choice":
            return "{" + ", ".join(_text(c) for c in self.choices or ()) + "}"
        if self.distribution == "constant":
            return f"= {_text(self.value)}"
        return (
            f"from {self.tied_to}: {_text(self.value)} at {self.reference_batch_size}, "
            f"margin {_text(self.margin)}"
        )

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


@dataclass(frozen=True)
class SearchSpace:
    """A named, validated search space over the trainer's ``train_loop_config``.

    Build one with :func:`tauray_spaces.get_space` or :func:`tauray_spaces.load_space_file`.

    Args:
        name: the space's name (a built-in's name, or the ``name`` of a YAML file).
        description: what it searches and why.
        method: ``simclr``, ``clip`` or ``dino``.
        objectives: what the sweep optimises (one, or several for a multi-objective sweep).
        fixed: nested ``train_loop_config`` settings every trial gets (``method`` included);
            sampled values and constants override them.
        points_to_evaluate: baselines run first, as flat ``{"train_loop_config/...": value}``
            dicts (parameters a point leaves out are sampled).
        parameter_specs: the parameters in sampling order (a parameter after those its
            conditions name).
        source: where the space came from (``builtin:<name>`` or a file path).
    """

    name: str
    description: str
    method: str
    objectives: tuple[Objective, ...]
    fixed: dict[str, Any]
    points_to_evaluate: tuple[dict[str, Any], ...]
    parameter_specs: tuple[ParameterSpec, ...] = ()
    source: str = ""

    # ---- sampling ------------------------------------------------------------------------

    def assign(self, trial: optuna.Trial) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sample one trial's values.

        Args:
            trial: an Optuna trial (or Ray Tune's wrapper of one).

        Returns:
            ``(sampled, constants)``: flat dicts keyed by Optuna name
            (``train_loop_config/...``); ``sampled`` holds what the trial suggested,
            ``constants`` the ``constant`` and ``tied`` values whose conditions hold.
        """
        assigned: dict[str, Any] = {}
        sampled: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for spec in self.parameter_specs:
            if not all(c.holds(assigned) for c in spec.conditions):
                continue
            if spec.distribution == "tied":
                if spec.tied_to not in assigned:
                    continue
                value = tied_temperature(
                    int(assigned[spec.tied_to]),
                    float(spec.value),
                    int(spec.reference_batch_size or 0),
                    float(spec.margin or 0.0),
                )
                constants[spec.name] = value
            elif spec.distribution == "constant":
                value = spec.value
                constants[spec.name] = value
            else:
                value = _suggest(trial, spec)
                sampled[spec.name] = value
            assigned[spec.key] = value
        return sampled, constants

    def define(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """Optuna define-by-run function: suggests the parameters, returns the constants.

        Pass it as ``OptunaSearch(space=space.define, ...)``; Ray Tune merges the returned
        constants into the trial's config.

        Args:
            trial: an Optuna trial (or Ray Tune's wrapper of one).

        Returns:
            The constants (flat ``train_loop_config/...`` names), or None when there are none.
        """
        _, constants = self.assign(trial)
        return constants or None

    def parameters(self) -> list[ParameterSpec]:
        """The parameters in sampling order."""
        return list(self.parameter_specs)

    def sample_config(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a trial and return its whole nested ``train_loop_config``.

        ``fixed`` merged with the sampled values and constants: what the trainer's
        ``build_config`` receives for this trial.
        """
        sampled, constants = self.assign(trial)
        return self.trial_config({**sampled, **constants})

    def trial_config(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        """``fixed`` merged with flat ``train_loop_config/...`` values (as Ray Tune passes
        them unflattened, or as :meth:`assign` returns them)."""
        tree = unflatten(dict(flat))
        return deep_merge(self.fixed, tree.get(PREFIX, {}))

    # ---- description ---------------------------------------------------------------------

    @property
    def objective(self) -> Objective:
        """The first (or only) objective."""
        return self.objectives[0]

    @property
    def metric(self) -> str | list[str]:
        """Ray Tune's ``metric``: a name, or a list for a multi-objective space."""
        names = [o.metric for o in self.objectives]
        return names[0] if len(names) == 1 else names

    @property
    def mode(self) -> str | list[str]:
        """Ray Tune's ``mode``: ``max``/``min``, or a list for a multi-objective space."""
        modes = [o.mode for o in self.objectives]
        return modes[0] if len(modes) == 1 else modes

    def parameter(self, key: str) -> ParameterSpec:
        """The parameter that sets ``key`` (dots, slashes or the full Optuna name).

        Raises:
            KeyError: naming the space's parameters when none sets ``key``.
        """
        from tauray_spaces.config_keys import normalize_key

        wanted = normalize_key(key)
        for spec in self.parameter_specs:
            if spec.key == wanted:
                return spec
        names = ", ".join(spec.key for spec in self.parameter_specs)
        raise KeyError(f"space {self.name!r} has no parameter {key!r}; its parameters: {names}")

    def to_dict(self) -> dict[str, Any]:
        """The space in the YAML file format (loading it back gives an equal space)."""
        fixed = {k: v for k, v in self.fixed.items() if k != "method"}
        data: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "method": self.method,
            "objective": (
                {"metric": self.objective.metric, "mode": self.objective.mode}
                if len(self.objectives) == 1
                else [{"metric": o.metric, "mode": o.mode} for o in self.objectives]
            ),
        }
        if fixed:
            data["fixed"] = fixed
        data["parameters"] = [spec.to_dict() for spec in self.parameter_specs]
        if self.points_to_evaluate:
            data["points_to_evaluate"] = [
                {name.removeprefix(PREFIX + "/"): value for name, value in point.items()}
                for point in self.points_to_evaluate
            ]
        return data

    def to_yaml(self) -> str:
        """The space as YAML text (a file :func:`tauray_spaces.load_space_file` accepts)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def with_overrides(self, overrides: Mapping[str, Any] | Sequence[str]) -> SearchSpace:
        """A new space with settings pinned (``--set key=value`` on the command line).

        A key that is a parameter becomes a constant (parameters whose conditions it can no
        longer satisfy are dropped, and so are the baselines' values for it); any other key
        goes into ``fixed``. The result is validated like a YAML file.

        Args:
            overrides: ``{"temperature.mode": "fixed"}`` or ``["epochs=3", ...]`` (values
                parsed as YAML); keys use dots or slashes.

        Raises:
            ValueError: an unknown key or a value the key does not accept (one line).
        """
        from tauray_spaces.spacefile import override_space

        return override_space(self, overrides)


def _suggest(trial: optuna.Trial, spec: ParameterSpec) -> Any:
    if spec.distribution == "uniform":
        return trial.suggest_float(spec.name, spec.low, spec.high, step=spec.step)
    if spec.distribution == "loguniform":
        return trial.suggest_float(spec.name, spec.low, spec.high, log=True)
    if spec.distribution == "int":
        return trial.suggest_int(
            spec.name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
        )
    return trial.suggest_categorical(spec.name, list(spec.choices or ()))

"""A search space: what a sweep samples, under which conditions, and what it optimises.

A :class:`SearchSpace` is an Optuna define-by-run space. :meth:`SearchSpace.define` asks the
trial for each parameter whose conditions hold, in an order where every parameter comes after
the parameters its conditions name, and returns the space's constants. Parameter names are
``/`` paths under ``train_loop_config`` (``train_loop_config/temperature/mode``): Ray Tune's
``OptunaSearch`` turns them into the nested ``train_loop_config`` dict the trainer builds its
config from. Every space is built by :func:`space_from_dict` from the YAML format's data (files,
the built-ins, and a space with ``--set`` overrides pinned alike), so every space has passed the
same validation (:mod:`tauray_spaces.checker`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tauray_spaces.checker import check_space
from tauray_spaces.config_keys import normalize_key
from tauray_spaces.overrides import override_pairs, pin_overrides
from tauray_spaces.parameters import Objective, ParameterSpec, tied_temperature
from tauray_trainers.config import TRAIN_LOOP_CONFIG, deep_merge, unflatten

if TYPE_CHECKING:
    import optuna


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
        return deep_merge(self.fixed, tree.get(TRAIN_LOOP_CONFIG, {}))

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
                {name.removeprefix(TRAIN_LOOP_CONFIG + "/"): value for name, value in point.items()}
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
        pinned = pin_overrides(self.to_dict(), override_pairs(overrides), self.name, self.method)
        return space_from_dict(pinned, source=self.source or self.name)


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


def space_from_dict(data: Any, source: str = "<dict>") -> SearchSpace:
    """Validate a parsed space file (a mapping) and build the :class:`SearchSpace`.

    Raises:
        ValueError: one line naming ``source``, the key and what is allowed.
    """
    return check_space(data, SearchSpace, source)

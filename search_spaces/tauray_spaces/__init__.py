"""tauray_spaces: search spaces over temperature, batch size and training knobs (Optuna only).

A space is an Optuna define-by-run function over the trainer's ``train_loop_config`` plus what a
sweep needs around it (method, objective, fixed settings, baselines)::

    import optuna
    from tauray_spaces import get_space

    space = get_space("simclr-temperature")          # or get_space("my-space.yaml")
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, seed=0)
    study = optuna.create_study(direction=space.objective.mode + "imize", sampler=sampler)
    trial = study.ask()
    config = space.sample_config(trial)              # the nested train_loop_config of one trial

With Ray Tune: ``OptunaSearch(space=space.define, metric=space.metric, mode=space.mode,
points_to_evaluate=list(space.points_to_evaluate), sampler=...)`` and
``param_space={"train_loop_config": space.fixed}`` merged under the sampled values.
The YAML format is documented in :mod:`tauray_spaces.spacefile` and search_spaces/README.md.
This package imports only optuna (lazily), pydantic, yaml and, of the trainer, its config schema
(``tauray_trainers.config``) and metric names (``tauray_trainers.metrics``): no torch, no Ray.
"""

from tauray_spaces.config_keys import (
    CONFIG_KEYS,
    KNOWN_METRICS,
    KeySpec,
    normalize_key,
    same_scalar,
)
from tauray_spaces.parameters import (
    Condition,
    Objective,
    ParameterSpec,
    check_objectives,
    tied_temperature,
    trial_name,
)
from tauray_spaces.registry import BUILTIN_NAMES, builtin_file, get_space, list_spaces
from tauray_spaces.render import format_space, format_space_list
from tauray_spaces.space import SearchSpace, space_from_dict
from tauray_spaces.spacefile import load_space_file, load_space_text

__all__ = [
    "BUILTIN_NAMES",
    "CONFIG_KEYS",
    "KNOWN_METRICS",
    "Condition",
    "KeySpec",
    "Objective",
    "ParameterSpec",
    "SearchSpace",
    "builtin_file",
    "check_objectives",
    "format_space",
    "format_space_list",
    "get_space",
    "list_spaces",
    "load_space_file",
    "load_space_text",
    "normalize_key",
    "same_scalar",
    "space_from_dict",
    "tied_temperature",
    "trial_name",
]

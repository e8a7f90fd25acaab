"""The one configuration schema of a training run, and how settings reach it.

- :mod:`~tauray_trainers.config.schema`: the typed, frozen :class:`TrainConfig` and
  :func:`build_config` (unknown keys and bad values are one-line ``ValueError`` s).
- :mod:`~tauray_trainers.config.paths`: nested dicts and their flat paths (merge, flatten,
  unflatten, get, set).
- :mod:`~tauray_trainers.config.overrides`: the ``--set key=value`` parser.
- :mod:`~tauray_trainers.config.safe_yaml`: the bounded safe YAML reader behind it.
- :mod:`~tauray_trainers.config.resources`: what a worker may reserve (workers, GPUs, CPUs).

Pure Python and pydantic (no torch), so search spaces and the platform's light commands can
import it without loading the trainer.
"""

from tauray_trainers.config.overrides import (
    apply_overrides,
    override_items,
    parse_override,
    parse_value,
)
from tauray_trainers.config.paths import (
    deep_merge,
    flatten,
    get_path,
    set_path,
    split_path,
    unflatten,
)
from tauray_trainers.config.resources import check_resources
from tauray_trainers.config.schema import (
    TRAIN_LOOP_CONFIG,
    CheckpointConfig,
    DataConfig,
    DinoConfig,
    EvalConfig,
    LossConfig,
    Method,
    ModelConfig,
    OptimizerConfig,
    TemperatureConfig,
    TrainConfig,
    build_config,
    per_worker_batch_size,
    with_overrides,
)

__all__ = [
    "TRAIN_LOOP_CONFIG",
    "CheckpointConfig",
    "DataConfig",
    "DinoConfig",
    "EvalConfig",
    "LossConfig",
    "Method",
    "ModelConfig",
    "OptimizerConfig",
    "TemperatureConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "check_resources",
    "deep_merge",
    "flatten",
    "get_path",
    "override_items",
    "parse_override",
    "parse_value",
    "per_worker_batch_size",
    "set_path",
    "split_path",
    "unflatten",
    "with_overrides",
]

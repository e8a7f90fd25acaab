"""What a search space may set: the trainer's configuration keys, its metrics and methods.

``tauray_spaces`` must not import ``tauray_trainers`` (that would pull in torch), yet every value a
space samples has to land on a real key of the trainer's ``TrainConfig`` with a value that key
accepts. This module keeps that contract as plain data: one :class:`KeySpec` per leaf key of
``TrainConfig`` (type, allowed literal values, numeric bounds, default), the metric names the loop
reports, and the default objective per method. ``tests/spaces/test_config_keys.py`` derives the
same tables from ``tauray_trainers.config`` and ``tauray_trainers.metrics`` and fails when they
drift apart, so a new trainer setting shows up here (and in YAML validation) or the suite is red.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["float", "int", "str", "bool", "literal"]

METHODS: tuple[str, ...] = ("simclr", "clip", "dino")


@dataclass(frozen=True)
class KeySpec:
    """One leaf key of the trainer's configuration.

    Args:
        kind: ``float``, ``int``, ``str``, ``bool`` or ``literal`` (one of ``choices``).
        default: the trainer's default value.
        choices: the allowed values of a ``literal`` key.
        nullable: whether ``None`` (YAML ``null``) is allowed.
        ge, gt, le, lt: numeric bounds (inclusive ``ge``/``le``, exclusive ``gt``/``lt``).
    """

    kind: Kind
    default: Any = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        """What the key accepts, in words (used in error messages)."""
        if self.kind == "literal":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {
                "float": "a number",
                "int": "an integer",
                "str": "a string",
                "bool": "true/false",
            }[self.kind]
            bounds = self.bounds_text()
            if bounds:
                text += f" {bounds}"
        if self.nullable:
            text += " or null"
        return text

    def bounds_text(self) -> str:
        """The numeric bounds as text, e.g. ``> 0 and < 1``; empty when unbounded."""
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        return " and ".join(parts)

    def within_bounds(self, number: float) -> bool:
        """Whether ``number`` satisfies the numeric bounds (not the type)."""
        return (
            (self.ge is None or number >= self.ge)
            and (self.gt is None or number > self.gt)
            and (self.le is None or number <= self.le)
            and (self.lt is None or number < self.lt)
        )

    def accepts(self, value: Any) -> bool:
        """Whether the trainer would accept ``value`` for this key (type, choices and bounds)."""
        if value is None:
            return self.nullable
        if self.kind == "literal":
            return any(_same_scalar(value, choice) for choice in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return math.isfinite(value) and self.within_bounds(value)


def _same_scalar(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` (YAML scalars of different types)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _f(default: float | None, **bounds: float) -> KeySpec:
    return KeySpec("float", default, nullable=default is None, **bounds)


def _i(default: int | None, **bounds: float) -> KeySpec:
    return KeySpec("int", default, nullable=default is None, **bounds)


def _lit(default: Any, *choices: Any) -> KeySpec:
    return KeySpec("literal", default, choices=tuple(choices))


# Every leaf key of tauray_trainers.config.TrainConfig, with "/" between sections.
CONFIG_KEYS: dict[str, KeySpec] = {
    "method": _lit("simclr", "simclr", "clip", "dino"),
    "epochs": _i(10, ge=1),
    "seed": _i(0),
    "batch_size_per_worker": _i(64, ge=2),
    "global_batch_size": _i(None, ge=2),
    "precision": _lit("fp32", "fp32", "bf16", "fp16"),
    "data/name": _lit(
        "digits-cluttered",
        "digits",
        "digits-cluttered",
        "cifar10",
        "stl10",
        "imagefolder",
        "manifest",
    ),
    "data/root": KeySpec("str", None, nullable=True),
    "data/download": KeySpec("bool", False),
    "data/image_size": _i(32, ge=8, le=1024),
    "data/val_fraction": _f(0.2, gt=0.0, lt=1.0),
    "data/max_train_samples": _i(None, ge=1),
    "data/max_val_samples": _i(None, ge=1),
    "data/loader_workers": _i(0, ge=0),
    "data/horizontal_flip": KeySpec("bool", None, nullable=True),
    "data/crop_min_scale": _f(None, gt=0.0, le=1.0),
    "data/seed": _i(0),
    "model/backbone": _lit("small_cnn", "small_cnn", "resnet18", "resnet50", "vit_tiny"),
    "model/pretrained_weights": KeySpec("str", None, nullable=True),
    "model/embedding_dim": _i(128, ge=2),
    "model/hidden_dim": _i(512, ge=2),
    "model/text_width": _i(128, ge=8),
    "model/text_layers": _i(2, ge=1),
    "model/text_heads": _i(4, ge=1),
    "model/context_length": _i(48, ge=4),
    "model/dino_out_dim": _i(1024, ge=2),
    "optimizer/name": _lit("adamw", "adamw", "sgd"),
    "optimizer/lr": _f(1e-3, gt=0.0),
    "optimizer/weight_decay": _f(1e-4, ge=0.0),
    "optimizer/momentum": _f(0.9, ge=0.0, lt=1.0),
    "optimizer/warmup_epochs": _f(1.0, ge=0.0),
    "optimizer/min_lr_ratio": _f(0.0, ge=0.0, le=1.0),
    "optimizer/grad_clip_norm": _f(None, gt=0.0),
    "optimizer/lr_scaling": _lit("none", "none", "linear", "sqrt"),
    "optimizer/base_batch_size": _i(256, ge=1),
    "temperature/mode": _lit("fixed", "fixed", "learnable", "scheduled"),
    "temperature/value": _f(0.1, gt=0.0),
    "temperature/min": _f(0.01, gt=0.0),
    "temperature/max": _f(1.0, gt=0.0),
    "temperature/lr_multiplier": _f(1.0, gt=0.0),
    "temperature/frozen_epochs": _f(0.0, ge=0.0),
    "temperature/schedule": _lit("cosine", "constant", "linear_warmup", "step", "cosine"),
    "temperature/start": _f(None, gt=0.0),
    "temperature/warmup_epochs": _f(0.0, ge=0.0),
    "temperature/period_epochs": _f(None, gt=0.0),
    "temperature/step_epochs": _f(1.0, gt=0.0),
    "temperature/gamma": _f(0.5, gt=0.0),
    "loss/name": _lit("infonce", "infonce", "sigmoid"),
    "loss/chunk_size": _i(None, ge=1),
    "loss/sigmoid_bias": _f(-10.0),
    "dino/num_global_crops": _lit(2, 2),
    "dino/num_local_crops": _i(4, ge=0, le=16),
    "dino/local_crop_size": _i(16, ge=8),
    "dino/student_temperature": _f(0.1, gt=0.0),
    "dino/teacher_temperature": _f(0.04, gt=0.0),
    "dino/teacher_temperature_start": _f(0.04, gt=0.0),
    "dino/teacher_temperature_warmup_epochs": _f(0.0, ge=0.0),
    "dino/teacher_momentum": _f(0.996, ge=0.0, lt=1.0),
    "dino/center_momentum": _f(0.9, ge=0.0, lt=1.0),
    "eval/knn_k": _i(20, ge=1),
    "eval/knn_temperature": _f(0.07, gt=0.0),
    "eval/every_epochs": _i(1, ge=1),
    "checkpoint/every_epochs": _i(1, ge=1),
    "checkpoint/keep": _i(2, ge=1),
}

SECTIONS: frozenset[str] = frozenset(key.split("/")[0] for key in CONFIG_KEYS if "/" in key)

# Keys that only one method reads: searching them under another method wastes every trial.
METHOD_ONLY_KEYS: dict[str, str] = {
    "loss/name": "clip",
    "loss/sigmoid_bias": "clip",
    "model/text_width": "clip",
    "model/text_layers": "clip",
    "model/text_heads": "clip",
    "model/context_length": "clip",
    "model/dino_out_dim": "dino",
    **{key: "dino" for key in CONFIG_KEYS if key.startswith("dino/")},
}

# Contrastive temperatures a ``tied`` parameter may set (softmax over negatives).
TIEABLE_KEYS: tuple[str, ...] = (
    "temperature/value",
    "temperature/min",
    "temperature/max",
    "temperature/start",
)

# The batch-size keys a ``tied`` temperature may follow.
BATCH_SIZE_KEYS: tuple[str, ...] = ("global_batch_size",)

# Mirrors tauray_trainers.metrics.ALL_METRICS (checked by a test).
KNOWN_METRICS: tuple[str, ...] = (
    "epoch",
    "step",
    "train/loss",
    "train/temperature",
    "train/temperature_at_bound",
    "train/teacher_temperature",
    "train/lr",
    "val/knn_top1",
    "val/zeroshot_top1",
    "val/recall_at_1",
    "val/recall_at_5",
    "val/alignment",
    "val/uniformity",
    "perf/samples_per_second",
    "dist/state_divergence",
    "cost/worker_seconds",
    "cost/gpu_seconds",
    "cost/cpu_seconds",
    "cost/samples_seen",
)

# Mirrors tauray_trainers.metrics.DEFAULT_OBJECTIVE (checked by a test).
DEFAULT_OBJECTIVES: dict[str, tuple[str, str]] = {
    "simclr": ("val/knn_top1", "max"),
    "dino": ("val/knn_top1", "max"),
    "clip": ("val/zeroshot_top1", "max"),
}


def normalize_key(key: str) -> str:
    """The canonical ``/`` form of a config path written with dots or slashes.

    A leading ``train_loop_config`` component (the Ray Tune name) is dropped, so
    ``temperature.value``, ``temperature/value`` and ``train_loop_config/temperature/value``
    all name the same key.
    """
    parts = [part for part in key.replace(".", "/").split("/") if part]
    if parts and parts[0] == "train_loop_config":
        parts = parts[1:]
    return "/".join(parts)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (only mappings are descended into)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        path = f"{prefix}/{name}" if prefix else str(name)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        parts = path.split("/")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new nested dict: ``base`` with ``update`` merged in (``update`` wins on leaves)."""
    merged: dict[str, Any] = {
        key: deep_merge(value, {}) if isinstance(value, Mapping) else value
        for key, value in base.items()
    }
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        elif isinstance(value, Mapping):
            merged[key] = deep_merge(value, {})
        else:
            merged[key] = value
    return merged


def keys_in_section(section: str) -> list[str]:
    """The keys directly under ``section`` ("" for the top level), for error messages."""
    depth = section.count("/") + 1 if section else 0
    names = set()
    for key in CONFIG_KEYS:
        parts = key.split("/")
        if section and "/".join(parts[:depth]) != section:
            continue
        if len(parts) > depth:
            names.add(parts[depth])
    return sorted(names)

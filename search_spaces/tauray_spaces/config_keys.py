"""What a search space may set: the trainer's configuration keys, its metrics and methods.

Every value a space samples has to land on a real key of the trainer's ``TrainConfig`` with a
value that key accepts. :data:`CONFIG_KEYS` is derived from ``TrainConfig``'s pydantic fields
(one :class:`KeySpec` per leaf key: type, ``Literal`` choices, the ``ge``/``gt``/``le``/``lt``
bounds, default), so a new trainer setting is searchable, and checked in YAML files, the moment
it exists. The metric names and default objectives are the trainer's own
(:mod:`tauray_trainers.metrics`). What stays here is search policy: which keys only one method
reads, which temperatures a ``tied`` parameter may set.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tauray_spaces.words import did_you_mean
from tauray_trainers import metrics
from tauray_trainers.config import TRAIN_LOOP_CONFIG, Method, TrainConfig, split_path

Kind = Literal["float", "int", "str", "bool", "literal"]

METHODS: tuple[str, ...] = typing.get_args(Method)


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
            return any(same_scalar(value, choice) for choice in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return math.isfinite(value) and self.within_bounds(value)


def same_scalar(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` (YAML scalars of different types)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


_KINDS: dict[Any, Kind] = {float: "float", int: "int", str: "str", bool: "bool"}
_BOUNDS = ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt"))


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def key_spec(path: str, field: FieldInfo) -> KeySpec:
    """The :class:`KeySpec` of one pydantic field of the trainer's config.

    Raises:
        TypeError: a field type this table cannot describe (teach :class:`KeySpec` the type).
    """
    annotation = field.annotation
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"config key {path}: cannot describe the union {annotation}")
        annotation, nullable = members[0], True
    bounds: dict[str, float] = {}
    for item in field.metadata:
        for cls, name in _BOUNDS:
            if isinstance(item, cls):
                bounds[name] = getattr(item, name)
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return KeySpec("literal", default, choices=choices, nullable=nullable, **bounds)
    if annotation not in _KINDS:
        raise TypeError(
            f"config key {path}: cannot describe type {annotation}; KeySpec knows float, int, "
            "str, bool and Literal"
        )
    return KeySpec(_KINDS[annotation], default, nullable=nullable, **bounds)


def derive_keys(model: type[BaseModel], prefix: str = "") -> dict[str, KeySpec]:
    """Every leaf key of ``model`` (sections descended into) as ``/`` paths, in field order."""
    table: dict[str, KeySpec] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if _is_section(field):
            table.update(derive_keys(field.annotation, path + "/"))  # type: ignore[arg-type]
        else:
            table[path] = key_spec(path, field)
    return table


#: Every leaf key of ``TrainConfig``, with "/" between sections.
CONFIG_KEYS: dict[str, KeySpec] = derive_keys(TrainConfig)

SECTIONS: frozenset[str] = frozenset(
    name for name, field in TrainConfig.model_fields.items() if _is_section(field)
)

# Keys that only one method reads: searching them under another method wastes every trial.
METHOD_ONLY_KEYS: dict[str, str] = {
    "loss/name": "clip",
    "loss/sigmoid_bias": "clip",
    "loss/positives": "clip",
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

#: The metric names the trainer reports.
KNOWN_METRICS: tuple[str, ...] = metrics.ALL_METRICS

#: The objective a space optimises unless it says otherwise, per method: (metric, mode).
DEFAULT_OBJECTIVES: dict[str, tuple[str, str]] = metrics.DEFAULT_OBJECTIVE


def normalize_key(key: str) -> str:
    """The canonical ``/`` form of a config path written with dots or slashes.

    A leading ``train_loop_config`` component (the Ray Tune name) is dropped, so
    ``temperature.value``, ``temperature/value`` and ``train_loop_config/temperature/value``
    all name the same key.
    """
    parts = split_path(key)
    if parts and parts[0] == TRAIN_LOOP_CONFIG:
        parts = parts[1:]
    return "/".join(parts)


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


def key_problem(key: str) -> str:
    """Why ``key`` (normalised) is not a config key, with what is allowed there."""
    parts = key.split("/")
    if len(parts) > 1 and parts[0] in SECTIONS:
        section = parts[0]
        options = keys_in_section(section)
        hint = did_you_mean(parts[-1], options)
        return f"keys under {section}: {', '.join(options)}{hint}"
    top = keys_in_section("")
    return f"top-level keys and sections: {', '.join(top)}" + did_you_mean(key, list(CONFIG_KEYS))

"""tauray_spaces keeps its own copy of the trainer's config keys, metrics and default objectives
(it may not import tauray_trainers); these tests derive them from the trainer and compare."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from tauray_spaces import CONFIG_KEYS, KeySpec, normalize_key
from tauray_spaces.config_keys import DEFAULT_OBJECTIVES, KNOWN_METRICS, deep_merge, keys_in_section
from tauray_trainers import metrics
from tauray_trainers.config import TrainConfig


def _spec_of(field: Any) -> KeySpec:
    annotation = field.annotation
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(members) == 1, f"unexpected union {annotation}"
        annotation, nullable = members[0], True
    bounds: dict[str, float] = {}
    for item in field.metadata:
        for cls, name in ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt")):
            if isinstance(item, cls):
                bounds[name] = getattr(item, name)
    if typing.get_origin(annotation) is typing.Literal:
        return KeySpec("literal", field.default, choices=typing.get_args(annotation), **bounds)
    kinds = {float: "float", int: "int", str: "str", bool: "bool"}
    assert annotation in kinds, f"unexpected annotation {annotation}"
    return KeySpec(kinds[annotation], field.default, nullable=nullable, **bounds)


def _derive(model: type[BaseModel], prefix: str = "") -> dict[str, KeySpec]:
    table: dict[str, KeySpec] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            table.update(_derive(annotation, path + "/"))
        else:
            table[path] = _spec_of(field)
    return table


def test_config_keys_match_train_config_exactly() -> None:
    derived = _derive(TrainConfig)
    missing = sorted(set(derived) - set(CONFIG_KEYS))
    extra = sorted(set(CONFIG_KEYS) - set(derived))
    assert not missing, f"add to tauray_spaces/config_keys.py CONFIG_KEYS: {missing}"
    assert not extra, f"remove from tauray_spaces/config_keys.py CONFIG_KEYS: {extra}"
    different = {k: (CONFIG_KEYS[k], derived[k]) for k in derived if CONFIG_KEYS[k] != derived[k]}
    assert not different, f"update CONFIG_KEYS (ours, trainer's): {different}"


def test_metrics_and_default_objectives_match_the_trainer() -> None:
    assert set(KNOWN_METRICS) == set(metrics.ALL_METRICS)
    assert len(KNOWN_METRICS) == len(set(KNOWN_METRICS))
    assert DEFAULT_OBJECTIVES == metrics.DEFAULT_OBJECTIVE


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("epochs", [1, 200], [0, 1.5, True, "3", None]),
        ("global_batch_size", [None, 2, 4096], [1, 2.0]),
        ("temperature/mode", ["fixed", "learnable", "scheduled"], ["cosine", 1, None]),
        ("data/val_fraction", [0.5, 1e-6], [0.0, 1.0, float("nan")]),
        ("optimizer/lr", [1, 1e-4], [0, -1e-3, float("inf")]),
        ("data/download", [True, False], [1, "yes"]),
        ("dino/num_global_crops", [2], [1, 3, True, "2"]),
    ],
)
def test_key_spec_accepts_what_the_trainer_accepts(key: str, good: list, bad: list) -> None:
    from tauray_trainers.config import build_config

    spec = CONFIG_KEYS[key]
    for value in good:
        assert spec.accepts(value), (key, value)
        tree: dict[str, Any] = {}
        parts = key.split("/")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        build_config(tree)  # the trainer agrees
    for value in bad:
        assert not spec.accepts(value), (key, value)


def test_key_spelling_and_tree_helpers() -> None:
    assert normalize_key("temperature.value") == "temperature/value"
    assert normalize_key("train_loop_config/temperature/value") == "temperature/value"
    assert normalize_key("train_loop_config.optimizer.lr") == "optimizer/lr"
    assert "value" in keys_in_section("temperature")
    assert "temperature" in keys_in_section("") and "epochs" in keys_in_section("")
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}  # not mutated

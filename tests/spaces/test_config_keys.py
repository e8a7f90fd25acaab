"""tauray_spaces derives its table of config keys from the trainer's TrainConfig: every leaf key
with its type, choices, bounds and default, and the trainer's metric names."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from tauray_spaces import CONFIG_KEYS, KNOWN_METRICS, KeySpec, normalize_key
from tauray_spaces.config_keys import (
    BATCH_SIZE_KEYS,
    DEFAULT_OBJECTIVES,
    METHOD_ONLY_KEYS,
    METHODS,
    SECTIONS,
    TIEABLE_KEYS,
    derive_keys,
    key_problem,
    keys_in_section,
)
from tauray_trainers import metrics
from tauray_trainers.config import TrainConfig, build_config, flatten, set_path


def test_every_leaf_of_the_config_is_a_key_with_the_trainers_default() -> None:
    defaults = flatten(TrainConfig().to_dict())
    assert list(CONFIG_KEYS) == list(defaults)
    for key, default in defaults.items():
        assert CONFIG_KEYS[key].default == default, key
        assert CONFIG_KEYS[key].accepts(default), key
    assert SECTIONS == {key.split("/")[0] for key in CONFIG_KEYS if "/" in key}
    assert "temperature" in SECTIONS and "epochs" not in SECTIONS


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        ("epochs", KeySpec("int", 10, ge=1)),
        ("seed", KeySpec("int", 0)),
        ("global_batch_size", KeySpec("int", None, nullable=True, ge=2)),
        ("method", KeySpec("literal", "simclr", choices=("simclr", "clip", "dino"))),
        ("data/val_fraction", KeySpec("float", 0.2, gt=0.0, lt=1.0)),
        ("data/root", KeySpec("str", None, nullable=True)),
        ("data/horizontal_flip", KeySpec("bool", None, nullable=True)),
        ("data/crop_min_scale", KeySpec("float", None, nullable=True, gt=0.0, le=1.0)),
        ("optimizer/momentum", KeySpec("float", 0.9, ge=0.0, lt=1.0)),
        ("loss/sigmoid_bias", KeySpec("float", -10.0)),
        ("dino/num_global_crops", KeySpec("literal", 2, choices=(2,))),
        (
            "temperature/schedule",
            KeySpec("literal", "cosine", choices=("constant", "linear_warmup", "step", "cosine")),
        ),
    ],
)
def test_keys_carry_the_fields_type_bounds_choices_and_default(key: str, spec: KeySpec) -> None:
    assert CONFIG_KEYS[key] == spec


def test_a_new_field_is_a_key_at_once_and_an_unknown_type_is_an_error() -> None:
    class Section(BaseModel):
        rate: float = Field(0.5, gt=0.0, le=2.0)
        mode: Literal["a", "b"] | None = None

    class Config(BaseModel):
        section: Section = Section()
        count: int = Field(3, ge=1, lt=10)

    assert derive_keys(Config) == {
        "section/rate": KeySpec("float", 0.5, gt=0.0, le=2.0),
        "section/mode": KeySpec("literal", None, choices=("a", "b"), nullable=True),
        "count": KeySpec("int", 3, ge=1, lt=10),
    }

    class Odd(BaseModel):
        sizes: list[int] = [1]

    with pytest.raises(TypeError, match="config key sizes: cannot describe type"):
        derive_keys(Odd)


def _values_near_the_bounds(spec: KeySpec) -> list[Any]:
    if spec.kind == "literal":
        return [*spec.choices, "nope", None]
    if spec.kind == "bool":
        return [True, False, None, "yes"]
    if spec.kind == "str":
        return ["x", None]
    values: list[Any] = [spec.default, None]
    for bound in (spec.ge, spec.gt, spec.le, spec.lt):
        if bound is not None:
            values += [bound, bound - 1, bound + 1] if spec.kind == "int" else [bound]
            values += [] if spec.kind == "int" else [bound - 1e-3, bound + 1e-3]
    return [v for v in values if v is not None or spec.nullable]


# The one rule across keys: temperature/min < temperature/max. Move the other end out of the way.
_ROOM = {"temperature/min": ("temperature/max", 1e9), "temperature/max": ("temperature/min", 1e-9)}


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_what_a_key_spec_accepts_the_trainer_accepts(key: str) -> None:
    spec = CONFIG_KEYS[key]
    values = _values_near_the_bounds(spec)
    for value in values:
        tree: dict[str, Any] = {}
        set_path(tree, key, value, "/")
        if key in _ROOM:
            set_path(tree, *_ROOM[key], "/")
        try:
            build_config(tree)
        except ValueError as error:
            assert not spec.accepts(value), (key, value, str(error))
        else:
            # Lax pydantic takes more (2.0 for an int); a space never samples what it refuses.
            assert spec.accepts(value) or isinstance(value, (int, float, str)), (key, value)
    if spec.kind == "literal" or any(b is not None for b in (spec.ge, spec.gt, spec.le, spec.lt)):
        assert any(not spec.accepts(value) for value in values), key


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
def test_key_spec_accepts_and_refuses(key: str, good: list, bad: list) -> None:
    spec = CONFIG_KEYS[key]
    for value in good:
        assert spec.accepts(value), (key, value)
        tree: dict[str, Any] = {}
        set_path(tree, key, value, "/")
        build_config(tree)  # the trainer agrees
    for value in bad:
        assert not spec.accepts(value), (key, value)


def test_metrics_methods_and_objectives_are_the_trainers() -> None:
    assert KNOWN_METRICS == metrics.ALL_METRICS
    assert DEFAULT_OBJECTIVES == metrics.DEFAULT_OBJECTIVE
    assert set(METHODS) == set(DEFAULT_OBJECTIVES) == {"simclr", "clip", "dino"}


def test_the_search_policy_names_real_keys() -> None:
    for key in [*METHOD_ONLY_KEYS, *TIEABLE_KEYS, *BATCH_SIZE_KEYS]:
        assert key in CONFIG_KEYS, key
    assert set(METHOD_ONLY_KEYS.values()) <= set(METHODS)
    assert METHOD_ONLY_KEYS["dino/teacher_momentum"] == "dino"


def test_key_spelling_and_sections() -> None:
    assert normalize_key("temperature.value") == "temperature/value"
    assert normalize_key("train_loop_config/temperature/value") == "temperature/value"
    assert normalize_key("train_loop_config.optimizer.lr") == "optimizer/lr"
    assert normalize_key("/epochs/") == "epochs"
    assert "value" in keys_in_section("temperature")
    assert "temperature" in keys_in_section("") and "epochs" in keys_in_section("")
    assert key_problem("temperature/valu").startswith("keys under temperature: ")
    assert key_problem("temperature/valu").endswith("(did you mean 'value'?)")
    assert key_problem("epoch").endswith("(did you mean 'epochs'?)")

"""The config package: nested-dict paths, the --set parser, the safe YAML reader, resources."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest

from tauray_trainers.config import (
    TRAIN_LOOP_CONFIG,
    TrainConfig,
    apply_overrides,
    build_config,
    check_resources,
    deep_merge,
    flatten,
    get_path,
    override_items,
    parse_override,
    parse_value,
    set_path,
    split_path,
    unflatten,
    with_overrides,
)
from tauray_trainers.config.safe_yaml import MAX_DEPTH, MAX_NODES, load_yaml

# ---- paths --------------------------------------------------------------------------------------


def test_split_path_takes_either_separator_unless_told() -> None:
    assert split_path("train_loop_config/temperature.value") == [
        TRAIN_LOOP_CONFIG,
        "temperature",
        "value",
    ]
    assert split_path("a.b/c", "/") == ["a.b", "c"]
    assert split_path("/a//b/") == ["a", "b"]
    assert split_path("") == []


def test_deep_merge_copies_and_merges_sections() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    update = {"a": {"b": 5, "e": {"f": 6}}, "d": {"x": 1}}
    merged = deep_merge(base, update)
    assert merged == {"a": {"b": 5, "c": [1, 2], "e": {"f": 6}}, "d": {"x": 1}}
    merged["a"]["c"].append(3)
    merged["a"]["e"]["f"] = 0
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert update == {"a": {"b": 5, "e": {"f": 6}}, "d": {"x": 1}}


def test_flatten_and_unflatten_are_inverse() -> None:
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": None}
    flat = flatten(tree)
    assert flat == {"a/b": 1, "a/c/d": [1, 2], "a/e": {}, "f": None}
    assert unflatten(flat) == tree
    dotted = flatten(tree, ".")
    assert "a.c.d" in dotted and unflatten(dotted, ".") == tree
    assert flatten(tree, keep_empty=False) == {"a/b": 1, "a/c/d": [1, 2], "f": None}
    assert flatten({"b": 1}, ".", "a") == {"a.b": 1}


def test_unflatten_refuses_a_path_through_a_value() -> None:
    with pytest.raises(ValueError, match="'a' is a value, not a section"):
        unflatten({"a": 1, "a/b": 2})
    with pytest.raises(ValueError, match="'a' is a section, not a value"):
        unflatten({"a/b": 2, "a": 1})


def test_get_and_set_path() -> None:
    tree: dict[str, Any] = {}
    set_path(tree, "temperature.value", 0.2)
    set_path(tree, "temperature/mode", "fixed")
    set_path(tree, "a/b.c", 1, "/")
    assert tree == {"temperature": {"value": 0.2, "mode": "fixed"}, "a": {"b.c": 1}}
    assert get_path(tree, "temperature/value") == 0.2
    assert get_path(tree, "a/b.c", "/") == 1
    assert get_path(tree, "temperature.min", default=None) is None
    with pytest.raises(KeyError, match="has no 'min'"):
        get_path(tree, "temperature.min")
    with pytest.raises(ValueError, match="empty config key"):
        set_path(tree, "./", 1)


# ---- overrides ----------------------------------------------------------------------------------


def test_values_are_yaml_scalars() -> None:
    assert parse_value("5") == 5
    assert parse_value("1e-4") == 1e-4  # a number, not the YAML 1.1 string
    assert parse_value("0.1") == 0.1
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("fixed") == "fixed"
    assert parse_value("'5'") == "5"
    assert parse_value("") == "" and parse_value("  ") == ""


def test_overrides_set_nested_keys_in_order() -> None:
    tree = {"epochs": 2, "data": {"root": "/data", "name": "cifar10"}}
    result = apply_overrides(
        tree,
        [
            "epochs=5",
            "optimizer.lr=1e-4",
            "temperature/value=0.2",
            "data={name: digits}",
            "epochs=6",
        ],
    )
    assert result == {
        "epochs": 6,
        "data": {"root": "/data", "name": "digits"},
        "optimizer": {"lr": 1e-4},
        "temperature": {"value": 0.2},
    }
    assert tree == {"epochs": 2, "data": {"root": "/data", "name": "cifar10"}}  # not mutated
    config = build_config(result)
    assert config.optimizer.lr == 1e-4 and config.data.name == "digits"


def test_override_items_from_strings_and_mappings() -> None:
    assert parse_override(" temperature.value = 0.5") == ("temperature.value", 0.5)
    assert override_items(["data/x={a: 1, b: {c: null}}"]) == [
        ("data/x/a", 1),
        ("data/x/b/c", None),
    ]
    assert override_items({"temperature.mode": "fixed", "data": {"seed": 3}}) == [
        ("temperature.mode", "fixed"),
        ("data.seed", 3),
    ]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("epochs", "override 'epochs' is not of the form key=value"),
        ("=5", "override '=5' has an empty key"),
        ("./=5", "has an empty key"),
        ("epochs=[1, 2]", "override epochs='[1, 2]': a list is not a config value"),
        ("epochs={}", "override epochs='{}': an empty mapping is not a config value"),
        ("data.root=2020-01-01", "override data.root='2020-01-01': a date is not a config value"),
        ("data={1: x}", "1 is not a config key"),
        ("epochs=!!python/object/apply:os.system ['true']", "'!!python/object/apply:os.system'"),
        ("epochs=!!python/name:os.system", "is not allowed (plain values only)"),
        ("epochs=&a [*a]", "an alias refers to its own anchor"),
        ("epochs=[1", "override epochs='[1': YAML syntax error"),
        ("epochs={a: 1, a: 2}", "duplicate key 'a'"),
    ],
)
def test_bad_overrides_are_one_line_errors(item: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        apply_overrides({}, [item])
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    for text in ("[" * 100_000, "{a: " * 5_000, "- " * 5_000 + "x"):
        with pytest.raises(ValueError, match=f"nesting deeper than {MAX_DEPTH} levels") as caught:
            parse_override(f"epochs={text}")
        assert "override epochs=" in str(caught.value) and len(str(caught.value)) < 300


def test_alias_bombs_are_refused() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for index, name in enumerate("bcdef"):
        previous = "abcde"[index]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    bomb = "{" + ", ".join(levels) + "}"
    with pytest.raises(ValueError, match=f"aliases expand to more than {MAX_NODES} values"):
        parse_override(f"data={bomb}")
    # A few aliases are fine: the same value used twice.
    assert load_yaml("a: &v 3\nb: *v\n") == {"a": 3, "b": 3}


def test_aliases_cannot_nest_past_the_depth_limit() -> None:
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [[[[[[[[[[*l{i - 1}]]]]]]]]]]" for i in range(1, 8)]
    with pytest.raises(ValueError, match="aliases expand to nesting deeper than"):
        load_yaml("\n".join(lines), "file.yaml")


def test_the_safe_loader_leaves_pyyaml_alone() -> None:
    import yaml

    load_yaml("a: 1e-4")
    assert yaml.safe_load("a: 1e-4") == {"a": "1e-4"}


# ---- schema -------------------------------------------------------------------------------------


def test_with_overrides_builds_a_new_config() -> None:
    config = build_config({"temperature": {"value": 0.1}})
    changed = with_overrides(config, {"temperature": {"mode": "learnable", "value": 0.2}})
    assert changed.temperature.mode == "learnable" and changed.temperature.value == 0.2
    assert config.temperature.mode == "fixed" and isinstance(changed, TrainConfig)
    with pytest.raises(ValueError, match=r"unknown config key 'temperature\.valu'"):
        with_overrides(config, {"temperature": {"valu": 0.2}})


def test_the_config_package_loads_no_torch() -> None:
    code = "import sys, tauray_trainers.config; print('torch' in sys.modules)"
    # The child imports the modules this test sees (sys.path), not an installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"


# ---- resources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "gpus", "cpus"), [(1, 0, 1), (4, 1, 2), (2, 0.5, 0.25), (1, 0.0, 1e-3)]
)
def test_valid_resources(workers: int, gpus: float, cpus: float) -> None:
    check_resources(workers, gpus, cpus)


@pytest.mark.parametrize(
    ("workers", "gpus", "cpus", "message"),
    [
        (0, 0, 1, "workers must be an int >= 1, got 0"),
        (True, 0, 1, "workers must be an int >= 1, got True"),
        (1.0, 0, 1, "workers must be an int >= 1, got 1.0"),
        (1, -1, 1, "gpus_per_worker must be a finite number >= 0, got -1"),
        (1, math.nan, 1, "gpus_per_worker must be a finite number >= 0, got nan"),
        (1, math.inf, 1, "gpus_per_worker must be a finite number >= 0, got inf"),
        (1, "1", 1, "gpus_per_worker must be a finite number >= 0, got '1'"),
        (1, 0, 0, "cpus_per_worker must be a finite number > 0, got 0 (a worker that reserves"),
        (1, 0, -0.5, "cpus_per_worker must be a finite number > 0, got -0.5"),
        (1, 0, math.inf, "cpus_per_worker must be a finite number > 0, got inf"),
        (1, 0, True, "cpus_per_worker must be a finite number > 0, got True"),
    ],
)
def test_invalid_resources_name_the_setting(
    workers: Any, gpus: Any, cpus: Any, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        check_resources(workers, gpus, cpus)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)

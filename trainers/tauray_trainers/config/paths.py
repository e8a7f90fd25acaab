"""Paths into nested dicts: merge, flatten, unflatten, get and set.

A run's configuration travels both as a nested dict (a YAML file, ``TrainConfig.to_dict()``) and
as flat paths: ``--set temperature.value=0.1`` and MLflow params use dots, search spaces and
Ray Tune use slashes (``train_loop_config/temperature/value``). Every conversion between the two
goes through this module.

Functions that read a path written by a person (:func:`set_path`, :func:`get_path`) accept
either separator unless told which one; :func:`flatten` and :func:`unflatten` take the one
separator they write or read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Separators a person may write between sections (``temperature.value``, ``temperature/value``).
ANY_SEPARATOR: str = "./"

_MISSING: Any = object()


def split_path(path: str, separator: str = ANY_SEPARATOR) -> list[str]:
    """The parts of ``path``, split at any character of ``separator``; empty parts dropped.

    ``split_path("train_loop_config/temperature.value")`` is
    ``["train_loop_config", "temperature", "value"]``.
    """
    parts = [path]
    for character in separator:
        parts = [piece for part in parts for piece in part.split(character)]
    return [part for part in parts if part]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new nested dict: ``base`` with ``update`` merged in (``update`` wins on leaves).

    Nested mappings become plain dicts and leaves are deep copies, so changing the result
    changes neither argument.
    """
    merged: dict[str, Any] = {key: _copy(value) for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = _copy(value)
    return merged


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    return copy.deepcopy(value)


def flatten(
    tree: Mapping[str, Any],
    separator: str = "/",
    prefix: str = "",
    *,
    keep_empty: bool = True,
) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``: every leaf under its path.

    Only mappings are descended into; lists and scalars are leaves.

    Args:
        tree: the nested dict.
        separator: what goes between the parts of a path.
        prefix: a path to put in front of every key (no separator after it needed).
        keep_empty: an empty mapping is a leaf of its own (``{"a": {}}`` -> ``{"a": {}}``, so
            :func:`unflatten` gives the tree back); False drops it.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and (value or not keep_empty):
            flat.update(flatten(value, separator, path, keep_empty=keep_empty))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any], separator: str = "/") -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}``, the inverse of :func:`flatten`.

    Raises:
        ValueError: a path runs through another path's value (``{"a": 1, "a/b": 2}``).
    """
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(tree, path, value, separator)
    return tree


def get_path(
    tree: Mapping[str, Any], path: str, separator: str = ANY_SEPARATOR, default: Any = _MISSING
) -> Any:
    """``tree[a][b][c]`` for ``path == "a.b.c"`` (or ``a/b/c``).

    Raises:
        KeyError: naming the path and the missing part, when there is no ``default``.
    """
    node: Any = tree
    for part in split_path(path, separator):
        if not isinstance(node, Mapping) or part not in node:
            if default is not _MISSING:
                return default
            raise KeyError(f"{path!r} has no {part!r}")
        node = node[part]
    return node


def set_path(tree: dict[str, Any], path: str, value: Any, separator: str = ANY_SEPARATOR) -> None:
    """Set ``tree[a][b][c] = value`` for ``path == "a.b.c"`` (or ``a/b/c``), making sections.

    Raises:
        ValueError: the path is empty, or one of its parts holds a value, not a section.
    """
    parts = split_path(path, separator)
    if not parts:
        raise ValueError(f"empty config key {path!r}")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"config key {path!r}: {part!r} is a value, not a section")
        node = child
    if isinstance(node.get(parts[-1]), dict) and not isinstance(value, Mapping):
        raise ValueError(f"config key {path!r}: {parts[-1]!r} is a section, not a value")
    node[parts[-1]] = value

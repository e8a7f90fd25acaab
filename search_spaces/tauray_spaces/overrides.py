"""Pinning settings of a space from the command line (``tauray tune --set key=value``).

The ``key=value`` strings are parsed by the trainer's one ``--set`` parser
(:mod:`tauray_trainers.config.overrides`); here each key must be a training config key and each
value one the key accepts, then the space's parameters and baselines are adjusted to the pinned
values (:func:`pin_overrides`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tauray_spaces.config_keys import CONFIG_KEYS, key_problem, normalize_key, same_scalar
from tauray_spaces.words import short
from tauray_trainers.config import flatten, override_items, unflatten


def override_pairs(overrides: Mapping[str, Any] | Iterable[str]) -> list[tuple[str, Any]]:
    """``["epochs=3", ...]`` or ``{"temperature.mode": "fixed"}`` as checked ``(key, value)``
    pairs, keys in the canonical ``/`` form (:func:`~tauray_spaces.config_keys.normalize_key`).

    Raises:
        ValueError: a malformed override, an unknown key or a value the key does not accept
            (one line).
    """
    pairs = [(normalize_key(key), value) for key, value in override_items(overrides)]
    for key, value in pairs:
        if key not in CONFIG_KEYS:
            raise ValueError(f"override {key!r}: unknown training config key; {key_problem(key)}")
        if not CONFIG_KEYS[key].accepts(value):
            raise ValueError(
                f"override {key}={short(value)} is not allowed; {key} takes "
                f"{CONFIG_KEYS[key].describe()}"
            )
    return pairs


def pin_overrides(
    data: dict[str, Any], pairs: Sequence[tuple[str, Any]], name: str, method: str
) -> dict[str, Any]:
    """A space file's ``data`` with ``(key, value)`` overrides pinned (the file is not checked).

    A key that is a parameter becomes a constant for every trial, whatever its condition was
    (parameters whose conditions it can no longer satisfy are dropped, and so are the baselines'
    values for it); any other key goes into ``fixed``.

    Args:
        data: the space as :meth:`~tauray_spaces.space.SearchSpace.to_dict` writes it.
        pairs: what :func:`override_pairs` returns.
        name, method: the space's name and method, for errors.

    Raises:
        ValueError: ``method`` overridden with another method, or every parameter pinned.
    """
    data = copy.deepcopy(data)
    fixed: dict[str, Any] = flatten(data.get("fixed", {}), keep_empty=False)
    parameters: list[dict[str, Any]] = data["parameters"]
    pinned: dict[str, Any] = {}
    for key, value in pairs:
        if key == "method":
            if value != method:
                raise ValueError(
                    f"override method={value!r}: space {name!r} searches {method}; "
                    "pick a space for that method (tauray spaces list)"
                )
            continue
        entry = next((p for p in parameters if p["key"] == key), None)
        if entry is None:
            fixed[key] = value
            continue
        pinned[key] = value
        # No `when`: a pinned setting holds in every trial (dropping it with its condition would
        # discard what the user set, and leave e.g. temperature.min >= temperature.max unseen).
        replacement = {"key": key, "distribution": "constant", "value": value}
        if "help" in entry:
            replacement["help"] = entry["help"]
        parameters[parameters.index(entry)] = replacement
    changed = True
    while changed:  # drop parameters whose conditions can no longer hold
        changed = False
        present = {p["key"]: p for p in parameters}
        for entry in list(parameters):
            for name, wanted in entry.get("when", {}).items():
                parent = present.get(name)
                options = wanted if isinstance(wanted, list) else [wanted]
                if parent is None or (
                    parent["distribution"] == "constant"
                    and not any(same_scalar(parent["value"], o) for o in options)
                ):
                    parameters.remove(entry)
                    changed = True
                    break
            if entry in parameters and entry.get("distribution") == "tied":
                if entry["to"] not in present:
                    parameters.remove(entry)
                    changed = True
    for entry in parameters:  # a pinned parent takes one value: narrow its conditions to it
        for name, wanted in entry.get("when", {}).items():
            if name in pinned and isinstance(wanted, list):
                entry["when"][name] = next(o for o in wanted if same_scalar(pinned[name], o))
    keep = {p["key"]: p for p in parameters if p["distribution"] not in ("constant", "tied")}
    points = []
    for point in data.get("points_to_evaluate", []):
        kept = {key: value for key, value in point.items() if key in keep}
        consistent = {
            key: value
            for key, value in kept.items()
            if all(
                name not in pinned
                or any(
                    same_scalar(pinned[name], o)
                    for o in (wanted if isinstance(wanted, list) else [wanted])
                )
                for name, wanted in keep[key].get("when", {}).items()
            )
        }
        if consistent and consistent not in points:
            points.append(consistent)
    data["fixed"] = unflatten(fixed)
    data["points_to_evaluate"] = points
    if not keep:
        raise ValueError(
            f"the overrides {', '.join(k for k, _ in pairs)} pin every parameter of space "
            f"{name!r}; nothing is left to search"
        )
    return data

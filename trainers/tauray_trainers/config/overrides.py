"""``--set key=value``: the one parser of command-line settings (``tauray train`` and ``tune``).

A key is a config path with dots or slashes (``temperature.value``, ``temperature/value``). A
value is YAML read by the bounded safe loader (:mod:`tauray_trainers.config.safe_yaml`) and must
be a scalar: a number, a string, ``true``/``false`` or ``null``; an empty value is the empty
string. A flow mapping sets several keys of one section at once: ``data={name: digits, seed: 1}``
is ``data.name=digits`` plus ``data.seed=1``. Everything else (lists, dates, YAML tags such as
``!!python/object``, alias bombs, deep nesting) is refused with one line naming the key and the
value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from tauray_trainers.config.paths import set_path, split_path
from tauray_trainers.config.safe_yaml import load_yaml

_EXAMPLE = "(e.g. epochs=5)"


def _shown(value: Any) -> str:
    """``value`` as an error shows it: its repr, cut to 60 characters."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _check_scalar(key: str, value: Any, written: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    kind = "an empty mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    raise ValueError(
        f"override {key}={written}: {kind} is not a config value; give one number, string, "
        "true/false or null"
    )


def _leaves(key: str, value: Any, written: str) -> list[tuple[str, Any]]:
    """``(key, value)``, or one pair per leaf when ``value`` is a mapping; scalars only."""
    if not isinstance(value, Mapping) or not value:
        _check_scalar(key, value, written)
        return [(key, value)]
    separator = "/" if "/" in key else "."
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not split_path(name):
            raise ValueError(f"override {key}={written}: {name!r} is not a config key")
        pairs.extend(_leaves(f"{key}{separator}{name.strip()}", item, written))
    return pairs


def parse_value(text: str, key: str = "value") -> Any:
    """Parse the value of one ``key=value`` override (``""`` for an empty value).

    Returns a scalar, or a mapping of scalars (a section's keys).

    Raises:
        ValueError: not YAML, a YAML tag, a non-scalar, too deep or too many aliases (one line
            naming ``key`` and the value).
    """
    if not text.strip():
        return ""
    value = load_yaml(text, f"override {key}={_shown(text)}")
    _leaves(key, value, _shown(text))
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """``"temperature.value=0.1"`` -> ``("temperature.value", 0.1)``.

    Raises:
        ValueError: no ``=``, an empty key, or a value :func:`parse_value` refuses.
    """
    key, separator, text = item.partition("=")
    if not separator:
        raise ValueError(f"override {item!r} is not of the form key=value {_EXAMPLE}")
    key = key.strip()
    if not split_path(key):
        raise ValueError(f"override {item!r} has an empty key; write key=value {_EXAMPLE}")
    return key, parse_value(text, key)


def override_items(overrides: Mapping[str, Any] | Iterable[str]) -> list[tuple[str, Any]]:
    """Overrides as ``(key, scalar)`` pairs in the order given, mappings expanded to leaves.

    Args:
        overrides: ``["epochs=3", "data={name: digits}"]`` (parsed here), or a mapping of keys to
            values that are already Python values (``{"temperature.mode": "fixed"}``).

    Raises:
        ValueError: one line naming the key and the bad value.
    """
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not split_path(key):
                raise ValueError(f"override key {key!r} is not a config key {_EXAMPLE}")
            items.append((key.strip(), value, _shown(value)))
    elif isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of key=value strings, got {overrides!r}")
    else:
        items = []
        for item in overrides:
            key, value = parse_override(str(item))
            items.append((key, value, _shown(str(item).partition("=")[2])))
    return [pair for key, value, written in items for pair in _leaves(key, value, written)]


def apply_overrides(
    tree: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[str]
) -> dict[str, Any]:
    """A deep copy of ``tree`` with ``key=value`` overrides applied, in order.

    Raises:
        ValueError: a malformed override (see :func:`override_items`), or a key that runs
            through a value (``epochs.x=1``).
    """
    result = copy.deepcopy(dict(tree))
    for key, value in override_items(overrides):
        set_path(result, key, value)
    return result

"""How spaces put values and near misses into messages (one line, short, with a suggestion)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any


def short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def value_text(value: Any) -> str:
    """A YAML-like rendering of a scalar: ``true``, ``null``, ``0.1``, ``fixed``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

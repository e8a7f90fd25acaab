"""The YAML search-space format: load a file, validate it, and make a :class:`SearchSpace`.

A space file is a mapping (the built-ins in ``tauray_spaces/builtin/`` are examples)::

    name: my-simclr-space            # letters, digits, - _ .
    description: What it searches and why.
    method: simclr                   # simclr | clip | dino
    objective: {metric: val/knn_top1, mode: max}   # optional (default per method);
                                     # a list of them makes a multi-objective sweep
    fixed:                           # nested training settings every trial gets
      epochs: 6
      data: {name: digits-cluttered}
    parameters:
      - key: temperature/mode        # a training config key, with / or . between sections
        distribution: choice         # uniform | loguniform | int | choice | constant | tied
        choices: [fixed, learnable]
        help: What it does and how to tune it.
      - key: temperature/value
        distribution: loguniform     # uniform/loguniform: low, high (uniform: optional step)
        low: 0.02                    # int: low, high, optional step and log
        high: 1.0                    # choice: choices; constant: value
        when: {temperature/mode: fixed}   # sampled only if every entry holds; a list = any of
      - key: temperature/lr_multiplier
        distribution: loguniform
        low: 0.1
        high: 10.0
        when: {temperature/mode: [learnable]}
    points_to_evaluate:              # optional baselines run first; left-out keys are sampled
      - {temperature/mode: fixed, temperature/value: 0.1}

``tied`` computes a temperature from a batch-size parameter instead of sampling it (``to``,
``value`` at ``reference_batch_size``, ``margin``; see
:func:`tauray_spaces.space.tied_temperature`).
Sampled values and constants override ``fixed``. Every mistake is a ``ValueError`` with one line
that names the file, the key and what is allowed.

The YAML is read by the trainer's bounded safe loader (:mod:`tauray_trainers.config.safe_yaml`:
no tags beyond plain values, no duplicate keys, alias expansion and nesting bounded, ``1e-4`` a
number); the schema is :mod:`tauray_spaces.file_model`, the checks across keys
:mod:`tauray_spaces.checker`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tauray_spaces.space import SearchSpace, space_from_dict
from tauray_trainers.config.safe_yaml import load_yaml


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with the bounded safe loader.

    Raises:
        ValueError: one line with the source, line, column and problem.
    """
    return load_yaml(text, source)


def load_space_text(text: str, source: str = "<string>") -> SearchSpace:
    """Parse and validate a space from YAML text.

    Raises:
        ValueError: one line naming ``source``, the key and what is allowed.
    """
    return space_from_dict(parse_yaml(text, source), source)


def load_space_file(path: str | Path) -> SearchSpace:
    """Load a YAML search space from ``path`` and validate it.

    Raises:
        ValueError: the file is missing or unreadable, is not YAML, or breaks a rule of the
            format; one line naming the file, the key and what is allowed.
    """
    file = Path(path)
    if not file.exists():
        raise ValueError(f"space file {str(path)!r} not found")
    if not file.is_file():
        raise ValueError(f"space file {str(path)!r} is not a file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"space file {str(path)!r} cannot be read: {error}") from None
    return load_space_text(text, str(path))


__all__ = [
    "load_space_file",
    "load_space_text",
    "parse_yaml",
    "space_from_dict",
]

"""Plain-text descriptions of spaces for ``tauray spaces list`` and ``tauray spaces show``."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import yaml

from tauray_spaces.space import SearchSpace
from tauray_trainers.config import TRAIN_LOOP_CONFIG

_WIDTH = 100
_NAME_PREFIX = TRAIN_LOOP_CONFIG + "/"


def _first_sentence(text: str) -> str:
    # A sentence ends at ". " before a capital letter ("Chen et al. 2020" does not end one).
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]
    return sentence if sentence.endswith(".") else sentence + "."


def _objectives(space: SearchSpace) -> str:
    words = {"max": "maximise", "min": "minimise"}
    return "; ".join(f"{words[o.mode]} {o.metric}" for o in space.objectives)


def format_space_list(spaces: Sequence[SearchSpace]) -> str:
    """A table of spaces: name, method, parameter count, objective and a one-line summary."""
    header = ("NAME", "METHOD", "PARAMS", "OBJECTIVE")
    rows = [
        (
            space.name,
            space.method,
            str(len(space.parameter_specs)),
            ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives),
        )
        for space in spaces
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(header)]
    for space, row in zip(spaces, rows, strict=True):
        lines.append(line(row))
        lines.extend(
            textwrap.wrap(
                _first_sentence(space.description),
                _WIDTH,
                initial_indent="    ",
                subsequent_indent="    ",
            )
        )
    lines.append("")
    lines.append(
        "Details: tauray spaces show NAME. A YAML space file works wherever a name does "
        "(tauray spaces show my-space.yaml)."
    )
    return "\n".join(lines)


def format_space(space: SearchSpace) -> str:
    """Everything about one space: description, objective, parameters with their conditions
    and help, fixed settings and baselines."""
    lines = [f"{space.name}  (method: {space.method}; source: {space.source or 'in memory'})"]
    if space.description:
        lines.extend(textwrap.wrap(space.description, _WIDTH))
    lines.append("")
    lines.append(f"Objective: {_objectives(space)}")
    lines.append("")
    lines.append(
        f"Parameters ({len(space.parameter_specs)}, in sampling order; Optuna/Ray Tune name = "
        f"{TRAIN_LOOP_CONFIG}/<key>):"
    )
    key_width = max(len(spec.key) for spec in space.parameter_specs)
    kind_width = max(len(spec.distribution) for spec in space.parameter_specs)
    for spec in space.parameter_specs:
        lines.append(
            f"  {spec.key.ljust(key_width)}  {spec.distribution.ljust(kind_width)}  "
            f"{spec.range_text()}"
        )
        indent = " " * 6
        if spec.condition:
            lines.append(f"{indent}only when {spec.condition}")
        if spec.help:
            lines.extend(
                textwrap.wrap(spec.help, _WIDTH, initial_indent=indent, subsequent_indent=indent)
            )
    lines.append("")
    lines.append("Fixed settings (every trial; sampled values override them, --set key=value too):")
    fixed_text = yaml.safe_dump(space.fixed, sort_keys=False, default_flow_style=False)
    lines.extend("  " + line for line in fixed_text.rstrip().splitlines())
    if space.points_to_evaluate:
        lines.append("")
        lines.append("Baselines evaluated first (points_to_evaluate; left-out parameters sampled):")
        for number, point in enumerate(space.points_to_evaluate, start=1):
            items = ", ".join(
                f"{name.removeprefix(_NAME_PREFIX)}={value}" for name, value in point.items()
            )
            lines.append(f"  {number}. {items}")
    return "\n".join(lines)

"""The built-in search spaces and name-or-file lookup.

The built-ins are YAML files in ``tauray_spaces/builtin/`` loaded through the same validator as
a user's file, so they are the shipped examples of the format as well.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from importlib import resources
from pathlib import Path

from tauray_spaces.space import SearchSpace
from tauray_spaces.spacefile import load_space_file, load_space_text

BUILTIN_NAMES: tuple[str, ...] = (
    "simclr-temperature",
    "clip-temperature",
    "dino-temperature",
    "batch-size",
)


def builtin_file(name: str) -> Path:
    """The path of a built-in space's YAML file (in the installed package)."""
    if name not in BUILTIN_NAMES:
        raise ValueError(
            f"unknown built-in search space {name!r}; built-in spaces: {', '.join(BUILTIN_NAMES)}"
        )
    return Path(str(resources.files("tauray_spaces") / "builtin" / f"{name}.yaml"))


@functools.cache
def _builtins() -> tuple[SearchSpace, ...]:
    spaces = []
    for name in BUILTIN_NAMES:
        text = builtin_file(name).read_text(encoding="utf-8")
        space = load_space_text(text, f"builtin:{name}")
        if space.name != name:
            raise RuntimeError(f"built-in file {name}.yaml declares name {space.name!r}")
        spaces.append(space)
    return tuple(spaces)


def list_spaces() -> list[SearchSpace]:
    """The built-in spaces, in a stable order (copies: changing one changes nothing here)."""
    return copy.deepcopy(list(_builtins()))


def get_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """A built-in space by name, or a space loaded from a ``.yaml``/``.yml`` file.

    Args:
        name_or_path: a built-in name (``tauray spaces list``) or a path to a YAML space file.

    Raises:
        ValueError: an unknown name (listing the built-ins), or any problem with the file
            (one line naming the key and what is allowed).
    """
    text = os.fspath(name_or_path)
    for space in _builtins():
        if space.name == text:
            return copy.deepcopy(space)
    looks_like_file = text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text
    if looks_like_file or Path(text).is_file():
        return load_space_file(text)
    close = difflib.get_close_matches(text, BUILTIN_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown search space {text!r}{hint}; built-in spaces: {', '.join(BUILTIN_NAMES)}; "
        "or give the path of a .yaml space file"
    )

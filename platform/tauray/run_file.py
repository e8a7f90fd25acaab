"""The ``tauray train --config`` file: ``tauray train`` reads it, the sweep and the report write it.

Two shapes are accepted: a plain training config (``method: simclr``, ``epochs: 6``, ...), or a
run file: ``train_loop_config:`` (the full nested config) next to the run-level keys
``workers``, ``gpus_per_worker`` and ``cpus_per_worker``. The sweep's ``best_config.yaml`` and the
report's files are run files, so ``tauray train --config best_config.yaml`` trains the trial
again with its resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tauray_trainers.config import TRAIN_LOOP_CONFIG, TrainConfig, flatten, set_path
from tauray_trainers.config.safe_yaml import load_yaml

RUN_KEYS = ("workers", "gpus_per_worker", "cpus_per_worker")
"""Run-level keys a config file may hold next to ``train_loop_config``."""


def load_run_file(path: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a run YAML: a training config, or ``train_loop_config:`` plus run-level keys.

    Returns:
        ``(train_loop_config, run_keys)`` where ``run_keys`` holds any of ``RUN_KEYS``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not UTF-8, empty, not YAML (alias bombs, deep nesting and duplicate keys
            included: the bounded safe loader), not a mapping, or unknown top-level keys next
            to ``train_loop_config``.
    """
    from tauray.storage import location

    if path is None:
        return {}, {}
    path = location(path)  # a local file, or an object store's (a remote sweep's best_config)
    name = f"config file {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{name} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{name} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise ValueError(f"{name} cannot be read: {error.strerror or error}") from None
    if not text.strip():
        raise ValueError(f"{name} is empty; give a training config (e.g. epochs: 5)")
    raw = load_yaml(text, name)  # bounded: alias bombs, deep nesting, duplicate keys refused
    if raw is None:
        raise ValueError(f"{name} holds no settings; give a training config (e.g. epochs: 5)")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name} must hold a mapping, got {type(raw).__name__}")
    if TRAIN_LOOP_CONFIG not in raw:
        return dict(raw), {}
    unknown = sorted(set(raw) - {TRAIN_LOOP_CONFIG, *RUN_KEYS})
    if unknown:
        raise ValueError(
            f"{name}: unknown top-level key(s) {', '.join(unknown)} next to "
            f"{TRAIN_LOOP_CONFIG}; allowed: {', '.join((TRAIN_LOOP_CONFIG, *RUN_KEYS))}"
        )
    inner = raw[TRAIN_LOOP_CONFIG] or {}
    if not isinstance(inner, Mapping):
        raise ValueError(f"{name}: {TRAIN_LOOP_CONFIG} must be a mapping")
    return dict(inner), {key: raw[key] for key in RUN_KEYS if key in raw}


def best_config_yaml(
    config: Mapping[str, Any],
    *,
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    header: str = "",
) -> str:
    """A run file: a comment header, the trial's resources and its full nested config.

    Args:
        config: the trial's full nested ``train_loop_config``.
        workers: workers (DDP ranks) the trial trained with.
        gpus_per_worker: GPUs per worker (0: CPU training).
        cpus_per_worker: CPUs per worker.
        header: text put first as ``#`` comment lines (what the file is, how to train it).
    """
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    document = {
        "workers": workers,
        "gpus_per_worker": gpus_per_worker,
        "cpus_per_worker": cpus_per_worker,
        TRAIN_LOOP_CONFIG: dict(config),
    }
    return comment + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def changed_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a full config that differs from :class:`TrainConfig`'s defaults (+ method):
    what the sweep and the report print of a trial's configuration."""
    defaults = flatten(TrainConfig().to_dict(), ".")
    changed: dict[str, Any] = {"method": config.get("method")}
    for key, value in flatten(dict(config), ".").items():
        if key != "method" and defaults.get(key, object()) != value:
            set_path(changed, key, value, ".")
    return changed

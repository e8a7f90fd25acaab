"""The on-disk layout of a training checkpoint, defined once.

A checkpoint is a directory (what a ``ray.train.Checkpoint`` points to) holding:

- ``checkpoint.pt`` — one ``torch.save`` dict with the keys in ``CHECKPOINT_KEYS``:
  ``format`` (``FORMAT``), ``config`` (the run's config dict), ``data`` (``channels``,
  ``image_size``, ``num_classes``, ``class_names``, ``name``,
  ``mean``/``std`` the images were normalised with, ``examples``: the first few validation
  images, uint8 ``[K, C, H, W]``), ``steps_per_epoch``, ``epoch`` (epochs
  completed), ``global_step`` (optimizer steps completed), ``sampler_epoch`` (the next epoch's
  ``DistributedSampler.set_epoch`` value), ``world_size``, ``model`` (the method's state dict:
  weights, τ, the DINO teacher and center, the SigLIP bias), ``temperature`` (the τ module's
  state dict), ``optimizer``, ``lr_schedule``, ``grad_scaler`` (``None`` unless fp16), ``rng``
  (how each epoch's random state is derived), ``cost`` (cumulative ``worker_seconds``,
  ``gpu_seconds``, ``cpu_seconds``, ``samples_seen``) and ``metrics`` (the epoch's report);
- ``config.json`` and ``metrics.json`` — the same config and metrics, readable without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FORMAT = "tauray-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"

CHECKPOINT_KEYS = (
    "format",
    "config",
    "data",
    "steps_per_epoch",
    "epoch",
    "global_step",
    "sampler_epoch",
    "world_size",
    "model",
    "temperature",
    "optimizer",
    "lr_schedule",
    "grad_scaler",
    "rng",
    "cost",
    "metrics",
)


def write_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (all of ``CHECKPOINT_KEYS`` except ``format``) into ``directory``.

    Raises:
        ValueError: keys are missing or unknown.
    """
    missing = [k for k in CHECKPOINT_KEYS if k != "format" and k not in state]
    unknown = [k for k in state if k not in CHECKPOINT_KEYS]
    if missing or unknown:
        raise ValueError(f"checkpoint state: missing keys {missing}, unknown keys {unknown}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **state}
    torch.save(payload, directory / CHECKPOINT_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(state["config"], indent=2, sort_keys=True))
    (directory / METRICS_FILE).write_text(json.dumps(state["metrics"], indent=2, sort_keys=True))
    return directory


def read_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read the ``checkpoint.pt`` dict of a checkpoint directory.

    Raises:
        FileNotFoundError: ``directory`` holds no ``checkpoint.pt``.
        ValueError: the file is not a tauray checkpoint of a known format.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT_FILE} in checkpoint directory {str(directory)!r}")
    # The file holds only tensors and plain containers, but optimizer states may hold numpy
    # scalars in some torch versions: weights_only with torch's default allow-list suffices.
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format: {found!r})")
    return state

"""One-worker trials trained inside their Ray Tune trial actor, without a Ray Train worker group.

Ray Train starts, for every trial, a controller actor and a worker actor, each a fresh process
that imports torch (and the worker torchvision and :mod:`tauray_trainers`) before the first step;
it offers no way to keep a worker group from one run to the next. On the 2-core development
machine that fixed cost was 13.5-16.4 s of a trivial one-worker trial's 15.5-18.8 s
(``benchmarks/sweep_overhead.py``).

A one-worker trial has no DDP and needs none of that: here the per-worker loop
(:func:`tauray_trainers.loop.run_worker`) runs in the trial actor itself, with
:class:`InTrialRuntime` reporting to Ray Tune directly, and Ray Tune's ``reuse_actors`` hands
the actor, with its imports (and its CUDA context), to the next trial: after the first trial a
trial costs no process start and no import (``benchmarks/README.md`` has the figures).

Ray Tune stops such a trial (ASHA, the sweep's end) by raising ``SystemExit`` from
``tune.report``; a failed trial is restarted from its last checkpoint by Ray Tune's
``FailureConfig`` (the same ``--max-failures`` Ray Train uses for its worker groups). The
metrics, the checkpoints (the same layout, persisted by Ray Tune in the trial's folder) and
MLflow see no difference from a Ray Train trial. Trials with several workers are DDP jobs and
always run as Ray Train worker groups (:mod:`tauray.sweep.trial`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from tauray_trainers.loop import LocalRuntime, run_worker


class InTrialRuntime(LocalRuntime):
    """The loop's surroundings inside a Ray Tune trial actor (world size 1).

    The device is the trial's GPU when Ray assigned one (Ray sets ``CUDA_VISIBLE_DEVICES`` for
    the actor, so it is ``cuda:0``), else the CPU. Reports go to ``ray.tune.report``,
    checkpoints with them (Ray Tune copies the folder into the trial's storage); the resume
    point is Ray Tune's last checkpoint of the trial (a restarted or restored trial).

    Args:
        resources: what the worker reserved (``CPU``, ``GPU``), for the cost counters.
        derive: adds sweep-side metrics to each report (:class:`~tauray.sweep.signals.
            CurveSignal`); None: reports go out as the loop makes them.
    """

    def __init__(
        self,
        resources: Mapping[str, float],
        derive: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        on_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        super().__init__(device="cuda:0" if on_gpu else "cpu")
        self._resources = {"CPU": float(resources["CPU"]), "GPU": float(resources["GPU"])}
        self._checkpoint = tune.get_checkpoint()
        self._derive = derive

    def resources_per_worker(self) -> dict[str, float]:
        return dict(self._resources)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(self._derive(metrics) if self._derive else dict(metrics), checkpoint=checkpoint)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        if self._checkpoint is None:
            yield None
            return
        with self._checkpoint.as_directory() as directory:
            yield Path(directory)


def run_in_trial(
    train_loop_config: Mapping[str, Any],
    *,
    cpus_per_worker: float,
    gpus_per_worker: float,
    derive: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Train one single-worker trial in this process (a Ray Tune trial actor).

    Args:
        train_loop_config: the trial's nested trainer config.
        cpus_per_worker: CPUs the worker reserved (for the cost counters).
        gpus_per_worker: GPUs the worker reserved.
        derive: adds sweep-side metrics to each report (see :class:`InTrialRuntime`).

    Raises:
        whatever the loop raises (``ValueError`` for a bad config, ``NonFiniteLossError``,
        ``TrialOutOfMemoryError``...); ``SystemExit`` when Ray Tune stops the trial.
    """
    try:
        run_worker(
            dict(train_loop_config),
            InTrialRuntime({"CPU": cpus_per_worker, "GPU": gpus_per_worker}, derive),
        )
    finally:
        # The actor trains the next trial too (reuse_actors): give back what this one cached.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def in_trial_resources(
    driver: Mapping[str, float], *, cpus_per_worker: float, gpus_per_worker: float
) -> tune.PlacementGroupFactory:
    """Resources of a trial actor that trains: the driver's share plus the worker's, in one
    bundle."""
    bundle = dict(driver)
    bundle["CPU"] = bundle.get("CPU", 0.0) + cpus_per_worker
    if gpus_per_worker:
        bundle["GPU"] = bundle.get("GPU", 0.0) + gpus_per_worker
    return tune.PlacementGroupFactory([bundle])

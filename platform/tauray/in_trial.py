"""One-worker trials trained inside their Ray Tune trial actor, without a Ray Train worker group.

A trial with several workers needs Ray Train: a worker group, a process group across it, a
controller that watches it. A trial with one worker needs none of that, yet Ray Train still
starts a controller actor and a worker actor for it, both fresh processes that import torch
(and the worker torchvision and :mod:`tauray_trainers`) before the first step. On the 2-core
development machine that fixed cost was 13.5-16.4 s of a trivial one-worker trial's 15.5-18.8 s,
and 0.01 s in a reused actor (``benchmarks/sweep_overhead.py``). Here the same per-worker loop
(:func:`tauray_trainers.loop.run_worker`) runs in the trial actor itself, with a
:class:`InTrialRuntime` that reports to Ray Tune directly; with Ray Tune's ``reuse_actors`` the
actor, its imports and (on a GPU) its CUDA context carry over from one trial to the next.

What changes for the user: nothing in the metrics, the checkpoints (the same layout, persisted
by Ray Tune in the trial's folder) or MLflow. A failed trial is restarted from its last
checkpoint by Ray Tune's ``FailureConfig`` instead of Ray Train's (the same ``--max-failures``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

from tauray_trainers.loop import WorkerRuntime

logger = logging.getLogger(__name__)


class InTrialRuntime(WorkerRuntime):
    """The per-worker loop's surroundings inside a Ray Tune trial actor: one rank, no DDP.

    The device is the trial's GPU when Ray assigned one (Ray sets ``CUDA_VISIBLE_DEVICES`` for
    the actor, so it is ``cuda:0``), else the CPU. Reports go to ``ray.tune.report``, checkpoints
    with them (Ray Tune copies the folder into the trial's storage); the resume point is Ray
    Tune's last checkpoint of the trial (a restarted or restored trial).
    """

    def __init__(self) -> None:
        import ray

        self.world_size = 1
        self.rank = 0
        gpus = ray.get_gpu_ids()
        self.device = torch.device("cuda:0" if gpus and torch.cuda.is_available() else "cpu")

    def prepare_model(
        self, module: nn.Module, *, find_unused_parameters: bool = False
    ) -> nn.Module:
        return module.to(self.device)

    def resources_per_worker(self) -> dict[str, float]:
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        return {"CPU": float(assigned.get("CPU", 0.0)), "GPU": float(assigned.get("GPU", 0.0))}

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=checkpoint)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)


def run_in_trial(train_loop_config: Mapping[str, Any]) -> None:
    """Train one trial in this process (a Ray Tune trial actor) with :class:`InTrialRuntime`.

    Raises:
        whatever the loop raises (``ValueError`` for a bad config, ``NonFiniteLossError``,
        ``TrialOutOfMemoryError``); the trial driver decides what each means for the sweep.
    """
    import tauray_trainers.loop

    try:
        # Looked up at call time (not imported by name) so that a benchmark can wrap it.
        tauray_trainers.loop.run_worker(dict(train_loop_config), InTrialRuntime())
    finally:
        # The actor trains the next trial too (reuse_actors): give back what this one cached.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def in_trial_resources(
    driver: Mapping[str, float], *, cpus_per_worker: float, gpus_per_worker: float
) -> dict[str, float]:
    """Resources of a trial actor that also trains: the driver's share plus one worker's."""
    resources = dict(driver)
    resources["CPU"] = resources.get("CPU", 0.0) + cpus_per_worker
    if gpus_per_worker:
        resources["GPU"] = resources.get("GPU", 0.0) + gpus_per_worker
    return resources

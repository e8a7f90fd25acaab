"""Trials trained inside their Ray Tune trial actor, without a Ray Train worker group.

Ray Train starts, for every trial, a controller actor and one worker actor per rank, each a
fresh process that imports torch (and the workers torchvision and :mod:`tauray_trainers`) before
the first step, and it offers no way to keep a worker group from one run to the next. On the
2-core development machine that fixed cost was 13.5-16.4 s of a trivial one-worker trial's
15.5-18.8 s and 15.8-17.1 s of a two-worker one (``benchmarks/sweep_overhead.py``).

Here the per-worker loop (:func:`tauray_trainers.loop.run_worker`) runs in the trial actor itself
as rank 0, with :class:`InTrialRuntime` reporting to Ray Tune directly. A trial with several CPU
workers also starts, once, one :class:`RankWorker` actor per further rank in the trial's own
placement group (one bundle per worker, see :func:`in_trial_resources`) and joins them in a gloo
process group. With Ray Tune's ``reuse_actors`` the trial actor, together with its rank workers,
their imports and their process group, trains the next trial of the same shape: after the first
trial a trial costs no process start and no import. Measured on 2 cores (round 3 in
``benchmarks/README.md``): fixed cost per trivial trial 0.02 s instead of 15.9-16.9 s (1 worker)
and 17.6-20.2 s (2 workers); the first trial of an actor 3.5 s and 7.7 s.

How a trial ends on every rank:
- it finishes: every rank leaves the loop after the last epoch;
- Ray Tune stops it (ASHA, the sweep's end): rank 0's ``tune.report`` raises ``SystemExit``;
  after every report rank 0 broadcasts whether training goes on, so the other ranks leave at the
  same epoch and stay usable for the next trial;
- a rank fails (an error, a killed process): the rank workers are killed (a rank blocked in a
  collective then fails at once instead of waiting for the process group's timeout), the trial
  fails with the first rank's error, and the next trial of this actor starts new rank workers.
  Ray Tune's ``FailureConfig`` restarts a failed trial from its last checkpoint (the same
  ``--max-failures`` as Ray Train's).

What changes for the user: nothing in the metrics, the checkpoints (the same layout, persisted by
Ray Tune in the trial's folder) or MLflow. Trials with several GPU workers keep Ray Train, which
sets up NCCL and each worker's visible devices; that path was not measured on GPUs here.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray import tune

from tauray_trainers.loop import LocalRuntime

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a rank waits in a collective for the others (torch's default for gloo)."""

RANK_START_TIMEOUT_S = 600.0
"""How long rank 0 waits for its rank workers to start (a busy node imports torch slowly)."""

RANK_STOP_TIMEOUT_S = 120.0
"""How long rank 0 waits for the other ranks after Ray Tune stopped the trial."""


class _TrialStopped(Exception):
    """Raised on ranks > 0 when rank 0 says that Ray Tune stopped the trial."""


def _go_on(value: bool) -> bool:
    """Rank 0's word after a report, sent to every rank: whether training goes on."""
    flag = torch.tensor([1 if value else 0], dtype=torch.int32)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


class _TrialRuntime(LocalRuntime):
    """One rank's surroundings in in-trial training: its device, what each worker reserved (for
    the cost counters) and the trial's checkpoint to resume from (None: a fresh start)."""

    def __init__(
        self,
        device: str,
        resources: Mapping[str, float],
        checkpoint: tune.Checkpoint | None,
    ) -> None:
        super().__init__(device=device)
        self._resources = {"CPU": float(resources["CPU"]), "GPU": float(resources["GPU"])}
        self._checkpoint = checkpoint

    def resources_per_worker(self) -> dict[str, float]:
        return dict(self._resources)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        if self._checkpoint is None:
            yield None
            return
        with self._checkpoint.as_directory() as directory:
            yield Path(directory)


class InTrialRuntime(_TrialRuntime):
    """The loop's surroundings as rank 0, inside a Ray Tune trial actor.

    The device is the trial's GPU when Ray assigned one (Ray sets ``CUDA_VISIBLE_DEVICES`` for
    the actor, so it is ``cuda:0``), else the CPU. The world is this process's process group
    (the trial's rank workers) or this rank alone. Reports go to ``ray.tune.report``,
    checkpoints with them (Ray Tune copies the folder into the trial's storage); the resume
    point is Ray Tune's last checkpoint of the trial (a restarted or restored trial).

    Args:
        resources: what each worker reserved (``CPU``, ``GPU``), for the cost counters.
    """

    def __init__(self, resources: Mapping[str, float]) -> None:
        on_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        super().__init__("cuda:0" if on_gpu else "cpu", resources, tune.get_checkpoint())

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        try:
            tune.report(dict(metrics), checkpoint=checkpoint)
        except SystemExit:  # Ray Tune stopped the trial: tell the other ranks, then stop too
            if self.world_size > 1:
                _go_on(False)
            raise
        if self.world_size > 1:
            _go_on(True)


class _RankRuntime(_TrialRuntime):
    """The loop's surroundings on rank > 0, in a :class:`RankWorker`: rank 0 reports."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        if not _go_on(True):
            raise _TrialStopped


def _join_process_group(address: str, port: int, rank: int, world_size: int) -> None:
    """Leave this process's earlier process group, if any, and join rank 0's (gloo)."""
    _leave_process_group()
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )


@ray.remote(max_restarts=0)
class RankWorker:
    """One rank > 0 of in-trial training, kept by its trial actor from one trial to the next."""

    def ready(self) -> None:
        """Returns once the actor has started (and, later, while it still answers)."""

    def join(self, address: str, port: int, rank: int, world_size: int) -> None:
        """Join rank 0's gloo process group (leaving this process's earlier one)."""
        _join_process_group(address, port, rank, world_size)

    def train(
        self,
        train_loop_config: Mapping[str, Any],
        checkpoint: tune.Checkpoint | None,
        resources: Mapping[str, float],
    ) -> None:
        """Train this rank's share of a trial, until its last epoch or until Ray Tune stops it.

        Raises:
            whatever the loop raises on this rank.
        """
        import tauray_trainers.loop

        with contextlib.suppress(_TrialStopped):
            tauray_trainers.loop.run_worker(
                dict(train_loop_config), _RankRuntime("cpu", resources, checkpoint)
            )


@dataclass
class _Gang:
    """The rank workers of this trial actor (ranks 1..n-1) and the process group joining them."""

    workers: list[Any]
    cpus_per_worker: float

    @property
    def world_size(self) -> int:
        return len(self.workers) + 1

    @classmethod
    def start(cls, world_size: int, cpus_per_worker: float) -> _Gang:
        """Start one rank worker per bundle 1.. of this trial's placement group and join them.

        Raises:
            RuntimeError: this actor has no placement group with a bundle for every rank, or
                a rank worker did not start within :data:`RANK_START_TIMEOUT_S`.
        """
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.get_current_placement_group()
        if group is None or group.bundle_count < world_size:
            raise RuntimeError(
                f"in-trial training with {world_size} workers needs a placement group of "
                f"{world_size} bundles for its trial actor (tauray.in_trial.in_trial_resources)"
            )
        workers = [
            RankWorker.options(
                num_cpus=cpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=rank
                ),
            ).remote()
            for rank in range(1, world_size)
        ]
        gang = cls(workers, cpus_per_worker)
        try:
            ray.get([worker.ready.remote() for worker in workers], timeout=RANK_START_TIMEOUT_S)
            address = ray.util.get_node_ip_address()
            port = _free_port()
            joined = [
                worker.join.remote(address, port, rank, world_size)
                for rank, worker in enumerate(workers, start=1)
            ]
            _join_process_group(address, port, 0, world_size)
            ray.get(joined, timeout=RANK_START_TIMEOUT_S)
        except Exception as error:
            gang.abort()
            raise RuntimeError(
                f"could not start the trial's {world_size - 1} rank workers: {error}"
            ) from error
        logger.info("started %d rank workers for in-trial training", len(workers))
        return gang

    def alive(self) -> bool:
        """Whether every rank worker still answers (checked before a reused gang trains)."""
        try:
            ray.get([worker.ready.remote() for worker in self.workers], timeout=60)
        except Exception:
            return False
        return True

    def abort(self) -> None:
        """Kill the rank workers (a rank waiting in a collective then fails) and leave the group."""
        for worker in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(worker, no_restart=True)
        _leave_process_group()


_gang: _Gang | None = None
"""This trial actor's rank workers, kept for the next trial it trains (``reuse_actors``; Ray
Tune hands the actor a trial only after the previous one's function returned)."""


def _gang_for(world_size: int, cpus_per_worker: float) -> _Gang:
    """This actor's ``world_size`` ranks: the kept ones if they still answer, else new ones."""
    global _gang
    if _gang is not None and (
        _gang.world_size != world_size
        or _gang.cpus_per_worker != cpus_per_worker
        or not _gang.alive()
    ):
        _drop_gang(_gang)
    if _gang is None:
        _gang = _Gang.start(world_size, cpus_per_worker)
    return _gang


def _drop_gang(gang: _Gang) -> None:
    global _gang
    gang.abort()
    if _gang is gang:
        _gang = None


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


class _RankWatch:
    """Waits on the rank workers' ``train`` calls; on the first failure kills the gang.

    Rank 0 trains in the calling thread and may be blocked in a collective with the failed
    rank: killing the rank workers makes that collective fail at once.
    """

    def __init__(self, gang: _Gang, calls: Sequence[Any]) -> None:
        self.gang = gang
        self.calls = list(calls)
        self.error: BaseException | None = None
        self.rank_zero_failed = False  # set first when rank 0 fails: what follows is its doing
        self._thread = threading.Thread(target=self._watch, name="tauray-rank-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        pending = list(self.calls)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)
            except Exception as error:
                if not self.rank_zero_failed:
                    self.error = error
                    self.gang.abort()
                return

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def running(self) -> bool:
        return self._thread.is_alive()


def _original_error(error: BaseException) -> BaseException:
    """The exception a rank raised, out of Ray's ``RayTaskError`` wrapper when there is one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def run_in_trial(
    train_loop_config: Mapping[str, Any],
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> None:
    """Train one trial in this process (a Ray Tune trial actor), as rank 0 of ``workers``.

    Args:
        train_loop_config: the trial's nested trainer config.
        workers: ranks; beyond the first they are this actor's :class:`RankWorker` actors.
        cpus_per_worker: CPUs each rank reserved (the rank workers' ``num_cpus``).
        gpus_per_worker: GPUs each rank reserved; several ranks must be CPU ranks.

    Raises:
        ValueError: several GPU workers (they train in Ray Train), or what the loop raises for
            a bad config.
        whatever the loop raises on any rank (``NonFiniteLossError``,
        ``TrialOutOfMemoryError``...), or ``ray.exceptions.ActorDiedError`` for a killed rank.
    """
    import tauray_trainers.loop

    if workers > 1 and gpus_per_worker:
        raise ValueError(
            f"in-trial training runs several workers on CPUs only, got {workers} workers with "
            f"{gpus_per_worker:g} GPU each; trials with several GPU workers use Ray Train"
        )
    resources = {"CPU": cpus_per_worker, "GPU": gpus_per_worker}
    # Looked up at call time (not imported by name) so that a benchmark can wrap it.
    run_worker = tauray_trainers.loop.run_worker
    try:
        if workers == 1:
            if _gang is not None:  # an earlier trial of this actor had several workers
                _drop_gang(_gang)
            run_worker(dict(train_loop_config), InTrialRuntime(resources))
            return
        gang = _gang_for(workers, cpus_per_worker)
        calls = [
            worker.train.remote(dict(train_loop_config), tune.get_checkpoint(), resources)
            for worker in gang.workers
        ]
        watch = _RankWatch(gang, calls)
        try:
            run_worker(dict(train_loop_config), InTrialRuntime(resources))
        except SystemExit:  # Ray Tune stopped the trial; the other ranks were told
            watch.join(RANK_STOP_TIMEOUT_S)
            if watch.error is not None or watch.running():
                _drop_gang(gang)
            raise
        except BaseException as error:
            first = watch.error  # a rank that failed before this one: the likely cause
            watch.rank_zero_failed = True
            _drop_gang(gang)  # the other ranks may wait for this one in a collective
            watch.join(RANK_STOP_TIMEOUT_S)
            if first is not None:
                raise _original_error(first) from error
            raise
        watch.join()
        if watch.error is not None:
            _drop_gang(gang)
            raise _original_error(watch.error)
    finally:
        # The actor trains the next trial too (reuse_actors): give back what this one cached.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def in_trial_resources(
    driver: Mapping[str, float],
    *,
    workers: int = 1,
    cpus_per_worker: float,
    gpus_per_worker: float,
) -> tune.PlacementGroupFactory:
    """Resources of a trial actor that trains: the driver's share plus one worker's in the
    first bundle, and one bundle per further worker (its :class:`RankWorker`)."""
    first = dict(driver)
    first["CPU"] = first.get("CPU", 0.0) + cpus_per_worker
    worker = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        first["GPU"] = first.get("GPU", 0.0) + gpus_per_worker
        worker["GPU"] = gpus_per_worker
    return tune.PlacementGroupFactory([first] + [dict(worker) for _ in range(workers - 1)])

"""Ray sessions for tauray: start a local Ray (and stop it) or connect to a running cluster.

Scheduling rule: drivers never take a CPU. A training run's driver (the ``tauray train`` process,
or a Ray Tune trial that runs a ``TorchTrainer``) only waits on its workers, yet Ray Tune gives a
trial 1 CPU by default, so on a 2-CPU machine a 2-worker trial can never start (Ray Train's
controller then retries forever). A local session therefore carries a custom logical resource,
``tauray_driver`` (1000 units), and :func:`driver_resources` asks for one unit of it instead of a
CPU. On a cluster started without that resource (``ray start ... --resources
'{"tauray_driver": 1000}'`` adds it), drivers ask for a hundredth of a CPU instead
(``DRIVER_CPU_FRACTION``): negligible, and accounted for by :func:`max_concurrent_trials`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from tauray_trainers.config import check_resources

logger = logging.getLogger(__name__)

DRIVER_RESOURCE = "tauray_driver"
"""Custom logical resource that trial drivers reserve instead of a CPU."""

DRIVER_RESOURCE_UNITS = 1000
"""Units of ``DRIVER_RESOURCE`` a local session offers: at most this many concurrent drivers."""

DRIVER_CPU_FRACTION = 0.01
"""CPU share a driver reserves on a cluster without ``DRIVER_RESOURCE``."""

_EPSILON = 1e-9

LOCAL_RAY_ENV: dict[str, str] = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}
"""Settings a local Ray's processes get unless this process's environment already sets them.

Ray Train V2's controller polls its workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s by
default) and sees a report or the end of training only at a poll: every short run or trial then
idles about 4 s at its end. ``benchmarks/sweep_overhead.py`` measured the loop-exit-to-``fit()``
-return phase at 3.7-4.0 s with the default and 0.4 s with 0.1 s. The preemption watcher (an
actor per run that watches for node draining) and the state actor's reconciliation loop have
nothing to do on one machine: each is one process start less per Ray Train trial (one
interleaved run of the same benchmark measured 11.6-12.2 s against 13.8-18.5 s per 2-worker
trial; a later run's spread was as large as that gap). A cluster started elsewhere keeps its own
settings (set them in its environment).
"""


@dataclass(frozen=True)
class ClusterInfo:
    """What a Ray session offers.

    Attributes:
        cpus: logical CPUs in the cluster.
        gpus: logical GPUs in the cluster.
        local: True when this session started (and will stop) the Ray instance.
        address: the address connected to (None for a local instance).
        driver_resource: whether the cluster offers ``DRIVER_RESOURCE`` for drivers.
    """

    cpus: float
    gpus: float
    local: bool
    address: str | None
    driver_resource: bool = False


def _cluster_info(*, local: bool, address: str | None) -> ClusterInfo:
    import ray

    resources = ray.cluster_resources()
    return ClusterInfo(
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        local=local,
        address=address,
        driver_resource=resources.get(DRIVER_RESOURCE, 0.0) >= 1.0,
    )


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    include_dashboard: bool = False,
    log_to_driver: bool = True,
) -> Iterator[ClusterInfo]:
    """Start a local Ray for the duration of the block, or connect to a running cluster.

    Without ``address`` (and without ``RAY_ADDRESS`` in the environment, which a Ray job's
    driver has) a local Ray is started with ``num_cpus``/``num_gpus`` (autodetected when None)
    and ``DRIVER_RESOURCE``, and shut down afterwards. With an address (``auto``,
    ``HOST:6379`` or ``ray://HOST:10001``) this process connects and only disconnects at the
    end: the cluster keeps running. When Ray is already initialised in this process (a test
    fixture, an enclosing session) that session is reused and left alone.

    Args:
        address: a running cluster's address, or None for a local Ray.
        num_cpus: logical CPUs of a local Ray (ignored when connecting).
        num_gpus: logical GPUs of a local Ray (ignored when connecting).
        include_dashboard: start the dashboard with a local Ray (needed for Ray jobs).
        log_to_driver: print the workers' output here (False: it stays in Ray's log files,
            and ``ray.init``'s own lines, "Connecting to existing Ray cluster" and the like, are
            not shown: a caller that prints its own line about the cluster, or refuses the
            cluster in one line, says all there is).

    Yields:
        :class:`ClusterInfo` of the session.

    Raises:
        ValueError: negative ``num_cpus``/``num_gpus``, or resources given with an address.
        ConnectionError: the cluster at ``address`` cannot be reached.
    """
    import ray

    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if ray.is_initialized():
        yield _cluster_info(local=False, address=address)
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_address(address)
        if num_cpus is not None or num_gpus is not None:
            raise ValueError(
                f"num_cpus/num_gpus size a local Ray; a running cluster ({address}) has its own"
            )
        try:
            with _ray_init_lines(shown=log_to_driver):
                ray.init(address=address, log_to_driver=log_to_driver)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            raise ConnectionError(
                f"cannot connect to the Ray cluster at {address!r}: {error}; check the address "
                "(HOST:6379, ray://HOST:10001 or auto) and that the cluster is running"
            ) from error
        try:
            yield _cluster_info(local=False, address=address)
        finally:
            ray.shutdown()  # disconnects this driver; the cluster keeps running
        return
    with _local_ray_environment(), _ray_init_lines(shown=log_to_driver):
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources={DRIVER_RESOURCE: DRIVER_RESOURCE_UNITS},
            include_dashboard=include_dashboard,
            log_to_driver=log_to_driver,
        )
    try:
        info = _cluster_info(local=True, address=None)
        logger.info("started a local Ray: %g CPUs, %g GPUs", info.cpus, info.gpus)
        yield info
    finally:
        ray.shutdown()


CONNECT_TIMEOUT_S = 3.0
"""How long :func:`check_address` waits for a Ray cluster's port to accept a connection."""

_DEFAULT_PORTS = {"": 6379, "ray": 10001}


def check_address(
    address: str, option: str = "--address", timeout_s: float = CONNECT_TIMEOUT_S
) -> None:
    """Refuse a Ray address that is malformed or where nothing listens, within ``timeout_s``.

    ``ray.init`` waits a minute or more on a GCS that is not there (and a ``ray://`` client half
    a minute), retrying silently; a TCP connection to the port answers in milliseconds, or
    within ``timeout_s`` when packets are dropped. ``auto`` is left to Ray (it reads the local
    cluster's address file and fails at once without one).

    Args:
        address: ``HOST:PORT`` (a GCS, port 6379 by default), ``ray://HOST:PORT`` (a Ray Client
            server, port 10001 by default) or ``auto``.
        option: how errors name the address.
        timeout_s: how long to wait for the port.

    Raises:
        ValueError: an empty or malformed address (one line naming ``option`` and the value).
        ConnectionError: nothing accepts connections there within ``timeout_s``.
    """
    import socket
    import urllib.parse

    text = address.strip()
    if not text:
        raise ValueError(f"{option} is empty; give HOST:6379, ray://HOST:10001 or auto")
    if text == "auto":
        return
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"{option} {address!r}: {scheme}:// is not a Ray address; give HOST:6379, "
            "ray://HOST:10001 or auto (a dashboard's http:// address is for tauray submit/jobs)"
        )
    try:
        parts = urllib.parse.urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as error:
        raise ValueError(f"{option} {address!r} is not a Ray address: {error}") from None
    if not host or parts.path.strip("/"):
        raise ValueError(
            f"{option} {address!r} is not a Ray address; give HOST:6379, ray://HOST:10001 or auto"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as error:
        raise ConnectionError(
            f"{option} {address!r}: no Ray cluster answers at {host}:{port} within "
            f"{timeout_s:g} s ({error.strerror or error}); check the address and that the "
            "cluster is running"
        ) from None


def local_resources(num_cpus: int | None, num_gpus: int | None) -> tuple[float, float]:
    """The CPUs and GPUs a local Ray started with ``num_cpus``/``num_gpus`` would offer, found
    the way Ray itself detects them (container CPU limits, ``CUDA_VISIBLE_DEVICES``), without
    starting it. Detection that fails counts the machine's CPUs and no GPU limit."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
        from ray._private.utils import get_num_cpus

        cpus = float(get_num_cpus())
        gpus = float(
            get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
        )
    except Exception:  # a Ray without these helpers: do not refuse on a guess
        cpus, gpus = float(os.cpu_count() or 1), float(1 << 20)
    return (
        float(num_cpus) if num_cpus is not None else cpus,
        float(num_gpus) if num_gpus is not None else gpus,
    )


def check_local_fit(
    num_cpus: int | None,
    num_gpus: int | None,
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
) -> int:
    """How many runs of this size a local Ray would fit at once (:func:`max_concurrent_trials`),
    checked before it starts: a run that never fits is refused without starting anything.

    Raises:
        ValueError: one run needs more CPUs or GPUs than the local Ray would have.
    """
    import ray

    if ray.is_initialized():  # the session in use is the cluster (ray_session reuses it)
        return DRIVER_RESOURCE_UNITS
    cpus, gpus = local_resources(num_cpus, num_gpus)
    info = ClusterInfo(cpus=cpus, gpus=gpus, local=True, address=None, driver_resource=True)
    return max_concurrent_trials(info, workers, gpus_per_worker, cpus_per_worker)


@contextlib.contextmanager
def _ray_init_lines(shown: bool) -> Iterator[None]:
    """Let ``ray.init`` log its INFO lines (where it connects, the dashboard's address) or not."""
    if shown:
        yield
        return
    init_logger = logging.getLogger("ray._private.worker")
    level = init_logger.level
    init_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        init_logger.setLevel(level)


@contextlib.contextmanager
def _local_ray_environment() -> Iterator[None]:
    """Add :data:`LOCAL_RAY_ENV` to this process's environment while a local Ray starts.

    Ray's processes inherit the environment at ``ray.init``; afterwards this process's own
    environment is restored. Variables the user set keep their values.
    """
    added = {key: value for key, value in LOCAL_RAY_ENV.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def driver_resources(info: ClusterInfo) -> dict[str, float]:
    """Resources one trial driver should reserve (e.g. for ``tune.with_resources``).

    One unit of ``DRIVER_RESOURCE`` where the cluster offers it, else ``DRIVER_CPU_FRACTION``
    of a CPU. Never a whole CPU: the driver only waits on its Ray Train workers.
    """
    if info.driver_resource:
        return {"CPU": 0.0, DRIVER_RESOURCE: 1.0}
    return {"CPU": DRIVER_CPU_FRACTION}


def max_concurrent_trials(
    info: ClusterInfo,
    workers_per_trial: int,
    gpus_per_worker: float,
    cpus_per_worker: float = 1,
) -> int:
    """How many trials of ``workers_per_trial`` workers can run at once (at least 1).

    Counts cluster totals (a worker also needs its share on one node; Ray's placement decides
    that). Drivers cost no CPU where ``DRIVER_RESOURCE`` exists, else ``DRIVER_CPU_FRACTION``.

    Raises:
        ValueError: invalid sizes, or one trial can never fit (names what it needs and what
            the cluster has).
    """
    check_resources(
        workers_per_trial,
        gpus_per_worker,
        cpus_per_worker,
        names=("workers_per_trial", "gpus_per_worker", "cpus_per_worker"),
    )
    driver_cpu = 0.0 if info.driver_resource else DRIVER_CPU_FRACTION
    cpu_need = workers_per_trial * cpus_per_worker + driver_cpu
    gpu_need = workers_per_trial * gpus_per_worker
    limits = []
    if cpu_need > 0:
        limits.append(math.floor(info.cpus / cpu_need + _EPSILON))
    if gpu_need > 0:
        limits.append(math.floor(info.gpus / gpu_need + _EPSILON))
    if info.driver_resource:
        limits.append(DRIVER_RESOURCE_UNITS)
    count = min(limits) if limits else DRIVER_RESOURCE_UNITS
    if count < 1:
        need = f"{workers_per_trial} worker(s) x {cpus_per_worker:g} CPU"
        if gpus_per_worker:
            need += f" + {workers_per_trial} x {gpus_per_worker:g} GPU"
        raise ValueError(
            f"one trial needs {need} ({cpu_need:g} CPU, {gpu_need:g} GPU in all) but the "
            f"cluster has {info.cpus:g} CPU and {info.gpus:g} GPU; use fewer workers, fewer "
            "CPUs/GPUs per worker, or a bigger cluster"
        )
    return count

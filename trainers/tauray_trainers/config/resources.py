"""What one worker of a run reserves: the one check ``tauray train``, ``tauray tune`` and the
cluster sizing share.

A run (or a trial) is ``workers`` workers, each reserving ``gpus_per_worker`` GPUs and
``cpus_per_worker`` CPUs from Ray.

``cpus_per_worker`` must be above 0. A Ray task or actor that reserves no CPU is never held
back by Ray's scheduler: every such worker starts at once, however many the node has cores
for, and they all compete for the same cores (each DataLoader and intra-op thread pool
included), so the node is oversubscribed and every trial on it slows down. A fraction such as
0.5 is the way to pack several light workers onto a core.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def _number(name: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_resources(
    workers: Any,
    gpus_per_worker: Any,
    cpus_per_worker: Any,
    *,
    names: tuple[str, str, str] = ("workers", "gpus_per_worker", "cpus_per_worker"),
) -> None:
    """Refuse worker counts and per-worker reservations that cannot make a run.

    Args:
        workers: workers of the run (the DDP world size): an int >= 1.
        gpus_per_worker: GPUs each worker reserves: a finite number >= 0 (0: CPU training;
            a fraction shares a GPU).
        cpus_per_worker: CPUs each worker reserves: a finite number > 0 (see the module's
            docstring for why 0 is refused).
        names: how the messages name the three settings (a command line passes its option
            names, e.g. ``--workers-per-trial``).

    Raises:
        ValueError: one line naming the setting, the bad value and the allowed range.
    """
    workers_name, gpus_name, cpus_name = names
    if isinstance(workers, bool) or not isinstance(workers, Integral) or workers < 1:
        raise ValueError(f"{workers_name} must be an int >= 1, got {workers!r}")
    gpus = _number(gpus_name, gpus_per_worker, "a finite number >= 0")
    if gpus < 0:
        raise ValueError(f"{gpus_name} must be a finite number >= 0, got {gpus_per_worker!r}")
    cpus = _number(cpus_name, cpus_per_worker, "a finite number > 0")
    if cpus <= 0:
        raise ValueError(
            f"{cpus_name} must be a finite number > 0, got {cpus_per_worker!r} (a worker "
            "that reserves no CPU is never limited by Ray and oversubscribes its node; use a "
            "fraction such as 0.5 to share a core)"
        )

"""Fault injection for tests of recovery: off unless ``TAURAY_INJECT_FAILURE`` is set.

The setting makes a training run fail on purpose, halfway through one epoch, so tests (and a
person trying a cluster's recovery) can watch a worker group restart from its checkpoint, a
trial be recorded as failed, or an out-of-memory trial be marked infeasible::

    TAURAY_INJECT_FAILURE="epoch=K,marker=PATH"      every rank raises InjectedFailure once,
                                                     halfway through epoch K (1-based), unless
                                                     PATH.rank<r> exists (it is created first,
                                                     so a restarted worker group passes)
    ...,action=kill                                  SIGKILL the worker process instead (the
                                                     marker holds its pid)
    ...,rank=R                                       only rank R
    ...,seed=S                                       only runs whose config seed is S (one
                                                     confirmation run of a sweep, say)
    TAURAY_INJECT_FAILURE="epoch=K,action=oom,min_batch=N"
                                                     raise TrialOutOfMemoryError in every run
                                                     whose per-worker batch is >= N (no marker)

The loop asks :func:`fault_from_environment` once per run for a step hook (None when unset)
and calls it before every optimizer step.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tauray_trainers.failures import TrialOutOfMemoryError

FAULT_INJECTION_ENV = "TAURAY_INJECT_FAILURE"

#: Called before each optimizer step with ``(epoch, step_in_epoch)`` (epoch 1-based).
StepHook = Callable[[int, int], None]


class InjectedFailure(RuntimeError):
    """Raised by fault injection (``TAURAY_INJECT_FAILURE``)."""


@dataclass(frozen=True)
class FaultInjection:
    """One parsed ``TAURAY_INJECT_FAILURE`` setting (see the module's docstring)."""

    epoch: int
    marker: Path
    action: str = "raise"
    rank: int | None = None
    min_batch: int = 0
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> FaultInjection:
        """Parse ``epoch=K,marker=PATH[,action=...][,rank=R][,min_batch=N][,seed=S]``.

        Raises:
            ValueError: naming the setting, its value and the expected form.
        """
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        try:
            injection: FaultInjection | None = cls(
                int(fields["epoch"]),
                Path(fields.get("marker", "")),
                fields.get("action", "raise"),
                int(fields["rank"]) if "rank" in fields else None,
                int(fields.get("min_batch", 0)),
                int(fields["seed"]) if "seed" in fields else None,
            )
        except (KeyError, ValueError):
            injection = None
        if (
            injection is None
            or injection.action not in ("raise", "kill", "oom")
            or (injection.action != "oom" and "marker" not in fields)
        ):
            raise ValueError(
                f"{FAULT_INJECTION_ENV}={text!r}; expected 'epoch=<int>,marker=<path>' with "
                "optional ',action=raise|kill|oom', ',rank=<int>', ',min_batch=<int>', "
                "',seed=<int>'"
            )
        return injection

    @classmethod
    def from_env(cls) -> FaultInjection | None:
        """The setting in this process's environment, or None when it is unset or empty."""
        text = os.environ.get(FAULT_INJECTION_ENV, "").strip()
        return cls.parse(text) if text else None

    def maybe_fail(
        self, epoch: int, step_in_epoch: int, steps: int, rank: int, batch_size: int = 0
    ) -> None:
        """Fail if this is the chosen step of the chosen epoch on a chosen rank."""
        if epoch != self.epoch or step_in_epoch != steps // 2:
            return
        if self.rank is not None and rank != self.rank:
            return
        if self.action == "oom":
            if batch_size >= self.min_batch:
                raise TrialOutOfMemoryError(batch_size, batch_size, "injected", "(fault injection)")
            return
        marker = Path(f"{self.marker}.rank{rank}")
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFailure(
            f"injected failure in epoch {epoch}, step {step_in_epoch} (rank {rank})"
        )


def fault_from_environment(
    *, rank: int, batch_size: int, steps_per_epoch: int, seed: int | None = None
) -> StepHook | None:
    """The step hook of this run's fault injection, or None when ``TAURAY_INJECT_FAILURE`` is
    unset (the normal case) or names another seed than this run's ``seed``.

    Raises:
        ValueError: the setting is malformed.
    """
    injection = FaultInjection.from_env()
    if injection is None or (injection.seed is not None and injection.seed != seed):
        return None

    def before_step(epoch: int, step_in_epoch: int) -> None:
        injection.maybe_fail(epoch, step_in_epoch, steps_per_epoch, rank, batch_size)

    return before_step

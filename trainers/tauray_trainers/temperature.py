"""The temperature τ of contrastive losses: fixed, learnable or scheduled. The one owner of τ.

A loss takes τ as an argument on every call; this module decides what that τ is at each
optimizer step:

- :class:`FixedTemperature`: a constant held in a buffer, never a parameter (a parameter that
  receives no gradient stalls DDP's reducer or silently skips its averaging).
- :class:`LearnableTemperature`: CLIP's learnable τ (Radford et al., ICML 2021), parameterised
  by log τ, clamped to ``[minimum, maximum]`` after every optimizer step (CLIP caps the logit
  scale 1/τ at 100, i.e. τ >= 0.01), with its own learning-rate multiplier, no weight decay, an
  optional frozen warm-up, and a count of the steps it spent on a bound.
- :class:`ScheduledTemperature`: a pure function of the step, built from :func:`constant`,
  :func:`linear_warmup`, :func:`step_decay` or :func:`cosine` (Kukleva et al., "Temperature
  Schedules for Self-Supervised Contrastive Methods on Long-Tail Data", ICLR 2023). DINO's teacher
  warm-up (0.04 → 0.07 over 30 epochs, Caron et al., ICCV 2021) is a :func:`linear_warmup`.

Every variant checkpoints with ``state_dict()`` and resumes exactly. :func:`build_temperature`
maps a :class:`~tauray_trainers.config.TemperatureConfig` (durations in epochs) onto steps.

Under DDP a learnable τ that lives outside the DDP-wrapped module needs its gradient averaged
over ranks before the optimizer step (``tauray_trainers.distributed.all_reduce_mean``); the
losses' temperature gradients average to the single-process gradient.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tauray_trainers.config import DinoConfig, TemperatureConfig

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEDULES",
    "FixedTemperature",
    "LearnableTemperature",
    "ScheduledTemperature",
    "Temperature",
    "build_teacher_temperature",
    "build_temperature",
    "constant",
    "cosine",
    "linear_warmup",
    "make_schedule",
    "step_decay",
]

# Relative distance (in log τ) under which τ counts as sitting on a bound.
_BOUND_TOLERANCE = 1e-5


def _check_step(step: Any, name: str = "step") -> int:
    """An int >= 0 (Python or NumPy integers, or an integer 0-dim tensor)."""
    if isinstance(step, bool):
        raise TypeError(f"{name} must be an int >= 0, got {step!r}")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"{name} must be an int >= 0, got {step!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def _check_positive(name: str, value: Any) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def constant(step: int, value: float) -> float:
    """τ = ``value`` at every step.

    Raises:
        ValueError: if ``step`` < 0 or ``value`` <= 0.
    """
    _check_step(step)
    return _check_positive("value", value)


def linear_warmup(step: int, start: float, end: float, warmup_steps: int) -> float:
    """τ moves linearly from ``start`` (step 0) to ``end`` (step ``warmup_steps``), then stays.

    DINO's teacher temperature: ``linear_warmup(step, 0.04, 0.07, 30 * steps_per_epoch)``.

    Raises:
        ValueError: if ``step`` or ``warmup_steps`` < 0, or ``start``/``end`` <= 0.
    """
    step = _check_step(step)
    start = _check_positive("start", start)
    end = _check_positive("end", end)
    warmup_steps = _check_step(warmup_steps, "warmup_steps")
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def step_decay(step: int, initial: float, step_size: int, gamma: float) -> float:
    """τ = ``initial * gamma ** (step // step_size)`` (multiply by ``gamma`` every ``step_size``).

    Raises:
        ValueError: if ``step`` < 0, ``initial`` or ``gamma`` <= 0, or ``step_size`` < 1.
    """
    step = _check_step(step)
    initial = _check_positive("initial", initial)
    gamma = _check_positive("gamma", gamma)
    step_size = _check_step(step_size, "step_size")
    if step_size < 1:
        raise ValueError(f"step_size must be an int >= 1, got {step_size}")
    return initial * gamma ** (step // step_size)


def cosine(step: int, tau_min: float, tau_max: float, period_steps: int) -> float:
    """A full cosine period: ``tau_max`` at 0, ``tau_min`` at period/2, ``tau_max`` at period.

    ``τ = tau_min + (tau_max - tau_min) * (1 + cos(2π step / period_steps)) / 2``, repeating
    after each period (Kukleva et al., ICLR 2023, who use τ between 0.1 and 1.0).

    Raises:
        ValueError: if ``step`` < 0, ``tau_min`` <= 0, ``tau_min`` >= ``tau_max`` or
            ``period_steps`` < 1.
    """
    step = _check_step(step)
    tau_min = _check_positive("tau_min", tau_min)
    tau_max = _check_positive("tau_max", tau_max)
    if tau_min >= tau_max:
        raise ValueError(f"tau_min ({tau_min}) must be < tau_max ({tau_max})")
    period_steps = _check_step(period_steps, "period_steps")
    if period_steps < 1:
        raise ValueError(f"period_steps must be an int >= 1, got {period_steps}")
    phase = 2.0 * math.pi * (step % period_steps) / period_steps
    return tau_min + (tau_max - tau_min) * 0.5 * (1.0 + math.cos(phase))


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "linear_warmup": linear_warmup,
    "step": step_decay,
    "cosine": cosine,
}


def make_schedule(name: str, **params: Any) -> Callable[[int], float]:
    """The schedule ``name`` with its parameters bound: a pure function of the step.

    Args:
        name: one of ``constant``, ``linear_warmup``, ``step``, ``cosine``.
        **params: that function's keyword arguments other than ``step``.

    Raises:
        ValueError: on an unknown name or invalid parameters (checked at once, at step 0).
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown temperature schedule {name!r}; choose one of {sorted(SCHEDULES)}"
        )
    schedule = functools.partial(SCHEDULES[name], **params)
    try:
        schedule(0)
    except TypeError as error:
        raise ValueError(f"temperature schedule {name!r}: {error}") from None
    return schedule


class Temperature(nn.Module):
    """Base class: τ for an optimizer step, plus the hooks the training loop calls.

    The loop calls ``tau = temperature(step)`` before the loss, adds
    ``temperature.parameter_groups(lr)`` to its optimizer, calls
    ``temperature.after_optimizer_step(step)`` after each ``optimizer.step()`` and logs
    ``temperature.stats()``.
    """

    learnable: bool = False

    def forward(self, step: int) -> torch.Tensor:
        """0-dim τ for optimizer step ``step`` (>= 0)."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int) -> None:
        """Bookkeeping after ``optimizer.step()`` of step ``step`` (clamping when learnable)."""
        _check_step(step)

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups for τ: none unless learnable.

        Raises:
            ValueError: if ``base_lr`` is not a number > 0.
        """
        _check_positive("base_lr", base_lr)
        return []

    def stats(self) -> dict[str, float]:
        """``{"temperature": current τ, "at_bound_fraction": share of steps on a bound}``."""
        raise NotImplementedError


class FixedTemperature(Temperature):
    """A constant τ, stored as a buffer (checkpointed, moved with ``.to()``), never a parameter.

    Args:
        value: τ > 0.

    Raises:
        ValueError: if ``value`` <= 0 or not finite.
    """

    temperature: torch.Tensor

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor(_check_positive("value", value)))

    def extra_repr(self) -> str:
        return f"value={float(self.temperature):g}"

    def forward(self, step: int) -> torch.Tensor:
        _check_step(step)
        return self.temperature.clone()

    def stats(self) -> dict[str, float]:
        return {"temperature": float(self.temperature), "at_bound_fraction": 0.0}


class LearnableTemperature(Temperature):
    """Learnable τ = exp(log_temperature), clamped to ``[minimum, maximum]`` after each step.

    CLIP (Radford et al., ICML 2021) learns τ through its logarithm (the logit scale) starting
    at 0.07 and caps 1/τ at 100. The parameter gets its own optimizer group with
    ``lr = base_lr * lr_multiplier`` and no weight decay. For the first ``frozen_steps`` steps
    τ is returned detached (it stays at ``initial``). The share of steps after which τ sat on a
    bound is reported: a τ pinned to a bound means the bound, not the data, chose it.

    Args:
        initial: τ at the start, inside ``[minimum, maximum]``.
        minimum: lower bound (> 0).
        maximum: upper bound (> minimum).
        lr_multiplier: factor on the base learning rate (> 0).
        frozen_steps: optimizer steps during which τ receives no gradient (>= 0).

    Raises:
        ValueError: if a value is out of range (each message names the parameter).
    """

    learnable = True
    steps_taken: torch.Tensor
    steps_at_bound: torch.Tensor

    def __init__(
        self,
        initial: float = 0.07,
        minimum: float = 0.01,
        maximum: float = 1.0,
        lr_multiplier: float = 1.0,
        frozen_steps: int = 0,
    ) -> None:
        super().__init__()
        initial = _check_positive("initial", initial)
        self.minimum = _check_positive("minimum", minimum)
        self.maximum = _check_positive("maximum", maximum)
        if self.minimum >= self.maximum:
            raise ValueError(f"minimum ({minimum}) must be < maximum ({maximum})")
        if not self.minimum <= initial <= self.maximum:
            raise ValueError(
                f"initial must lie in [minimum, maximum] = [{minimum}, {maximum}], got {initial}"
            )
        self.lr_multiplier = _check_positive("lr_multiplier", lr_multiplier)
        self.frozen_steps = _check_step(frozen_steps, "frozen_steps")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)))
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.int64))
        self.register_buffer("steps_at_bound", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return (
            f"temperature={self.stats()['temperature']:.4g}, bounds=[{self.minimum:g}, "
            f"{self.maximum:g}], lr_multiplier={self.lr_multiplier:g}, "
            f"frozen_steps={self.frozen_steps}"
        )

    def forward(self, step: int) -> torch.Tensor:
        """τ with gradient, or detached while ``step < frozen_steps``."""
        if _check_step(step) < self.frozen_steps:
            return self.log_temperature.detach().exp()
        return self.log_temperature.exp()

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Clamp τ into its bounds and count whether it sits on one (no device sync)."""
        _check_step(step)
        low, high = math.log(self.minimum), math.log(self.maximum)
        self.log_temperature.clamp_(low, high)
        on_bound = (self.log_temperature <= low + _BOUND_TOLERANCE) | (
            self.log_temperature >= high - _BOUND_TOLERANCE
        )
        self.steps_taken += 1
        self.steps_at_bound += on_bound.to(torch.int64)

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        base_lr = _check_positive("base_lr", base_lr)
        return [
            {
                "params": [self.log_temperature],
                "lr": base_lr * self.lr_multiplier,
                "weight_decay": 0.0,
                "name": "temperature",
            }
        ]

    def stats(self) -> dict[str, float]:
        taken = int(self.steps_taken)
        fraction = int(self.steps_at_bound) / taken if taken else 0.0
        return {
            "temperature": float(self.log_temperature.detach().exp()),
            "at_bound_fraction": fraction,
        }


class ScheduledTemperature(Temperature):
    """τ given by a pure function of the optimizer step (see :func:`make_schedule`).

    The last step asked for and its τ are buffers, so ``stats()`` after a resume reports where the
    schedule stopped; the values themselves depend only on the step, so a resumed run that
    continues its step count continues the schedule exactly.

    Args:
        schedule: ``step -> τ`` (e.g. ``functools.partial(cosine, tau_min=0.1, tau_max=1.0,
            period_steps=1000)``); checked at step 0.
        name: label for ``repr`` (defaults to the function's name).

    Raises:
        TypeError: if ``schedule`` is not callable.
        ValueError: if the schedule gives a τ that is not > 0.
    """

    temperature: torch.Tensor
    last_step: torch.Tensor

    def __init__(self, schedule: Callable[[int], float], name: str | None = None) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be a function of the step, got {schedule!r}")
        self.schedule = schedule
        inner = getattr(schedule, "func", schedule)
        self.name = name or getattr(inner, "__name__", type(schedule).__name__)
        self.register_buffer("temperature", torch.tensor(self._value(0)))
        self.register_buffer("last_step", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"schedule={self.name}"

    def _value(self, step: int) -> float:
        value = self.schedule(step)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"schedule {self.name} returned {value!r} at step {step}, not a number")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"schedule {self.name} gave τ = {value!r} at step {step}; need > 0")
        return float(value)

    def forward(self, step: int) -> torch.Tensor:
        step = _check_step(step)
        self.temperature.fill_(self._value(step))
        self.last_step.fill_(step)
        return self.temperature.clone()

    def value_at(self, step: int) -> float:
        """τ at ``step`` as a float, without touching the state."""
        return self._value(_check_step(step))

    def stats(self) -> dict[str, float]:
        return {"temperature": float(self.temperature), "at_bound_fraction": 0.0}


def _epochs_to_steps(name: str, epochs: float, steps_per_epoch: int) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0:
        raise ValueError(f"{name} must be a number of epochs >= 0, got {epochs!r}")
    return round(epochs * steps_per_epoch)


def build_temperature(
    config: TemperatureConfig, steps_per_epoch: int, total_steps: int
) -> Temperature:
    """The temperature a run's config asks for, with epochs converted to optimizer steps.

    ``fixed`` → :class:`FixedTemperature` (``value``); ``learnable`` →
    :class:`LearnableTemperature` (``value`` initial, ``min``/``max`` bounds, ``lr_multiplier``,
    ``frozen_epochs``); ``scheduled`` → :class:`ScheduledTemperature` with ``schedule``:
    ``constant`` (``value``), ``linear_warmup`` (``start`` → ``value`` over ``warmup_epochs``),
    ``step`` (``value`` times ``gamma`` every ``step_epochs``) or ``cosine`` (``max`` → ``min``
    → ``max`` over ``period_epochs``, the whole run when None).

    Args:
        config: the run's temperature section.
        steps_per_epoch: optimizer steps per epoch (>= 1).
        total_steps: optimizer steps of the whole run (>= 1).

    Raises:
        ValueError: on an unknown mode or schedule, or values the chosen variant rejects.
    """
    for name, value in (("steps_per_epoch", steps_per_epoch), ("total_steps", total_steps)):
        if _check_step(value, name) < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value}")
    if config.mode == "fixed":
        return FixedTemperature(config.value)
    if config.mode == "learnable":
        return LearnableTemperature(
            initial=config.value,
            minimum=config.min,
            maximum=config.max,
            lr_multiplier=config.lr_multiplier,
            frozen_steps=_epochs_to_steps(
                "temperature.frozen_epochs", config.frozen_epochs, steps_per_epoch
            ),
        )
    if config.mode != "scheduled":
        raise ValueError(
            f"unknown temperature.mode {config.mode!r}; choose one of fixed, learnable, scheduled"
        )
    name = config.schedule
    if name == "constant":
        params: dict[str, Any] = {"value": config.value}
    elif name == "linear_warmup":
        if config.start is None:
            raise ValueError(
                "temperature.start (τ at step 0) must be set when temperature.schedule is "
                "'linear_warmup', got None"
            )
        params = {
            "start": config.start,
            "end": config.value,
            "warmup_steps": _epochs_to_steps(
                "temperature.warmup_epochs", config.warmup_epochs, steps_per_epoch
            ),
        }
    elif name == "step":
        step_steps = _epochs_to_steps(
            "temperature.step_epochs", config.step_epochs, steps_per_epoch
        )
        params = {"initial": config.value, "step_size": max(1, step_steps), "gamma": config.gamma}
    elif name == "cosine":
        period = (
            total_steps
            if config.period_epochs is None
            else max(
                1,
                _epochs_to_steps(
                    "temperature.period_epochs", config.period_epochs, steps_per_epoch
                ),
            )
        )
        params = {"tau_min": config.min, "tau_max": config.max, "period_steps": period}
    else:
        raise ValueError(
            f"unknown temperature.schedule {name!r}; choose one of {sorted(SCHEDULES)}"
        )
    return ScheduledTemperature(make_schedule(name, **params), name=name)


def build_teacher_temperature(dino: DinoConfig, steps_per_epoch: int) -> ScheduledTemperature:
    """DINO's teacher τ: linear warm-up from ``teacher_temperature_start`` to
    ``teacher_temperature`` over ``teacher_temperature_warmup_epochs``, then constant.

    Args:
        dino: the run's DINO section.
        steps_per_epoch: optimizer steps per epoch (>= 1).

    Raises:
        ValueError: if ``steps_per_epoch`` < 1 or a temperature is not > 0.
    """
    if _check_step(steps_per_epoch, "steps_per_epoch") < 1:
        raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch}")
    schedule = make_schedule(
        "linear_warmup",
        start=dino.teacher_temperature_start,
        end=dino.teacher_temperature,
        warmup_steps=_epochs_to_steps(
            "dino.teacher_temperature_warmup_epochs",
            dino.teacher_temperature_warmup_epochs,
            steps_per_epoch,
        ),
    )
    return ScheduledTemperature(schedule, name="teacher_linear_warmup")

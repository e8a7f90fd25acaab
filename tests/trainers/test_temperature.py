"""The temperature module: fixed, learnable and scheduled τ, config mapping, resume, errors."""

from __future__ import annotations

import functools
import io
import itertools
import math

import pytest
import torch

from tauray_trainers.config import DinoConfig, TemperatureConfig
from tauray_trainers.losses import ClipLoss
from tauray_trainers.temperature import (
    FixedTemperature,
    LearnableTemperature,
    ScheduledTemperature,
    Temperature,
    build_teacher_temperature,
    build_temperature,
    constant,
    cosine,
    linear_warmup,
    make_schedule,
    step_decay,
)


def embeddings(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator)


# --- fixed -----------------------------------------------------------------------------------


def test_fixed_is_a_buffer_not_a_parameter() -> None:
    fixed = FixedTemperature(0.2)
    assert list(fixed.parameters()) == []
    assert fixed.parameter_groups(1e-3) == []
    tau = fixed(0)
    assert tau.dim() == 0 and not tau.requires_grad
    assert tau.item() == pytest.approx(0.2)
    assert set(fixed.state_dict()) == {"temperature"}
    assert fixed.stats() == {"temperature": pytest.approx(0.2), "at_bound_fraction": 0.0}
    tau.add_(1.0)  # the returned tensor is the caller's: the module's value is unchanged
    assert fixed(1).item() == pytest.approx(0.2)
    fixed.after_optimizer_step(0)
    assert fixed(5).item() == pytest.approx(0.2)


# --- learnable -------------------------------------------------------------------------------


def test_learnable_defaults_and_log_parameterisation() -> None:
    learnable = LearnableTemperature()
    assert learnable.learnable
    assert (learnable.minimum, learnable.maximum) == (0.01, 1.0)
    (parameter,) = list(learnable.parameters())
    assert parameter is learnable.log_temperature
    assert parameter.item() == pytest.approx(math.log(0.07))
    tau = learnable(0)
    assert tau.requires_grad and tau.item() == pytest.approx(0.07)
    groups = learnable.parameter_groups(0.01)
    assert groups == [
        {"params": [parameter], "lr": 0.01, "weight_decay": 0.0, "name": "temperature"}
    ]
    assert LearnableTemperature(lr_multiplier=5.0).parameter_groups(0.01)[0]["lr"] == 0.05


def test_gradient_flows_into_learnable_temperature() -> None:
    learnable = LearnableTemperature(initial=0.1)
    images, texts = embeddings(0)
    tau = learnable(0)
    loss = ClipLoss()(images, texts, temperature=tau)
    loss.backward()
    grad_log = learnable.log_temperature.grad
    assert grad_log is not None and grad_log.abs().item() > 0
    # d loss / d log τ = τ d loss / d τ, checked against a float64 finite difference.
    double_images, double_texts = images.double(), texts.double()

    def at(value: float) -> float:
        return ClipLoss()(double_images, double_texts, temperature=value).item()

    eps = 1e-6
    numeric = 0.1 * (at(0.1 + eps) - at(0.1 - eps)) / (2 * eps)
    assert grad_log.item() == pytest.approx(numeric, rel=1e-3)


def test_clamped_after_each_step_and_bound_time_counted() -> None:
    learnable = LearnableTemperature(initial=0.5, minimum=0.05, maximum=0.8)
    optimizer = torch.optim.SGD(learnable.parameter_groups(base_lr=10.0))
    history = []
    for step, direction in enumerate([1.0, 1.0, -0.05, 0.0]):
        # +1 pushes log τ far above the bound, -0.05 moves it back inside by 0.4, 0 leaves it.
        optimizer.zero_grad()
        (-direction * learnable(step)).backward()
        optimizer.step()
        learnable.after_optimizer_step(step)
        history.append(learnable.stats()["temperature"])
    assert history[0] == pytest.approx(0.8) and history[1] == pytest.approx(0.8)
    assert history[2] == pytest.approx(0.8 * math.exp(-0.4), rel=1e-5)
    assert history[3] == pytest.approx(history[2])
    assert learnable.stats()["at_bound_fraction"] == pytest.approx(2 / 4)
    assert int(learnable.steps_taken) == 4

    below = LearnableTemperature(initial=0.06, minimum=0.05, maximum=0.8)
    with torch.no_grad():
        below.log_temperature.fill_(math.log(1e-4))  # as if an optimizer overshot
    below.after_optimizer_step(0)
    assert below.stats() == {"temperature": pytest.approx(0.05), "at_bound_fraction": 1.0}


def test_frozen_steps_hold_temperature_still() -> None:
    learnable = LearnableTemperature(initial=0.2, frozen_steps=3)
    optimizer = torch.optim.AdamW(learnable.parameter_groups(0.1))
    images, texts = embeddings(1)
    for step in range(5):
        tau = learnable(step)
        assert tau.requires_grad == (step >= 3)
        loss = ClipLoss()(images, texts, temperature=tau)
        optimizer.zero_grad()
        if tau.requires_grad:
            loss.backward()
        optimizer.step()
        learnable.after_optimizer_step(step)
        if step < 3:
            assert learnable.stats()["temperature"] == pytest.approx(0.2)
    assert learnable.stats()["temperature"] != pytest.approx(0.2)


def train_learnable(
    learnable: LearnableTemperature, optimizer: torch.optim.Optimizer, steps: range
) -> list[float]:
    values = []
    for step in steps:
        images, texts = embeddings(100 + step)
        optimizer.zero_grad()
        tau = learnable(step)
        if tau.requires_grad:  # frozen steps give a detached τ
            ClipLoss()(images, texts, temperature=tau).backward()
        optimizer.step()
        learnable.after_optimizer_step(step)
        values.append(learnable.stats()["temperature"])
    return values


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_learnable_checkpoint_resumes_exactly() -> None:
    settings = {"initial": 0.9, "minimum": 0.3, "maximum": 0.95, "frozen_steps": 2}

    def fresh() -> tuple[LearnableTemperature, torch.optim.Optimizer]:
        module = LearnableTemperature(**settings)
        return module, torch.optim.Adam(module.parameter_groups(0.05))

    straight, straight_opt = fresh()
    expected = train_learnable(straight, straight_opt, range(12))

    first, first_opt = fresh()
    before = train_learnable(first, first_opt, range(5))
    checkpoint = roundtrip({"temperature": first.state_dict(), "opt": first_opt.state_dict()})
    resumed, resumed_opt = fresh()
    resumed.load_state_dict(checkpoint["temperature"])
    resumed_opt.load_state_dict(checkpoint["opt"])
    after = train_learnable(resumed, resumed_opt, range(5, 12))

    assert before + after == expected
    assert resumed.stats() == straight.stats()
    assert int(resumed.steps_taken) == 12
    assert 0 < straight.stats()["at_bound_fraction"] < 1  # the bounds were actually touched


# --- schedules -------------------------------------------------------------------------------


def test_constant_and_linear_warmup_endpoints() -> None:
    assert constant(0, 0.3) == constant(10**6, 0.3) == 0.3
    values = [linear_warmup(s, start=0.04, end=0.07, warmup_steps=30) for s in range(40)]
    assert values[0] == pytest.approx(0.04)
    assert values[15] == pytest.approx(0.055)
    assert values[30:] == [pytest.approx(0.07)] * 10
    assert all(b > a for a, b in itertools.pairwise(values[:31]))
    assert linear_warmup(0, start=0.5, end=0.1, warmup_steps=0) == 0.1
    assert linear_warmup(5, start=0.5, end=0.1, warmup_steps=10) == pytest.approx(0.3)


def test_dino_teacher_warmup_is_a_linear_warmup() -> None:
    dino = DinoConfig(
        teacher_temperature_start=0.04,
        teacher_temperature=0.07,
        teacher_temperature_warmup_epochs=30,
    )
    teacher = build_teacher_temperature(dino, steps_per_epoch=10)
    assert teacher(0).item() == pytest.approx(0.04)
    assert teacher(150).item() == pytest.approx(0.055)
    assert teacher(300).item() == pytest.approx(0.07)
    assert teacher(1000).item() == pytest.approx(0.07)
    assert teacher.value_at(77) == linear_warmup(77, 0.04, 0.07, 300)


def test_step_decay_shape() -> None:
    values = [step_decay(s, initial=0.8, step_size=3, gamma=0.5) for s in range(10)]
    assert values == pytest.approx([0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1])


def test_cosine_full_period_shape() -> None:
    """Kukleva et al.: τ_max at 0, τ_min at half the period, back to τ_max, then repeat."""
    period = 100
    values = [cosine(s, tau_min=0.1, tau_max=1.0, period_steps=period) for s in range(201)]
    assert values[0] == pytest.approx(1.0)
    assert values[50] == pytest.approx(0.1)
    assert values[25] == pytest.approx(0.55)
    assert values[100] == pytest.approx(1.0)
    assert values[150] == pytest.approx(0.1)
    assert all(b < a for a, b in itertools.pairwise(values[:51]))
    assert all(b > a for a, b in itertools.pairwise(values[50:101]))
    assert values[30] == pytest.approx(values[70])  # symmetric about the half period
    assert min(values) >= 0.1 - 1e-12 and max(values) <= 1.0 + 1e-12


def test_scheduled_temperature_state_and_resume() -> None:
    schedule = functools.partial(cosine, tau_min=0.2, tau_max=0.6, period_steps=20)
    scheduled = ScheduledTemperature(schedule)
    assert list(scheduled.parameters()) == [] and scheduled.parameter_groups(1.0) == []
    seen = [scheduled(step).item() for step in range(7)]
    assert scheduled.stats() == {"temperature": pytest.approx(schedule(6)), "at_bound_fraction": 0}
    resumed = ScheduledTemperature(schedule)
    resumed.load_state_dict(roundtrip(scheduled.state_dict()))
    assert int(resumed.last_step) == 6
    assert resumed.stats() == scheduled.stats()
    continued = [resumed(step).item() for step in range(7, 20)]
    assert seen + continued == pytest.approx([schedule(s) for s in range(20)])
    assert "cosine" in repr(scheduled)


# --- config mapping --------------------------------------------------------------------------


def test_build_temperature_maps_every_mode() -> None:
    fixed = build_temperature(TemperatureConfig(mode="fixed", value=0.3), 10, 100)
    assert isinstance(fixed, FixedTemperature) and fixed(0).item() == pytest.approx(0.3)

    learnable = build_temperature(
        TemperatureConfig(
            mode="learnable", value=0.07, min=0.02, max=0.5, lr_multiplier=3, frozen_epochs=1.5
        ),
        steps_per_epoch=10,
        total_steps=100,
    )
    assert isinstance(learnable, LearnableTemperature)
    assert (learnable.minimum, learnable.maximum, learnable.frozen_steps) == (0.02, 0.5, 15)
    assert learnable.parameter_groups(0.1)[0]["lr"] == pytest.approx(0.3)

    def scheduled(**fields: object) -> Temperature:
        return build_temperature(TemperatureConfig(mode="scheduled", **fields), 10, 100)

    assert [scheduled(schedule="constant", value=0.2)(s).item() for s in (0, 99)] == (
        pytest.approx([0.2, 0.2])
    )
    warm = scheduled(schedule="linear_warmup", start=0.5, value=0.1, warmup_epochs=2)
    assert [warm(s).item() for s in (0, 10, 20, 50)] == pytest.approx([0.5, 0.3, 0.1, 0.1])
    decay = scheduled(schedule="step", value=0.4, step_epochs=2, gamma=0.5)
    assert [decay(s).item() for s in (0, 19, 20, 40)] == pytest.approx([0.4, 0.4, 0.2, 0.1])
    whole_run = scheduled(schedule="cosine", min=0.1, max=1.0)  # period None = total_steps
    assert [whole_run(s).item() for s in (0, 50, 100)] == pytest.approx([1.0, 0.1, 1.0])
    two_epochs = scheduled(schedule="cosine", min=0.1, max=1.0, period_epochs=2)
    assert [two_epochs(s).item() for s in (0, 10, 20)] == pytest.approx([1.0, 0.1, 1.0])


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: FixedTemperature(0.0), r"value must be a finite number > 0, got 0.0"),
        (lambda: FixedTemperature(-0.1), r"value must be a finite number > 0, got -0.1"),
        (lambda: FixedTemperature(float("nan")), r"value must be a finite number > 0, got nan"),
        (lambda: LearnableTemperature(initial=0.0), r"initial must be a finite number > 0"),
        (lambda: LearnableTemperature(minimum=0.0), r"minimum must be a finite number > 0"),
        (
            lambda: LearnableTemperature(initial=0.5, minimum=0.5, maximum=0.5),
            r"minimum \(0.5\) must be < maximum \(0.5\)",
        ),
        (
            lambda: LearnableTemperature(initial=0.5, minimum=1.0, maximum=0.2),
            r"minimum \(1.0\) must be < maximum \(0.2\)",
        ),
        (
            lambda: LearnableTemperature(initial=2.0),
            r"initial must lie in \[minimum, maximum\] = \[0.01, 1.0\], got 2.0",
        ),
        (lambda: LearnableTemperature(lr_multiplier=0), r"lr_multiplier must be a finite number"),
        (
            lambda: LearnableTemperature(frozen_steps=-1),
            r"frozen_steps must be an int >= 0, got -1",
        ),
        (lambda: LearnableTemperature()(-1), r"step must be an int >= 0, got -1"),
        (lambda: LearnableTemperature().after_optimizer_step(-3), r"step must be .* got -3"),
        (lambda: LearnableTemperature().parameter_groups(0.0), r"base_lr must be a finite number"),
        (lambda: FixedTemperature(0.1)(-2), r"step must be an int >= 0, got -2"),
        (lambda: constant(-1, 0.1), r"step must be an int >= 0, got -1"),
        (lambda: constant(0, 0.0), r"value must be a finite number > 0, got 0.0"),
        (lambda: linear_warmup(0, 0.0, 0.1, 5), r"start must be a finite number > 0, got 0.0"),
        (lambda: linear_warmup(0, 0.1, -1.0, 5), r"end must be a finite number > 0, got -1.0"),
        (lambda: linear_warmup(0, 0.1, 0.2, -5), r"warmup_steps must be an int >= 0, got -5"),
        (lambda: step_decay(0, 0.1, 0, 0.5), r"step_size must be an int >= 1, got 0"),
        (lambda: step_decay(0, 0.1, 2, 0.0), r"gamma must be a finite number > 0, got 0.0"),
        (lambda: step_decay(-4, 0.1, 2, 0.5), r"step must be an int >= 0, got -4"),
        (lambda: cosine(0, 0.0, 1.0, 10), r"tau_min must be a finite number > 0, got 0.0"),
        (lambda: cosine(0, 1.0, 0.1, 10), r"tau_min \(1.0\) must be < tau_max \(0.1\)"),
        (lambda: cosine(0, 0.1, 1.0, 0), r"period_steps must be an int >= 1, got 0"),
        (lambda: cosine(-1, 0.1, 1.0, 10), r"step must be an int >= 0, got -1"),
        (
            lambda: make_schedule("exponential", value=0.1),
            r"unknown temperature schedule 'exponential'; choose one of "
            r"\['constant', 'cosine', 'linear_warmup', 'step'\]",
        ),
        (lambda: make_schedule("cosine", tau_min=0.1), r"temperature schedule 'cosine': .*"),
        (
            lambda: ScheduledTemperature(lambda step: 0.1 - 0.1 * step)(1),
            r"gave τ = 0.0 at step 1; need > 0",
        ),
        (
            lambda: build_temperature(
                TemperatureConfig(mode="scheduled", schedule="linear_warmup"), 10, 100
            ),
            r"temperature.start .* must be set .* 'linear_warmup', got None",
        ),
        (
            lambda: build_temperature(TemperatureConfig(), 0, 100),
            r"steps_per_epoch must be an int >= 1, got 0",
        ),
        (
            lambda: build_temperature(TemperatureConfig(), 10, -1),
            r"total_steps must be an int >= 0, got -1",
        ),
        (
            lambda: build_temperature(
                TemperatureConfig.model_construct(mode="scheduled", schedule="sawtooth"), 10, 100
            ),
            r"unknown temperature.schedule 'sawtooth'; choose one of",
        ),
        (
            lambda: build_temperature(TemperatureConfig.model_construct(mode="annealed"), 10, 100),
            r"unknown temperature.mode 'annealed'; choose one of fixed, learnable, scheduled",
        ),
    ],
)
def test_invalid_values_raise_value_error(make: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make()  # type: ignore[operator]


def test_invalid_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match=r"step must be an int >= 0, got 1.5"):
        FixedTemperature(0.1)(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"step must be an int >= 0, got True"):
        constant(True, 0.1)
    with pytest.raises(TypeError, match=r"value must be a number > 0, got '0.1'"):
        FixedTemperature("0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"schedule must be a function of the step"):
        ScheduledTemperature(0.1)  # type: ignore[arg-type]

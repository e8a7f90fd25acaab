"""The built-in spaces: 50 trials of each, sampled by a seeded grouped multivariate TPE study,
build valid trainer configs, and conditional parameters appear exactly under their conditions."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import optuna
import pytest

from tauray_spaces import (
    BUILTIN_NAMES,
    SearchSpace,
    builtin_file,
    get_space,
    list_spaces,
    load_space_text,
)
from tauray_trainers.config import TrainConfig, build_config

P = "train_loop_config/"
N_TRIALS = 50


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _score(config: TrainConfig) -> float:
    """A deterministic stand-in objective so TPE leaves its random start-up phase."""
    return -abs(math.log(config.temperature.value / 0.2)) - config.optimizer.weight_decay


def run_study(space: SearchSpace, seed: int = 0) -> list[tuple[dict[str, Any], TrainConfig]]:
    """Sample N_TRIALS trials (baselines first) and build each trial's trainer config."""
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    results: list[tuple[dict[str, Any], TrainConfig]] = []

    def objective(trial: optuna.Trial) -> float:
        sampled, constants = space.assign(trial)
        flat = {**sampled, **constants}
        config = build_config(space.trial_config(flat))
        assert config == build_config(space.trial_config(flat))  # pure: same values, same config
        results.append((flat, config))
        return _score(config)

    study.optimize(objective, n_trials=N_TRIALS)
    assert len(results) == N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return results


def test_the_four_builtins_are_listed_and_are_the_shipped_yaml_files() -> None:
    assert [s.name for s in list_spaces()] == [
        "simclr-temperature",
        "clip-temperature",
        "dino-temperature",
        "batch-size",
    ]
    folder = builtin_file("batch-size").parent
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(BUILTIN_NAMES)
    for space in list_spaces():
        assert space.source == f"builtin:{space.name}"
        assert space.description and all(spec.help for spec in space.parameters())
        assert space.fixed["method"] == space.method
        assert space.fixed["data"]["name"] == "digits-cluttered"
        build_config(space.fixed)  # the fixed settings alone are a valid config


def test_builtins_round_trip_through_yaml() -> None:
    for space in list_spaces():
        again = load_space_text(space.to_yaml(), "round-trip")
        assert again.parameters() == space.parameters()
        assert (again.fixed, again.objectives, again.points_to_evaluate) == (
            space.fixed,
            space.objectives,
            space.points_to_evaluate,
        )


def test_get_space_returns_independent_copies() -> None:
    first = get_space("simclr-temperature")
    first.fixed["epochs"] = 999
    assert get_space("simclr-temperature").fixed["epochs"] == 6


def test_sampling_is_seeded() -> None:
    space = get_space("simclr-temperature")
    first = [flat for flat, _ in run_study(space, seed=3)][:15]
    second = [flat for flat, _ in run_study(space, seed=3)][:15]
    other = [flat for flat, _ in run_study(space, seed=4)][:15]
    assert first == second
    assert first != other


def _within(value: float, low: float, high: float) -> bool:
    return low <= value <= high


@pytest.mark.parametrize("name", ["simclr-temperature", "clip-temperature"])
def test_temperature_spaces_sample_each_mode_with_only_its_parameters(name: str) -> None:
    space = get_space(name)
    results = run_study(space)
    common = {"optimizer/lr", "optimizer/weight_decay", "batch_size_per_worker"}
    batches, lowest_tau = (32, 64, 128), 0.02
    if name == "clip-temperature":
        common.add("loss/name")
        # Batches of 128 and τ < 0.05 stay on CLIP's early plateau for a 6-epoch trial.
        batches, lowest_tau = (16, 32, 64), 0.05
    own = {
        "fixed": {"temperature/mode", "temperature/value"},
        "learnable": {
            "temperature/mode",
            "temperature/value",
            "temperature/lr_multiplier",
            "temperature/frozen_epochs",
        },
        "scheduled": {
            "temperature/mode",
            "temperature/schedule",
            "temperature/min",
            "temperature/max",
            "temperature/period_epochs",
        },
    }
    modes = Counter()
    for flat, config in results:
        keys = {name.removeprefix(P) for name in flat}
        mode = flat[P + "temperature/mode"]
        modes[mode] += 1
        expected = own[mode] | common
        if name == "clip-temperature" and flat[P + "loss/name"] == "sigmoid":
            expected = expected | {"loss/sigmoid_bias"}
        assert keys == expected, (mode, keys ^ expected)
        assert config.method == space.method and config.epochs == 6
        assert config.temperature.mode == mode
        assert config.batch_size_per_worker in batches
        assert _within(config.optimizer.lr, 1e-4, 3e-3)
        if mode in ("fixed", "learnable"):
            assert _within(config.temperature.value, lowest_tau, 1.0)
        if mode == "learnable":
            assert _within(config.temperature.lr_multiplier, 0.1, 10.0)
            assert _within(config.temperature.frozen_epochs, 0.0, 2.0)
        if mode == "scheduled":
            assert config.temperature.schedule == "cosine"
            assert config.temperature.min < config.temperature.max
            assert _within(config.temperature.period_epochs or 0.0, 1.0, 6.0)
    assert set(modes) == {"fixed", "learnable", "scheduled"}, modes
    first, second = (flat for flat, _ in results[:2])
    assert first == {**first, **space.points_to_evaluate[0]}  # baselines run first
    assert second == {**second, **space.points_to_evaluate[1]}


def test_clip_sigmoid_bias_only_with_the_sigmoid_loss() -> None:
    results = run_study(get_space("clip-temperature"))
    losses = Counter(config.loss.name for _, config in results)
    assert set(losses) == {"infonce", "sigmoid"}
    for flat, config in results:
        has_bias = P + "loss/sigmoid_bias" in flat
        assert has_bias == (config.loss.name == "sigmoid")
        if has_bias:
            assert _within(config.loss.sigmoid_bias, -12.0, -1.0)
        else:
            assert config.loss.sigmoid_bias == -10.0  # the trainer's default, untouched
    baseline = results[0][1]
    assert (baseline.loss.name, baseline.temperature.mode) == ("infonce", "learnable")
    assert baseline.temperature.value == 0.07
    assert all(config.loss.positives == "groups" for _, config in results)


def test_dino_space_searches_the_teacher_and_student_temperatures() -> None:
    results = run_study(get_space("dino-temperature"))
    for flat, config in results:
        assert {name.removeprefix(P) for name in flat} == {
            "dino/teacher_temperature",
            "dino/teacher_temperature_warmup_epochs",
            "dino/student_temperature",
        }
        assert config.method == "dino"
        assert _within(config.dino.teacher_temperature, 0.02, 0.07)
        assert _within(config.dino.teacher_temperature_warmup_epochs, 0.0, 3.0)
        assert config.dino.student_temperature > config.dino.teacher_temperature
        assert config.dino.teacher_temperature_start == 0.02
    assert results[0][1].dino.teacher_temperature == 0.04


def test_batch_size_space_ties_temperature_to_the_global_batch() -> None:
    space = get_space("batch-size")
    results = run_study(space)
    assert not space.parameter("temperature/value").sampled
    seen = set()
    for _, config in results:
        batch = config.global_batch_size
        seen.add((batch, config.optimizer.lr_scaling))
        assert batch in (32, 64, 128, 256)
        # Our own statement of the rule: (B - 1) exp(-margin / τ) is the same as at B = 128,
        # τ = 0.1 (τ is rounded to 6 significant digits; exp amplifies that about 10x).
        kept = (batch - 1) * math.exp(-1.0 / config.temperature.value)
        assert kept == pytest.approx(127 * math.exp(-1.0 / 0.1), rel=1e-4)
        assert config.temperature.mode == "fixed"
        assert config.optimizer.base_batch_size == 128
    assert {b for b, _ in seen} == {32, 64, 128, 256}
    assert {r for _, r in seen} == {"none", "linear", "sqrt"}
    assert results[0][1].temperature.value == 0.1  # the baseline: B = 128


def test_define_returns_only_constants_and_ray_turns_names_into_the_config() -> None:
    """The contract with Ray Tune's OptunaSearch (no Ray cluster needed)."""
    from ray.tune.search.optuna import OptunaSearch

    space = get_space("batch-size")
    search = OptunaSearch(
        space=space.define,
        metric=space.metric,
        mode=space.mode,
        points_to_evaluate=list(space.points_to_evaluate),
        sampler=optuna.samplers.TPESampler(multivariate=True, group=True, seed=0),
    )
    config = search.suggest("trial-0")
    assert config == {
        "train_loop_config": {
            "global_batch_size": 128,
            "optimizer": {"lr_scaling": "none"},
            "temperature": {"value": 0.1},
        }
    }
    merged = build_config(space.trial_config({"train_loop_config/global_batch_size": 32}))
    assert merged.global_batch_size == 32 and merged.optimizer.lr == 1e-3

    for seed in range(8):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        batch = trial.suggest_categorical(P + "global_batch_size", [32, 64, 128, 256])
        constants = space.define(trial)
        assert trial.params[P + "global_batch_size"] == batch
        assert constants == {
            "train_loop_config/temperature/value": pytest.approx(
                1 / (10 + math.log((batch - 1) / 127)), rel=1e-5
            )
        }
    dino_trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert get_space("dino-temperature").define(dino_trial) is None

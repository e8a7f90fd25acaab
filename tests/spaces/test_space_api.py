"""The SearchSpace API beyond sampling: the tied rule, overrides (--set) and lookups."""

from __future__ import annotations

import math

import optuna
import pytest

from tauray_spaces import get_space, tied_temperature
from tauray_trainers.config import apply_overrides, build_config

P = "train_loop_config/"


@pytest.mark.parametrize("margin", [0.3, 1.0, 2.0])
@pytest.mark.parametrize("batch", [2, 16, 128, 4096])
def test_tied_temperature_keeps_the_positive_probability(batch: int, margin: float) -> None:
    """Naive reference: p = 1 / (1 + (B - 1) exp(-margin / τ)) stays what it is at B_ref, τ_ref."""
    reference_tau, reference_batch = 0.2, 256

    def positive_probability(b: int, tau: float) -> float:
        return 1.0 / (1.0 + (b - 1) * math.exp(-margin / tau))

    try:
        tau = tied_temperature(batch, reference_tau, reference_batch, margin)
    except ValueError as error:  # only where the rule has no positive solution
        assert 1 / reference_tau + math.log((batch - 1) / (reference_batch - 1)) / margin <= 0
        assert "not positive" in str(error)
        return
    assert tau > 0
    assert positive_probability(batch, tau) == pytest.approx(
        positive_probability(reference_batch, reference_tau), rel=1e-4
    )
    assert (tau < reference_tau) == (batch > reference_batch) or batch == reference_batch


def test_tied_temperature_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch sizes >= 2"):
        tied_temperature(1, 0.1, 128, 1.0)
    with pytest.raises(ValueError, match="margin > 0"):
        tied_temperature(64, 0.1, 128, 0.0)


def _trial(seed: int = 0) -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


def test_pinning_a_parameter_drops_what_its_other_values_needed() -> None:
    space = get_space("simclr-temperature").with_overrides(["temperature.mode=fixed", "epochs=3"])
    keys = [spec.key for spec in space.parameters()]
    assert "temperature/lr_multiplier" not in keys and "temperature/min" not in keys
    assert "temperature/value" in keys and space.parameter("temperature/mode").value == "fixed"
    assert space.fixed["epochs"] == 3
    assert space.points_to_evaluate == (
        {P + "temperature/value": 0.1},
        {P + "temperature/value": 0.07},
    )
    for seed in range(10):
        config = build_config(space.sample_config(_trial(seed)))
        assert config.temperature.mode == "fixed" and config.epochs == 3
    assert space.define(_trial()) == {P + "temperature/mode": "fixed"}
    # the original is untouched
    assert get_space("simclr-temperature").parameter("temperature/mode").distribution == "choice"


def test_overrides_accept_mappings_and_nested_sections() -> None:
    space = get_space("batch-size").with_overrides(
        {"temperature/value": 0.2, "data": {"name": "digits", "max_train_samples": 256}}
    )
    assert space.parameter("temperature.value").distribution == "constant"
    assert space.fixed["data"] == {"name": "digits", "max_train_samples": 256}
    config = build_config(space.sample_config(_trial()))
    assert config.temperature.value == 0.2 and config.data.max_train_samples == 256


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=0"], "override epochs=0 is not allowed; epochs takes an integer >= 1"),
        (["optimizer.learning_rate=0.1"], "override 'optimizer/learning_rate': unknown"),
        (["epochs"], "not of the form key=value"),
        (["method=clip"], "searches simclr"),
        (["temperature.mode=cosine"], "temperature/mode takes one of 'fixed'"),
        (["=3"], "has an empty key"),
        (["epochs=[3, 4]"], "override epochs='[3, 4]': a list is not a config value"),
        (["epochs=!!python/object/apply:os.system [id]"], "is not allowed (plain values only)"),
        (["data.root=&a [*a]"], "an alias refers to its own anchor"),
        (["epochs=" + "[" * 10_000], "nesting deeper than 50 levels"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        get_space("simclr-temperature").with_overrides(overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tune_and_train_read_a_set_value_alike() -> None:
    items = [
        "optimizer.min_lr_ratio=1e-3",
        "data={name: digits, max_train_samples: 256}",
        "epochs=3",
    ]
    space = get_space("simclr-temperature").with_overrides(items)
    train = apply_overrides({}, items)
    assert space.fixed["optimizer"]["min_lr_ratio"] == train["optimizer"]["min_lr_ratio"] == 1e-3
    assert space.fixed["data"] == train["data"] == {"name": "digits", "max_train_samples": 256}
    assert space.fixed["epochs"] == train["epochs"] == 3


def test_pinning_every_parameter_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing is left to search"):
        get_space("dino-temperature").with_overrides(
            {
                "dino.teacher_temperature": 0.04,
                "dino.student_temperature": 0.1,
                "dino.teacher_temperature_warmup_epochs": 0.0,
            }
        )


def test_parameter_lookup_and_descriptions() -> None:
    space = get_space("clip-temperature")
    bias = space.parameter("train_loop_config/loss/sigmoid_bias")
    assert bias.name == P + "loss/sigmoid_bias"
    assert bias.condition == "loss/name == sigmoid"
    assert bias.range_text() == "[-12, -1]"
    assert space.parameter("loss.name").condition is None
    with pytest.raises(KeyError, match="has no parameter 'loss/bias'"):
        space.parameter("loss/bias")
    assert space.metric == "val/zeroshot_top1" and space.mode == "max"
    order = [spec.key for spec in space.parameters()]
    assert order.index("loss/name") < order.index("loss/sigmoid_bias")

"""tauray.ui_layout: what makes a sweep readable in the MLflow UI (names, objective columns,
short parameter keys), as pure functions; the sweep's runs read back from a real server are
checked in ``test_tune_e2e.py``."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tauray import ui_layout
from tauray.trials import PHASE_CONFIRM, TrialRecord
from tauray_trainers.config import build_config, flatten


def _record(index: int = 2, **config: Any) -> TrialRecord:
    return TrialRecord(
        trial_id=f"id{index}",
        index=index,
        sampled={},
        config=build_config(config).to_dict(),
    )


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"temperature": {"mode": "fixed", "value": 0.1}}, "t002 fixed τ=0.100"),
        ({"temperature": {"mode": "learnable", "value": 0.1823}}, "t002 learnable τ0=0.182"),
        (
            {"temperature": {"mode": "scheduled", "min": 0.03, "max": 0.5}},
            "t002 cosine τ 0.500→0.030",
        ),
        (
            {"temperature": {"mode": "scheduled", "schedule": "linear_warmup", "start": 1.0}},
            "t002 warmup τ 1.000→0.100",
        ),
        ({"temperature": {"mode": "fixed", "value": 0.0004}}, "t002 fixed τ=0.0004"),
        (
            {"method": "dino", "dino": {"teacher_temperature": 0.07}},
            "t002 dino τs=0.100 τt=0.040→0.070",
        ),
    ],
)
def test_a_trial_run_is_named_by_its_temperature(config: dict[str, Any], name: str) -> None:
    assert ui_layout.trial_run_name(_record(**config)) == name


def test_confirmation_and_invalid_runs_say_so() -> None:
    confirm = _record(12, seed=2)
    confirm.phase, confirm.confirms = PHASE_CONFIRM, "id3"
    assert ui_layout.trial_run_name(confirm, confirmed_index=3) == "t012 confirm t003 seed=2"
    invalid = TrialRecord(trial_id="x", index=5, sampled={"temperature/value": 9.0}, config=None)
    assert ui_layout.trial_run_name(invalid) == "t005 invalid combination"


def test_a_stopped_trial_is_renamed_and_tagged() -> None:
    assert ui_layout.stopped_run_name("t002 fixed τ=0.100", 2) == "t002 fixed τ=0.100 stopped@2"
    assert ui_layout.stopped_tags(2) == {ui_layout.TAG_STOPPED_AT_EPOCH: "2"}


def test_objective_columns_keep_the_best_and_the_first_rung() -> None:
    history = [(1, 0.2), (2, 0.5), (3, float("nan")), (4, 0.4)]
    assert ui_layout.objective_progress(history[:1], "max", 2, 1) == {ui_layout.OBJECTIVE_BEST: 0.2}
    assert ui_layout.objective_progress(history[:2], "max", 2, 2) == {
        ui_layout.OBJECTIVE_BEST: 0.5,
        ui_layout.OBJECTIVE_AT_FIRST_RUNG: 0.5,
    }
    assert ui_layout.objective_progress(history, "max", 2, 4) == {ui_layout.OBJECTIVE_BEST: 0.5}
    assert ui_layout.objective_progress(history, "min", None, 4) == {ui_layout.OBJECTIVE_BEST: 0.2}
    assert ui_layout.objective_progress([], "max", 1, 1) == {}


def test_best_so_far_runs_over_ranked_search_trials_in_index_order() -> None:
    def trial(
        index: int, value: float | None, phase: str = "search", status: str = "completed"
    ) -> TrialRecord:
        metrics = {} if value is None else {"val/x": value}
        record = TrialRecord(trial_id=str(index), index=index, sampled={}, config=None)
        record.metrics, record.phase = metrics, phase
        record.status = status  # type: ignore[assignment]
        return record

    records = [
        trial(3, 0.3, status="stopped"),
        trial(1, None, status="failed"),
        trial(2, 0.4),
        trial(4, 0.35),
        trial(5, 0.9, "confirm"),
        trial(6, 0.95, status="failed"),  # logged a value before failing: never the best
    ]
    best_max = [(2, 0.4), (3, 0.4), (4, 0.4), (6, 0.4)]
    assert ui_layout.best_so_far(records, "val/x", "max") == best_max
    assert ui_layout.best_so_far(records, "val/x", "min") == [
        (2, 0.4),
        (3, 0.3),
        (4, 0.3),
        (6, 0.3),
    ]


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("temperature/value", "tau"),
        ("train_loop_config/temperature/mode", "tau_mode"),
        ("temperature/lr_multiplier", "tau_lr_multiplier"),
        ("optimizer/lr", "lr"),
        ("optimizer/weight_decay", "weight_decay"),
        ("optimizer/warmup_epochs", "optimizer_warmup_epochs"),  # temperature has one too
        ("batch_size_per_worker", "batch_size_per_worker"),
        ("dino/teacher_temperature", "teacher_tau"),
        ("data/seed", "data_seed"),  # the trainer's seed is `seed`
        ("seed", "seed"),
    ],
)
def test_searched_values_get_short_keys(path: str, key: str) -> None:
    assert ui_layout.search_param_key(path) == key


def test_every_config_key_gets_its_own_short_key() -> None:
    paths = [key.replace(".", "/") for key in flatten(build_config().to_dict(), separator=".")]
    keys = [ui_layout.search_param_key(path) for path in paths]
    assert len(set(keys)) == len(keys)
    assert max(len(key) for key in keys) <= 32


def test_params_keep_only_what_the_method_uses() -> None:
    sampled = {"temperature/mode": "fixed", "temperature/value": 0.2}
    for method, absent, present in [
        (
            "simclr",
            ("dino.", "model.text_", "loss.name", "model.dino_out_dim"),
            ("loss.chunk_size",),
        ),
        ("clip", ("dino.", "model.dino_out_dim"), ("model.text_width", "loss.name")),
        ("dino", ("model.text_", "loss.sigmoid_bias"), ("dino.teacher_temperature",)),
    ]:
        record = _record(method=method, temperature={"value": 0.2})
        record.sampled = sampled
        params = ui_layout.trial_params(record)
        assert not [key for key in params if key.startswith(absent)], method
        assert set(present) <= set(params), method
        assert (params["tau"], params["tau_mode"]) == (0.2, "fixed")
        assert params["temperature.value"] == 0.2
        assert "tau" not in ui_layout.config_params({"tau": "0.2", "epochs": "2"}, sampled)
    invalid = TrialRecord(trial_id="x", index=5, sampled={"temperature/value": 9.0}, config=None)
    assert ui_layout.trial_params(invalid) == {"temperature/value": 9.0}


def test_config_yaml_reads_back_as_the_config() -> None:
    config = build_config({"method": "clip", "epochs": 3}).to_dict()
    text = ui_layout.config_yaml(config)
    assert yaml.safe_load(text) == config
    assert text.startswith("method: clip\n")

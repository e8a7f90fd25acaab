"""tauray.ui_layout: what makes a sweep readable in the MLflow UI (names, objective columns,
short parameter keys), as pure functions; the sweep's runs read back from a real server are
checked in ``test_tune_e2e.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tauray import ui_layout
from tauray.trials import PHASE_CONFIRM, TrialRecord
from tauray_trainers.config import build_config


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

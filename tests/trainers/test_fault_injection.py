"""Fault injection is off unless TAURAY_INJECT_FAILURE is set, and does what the setting says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tauray_trainers.failures import TrialOutOfMemoryError
from tauray_trainers.faults import (
    FAULT_INJECTION_ENV,
    FaultInjection,
    InjectedFailure,
    fault_from_environment,
)
from tauray_trainers.loop import FAULT_INJECTION_ENV as LOOP_FAULT_INJECTION_ENV


def test_no_setting_means_no_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULT_INJECTION_ENV, raising=False)
    assert fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4) is None
    monkeypatch.setenv(FAULT_INJECTION_ENV, "  ")
    assert fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4) is None


def test_the_platform_finds_the_setting_where_it_always_did() -> None:
    assert LOOP_FAULT_INJECTION_ENV == FAULT_INJECTION_ENV == "TAURAY_INJECT_FAILURE"


def test_raise_once_per_rank_halfway_through_the_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_INJECTION_ENV, f"epoch=2,marker={tmp_path / 'fail'}")
    hook = fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4)
    assert hook is not None
    hook(1, 2)  # another epoch: nothing
    hook(2, 1)  # not halfway: nothing
    with pytest.raises(InjectedFailure, match=r"epoch 2, step 2 \(rank 0\)"):
        hook(2, 2)
    assert (tmp_path / "fail.rank0").read_text() == str(os.getpid())
    hook(2, 2)  # the marker exists: a restarted worker group passes
    other_rank = fault_from_environment(rank=1, batch_size=8, steps_per_epoch=4)
    assert other_rank is not None
    with pytest.raises(InjectedFailure, match="rank 1"):
        other_rank(2, 2)


def test_rank_limits_the_failure_to_one_rank(tmp_path: Path) -> None:
    injection = FaultInjection.parse(f"epoch=1,marker={tmp_path / 'm'},rank=1")
    injection.maybe_fail(1, 2, 4, rank=0)
    assert not (tmp_path / "m.rank0").exists()
    with pytest.raises(InjectedFailure):
        injection.maybe_fail(1, 2, 4, rank=1)


def test_seed_limits_the_failure_to_runs_of_that_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_INJECTION_ENV, f"epoch=1,marker={tmp_path / 'm'},seed=2")
    assert fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4, seed=1) is None
    hook = fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4, seed=2)
    assert hook is not None
    with pytest.raises(InjectedFailure):
        hook(1, 2)


def test_out_of_memory_only_from_the_smallest_batch_on() -> None:
    injection = FaultInjection.parse("epoch=1,action=oom,min_batch=64")
    injection.maybe_fail(1, 1, 2, rank=0, batch_size=32)
    with pytest.raises(TrialOutOfMemoryError) as caught:
        injection.maybe_fail(1, 1, 2, rank=0, batch_size=64)
    assert caught.value.batch_size_per_worker == 64


@pytest.mark.parametrize(
    "text",
    [
        "epoch=two",
        "marker=/tmp/x",
        "epoch=1",
        "epoch=1,marker=/x,action=explode",
        "epoch=1,rank=a",
        "epoch=1,marker=/x,seed=b",
    ],
)
def test_malformed_settings_are_refused(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_INJECTION_ENV, text)
    with pytest.raises(ValueError, match="epoch=<int>,marker=<path>") as caught:
        fault_from_environment(rank=0, batch_size=8, steps_per_epoch=4)
    assert FAULT_INJECTION_ENV in str(caught.value)

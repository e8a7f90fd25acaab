"""``--early-signal``: what ASHA compares at its rungs, parsed before anything starts, and the
learning-curve extrapolation behind ``curve``."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
from ray.tune.schedulers import ASHAScheduler

from tauray.cli.tune import tune_command
from tauray.sweep import search
from tauray.sweep.plan import DEFAULT_EARLY_SIGNAL, SweepRequest, plan_sweep
from tauray.sweep.signals import PREDICTED_FINAL, CurveSignal, parse_signal, predicted_final

KNOWN = ("val/knn_top1", "val/alignment", "val/effective_rank")


def test_curve_extrapolation_recovers_a_saturating_curve() -> None:
    def truth(t: float) -> float:
        return 0.6 - 0.4 * t**-0.7

    points = {epoch: truth(epoch) for epoch in range(1, 6)}
    assert predicted_final(points, 16) == pytest.approx(truth(16), abs=1e-4)
    # Two points: a - b / t through both, exactly; one point: the value itself.
    assert predicted_final({1: 0.2, 2: 0.3}, 4) == pytest.approx(0.35)
    assert predicted_final({3: 0.25}, 16) == 0.25
    # Values that fall and rise still give a finite prediction.
    assert math.isfinite(predicted_final({1: 0.3, 2: 0.5, 3: 0.1, 4: 0.45}, 16))


def test_parse_signal() -> None:
    objective = ("val/knn_top1", "max")
    plain = parse_signal("objective", objective, KNOWN)
    assert (plain.metric, plain.mode, plain.derived) == ("val/knn_top1", "max", False)
    curve = parse_signal("curve", objective, KNOWN)
    assert (curve.metric, curve.mode, curve.derived) == (PREDICTED_FINAL, "max", True)
    assert parse_signal("curve", ("val/alignment", "min"), KNOWN).mode == "min"
    other = parse_signal("val/alignment:min", objective, KNOWN)
    assert (other.metric, other.mode, other.derived) == ("val/alignment", "min", False)
    for bad in ("loss", "val/alignment:down", "val/nope:max", ":max", ""):
        with pytest.raises(ValueError, match=rf"--early-signal '{bad}' is not one of: objective"):
            parse_signal(bad, objective, KNOWN)


def test_curve_signal_adds_the_prediction_to_reports_with_the_objective() -> None:
    signal = CurveSignal("val/knn_top1", final_epoch=8)
    first = signal.add({"epoch": 1, "val/knn_top1": 0.2, "train/loss": 3.0})
    assert first[PREDICTED_FINAL] == 0.2 and first["train/loss"] == 3.0
    second = signal.add({"epoch": 2, "val/knn_top1": 0.3})
    assert second[PREDICTED_FINAL] == pytest.approx(predicted_final({1: 0.2, 2: 0.3}, 8))
    # A report without the objective (or with a NaN) passes through unchanged.
    assert signal.add({"epoch": 3, "train/loss": 2.0}) == {"epoch": 3, "train/loss": 2.0}
    assert PREDICTED_FINAL not in signal.add({"epoch": 3, "val/knn_top1": float("nan")})
    assert signal.points == {1: 0.2, 2: 0.3}


def _plan(tmp_path: Path, **changes) -> object:
    request = SweepRequest(space="simclr-temperature", **changes)
    return plan_sweep(request, cwd=tmp_path, environ={}, check_tracking=False)


def test_the_scheduler_compares_the_signal(tmp_path: Path) -> None:
    asha, text = search.build_scheduler(_plan(tmp_path, early_signal="curve"))
    assert isinstance(asha, ASHAScheduler)
    assert (asha._metric, asha._mode) == (PREDICTED_FINAL, "max")
    assert text.endswith(f"on {PREDICTED_FINAL} (max; --early-signal curve)")
    asha, text = search.build_scheduler(_plan(tmp_path, early_signal="val/alignment:min"))
    assert (asha._metric, asha._mode) == ("val/alignment", "min")
    asha, text = search.build_scheduler(_plan(tmp_path))
    assert (asha._metric, asha._mode) == ("val/knn_top1", "max") and " on " not in text


def test_a_bad_signal_fails_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--early-signal 'val/knn_top5:max' is not one of"):
        _plan(tmp_path, early_signal="val/knn_top5:max")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_default_is_the_plans() -> None:
    default = inspect.signature(tune_command).parameters["early_signal"].default
    assert default == DEFAULT_EARLY_SIGNAL

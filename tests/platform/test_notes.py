"""tauray.notes: the Markdown descriptions of a sweep's parent run and experiment (pure text;
read back from a real server in ``test_tune_e2e.py``)."""

from __future__ import annotations

from tauray import notes
from tauray.trials import TrialRecord
from tauray_trainers.config import build_config


def _outcome(**changes: object) -> notes.SweepOutcome:
    config = build_config({"temperature": {"mode": "learnable", "value": 0.2}}).to_dict()
    best = TrialRecord(trial_id="b", index=3, sampled={}, config=config, status="completed")
    best.metrics = {"val/knn_top1": 0.4318, "train/temperature": 0.166}
    fields: dict[str, object] = {
        "sweep_name": "demo-1",
        "space": "simclr-temperature",
        "method": "simclr",
        "metric": "val/knn_top1",
        "mode": "max",
        "experiment_id": "7",
        "parent_run_id": "parent1",
        "counts": {"completed": 2, "stopped": 3, "failed": 1, "running": 0},
        "best": best,
        "best_run_id": "run3",
        "best_run_name": "t003 learnable τ0=0.200",
        "champion": ("models:/demo@champion", "2"),
        **changes,
    }
    return notes.SweepOutcome(**fields)  # type: ignore[arg-type]


def test_the_sweep_note_gives_the_best_value_its_tau_a_link_and_the_model() -> None:
    text = notes.sweep_note(_outcome())
    assert text.startswith("### Sweep `demo-1`")
    assert "6 trials: 2 completed, 3 stopped early, 1 failed" in text
    assert "Best `val/knn_top1` = **0.4318** with τ 0.166 at the end (learnable, from 0.2)" in text
    assert "[t003 learnable τ0=0.200](#/experiments/7/runs/run3)" in text
    assert "Champion model `models:/demo@champion` (version 2)" in text
    assert "small_cnn" in text and "digits-cluttered at 32 px" in text
    assert "objective/best_so_far" in text and "objective/at_first_rung" in text


def test_the_experiment_note_names_columns_and_the_latest_sweep() -> None:
    text = notes.experiment_note(_outcome())
    assert "[demo-1](#/experiments/7/runs/parent1)" in text
    assert "`tau`" in text and "`objective/best`" in text and "`val/knn_top1`" in text
    assert "**0.4318**" in text


def test_a_sweep_without_a_best_trial_or_model_says_so() -> None:
    text = notes.sweep_note(_outcome(best=None, best_run_id=None, champion=None))
    assert "No trial reported the objective." in text
    assert "No model was registered" in text

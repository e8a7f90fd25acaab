"""Two-worker trials under Ray Tune, for both trial runners: stopped early, a rank killed.

Each runner (``in-trial``: rank 0 in the trial actor, rank 1 a :class:`tauray.in_trial.RankWorker`
kept for the next trial; ``ray-train``: a Ray Train worker group per trial) runs the same three
trials one at a time through tauray's own trial driver (``tauray_trial``), with
``--max-failures 1``'s ``FailureConfig``:

- trial 1 is stopped by Ray Tune after its first epoch (as ASHA would stop it): it must end
  cleanly and, in-trial, leave its rank worker usable for the next trial;
- in the next trial to reach epoch 2, rank 1's process is SIGKILLed halfway through that epoch
  (the trainer's fault hook): the trial must fail over and finish from its epoch-1 checkpoint;
- trial 3 finishes.

In-trial, the three trials together must have started exactly two rank workers: one that trial
1 started and trial 2 reused until the kill, one for trial 2's restart that trial 3 reused. And
both runners must end every trial with the same numbers (loss, kNN top-1, samples).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from tauray.cluster import ray_session
from tauray.sweep.trial import TrialSetup, tauray_trial, trial_resources
from tauray_trainers.loop import FAULT_INJECTION_ENV

EPOCHS = 3
TEMPERATURES = (0.1, 0.2, 0.3)
LOOP_CONFIG: dict[str, Any] = {
    "method": "simclr",
    "epochs": EPOCHS,
    "batch_size_per_worker": 16,
    "data": {"max_train_samples": 128, "max_val_samples": 64},
}


class StopFirstTrialAfterOneEpoch(tune.Stopper):
    """Stops the first trial that reports, after its first epoch; no other trial."""

    def __init__(self) -> None:
        self.first: str | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.first = self.first or trial_id
        return trial_id == self.first and result.get("epoch", 0) >= 1

    def stop_all(self) -> bool:
        return False


@dataclass(frozen=True)
class Sweep:
    runner: str
    results: list[Any]  # ray.tune.Result per trial, in trial order
    rank_workers_started: int
    kill_marker: Path


def _rank_workers_started() -> int:
    from ray.util.state import list_actors

    return len(list_actors(filters=[("class_name", "=", "RankWorker")], detail=False))


RUNNERS = ("in-trial", "ray-train")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sweep]:
    """Both runners' sweeps, one after the other, each in a local Ray of its own."""
    return {runner: _sweep(runner, tmp_path_factory) for runner in RUNNERS}


def _sweep(runner: str, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    root = tmp_path_factory.mktemp(f"runner-{runner}")
    marker = root / "kill" / "killed"
    with pytest.MonkeyPatch.context() as patch:
        # The local Ray's worker processes inherit this environment.
        patch.setenv(FAULT_INJECTION_ENV, f"epoch=2,marker={marker},action=kill,rank=1")
        patch.setenv("OMP_NUM_THREADS", "1")
        with ray_session(num_cpus=2, include_dashboard=True, log_to_driver=False) as info:
            setup = TrialSetup(
                fixed_config=LOOP_CONFIG,
                workers=2,
                gpus_per_worker=0.0,
                cpus_per_worker=1.0,
                train_storage=str(root / "train"),
                max_failures=1,
                in_trial=runner == "in-trial",
            )
            in_trial = setup.in_trial
            tuner = tune.Tuner(
                tune.with_resources(
                    tune.with_parameters(tauray_trial, setup=setup), trial_resources(setup, info)
                ),
                param_space={
                    "train_loop_config": {"temperature": {"value": tune.grid_search(TEMPERATURES)}}
                },
                tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=in_trial),
                run_config=tune.RunConfig(
                    name="runners",
                    storage_path=str(root / "tune"),
                    stop=StopFirstTrialAfterOneEpoch(),
                    failure_config=tune.FailureConfig(max_failures=1 if in_trial else 0),
                    verbose=0,
                ),
            )
            grid = tuner.fit()
            started = _rank_workers_started()
    results = sorted(grid, key=lambda result: result.metrics_dataframe["timestamp"].min())
    return Sweep(runner, results, started, marker)


def _epochs(result: Any) -> list[int]:
    return [int(epoch) for epoch in result.metrics_dataframe["epoch"]]


@pytest.mark.ray
@pytest.mark.parametrize("runner", RUNNERS)
def test_every_trial_ends_without_error(sweeps: dict[str, Sweep], runner: str) -> None:
    sweep = sweeps[runner]
    assert len(sweep.results) == len(TEMPERATURES)
    assert [result.error for result in sweep.results] == [None, None, None]


@pytest.mark.ray
@pytest.mark.parametrize("runner", RUNNERS)
def test_first_trial_stopped_after_one_epoch(sweeps: dict[str, Sweep], runner: str) -> None:
    assert _epochs(sweeps[runner].results[0]) == [1]


@pytest.mark.ray
@pytest.mark.parametrize("runner", RUNNERS)
def test_killed_rank_recovers_from_its_checkpoint(sweeps: dict[str, Sweep], runner: str) -> None:
    sweep = sweeps[runner]
    killed = Path(f"{sweep.kill_marker}.rank1")
    assert killed.exists(), "rank 1 was never killed: the test did not test recovery"
    assert int(killed.read_text()) != os.getpid()
    second, third = sweep.results[1:]
    # Killed halfway through epoch 2 and restarted from epoch 1's checkpoint: every epoch is
    # reported once (a restart from scratch would report epoch 1 twice), and the cost counters
    # carried in the checkpoint count the samples of all three epochs.
    seen = [(_epochs(result), result.error, result.path) for result in sweep.results]
    assert _epochs(second) == [1, 2, 3], seen
    assert _epochs(third) == [1, 2, 3], seen
    samples = EPOCHS * LOOP_CONFIG["data"]["max_train_samples"]
    counted = [result.metrics["cost/samples_seen"] for result in (second, third)]
    assert counted == [samples] * 2, seen


@pytest.mark.ray
def test_in_trial_rank_workers_carry_over_to_the_next_trial(sweeps: dict[str, Sweep]) -> None:
    # In-trial: one rank worker for trial 1 that trial 2 reused (a broken stop would have hung
    # trial 2 or replaced its worker), one after the kill that trial 3 reused: two, not three
    # or four. Ray Train trials start none (their workers are Ray Train's).
    assert sweeps["in-trial"].rank_workers_started == 2
    assert sweeps["ray-train"].rank_workers_started == 0


@pytest.mark.ray
def test_both_runners_train_the_same_numbers(sweeps: dict[str, Sweep]) -> None:
    # The same seeds, shards and DDP steps on the same two ranks: rank 0 in the trial actor and
    # a kept rank worker train exactly what a Ray Train worker group trains, the restarted
    # trial included.
    keys = ("epoch", "train/temperature", "train/loss", "val/knn_top1", "cost/samples_seen")

    def finals(runner: str) -> list[float]:
        return [float(result.metrics[key]) for result in sweeps[runner].results for key in keys]

    assert finals("in-trial") == pytest.approx(finals("ray-train"), rel=1e-5)

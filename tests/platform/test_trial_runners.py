"""Trials under Ray Tune, for both places a trial trains: stopped early, a worker killed.

tauray's own trial driver (``tauray_trial``) runs the same three trials one at a time, with
``--max-failures 1``'s ``FailureConfig``, in two local Ray sessions:

- two workers per trial: a DDP job, always a Ray Train worker group (gloo on CPUs);
- one worker per trial, trained in the Ray Tune trial actor (``in-trial``, actors reused) and,
  for comparison, as a one-worker Ray Train group (``ray-train``).

In each sweep trial 1 is stopped by Ray Tune after its first epoch (as ASHA would stop it) and
must end cleanly; in the next trial to reach epoch 2, the last rank's process is SIGKILLed halfway
through that epoch (the trainer's fault hook): the trial must fail over and finish from its
epoch-1 checkpoint, every epoch reported once; trial 3 finishes. (In-trial, the killed process is
the trial actor itself: Ray Tune restarts the trial; in Ray Train, Ray Train restarts its group.)
The two one-worker runners must end every trial with the same numbers (loss, kNN top-1,
samples): the one-worker Ray Train sweep runs after the in-trial one in the same Ray and is not
killed, so a restarted trial is compared with an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from tauray.cluster import ray_session
from tauray.sweep.reaper import OrphanedPlacementGroupReaper
from tauray.sweep.signals import PREDICTED_FINAL, predicted_final
from tauray.sweep.trial import TrialSetup, tauray_trial, trial_resources
from tauray_trainers.loop import FAULT_INJECTION_ENV

EPOCHS = 3
OBJECTIVE = "val/knn_top1"
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


class ReportedEpochs(tune.Callback):
    """The epochs each trial reported, in the order Ray Tune passed them on: what tauray's trial
    ledger and MLflow logger see (a restarted trial's result files may start again at its
    restart, so they are not the record here)."""

    def __init__(self) -> None:
        self.epochs: dict[str, list[int]] = {}
        self.curves: dict[str, list[tuple[int, float, float]]] = {}  # epoch, objective, predicted

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.epochs.setdefault(trial.trial_id, []).append(int(result["epoch"]))
        self.curves.setdefault(trial.trial_id, []).append(
            (int(result["epoch"]), result[OBJECTIVE], result[PREDICTED_FINAL])
        )


@dataclass(frozen=True)
class Sweep:
    runner: str
    workers: int
    results: list[Any]  # ray.tune.Result per trial, in trial order
    reported: dict[str, list[int]]  # trial id -> epochs reported to Ray Tune, in order
    curves: dict[str, list[tuple[int, float, float]]]  # trial id -> (epoch, knn, predicted)
    kill_marker: Path  # the fault hook's marker of the killed rank, once the fixture set it


SWEEPS = (("ray-train", 2), ("in-trial", 1), ("ray-train", 1))
"""(runner, workers), in run order: one local Ray per worker count."""


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Sweep]:
    """Every sweep of :data:`SWEEPS`.

    The fault hook is set before each Ray starts (its worker processes inherit the environment
    then, not later): the last rank of the first trial to reach epoch 2 in that Ray is killed,
    once (the marker file keeps later trials, and later sweeps in the same Ray, from being
    killed). With one worker that is the in-trial sweep, which runs first; the one-worker Ray
    Train sweep then trains without a kill, so the two one-worker sweeps also compare a restarted
    trial with one that was never interrupted.
    """
    done: dict[tuple[str, int], Sweep] = {}
    for workers in (2, 1):
        root = tmp_path_factory.mktemp(f"workers-{workers}")
        marker = root / "kill" / "killed"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(
                FAULT_INJECTION_ENV, f"epoch=2,marker={marker},action=kill,rank={workers - 1}"
            )
            patch.setenv("OMP_NUM_THREADS", "1")
            with ray_session(num_cpus=2, include_dashboard=True, log_to_driver=False) as info:
                for runner, count in SWEEPS:
                    if count == workers:
                        done[runner, count] = _sweep(runner, workers, root / runner, info)
        for key in done:
            if key[1] == workers:
                done[key] = dataclasses.replace(
                    done[key], kill_marker=Path(f"{marker}.rank{workers - 1}")
                )
    return done


def _sweep(runner: str, workers: int, root: Path, info: Any) -> Sweep:
    reported = ReportedEpochs()
    setup = TrialSetup(
        fixed_config=LOOP_CONFIG,
        workers=workers,
        gpus_per_worker=0.0,
        cpus_per_worker=1.0,
        train_storage=str(root / "train"),
        max_failures=1,
        in_trial=runner == "in-trial",
        objectives=((OBJECTIVE, "max"),),
        predict_final=True,  # --early-signal curve
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(tauray_trial, setup=setup), trial_resources(setup, info)
        ),
        param_space={
            "train_loop_config": {"temperature": {"value": tune.grid_search(TEMPERATURES)}}
        },
        # As the sweep driver sets them: the trial actor is reused and restarted by Ray Tune
        # in-trial; a Ray Train group restarts itself (max_failures in the TrialSetup).
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=setup.in_trial),
        run_config=tune.RunConfig(
            name="runners",
            storage_path=str(root / "tune"),
            stop=StopFirstTrialAfterOneEpoch(),
            failure_config=tune.FailureConfig(max_failures=1 if setup.in_trial else 0),
            # The driver's reaper too: it frees a stopped Ray Train trial's placement group when
            # Ray Train's own cleaner cannot (another local Ray on the machine).
            callbacks=[reported, OrphanedPlacementGroupReaper()],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    results = sorted(grid, key=lambda result: result.metrics_dataframe["timestamp"].min())
    return Sweep(runner, workers, results, reported.epochs, reported.curves, root)


def _epochs(sweep: Sweep, result: Any) -> list[int]:
    return sweep.reported[result.metrics["trial_id"]]


@pytest.mark.ray
@pytest.mark.parametrize("key", SWEEPS, ids=lambda key: f"{key[0]}-{key[1]}")
def test_every_trial_ends_without_error(sweeps: dict, key: tuple[str, int]) -> None:
    sweep = sweeps[key]
    assert len(sweep.results) == len(TEMPERATURES)
    assert [result.error for result in sweep.results] == [None, None, None]


@pytest.mark.ray
@pytest.mark.parametrize("key", SWEEPS, ids=lambda key: f"{key[0]}-{key[1]}")
def test_first_trial_stopped_after_one_epoch(sweeps: dict, key: tuple[str, int]) -> None:
    assert _epochs(sweeps[key], sweeps[key].results[0]) == [1]


@pytest.mark.ray
@pytest.mark.parametrize("key", SWEEPS[:2], ids=lambda key: f"{key[0]}-{key[1]}")
def test_killed_worker_recovers_from_its_checkpoint(sweeps: dict, key: tuple[str, int]) -> None:
    sweep = sweeps[key]
    assert sweep.kill_marker.exists(), "no worker was killed: the test did not test recovery"
    assert int(sweep.kill_marker.read_text()) != os.getpid()
    second, third = sweep.results[1:]
    # Killed halfway through epoch 2 and restarted from epoch 1's checkpoint: every epoch is
    # reported once (a restart from scratch would report epoch 1 twice), and the cost counters
    # carried in the checkpoint count the samples of all three epochs.
    seen = [(_epochs(sweep, result), result.error, result.path) for result in sweep.results]
    assert _epochs(sweep, second) == [1, 2, 3], seen
    assert _epochs(sweep, third) == [1, 2, 3], seen
    samples = EPOCHS * LOOP_CONFIG["data"]["max_train_samples"]
    counted = [result.metrics["cost/samples_seen"] for result in (second, third)]
    assert counted == [samples] * 2, seen


@pytest.mark.ray
@pytest.mark.parametrize("key", SWEEPS, ids=lambda key: f"{key[0]}-{key[1]}")
def test_every_report_carries_the_objective_predicted_for_the_last_epoch(
    sweeps: dict, key: tuple[str, int]
) -> None:
    # What ASHA compares under --early-signal curve, added by the trial to each report on both
    # paths (the in-trial runtime and the Train run's report callback): the learning curve fitted to
    # the objective's values this attempt saw (a restarted attempt starts after its checkpoint).
    for trial_id, curve in sweeps[key].curves.items():
        for position, (epoch, _, predicted) in enumerate(curve):
            fits = [
                predicted_final({e: v for e, v, _ in curve[start : position + 1]}, EPOCHS)
                for start in range(position + 1)
                if [e for e, _, _ in curve[start : position + 1]]
                == list(range(curve[start][0], epoch + 1))
            ]
            assert any(predicted == pytest.approx(fit, abs=1e-9) for fit in fits), (trial_id, curve)
        assert curve[0][2] == curve[0][1]  # one point: the value itself


@pytest.mark.ray
def test_both_one_worker_runners_train_the_same_numbers(sweeps: dict) -> None:
    # The same seeds and steps: the trial actor trains exactly what a one-worker Ray Train group
    # trains, and the trial killed and restarted in-trial ends where the uninterrupted Ray Train
    # one does.
    keys = ("epoch", "train/temperature", "train/loss", "val/knn_top1", "cost/samples_seen")

    def finals(key: tuple[str, int]) -> list[float]:
        return [float(result.metrics[name]) for result in sweeps[key].results for name in keys]

    assert finals(("in-trial", 1)) == pytest.approx(finals(("ray-train", 1)), rel=1e-5)

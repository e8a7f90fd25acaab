"""The sweep driver: one ``ray.tune.Tuner`` over the plan, every trial recorded in MLflow.

- each trial runs :func:`~tauray.sweep.trial.tauray_trial`: one worker trains in the Ray Tune
  trial actor, several workers as a Ray Train worker group;
- the search algorithm is ``OptunaSearch`` with a seeded multivariate, grouped TPE sampler, the
  space's baselines first; early stopping is ASHA on the epoch counter by default
  (:mod:`tauray.sweep.search`);
- trials never take a CPU for their driver (:mod:`tauray.cluster`), and as many run at once as
  the cluster's CPUs/GPUs allow;
- a trial that raises (an error, a non-finite loss, out of memory) is recorded as failed with its
  reason and the sweep goes on;
- after the search, a second Tuner trains the best configurations again under fresh seeds
  (:mod:`tauray.sweep.confirm`) with the same trial function and callbacks.

Only this driver process writes to MLflow, in the layout of :mod:`tauray.layout`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray import tune

from tauray import layout
from tauray.run_context import code_version
from tauray.sweep.confirm import (
    CONFIRM_FOLDER,
    ConfirmationPhase,
    phase_text,
    start_confirmation,
)
from tauray.sweep.console import (
    Echo,
    ProgressPrinter,
    graceful_ctrl_c,
    quiet_ray_tune,
    write_stderr,
)
from tauray.sweep.ledger import TrialLedger
from tauray.sweep.mlflow_logger import MlflowTrialLogger
from tauray.sweep.plan import SweepPlan, SweepRequest, runs_in_trial
from tauray.sweep.reaper import OrphanedPlacementGroupReaper
from tauray.sweep.results import FitOutcome, write_results
from tauray.sweep.search import build_scheduler, build_searcher
from tauray.sweep.state import (
    MIN_RESUMED_BUDGET_S,
    TUNER_STATE,
    SweepClock,
    restore_tuner,
    resume_hint,
    save_sweep_request,
    spent_tune_seconds,
)
from tauray.sweep.summary import SweepSummary
from tauray.sweep.trial import TrialSetup, tauray_trial, trial_name, trial_resources
from tauray.tracking import SweepRecorder, tracking_scope
from tauray_trainers.config import TRAIN_LOOP_CONFIG

if TYPE_CHECKING:
    from tauray.cluster import ClusterInfo

logger = logging.getLogger(__name__)


def sweep_run_params(plan: SweepPlan) -> dict[str, Any]:
    """The parent run's params of a planned sweep (:func:`tauray.layout.sweep_params`)."""
    request = plan.request
    return layout.sweep_params(
        space=plan.space.name,
        space_source=plan.space.source or plan.space.name,
        method=plan.fixed_config.get("method", plan.space.method),
        objectives=plan.objectives,
        trials=plan.num_samples,
        time_budget_s=request.time_budget_s,
        epochs=plan.epochs,
        workers_per_trial=request.workers_per_trial,
        gpus_per_worker=request.gpus_per_worker,
        cpus_per_worker=request.cpus_per_worker,
        seed=request.seed,
        overrides=request.overrides,
        storage_path=str(plan.sweep_dir),
        code_version=code_version(),
    )


def run_sweep(
    plan: SweepPlan,
    *,
    echo: Echo = print,
    ledger_factory: Callable[[Mapping[str, Any]], TrialLedger] = TrialLedger,
    resume: bool = False,
) -> SweepSummary:
    """Run a planned sweep to the end and return its summary.

    Starts (and stops) a local Ray unless the request names an address, before it writes
    anything: a cluster that cannot be reached or cannot fit one trial leaves no sweep folder
    and no MLflow run. Then it writes the MLflow parent run, a child run per trial, the models,
    the plots and the champion. With ``confirm_top`` > 0 the confirmation phase follows the
    search, and the champion is the configuration with the best mean
    (:mod:`tauray.sweep.confirm`).

    With ``resume`` (a plan from :func:`plan_resume`), Ray Tune restores the sweep from its
    folder (finished trials kept, unfinished ones restarted from their last checkpoint, the
    Optuna study and the trial ledger restored from the experiment state; a sweep whose search
    had ended continues its confirmation phase instead) and the MLflow parent run that carries
    the folder's tag continues; trials keep their child runs. At its end, a
    child run of a trial Ray Tune does not know (a killed driver created it before Tune saved
    the trial) is ended as lost (:meth:`~tauray.tracking.SweepRecorder.end_lost_runs`).

    Ctrl-C or SIGTERM while Ray Tune runs (:func:`graceful_ctrl_c`) stops the sweep once Tune
    saved its state: the summary says ``interrupted``, the parent run and the unfinished trials'
    runs end as KILLED (the parent tagged ``tauray.status = interrupted`` and the resume
    command), and the parent gets no results yet. A second signal raises ``KeyboardInterrupt``
    at once.

    Args:
        plan: from :func:`plan_sweep` (or :func:`plan_resume`).
        echo: where progress lines go.
        ledger_factory: builds the trial ledger from the fixed config (tests may wrap it).
        resume: continue the interrupted sweep in ``plan.sweep_dir``.

    Raises:
        ValueError: one trial cannot fit the cluster.
        ConnectionError: the Ray cluster at the requested address cannot be reached.
        KeyboardInterrupt: a second Ctrl-C, or one before or after Ray Tune's loop (the parent
            run is ended as KILLED, tagged ``interrupted``).
    """
    request = plan.request
    started = time.monotonic()
    ray_stack = contextlib.ExitStack()
    with quiet_ray_tune(enabled=not request.verbose), ray_stack, tracking_scope(plan.target):
        # Ray first: a trial the cluster cannot fit, or a cluster that cannot be reached, is
        # refused before a sweep folder or an MLflow run exists.
        info = ray_stack.enter_context(_ray_session(request))
        concurrency = trial_concurrency(plan, info)
        recorder = SweepRecorder(plan.target, plan.experiment)
        parent_run_id = (
            recorder.find_sweep_run(str(plan.sweep_dir), plan.sweep_name) if resume else None
        )
        if parent_run_id is not None:
            recorder.reopen_run(parent_run_id)
            recorder.set_tags(parent_run_id, layout.resumed_tags(_dt.datetime.now()))
            echo(f"resuming sweep {plan.sweep_name} from {plan.sweep_dir}")
        else:
            if resume:
                logger.warning(
                    "no MLflow run of sweep %s found; recording it in a new one", plan.sweep_name
                )
            else:
                save_sweep_request(plan)
            parent_run_id = recorder.start_sweep_run(
                plan.sweep_name,
                params=sweep_run_params(plan),
                tags=layout.sweep_tags(plan.sweep_name, plan.space.name, str(plan.sweep_dir)),
            )
        echo(
            f"sweep {plan.sweep_name}: space {plan.space.name}, "
            f"{_budget_text(plan)}, {request.workers_per_trial} worker(s) per trial"
        )
        echo(f"MLflow: {plan.target.uri}, experiment {plan.experiment!r}, run {parent_run_id}")
        interrupted_tags = layout.interrupted_tags(resume_hint(plan))
        status = "FAILED"
        try:
            ledger, mlflow_logger, outcome = _fit(
                plan,
                info,
                concurrency,
                recorder,
                parent_run_id,
                echo,
                ledger_factory,
                restore=resume,
            )
            fitted = time.monotonic()
            ray_stack.close()  # Ray stops before the results are written
            finishing = time.monotonic()
            logger.info("Ray stopped in %.1f s", finishing - fitted)
            if mlflow_logger.lost_run_ids:
                echo(
                    f"MLflow: ended {len(mlflow_logger.lost_run_ids)} run(s) of trials lost "
                    "when an earlier driver stopped before Ray Tune saved them (tagged "
                    "tauray.status=lost; not trials of this sweep)"
                )
            # Ray Tune returns normally after a Ctrl-C; trials it left running are unfinished.
            interrupted = outcome.interrupted or ledger.counts()["running"] > 0
            if interrupted:
                mlflow_logger.interrupt(ledger.ordered())
            summary = write_results(
                plan,
                recorder,
                parent_run_id,
                ledger,
                mlflow_logger,
                outcome,
                interrupted=interrupted,
            )
            logger.info("results written in %.1f s", time.monotonic() - finishing)
            summary.elapsed_s = time.monotonic() - started
            summary.interrupted = interrupted
            if interrupted:
                # The parent run gets the sweep's results when the resumed sweep ends (MLflow
                # params are write-once: a best trial logged now could not change later).
                recorder.set_tags(parent_run_id, interrupted_tags)
                status = "KILLED"
                return summary
            best_trial_id = summary.best.trial_id if summary.best else None
            recorder.set_tags(
                parent_run_id, layout.finished_tags(best_trial_id, summary.best_run_id)
            )
            if summary.best is not None:
                recorder.log_params(parent_run_id, layout.best_params(summary.best.sampled))
            status = "FINISHED"
            return summary
        except KeyboardInterrupt:
            status = "KILLED"
            with contextlib.suppress(Exception):
                recorder.set_tags(parent_run_id, interrupted_tags)
            raise
        finally:
            recorder.end_run(parent_run_id, status)  # type: ignore[arg-type]


def _ray_session(request: SweepRequest) -> contextlib.AbstractContextManager[ClusterInfo]:
    """:func:`tauray.cluster.ray_session` for a sweep.

    Without ``--verbose`` the workers' own output (Ray Train's start-up lines, rank 0's epoch
    lines) stays in Ray's log files: the progress printer shows each trial's epochs.

    A local Ray gets its dashboard: Ray Train's ``PlacementGroupCleaner`` (one per trial) asks
    the state API, which the dashboard serves, whether its controller is still alive. Without
    it, every cleaner of a trial that Tune stopped keeps polling (an idle Python process) until
    Ray shuts down. :class:`OrphanedPlacementGroupReaper` frees the resources either way.
    """
    from tauray.cluster import ray_session

    return ray_session(
        request.address,
        num_cpus=request.num_cpus,
        num_gpus=request.num_gpus,
        include_dashboard=True,
        log_to_driver=request.verbose,
    )


def _budget_text(plan: SweepPlan) -> str:
    parts = []
    if plan.num_samples > 0:
        parts.append(f"{plan.num_samples} trials")
    if plan.request.time_budget_s is not None:
        parts.append(f"time budget {plan.request.time_budget_s:g} s")
    parts.append(f"{plan.epochs} epochs each")
    return ", ".join(parts)


def trial_concurrency(plan: SweepPlan, info: ClusterInfo) -> int:
    """How many trials run at once: what the cluster fits, capped by ``--max-concurrent-trials``
    and the number of trials.

    Raises:
        ValueError: one trial cannot fit the cluster.
    """
    from tauray.cluster import max_concurrent_trials

    request = plan.request
    concurrency = max_concurrent_trials(
        info, request.workers_per_trial, request.gpus_per_worker, request.cpus_per_worker
    )
    if request.max_concurrent_trials is not None:
        concurrency = min(concurrency, request.max_concurrent_trials)
    if plan.num_samples > 0:
        concurrency = min(concurrency, plan.num_samples)
    return concurrency


def _fit(
    plan: SweepPlan,
    info: ClusterInfo,
    concurrency: int,
    recorder: SweepRecorder,
    parent_run_id: str,
    echo: Echo,
    ledger_factory: Callable[[Mapping[str, Any]], TrialLedger],
    *,
    restore: bool = False,
) -> tuple[TrialLedger, MlflowTrialLogger, FitOutcome]:
    request = plan.request
    in_trial = runs_in_trial(request)
    searcher, recording, sampler_text = build_searcher(plan, concurrency)
    scheduler, scheduler_text = build_scheduler(plan)
    run_params = layout.search_params(
        sampler=sampler_text,
        scheduler=scheduler_text,
        max_concurrent_trials=concurrency,
        cluster_cpus=info.cpus,
        cluster_gpus=info.gpus,
        ray_address=info.address,
        max_failures=request.max_failures,
        in_trial=in_trial,
    )
    if restore:  # MLflow params are write-once: the first session's values stay
        try:
            recorder.log_params(parent_run_id, run_params)
        except Exception:
            logger.info("resumed sweep: the parent run keeps its first session's params")
    else:
        recorder.log_params(parent_run_id, run_params)
    echo(
        f"Ray: {info.cpus:g} CPUs, {info.gpus:g} GPUs ({'local' if info.local else info.address}); "
        f"up to {concurrency} trial(s) at once; {scheduler_text}"
    )
    ledger = ledger_factory(plan.fixed_config)
    mlflow_logger = MlflowTrialLogger.for_plan(plan, recorder, ledger, parent_run_id)
    progress = ProgressPrinter(ledger, plan.objective, echo)
    setup = TrialSetup(
        fixed_config=plan.fixed_config,
        workers=request.workers_per_trial,
        gpus_per_worker=request.gpus_per_worker,
        cpus_per_worker=request.cpus_per_worker,
        train_storage=str(plan.sweep_dir / "train"),
        tracking_uri=plan.target.uri,
        max_failures=request.max_failures,
        objectives=tuple((o.metric, o.mode) for o in plan.objectives),
        in_trial=in_trial,
        predict_final=plan.early_signal.derived,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tauray_trial, setup=setup), trial_resources(setup, info)
    )
    # A resumed sweep gets what earlier sessions left of its time budget (Ray Tune would
    # start the whole budget again).
    budget = request.time_budget_s
    phase = ConfirmationPhase.load(plan.sweep_dir) if restore else None
    interrupted, note = False, None
    if phase is None:
        spent_s = spent_tune_seconds(plan.sweep_dir) if restore else 0.0
        budget_left = None if budget is None else max(budget - spent_s, MIN_RESUMED_BUDGET_S)
        if restore and budget is not None:
            echo(
                f"time budget: {budget_left:.0f} s left of {budget:g} s "
                f"({spent_s:.0f} s spent in earlier sessions)"
            )
        clock = SweepClock(plan.sweep_dir, spent_s)
        # New callbacks go last: Ray Tune restores callback states by position.
        callbacks = [ledger, mlflow_logger, progress, OrphanedPlacementGroupReaper(), clock]
        if restore:
            tuner = restore_tuner(plan.sweep_dir, trainable, callbacks, time_budget_s=budget_left)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=plan.num_samples,
                    max_concurrent_trials=concurrency,
                    time_budget_s=budget_left,
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_name,
                    # In-trial runs: a finished trial's actor (its imports, its CUDA context)
                    # takes the next trial. Not for Ray Train runs: stopping such a trial early
                    # does not stop its worker group, so its actor cannot be reset and must be
                    # ended.
                    reuse_actors=in_trial,
                ),
                run_config=tune.RunConfig(
                    name=plan.sweep_name,
                    storage_path=str(plan.storage_path),
                    callbacks=callbacks,
                    failure_config=_failure_config(request.max_failures, in_trial),
                    verbose=0,
                ),
            )
        interrupted = _run_tuner(tuner, budget_left, clock, ledger, mlflow_logger, progress)
        if not interrupted and request.confirm_top > 0:
            phase, note = start_confirmation(plan, ledger, mlflow_logger)
        restore = False  # the confirmation phase starts afresh
    else:
        ledger.set_state(phase.ledger_state)
        mlflow_logger.set_state(phase.logger_state)
        echo("resuming in the confirmation phase (the search ended in an earlier session)")
    if phase is not None and not interrupted:
        interrupted = _confirm(
            plan, phase, trainable, concurrency, in_trial, echo, progress,
            (ledger, mlflow_logger), restore=restore,
        )  # fmt: skip
    elif note is not None:
        echo(note)
    outcome = FitOutcome(
        recording,
        sampler_text,
        scheduler_text,
        concurrency,
        interrupted=interrupted,
        confirmation=phase,
        confirmation_note=note,
    )
    return ledger, mlflow_logger, outcome


def _failure_config(max_failures: int, in_trial: bool) -> tune.FailureConfig:
    """Ray Train restarts a worker group itself; an in-trial run has only Ray Tune."""
    return tune.FailureConfig(max_failures=max_failures if in_trial else 0, fail_fast=False)


def _run_tuner(
    tuner: tune.Tuner,
    budget_left: float | None,
    clock: SweepClock,
    ledger: TrialLedger,
    mlflow_logger: MlflowTrialLogger,
    progress: ProgressPrinter,
) -> bool:
    """Run one phase's Tuner to its end; return whether Ctrl-C (or SIGTERM) interrupted it."""
    fit_started = time.monotonic()
    try:
        with graceful_ctrl_c(write_stderr) as interruption:
            tuner.fit()
    finally:
        clock.save()
    logger.info("Ray Tune ran for %.1f s", time.monotonic() - fit_started)
    if (
        not interruption.requested
        and budget_left is not None
        and time.monotonic() - fit_started >= budget_left
    ):
        # Ray Tune ends a sweep at its time budget without completion events for the trials
        # still running: they were stopped early, like ASHA's, and keep what they reported.
        for record in ledger.stop_unfinished():
            progress.line(
                f"trial {record.index:3d} stopped by the time budget at epoch {record.epoch}"
            )
            mlflow_logger.finish(record)
    return interruption.requested


def _confirm(
    plan: SweepPlan,
    phase: ConfirmationPhase,
    trainable: Any,
    concurrency: int,
    in_trial: bool,
    echo: Echo,
    progress: ProgressPrinter,
    writers: tuple[TrialLedger, MlflowTrialLogger],
    *,
    restore: bool,
) -> bool:
    """Run (or, with ``restore``, continue) the confirmation phase; return whether it was
    interrupted. It gets what the search left of the time budget."""
    ledger, mlflow_logger = writers
    ledger.expect_confirmations(phase.confirmations())
    budget = plan.request.time_budget_s
    spent_s = spent_tune_seconds(plan.sweep_dir)
    budget_left = None if budget is None else max(budget - spent_s, MIN_RESUMED_BUDGET_S)
    echo(phase_text(phase, plan.epochs, budget_left))
    clock = SweepClock(plan.sweep_dir, spent_s)
    callbacks = [ledger, mlflow_logger, progress, OrphanedPlacementGroupReaper(), clock]
    folder = plan.sweep_dir / CONFIRM_FOLDER
    if restore and (folder / TUNER_STATE).is_file():
        tuner = restore_tuner(folder, trainable, callbacks, time_budget_s=budget_left)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={
                TRAIN_LOOP_CONFIG: tune.grid_search(
                    [job.trial_config()[TRAIN_LOOP_CONFIG] for job in phase.jobs]
                )
            },
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=min(concurrency, len(phase.jobs)),
                time_budget_s=budget_left,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
                reuse_actors=in_trial,
            ),
            run_config=tune.RunConfig(
                name=CONFIRM_FOLDER,
                storage_path=str(plan.sweep_dir),
                callbacks=callbacks,
                failure_config=_failure_config(plan.request.max_failures, in_trial),
                verbose=0,
            ),
        )
    return _run_tuner(tuner, budget_left, clock, ledger, mlflow_logger, progress)

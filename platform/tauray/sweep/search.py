"""The search algorithm (Optuna's TPE through ``OptunaSearch``) and the early-stopping scheduler."""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

from tauray.sweep.plan import SAMPLERS, SweepPlan
from tauray_trainers import metrics as names
from tauray_trainers.config import build_config, get_path

if TYPE_CHECKING:
    from tauray_spaces import SearchSpace

logger = logging.getLogger(__name__)


class RecordingSpace:
    """The space's define-by-run function, remembering each parameter's Optuna distribution.

    Ray Tune's ``OptunaSearch`` calls it once per trial; the distributions it collects let the
    sweep rebuild an Optuna study of the finished trials for the importance plot.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.distributions: dict[str, Any] = {}

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        constants = self.space.define(trial)
        try:
            self.distributions.update(trial.distributions)
        except AttributeError:  # a trial object without distributions: plots only lose one
            pass
        return constants


def sampler_description(
    num_samples: int, concurrency: int, seed: int, kind: str = "tpe"
) -> tuple[Any, str]:
    """The sampler for a sweep and a one-line description of it (for MLflow).

    ``tpe``: multivariate + grouped TPE models the conditional parameters jointly (Optuna's
    advice for define-by-run spaces). Startup trials are random: Optuna's default is 10, which
    would make a small sweep purely random, so a third of the budget is used, between 2 and 10.
    With concurrent trials the constant liar keeps TPE from proposing the same point twice.
    ``random``: Optuna's ``RandomSampler``, the baseline a model-based search has to beat.

    Raises:
        ValueError: ``kind`` is not one of :data:`SAMPLERS`.
    """
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed), f"RandomSampler(seed={seed})"
    if kind != "tpe":
        raise ValueError(f"--sampler {kind!r} is not one of: {', '.join(SAMPLERS)}")
    startup = 10 if num_samples < 0 else max(2, min(10, num_samples // 3))
    liar = concurrency > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            seed=seed,
            n_startup_trials=startup,
            constant_liar=liar,
        )
    text = (
        f"TPESampler(multivariate=True, group=True, seed={seed}, n_startup_trials={startup}, "
        f"constant_liar={liar})"
    )
    return sampler, text


def build_searcher(plan: SweepPlan, concurrency: int) -> tuple[Any, RecordingSpace, str]:
    """``OptunaSearch`` over the plan's space; returns ``(searcher, recording, description)``."""
    from ray.tune.search.optuna import OptunaSearch

    recording = RecordingSpace(plan.space)
    sampler, description = sampler_description(
        plan.num_samples, concurrency, plan.request.seed, plan.request.sampler
    )
    metric: str | list[str]
    mode: str | list[str]
    if len(plan.objectives) == 1:
        metric, mode = plan.objective.metric, plan.objective.mode
    else:
        metric = [o.metric for o in plan.objectives]
        mode = [o.mode for o in plan.objectives]
    searcher = OptunaSearch(
        space=recording,
        metric=metric,
        mode=mode,
        points_to_evaluate=[dict(point) for point in plan.space.points_to_evaluate] or None,
        sampler=sampler,
        study_name=plan.sweep_name,
    )
    return searcher, recording, description


def longest_warmup(plan: SweepPlan) -> float:
    """Epochs of the longest warm-up any trial of the sweep can have.

    Counts the learning-rate warm-up (``optimizer.warmup_epochs``), a scheduled τ's warm-up
    (``temperature.warmup_epochs``) and DINO's teacher-temperature warm-up, from the fixed
    settings or, for a parameter the space samples, the top of its range. (A learnable τ's
    frozen start is not a warm-up of the model: the encoder trains at full rate meanwhile.)
    """
    fields = (
        "optimizer/warmup_epochs",
        "temperature/warmup_epochs",
        "dino/teacher_temperature_warmup_epochs",
    )
    config = build_config(plan.fixed_config).to_dict()
    longest = 0.0
    for key in fields:
        longest = max(longest, float(get_path(config, key, "/")))
    for spec in plan.space.parameter_specs:
        if spec.key in fields and spec.high is not None:
            longest = max(longest, float(spec.high))
    return longest


def first_rung(plan: SweepPlan) -> int:
    """ASHA's grace period in epochs: the first point where trials are compared.

    One epoch for trials shorter than ten epochs, two from ten on, and always at least one
    epoch past :func:`longest_warmup` (but never beyond half the trial, so that a rung can
    still stop something). Measured with ``benchmarks/search_efficiency.py``: after a 1-epoch
    learning-rate warm-up, kNN top-1 at epoch 1 was 0.11-0.17 for every τ in [0.02, 1] and
    did not rank them, while the final values spread from 0.17 to 0.38.
    """
    base = 1 if plan.epochs < 10 else 2
    past_warmup = math.floor(longest_warmup(plan)) + 1
    return max(1, min(max(base, past_warmup), plan.epochs // 2))


def early_stopping_rung(plan: SweepPlan) -> int | None:
    """The first epoch at which :func:`build_scheduler`'s scheduler compares trials (None: it
    stops none: a multi-objective sweep, ``--scheduler none``, a single epoch)."""
    if len(plan.objectives) > 1 or plan.request.scheduler == "none" or plan.epochs < 2:
        return None
    return first_rung(plan)


def build_scheduler(plan: SweepPlan) -> tuple[Any, str]:
    """The early-stopping scheduler and its description.

    ``asha``: asynchronous successive halving (Li et al., MLSys 2020). Trials are compared at
    rungs of ``grace_period * 3**k`` epochs and those below the top third stop. The grace
    period is one epoch for short trials, two from ten epochs on, and never ends inside a
    warm-up (:func:`first_rung`): during the learning-rate warm-up (or a τ warm-up) the
    metric does not rank the settings yet.

    ``hyperband``: asynchronous HyperBand from the same paper, i.e. ASHA over several brackets
    whose first rung sits at ``grace_period * 3**s`` (s = 0, 1, ...), so trials that are slow
    starters get a bracket that waits longer before judging them. Ray Tune's synchronous
    ``HyperBandScheduler`` is not used: it pauses trials until a bracket is full, which a
    sequential searcher under a concurrency limit never fills (measured here: 6 trials of 9
    epochs, 2 at a time, and it stopped none).

    Both use the trainer's ``epoch`` counter, which a restarted trial does not inflate, and
    compare the plan's early signal (:mod:`tauray.sweep.signals`; the objective by default).

    A multi-objective sweep runs every trial to the end (no early stopping, whatever
    ``--scheduler`` says): ASHA ranks trials on one metric only, and a trial it stops would be
    told to Optuna with truncated values of every objective -- a cost objective (worker-seconds,
    samples seen) is always better when truncated, so early-stopped trials would crowd the
    Pareto front with points that were never trained to the end.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    signal = plan.early_signal
    metric, mode = signal.metric, signal.mode
    epochs = plan.epochs
    if len(plan.objectives) > 1:
        if plan.request.scheduler != "none":
            logger.info("multi-objective sweep: no early stopping (--scheduler ignored)")
        return FIFOScheduler(), "none (multi-objective: every trial runs all its epochs)"
    if plan.request.scheduler == "none" or epochs < 2:
        return FIFOScheduler(), "none (every trial runs all its epochs)"
    grace, factor = first_rung(plan), 3
    brackets = 1
    if plan.request.scheduler == "hyperband":
        brackets = max(1, math.floor(math.log(epochs / grace, factor) + 1e-9) + 1)
    scheduler = AsyncHyperBandScheduler(
        time_attr=names.EPOCH,
        metric=metric,
        mode=mode,
        max_t=epochs,
        grace_period=grace,
        reduction_factor=factor,
        brackets=brackets,
    )
    name = "ASHA" if plan.request.scheduler == "asha" else "async HyperBand"
    text = (
        f"{name}(time_attr={names.EPOCH}, max_t={epochs}, grace_period={grace}, "
        f"reduction_factor={factor}" + (f", brackets={brackets}" if brackets > 1 else "") + ")"
    )
    if signal.name != "objective":
        text += f" on {signal.metric} ({signal.mode}; --early-signal {signal.name})"
    return scheduler, text

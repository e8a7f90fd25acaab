"""Metric names, defined once and shared by the loop, the tuner and the reports."""

from __future__ import annotations

EPOCH = "epoch"
# The optimiser step count: under train/ so that it is not mistaken for MLflow's own step axis
# (which is the epoch in tauray's runs).
GLOBAL_STEP = "train/global_step"

TRAIN_LOSS = "train/loss"
TRAIN_TEMPERATURE = "train/temperature"
TRAIN_TEMPERATURE_AT_BOUND = "train/temperature_at_bound"
TRAIN_TEACHER_TEMPERATURE = "train/teacher_temperature"
TRAIN_LR = "train/lr"

VAL_KNN_TOP1 = "val/knn_top1"
# Top-1 of a logistic-regression head fitted on the frozen training embeddings, every method.
VAL_LINEAR_TOP1 = "val/linear_top1"
VAL_ZEROSHOT_TOP1 = "val/zeroshot_top1"
VAL_RECALL_AT_1 = "val/recall_at_1"
VAL_RECALL_AT_5 = "val/recall_at_5"
VAL_ALIGNMENT = "val/alignment"
VAL_UNIFORMITY = "val/uniformity"
# Symmetric InfoNCE of the validation pairs at one fixed τ (0.1) for every trial: a loss on one
# scale whatever τ the trial trains with (lower is better).
VAL_INFONCE_AT_REFERENCE = "val/infonce_at_reference"
# RankMe (Garrido et al., ICML 2023): the effective rank of the validation embeddings, a
# label-free predictor of downstream quality (higher is better).
VAL_EFFECTIVE_RANK = "val/effective_rank"

PERF_SAMPLES_PER_SECOND = "perf/samples_per_second"

# Added to a sweep trial's reports by the sweep, not the loop (``--early-signal curve``): the
# objective predicted for the last epoch from the trial's values so far. Not an objective.
RUNG_PREDICTED_FINAL = "rung/predicted_final"

# Largest spread across ranks of a fingerprint of the weights and shared buffers (DINO teacher
# and center included) at the end of an epoch: 0.0 when every rank holds the same state.
DIST_STATE_DIVERGENCE = "dist/state_divergence"

# Cumulative over the trial (resumed runs continue the count).
COST_WORKER_SECONDS = "cost/worker_seconds"
COST_GPU_SECONDS = "cost/gpu_seconds"
COST_CPU_SECONDS = "cost/cpu_seconds"
COST_SAMPLES_SEEN = "cost/samples_seen"

# The objective a sweep optimises by default, per method, and its direction.
DEFAULT_OBJECTIVE: dict[str, tuple[str, str]] = {
    "simclr": (VAL_KNN_TOP1, "max"),
    "dino": (VAL_KNN_TOP1, "max"),
    "clip": (VAL_ZEROSHOT_TOP1, "max"),
}

ALL_METRICS: tuple[str, ...] = (
    EPOCH,
    GLOBAL_STEP,
    TRAIN_LOSS,
    TRAIN_TEMPERATURE,
    TRAIN_TEMPERATURE_AT_BOUND,
    TRAIN_TEACHER_TEMPERATURE,
    TRAIN_LR,
    VAL_KNN_TOP1,
    VAL_LINEAR_TOP1,
    VAL_ZEROSHOT_TOP1,
    VAL_RECALL_AT_1,
    VAL_RECALL_AT_5,
    VAL_ALIGNMENT,
    VAL_UNIFORMITY,
    VAL_INFONCE_AT_REFERENCE,
    VAL_EFFECTIVE_RANK,
    PERF_SAMPLES_PER_SECOND,
    DIST_STATE_DIVERGENCE,
    COST_WORKER_SECONDS,
    COST_GPU_SECONDS,
    COST_CPU_SECONDS,
    COST_SAMPLES_SEEN,
)

# Metrics only some methods report: CLIP's image-text evaluations and DINO's teacher.
_METHOD_ONLY: dict[str, str] = {
    VAL_ZEROSHOT_TOP1: "clip",
    VAL_RECALL_AT_1: "clip",
    VAL_RECALL_AT_5: "clip",
    TRAIN_TEACHER_TEMPERATURE: "dino",
}


def objective_metrics(method: str | None = None) -> tuple[str, ...]:
    """The metrics a sweep may optimise for ``method`` (every method when None).

    Every reported metric but the counters ``epoch`` and ``train/global_step``; CLIP's zero-shot
    and recall metrics only for ``clip``, the teacher temperature only for ``dino``: an objective
    that a method never reports would leave every trial without a value.
    """
    return tuple(
        name
        for name in ALL_METRICS
        if "/" in name
        and name != GLOBAL_STEP
        and (method is None or _METHOD_ONLY.get(name, method) == method)
    )

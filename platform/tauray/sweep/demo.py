"""``tauray demo``: a real local sweep on embedded defaults, about 5 minutes on 2 CPU cores."""

from __future__ import annotations

from tauray.sweep.plan import SweepRequest

DEMO_EXPERIMENT = "tauray-demo"
DEMO_SPACE = "simclr-temperature"
DEMO_TRIALS = 6
DEMO_CONFIRM_TOP = 2
DEMO_CONFIRM_SEEDS = 2
DEMO_OVERRIDES: tuple[str, ...] = ()
DEMO_TIME_BUDGET_S = 270.0
DEMO_INTRO = (
    f"tauray demo: up to {DEMO_TRIALS} trials of the {DEMO_SPACE} space (SimCLR's temperature: "
    "fixed, learnable or a cosine schedule, with learning rate, weight decay and batch size) on "
    "the bundled cluttered digits, one CPU worker per trial, ASHA early stopping, every trial "
    f"in MLflow; then the {DEMO_CONFIRM_TOP} best configurations are trained again under "
    f"{DEMO_CONFIRM_SEEDS} fresh seeds each, to tell whether the winner beats the runner-up "
    f"beyond seed noise. About 5 minutes: the sweep stops after {DEMO_TIME_BUDGET_S / 60:g} "
    "minutes if its runs have not all finished by then."
)


def demo_request(*, tracking_uri: str | None = None, verbose: bool = False) -> SweepRequest:
    """The ``tauray demo`` sweep: about 5 minutes on 2 CPU cores, wherever it runs.

    Six trials of six epochs (two at a time, one CPU worker each, ASHA stopping most after
    two or six epochs), then the two best configurations under two fresh seeds each (four
    runs of six epochs), within a 4.5-minute time budget for both phases, so that Ray's start,
    the sweep and the final writes take about 5 minutes: on a fast or idle machine the runs
    end first, on a busy one the budget does (and the summary says what it cut). The README
    has measured timings.
    """
    return SweepRequest(
        space=DEMO_SPACE,
        experiment=DEMO_EXPERIMENT,
        trials=DEMO_TRIALS,
        time_budget_s=DEMO_TIME_BUDGET_S,
        workers_per_trial=1,
        scheduler="asha",
        tracking_uri=tracking_uri,
        overrides=DEMO_OVERRIDES,
        seed=0,
        verbose=verbose,
        confirm_top=DEMO_CONFIRM_TOP,
        confirm_seeds=DEMO_CONFIRM_SEEDS,
    )

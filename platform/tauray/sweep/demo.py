"""``tauray demo``: a real local sweep on embedded defaults, about 5 minutes on 2 CPU cores."""

from __future__ import annotations

from tauray.sweep.plan import SweepRequest

DEMO_EXPERIMENT = "tauray-demo"
DEMO_SPACE = "simclr-temperature"
DEMO_TRIALS = 6
DEMO_CONFIRM_TOP = 2
DEMO_CONFIRM_SEEDS = 2
DEMO_OVERRIDES: tuple[str, ...] = ("data.max_train_samples=720",)
DEMO_TIME_BUDGET_S = 270.0
DEMO_INTRO = (
    f"tauray demo: up to {DEMO_TRIALS} trials of the {DEMO_SPACE} space (SimCLR's temperature: "
    "fixed, learnable or a cosine schedule, with learning rate, weight decay and batch size) on "
    "720 of the bundled cluttered digits' 1,437 training images, one CPU worker per trial, ASHA "
    "early stopping, every trial "
    f"in MLflow; then the {DEMO_CONFIRM_TOP} best configurations are trained again under "
    f"{DEMO_CONFIRM_SEEDS} fresh seed(s) each, to tell whether the winner beats the runner-up "
    f"beyond seed noise. About 5 minutes: the sweep stops after {DEMO_TIME_BUDGET_S / 60:g} "
    "minutes if its runs have not all finished by then."
)


def demo_request(*, tracking_uri: str | None = None, verbose: bool = False) -> SweepRequest:
    """The ``tauray demo`` sweep: about 5 minutes on 2 CPU cores, wherever it runs.

    Six trials of six epochs on half the training images (two at a time, one CPU worker each,
    ASHA stopping most after two epochs), then the two best configurations under two fresh
    seeds each (four runs of six epochs), within a 4.5-minute time budget for both phases, so
    that Ray's start, the sweep and the final writes take about 5 minutes. Half the images
    because the whole set leaves no time to confirm: on an idle 2-core VM (about 16 s a
    trial-epoch with two trials at a time) the search took 2 min 56 s and the budget stopped
    all four confirmation runs at their fifth epoch; with one seed each the runner-up, stopped
    early in the search, had one run and no verdict. With 720 images the search took 1 min
    47 s, all four confirmation runs completed and the summary gave Welch's verdict, in
    4 min 27 s for ``make demo``. On a busy machine the budget ends the runs (and the summary
    says what it cut). The README has measured timings.
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

"""How a sweep reads in the MLflow UI: run names, objective summaries, short parameter keys.

Part of the MLflow layout (:mod:`tauray.layout` uses it and documents the whole layout); what is
here makes the runs table readable without changing how tauray finds its runs again (trials are
found by their tags, never by their names):

- a trial run's **name** says what differs between trials: its index and its temperature setting
  (``t002 fixed τ=0.100``, ``t010 learnable τ0=0.182``, ``t004 cosine τ 0.500→0.030``,
  ``t003 dino τs=0.100 τt=0.040``); a confirmation run names the search trial it repeats and
  its seed (``t012 confirm t003 seed=2``). A trial stopped early gets `` stopped@<epoch>``
  appended and the tag ``tauray.stopped_at_epoch``;
- a trial logs, beside the training loop's metrics, :data:`OBJECTIVE_BEST` (the best value of
  the sweep's objective so far, step = epoch: its last value is the trial's best) and, in a
  sweep with early stopping, :data:`OBJECTIVE_AT_FIRST_RUNG` (the objective at the scheduler's
  first rung, logged at that epoch: every trial not stopped before the rung has it), so
  stopped and completed trials compare fairly on these two columns;
- the parent run logs the sweep's objective under the trials' own key (the best trial's value,
  :func:`tauray.layout.result_metrics`) and :data:`OBJECTIVE_BEST_SO_FAR` with step = trial
  index: the best objective over the search trials up to that one (each trial's last value,
  as the sweep ranks them), the optimisation history as a native MLflow chart;
- a trial's params are the values the space searched under short, distinct keys
  (:func:`search_param_key`: ``temperature/value`` -> ``tau``, ``temperature/mode`` ->
  ``tau_mode``, ``optimizer/lr`` -> ``lr``) beside the dotted keys of its config that apply to
  its method (:func:`applies_to_method`: no ``dino.*`` for SimCLR, no text tower outside CLIP);
  the full config is the run's :data:`CONFIG_FILE` artifact. A config read back from the params
  (:func:`config_params`) is the method's keys over the defaults: the same training.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from tauray.ranking import RANKABLE
from tauray.trials import PHASE_CONFIRM, PHASE_SEARCH, TrialRecord
from tauray_trainers.config import TRAIN_LOOP_CONFIG, TrainConfig, flatten

#: A trial run's tag: the last epoch of a trial stopped early.
TAG_STOPPED_AT_EPOCH = "tauray.stopped_at_epoch"
#: Trial metrics: the objective's best value so far (step = epoch), and its value at the first
#: early-stopping rung (logged at that epoch).
OBJECTIVE_BEST = "objective/best"
OBJECTIVE_AT_FIRST_RUNG = "objective/at_first_rung"
#: Parent-run metric: the best objective over the search trials so far, step = trial index.
OBJECTIVE_BEST_SO_FAR = "objective/best_so_far"
#: Every trial run's full ``train_loop_config`` as YAML.
CONFIG_FILE = "config.yaml"

# ---- run names -----------------------------------------------------------------------------------


def _tau(value: Any) -> str:
    number = float(value)
    return f"{number:.3f}" if 0.001 <= abs(number) < 100 else f"{number:.3g}"


def _temperature_text(config: Mapping[str, Any]) -> str:
    if config.get("method") == "dino":
        dino = config["dino"]
        teacher = _tau(dino["teacher_temperature"])
        if float(dino["teacher_temperature_start"]) != float(dino["teacher_temperature"]):
            teacher = f"{_tau(dino['teacher_temperature_start'])}→{teacher}"
        return f"dino τs={_tau(dino['student_temperature'])} τt={teacher}"
    temperature = config["temperature"]
    mode = temperature["mode"]
    if mode == "fixed":
        return f"fixed τ={_tau(temperature['value'])}"
    if mode == "learnable":
        return f"learnable τ0={_tau(temperature['value'])}"
    schedule = temperature["schedule"]
    if schedule == "cosine":
        return f"cosine τ {_tau(temperature['max'])}→{_tau(temperature['min'])}"
    if schedule == "linear_warmup":
        start = temperature.get("start")
        begin = _tau(start) if start is not None else "?"
        return f"warmup τ {begin}→{_tau(temperature['value'])}"
    if schedule == "step":
        return f"step τ0={_tau(temperature['value'])} ×{temperature['gamma']:g}"
    return f"{schedule} τ={_tau(temperature['value'])}"


def trial_run_name(record: TrialRecord, confirmed_index: int | None = None) -> str:
    """A trial run's name: ``t<index>`` and what differs (see the module docstring).

    Args:
        record: the trial.
        confirmed_index: of a confirmation run, the index of the search trial it repeats.
    """
    prefix = f"t{record.index:03d}"
    config = record.config
    if record.phase == PHASE_CONFIRM:
        repeated = f" t{confirmed_index:03d}" if confirmed_index is not None else ""
        seed = f" seed={config['seed']}" if config else ""
        return f"{prefix} confirm{repeated}{seed}"
    if config is None:
        return f"{prefix} invalid combination"
    return f"{prefix} {_temperature_text(config)}"


def stopped_run_name(name: str, epoch: int) -> str:
    """The name of a run whose trial was stopped early after ``epoch`` epochs."""
    return f"{name} stopped@{epoch}"


def stopped_tags(epoch: int) -> dict[str, str]:
    """The tags of a trial run stopped early after ``epoch`` epochs."""
    return {TAG_STOPPED_AT_EPOCH: str(epoch)}


# ---- objective columns ---------------------------------------------------------------------------


def _better(mode: str) -> Any:
    return max if mode == "max" else min


def objective_progress(
    history: Sequence[tuple[int, float]], mode: str, first_rung: int | None, step: int
) -> dict[str, float]:
    """A trial's objective columns at ``step`` (an epoch), from its objective's history.

    Args:
        history: ``(epoch, value)`` pairs of the objective, as reported.
        mode: ``max`` or ``min``.
        first_rung: the early-stopping scheduler's first rung in epochs (None: no early stopping).
        step: the epoch just reported.

    Returns:
        :data:`OBJECTIVE_BEST` over the finite values up to ``step`` (absent if none), and
        :data:`OBJECTIVE_AT_FIRST_RUNG` when ``step`` is the first rung and has a value.
    """
    upto = [(epoch, value) for epoch, value in history if epoch <= step and math.isfinite(value)]
    columns: dict[str, float] = {}
    if upto:
        columns[OBJECTIVE_BEST] = float(_better(mode)(value for _, value in upto))
    if first_rung is not None and step == first_rung:
        at_rung = [value for epoch, value in upto if epoch == first_rung]
        if at_rung:
            columns[OBJECTIVE_AT_FIRST_RUNG] = float(at_rung[-1])
    return columns


def best_so_far(records: Iterable[TrialRecord], metric: str, mode: str) -> list[tuple[int, float]]:
    """The parent run's :data:`OBJECTIVE_BEST_SO_FAR` points: ``(trial index, best value)`` for
    every search trial from the first one that ranks on (a trial that does not rank, such as a
    failed one, repeats the best so far; :func:`tauray.ranking.rank_trials`)."""
    points: list[tuple[int, float]] = []
    best: float | None = None
    for record in sorted(records, key=lambda each: each.index):
        if record.phase != PHASE_SEARCH:
            continue
        value = record.value(metric) if record.status in RANKABLE else None
        if value is not None:
            best = value if best is None else float(_better(mode)(best, value))
        if best is not None:
            points.append((record.index, best))
    return points


# ---- params --------------------------------------------------------------------------------------

#: Config keys (dotted, or a section with a trailing dot) used by some methods only.
_METHOD_ONLY: dict[str, tuple[str, ...]] = {
    "dino.": ("dino",),
    "model.dino_out_dim": ("dino",),
    "model.text_": ("clip",),
    "model.context_length": ("clip",),
    "loss.name": ("clip",),
    "loss.sigmoid_bias": ("clip",),
    "loss.positives": ("clip",),
}


@cache
def _config_keys() -> tuple[frozenset[str], Counter[str]]:
    keys = frozenset(flatten(TrainConfig().to_dict(), separator="."))
    return keys, Counter(key.rsplit(".", 1)[-1] for key in keys)


def search_param_key(path: str) -> str:
    """The short param key of a searched value (``a/b`` path, ``train_loop_config/`` optional).

    ``temperature`` is written ``tau`` (``temperature/value`` -> ``tau``, ``temperature/mode`` ->
    ``tau_mode``, ``dino/teacher_temperature`` -> ``teacher_tau``); otherwise the last part
    (``optimizer/lr`` -> ``lr``) when no other config key ends so, else the parts joined by
    ``_`` (``data/seed`` -> ``data_seed``). Distinct paths get distinct keys.
    """
    parts = path.removeprefix(f"{TRAIN_LOOP_CONFIG}/").split("/")
    keys, leaves = _config_keys()
    if parts[0] == "temperature" and len(parts) == 2:
        return "tau" if parts[1] == "value" else f"tau_{parts[1]}"
    short = [part.replace("temperature", "tau") for part in parts]
    if len(parts) == 1 or (".".join(parts) in keys and leaves[parts[-1]] == 1):
        return short[-1]
    return "_".join(short)


def search_params(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's searched values (``a/b`` keys) under their short keys."""
    return {search_param_key(key): value for key, value in sorted(sampled.items())}


def applies_to_method(key: str, method: str) -> bool:
    """Whether a dotted config key matters to ``method`` (``dino.*`` only to DINO, ...)."""
    for prefix, methods in _METHOD_ONLY.items():
        if key.startswith(prefix):
            return method in methods
    return True


def trial_params(record: TrialRecord) -> dict[str, Any]:
    """A trial run's param values: the searched values under short keys and the config keys
    that apply to its method (dotted) or, if its combination is invalid, its sampled values
    (``a/b`` keys)."""
    if not record.config:
        return dict(record.sampled)
    method = str(record.config["method"])
    searched = {key.replace("/", ".") for key in record.sampled}
    config = {
        key: value
        for key, value in flatten(record.config, separator=".").items()
        if key in searched or applies_to_method(key, method)
    }
    return {**config, **search_params(record.sampled)}


def config_params(params: Mapping[str, str], sampled_keys: Collection[str]) -> dict[str, str]:
    """A trial run's params less the short keys of its searched values (``sampled_keys``, the
    ``a/b`` paths): what :func:`tauray.layout.config_from_params` rebuilds its config from."""
    keys, _ = _config_keys()
    short = {search_param_key(key) for key in sampled_keys} - keys
    return {key: text for key, text in params.items() if key not in short}


def config_yaml(config: Mapping[str, Any]) -> str:
    """:data:`CONFIG_FILE`'s text: the full nested config as YAML, in the schema's order."""
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False)

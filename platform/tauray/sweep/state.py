"""A sweep's folder between sessions: the saved request, the clock, and what ``--resume`` reads.

The folder (local or on an object store, :mod:`tauray.storage`) holds Ray Tune's own state
(``tuner.pkl``, the experiment state, the trials' checkpoints) and tauray's files: the request
the sweep started from (:data:`SWEEP_FILE`, with the tauray version that wrote it) and the
seconds Ray Tune has run it over all its sessions (:data:`CLOCK_FILE`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pickletools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from tauray import __version__
from tauray.storage import StoragePath, location, write_text_atomic
from tauray.sweep.plan import SweepPlan, SweepRequest, plan_sweep, storage_location

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

#: The request of a sweep, saved in its folder when it starts (what ``--resume`` re-plans from).
SWEEP_FILE = "tauray_sweep.json"
TUNER_STATE = "tuner.pkl"  # Ray Tune's own file in every experiment folder
VERSION_KEY = "tauray_version"
"""The key of :data:`SWEEP_FILE` that names the tauray version that started the sweep."""


def _release(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version text such as ``0.2.0`` or ``0.2.1+g1a2b3c``."""
    parts = version.split("+", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def check_folder_version(
    written_by: Any, sweep_dir: StoragePath, running: str = __version__
) -> None:
    """Refuse to resume a sweep folder another tauray release wrote.

    Ray Tune's ``tuner.pkl`` pickles tauray's trial function and callbacks by module path, and
    tauray's own files change with it: a folder is resumable by the release that wrote it
    (same major and minor version; patch releases keep the layout). A folder without a
    recorded version was written before tauray recorded one (0.1 and earlier).

    Raises:
        ValueError: one line naming both versions.
    """
    written = written_by if isinstance(written_by, str) and written_by.strip() else None
    if written is not None and _release(written) == _release(running):
        return
    told = f"tauray {written}" if written else "a tauray release before 0.2 (no version recorded)"
    raise ValueError(
        f"--resume {sweep_dir}: the sweep was started by {told}, and this is tauray {running}; "
        "only the release that wrote a sweep folder can resume it (install that release, or "
        "start the sweep again)"
    )


def save_sweep_request(plan: SweepPlan) -> Path:
    """Write the sweep's request, name, working directory and tracking URI to its folder."""
    request = dataclasses.asdict(plan.request)
    document = {
        "request": {key: list(v) if isinstance(v, tuple) else v for key, v in request.items()},
        "sweep_name": plan.sweep_name,
        "experiment": plan.experiment,
        "tracking_uri": plan.target.uri,
        "cwd": str(Path.cwd()),
        VERSION_KEY: __version__,
    }
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    path = plan.sweep_dir / SWEEP_FILE
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return path


def find_sweep_dir(
    target: str, *, storage_path: str | None = None, cwd: str | Path | None = None
) -> StoragePath:
    """The folder of the sweep ``--resume`` names: a path or URI, or a sweep name under the
    storage path.

    Raises:
        ValueError: no such folder, or it holds no sweep tauray started.
    """
    base = Path(cwd).resolve() if cwd is not None else Path.cwd()
    storage = storage_location(storage_path, base)
    candidates = [location(target, base), storage / target]
    for candidate in candidates:
        if (candidate / SWEEP_FILE).is_file():
            if not (candidate / TUNER_STATE).is_file():
                raise ValueError(
                    f"--resume {target!r}: {candidate} holds no Ray Tune state ({TUNER_STATE}); "
                    "the sweep was interrupted before its first trial started: run it again"
                )
            return candidate.resolve()
    looked = " and ".join(str(candidate) for candidate in candidates)
    raise ValueError(
        f"--resume {target!r}: no tauray sweep folder (with {SWEEP_FILE}) at {looked}; pass the "
        "folder `tauray tune` printed, or the sweep's name with --storage-path"
    )


def _check_tuner_state(path: StoragePath, target: str) -> None:
    """Refuse a ``tuner.pkl`` that is no complete pickle before Ray starts for it.

    The file is walked opcode by opcode (:func:`pickletools.genops`), which imports and runs
    nothing: a truncated, empty or overwritten file fails here in one line, instead of in
    ``Tuner.restore`` after a Ray session has started (:func:`restore_tuner` still reports a
    pickle that is whole but not Ray Tune's).

    Raises:
        ValueError: the file cannot be read or is no complete pickle (one line naming it).
    """
    try:
        data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--resume {target!r}: {path} is damaged ({error}): Ray Tune cannot restore the "
            "sweep from it; start the sweep again"
        ) from None


def read_sweep_file(sweep_dir: StoragePath) -> dict[str, Any]:
    """The document :func:`save_sweep_request` wrote, checked for shape.

    Raises:
        ValueError: the file is not JSON, or has no ``request`` object (one line naming it).
    """
    path = sweep_dir / SWEEP_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"--resume: cannot read {path}: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("request"), dict):
        raise ValueError(f"--resume: {path} is damaged: it holds no saved request")
    return document


def plan_resume(
    target: str,
    *,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: bool | None = None,
    cwd: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    check_tracking: bool = True,
) -> SweepPlan:
    """Re-plan an interrupted sweep from its folder (``tauray tune --resume``).

    The sweep keeps its name, folder, space, settings and tracking URI; ``tracking_uri``,
    ``address``, ``num_cpus`` and ``verbose`` may be given anew (the tracking server or the Ray
    head may have moved).

    Raises:
        ValueError: no sweep folder, or its saved request is no longer valid.
        ConnectionError: the tracking server does not answer.
    """
    sweep_dir = find_sweep_dir(target, storage_path=storage_path, cwd=cwd)
    document = read_sweep_file(sweep_dir)
    check_folder_version(document.get(VERSION_KEY), sweep_dir)
    saved = dict(document["request"])
    for key, value in list(saved.items()):
        if isinstance(value, list):
            saved[key] = tuple(value)
    known = {item.name for item in dataclasses.fields(SweepRequest)}
    try:
        request = SweepRequest(**{key: value for key, value in saved.items() if key in known})
    except TypeError as error:  # a required field missing
        raise ValueError(
            f"--resume {target!r}: {sweep_dir / SWEEP_FILE} is damaged: {error}"
        ) from None
    _check_tuner_state(sweep_dir / TUNER_STATE, target)
    request = dataclasses.replace(
        request,
        tracking_uri=tracking_uri or document.get("tracking_uri") or request.tracking_uri,
        address=address if address is not None else request.address,
        num_cpus=num_cpus if num_cpus is not None else request.num_cpus,
        verbose=request.verbose if verbose is None else verbose,
    )
    plan = plan_sweep(
        request,
        cwd=document.get("cwd") or cwd,
        environ=environ,
        check_tracking=check_tracking,
    )
    return dataclasses.replace(
        plan,
        sweep_name=sweep_dir.name,
        storage_path=sweep_dir.parent,
        experiment=document.get("experiment") or plan.experiment,
    )


CLOCK_FILE = "tauray_clock.json"
"""How long Ray Tune has run a sweep, over all its sessions (in the sweep's folder)."""

MIN_RESUMED_BUDGET_S = 1.0
"""Ray Tune's time budget for a resumed sweep whose budget is already spent: it then stops the
unfinished trials at once, and they end as stopped by the time budget."""


def spent_tune_seconds(sweep_dir: StoragePath) -> float:
    """Seconds Ray Tune ran the sweep in ``sweep_dir`` in earlier sessions (0 when unknown)."""
    try:
        return float(json.loads((sweep_dir / CLOCK_FILE).read_text())["tune_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class SweepClock(tune.Callback):
    """Keeps :data:`CLOCK_FILE` up to date while Ray Tune runs (every few seconds, and at the
    end): a resumed sweep's time budget is what earlier sessions left of it, even when the
    driver was killed (it then loses at most :attr:`every_s` seconds).

    Args:
        sweep_dir: the sweep's folder.
        earlier_s: seconds of earlier sessions (:func:`spent_tune_seconds`).
        every_s: how often to write the file.
    """

    def __init__(
        self, sweep_dir: StoragePath, earlier_s: float = 0.0, every_s: float = 5.0
    ) -> None:
        self.path = sweep_dir / CLOCK_FILE
        self.earlier_s = earlier_s
        self.every_s = every_s
        self.started = time.monotonic()
        self._written = -math.inf

    def seconds(self) -> float:
        """Seconds Ray Tune has run this sweep so far, this session included."""
        return self.earlier_s + time.monotonic() - self.started

    def save(self) -> None:
        """Write the total now (atomically: a kill mid-write leaves the previous value)."""
        self._written = time.monotonic()
        with contextlib.suppress(OSError):
            write_text_atomic(self.path, json.dumps({"tune_seconds": round(self.seconds(), 3)}))

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() - self._written >= self.every_s:
            self.save()


def resume_hint(plan: SweepPlan) -> str:
    """The command that continues the sweep (``tauray tune --resume <its folder>``)."""
    return f"tauray tune --resume {plan.sweep_dir}"


def interrupted_message(plan: SweepPlan) -> str:
    """The one line ``tauray tune`` prints when a sweep was interrupted: how to continue it."""
    if (plan.sweep_dir / TUNER_STATE).is_file():
        return (
            f"sweep {plan.sweep_name} was interrupted; Ray Tune saved its state in "
            f"{plan.sweep_dir}: continue it with `{resume_hint(plan)}`"
        )
    return (
        f"sweep {plan.sweep_name} was interrupted before Ray Tune saved any state; nothing to "
        "resume: run it again"
    )


def restore_tuner(
    sweep_dir: StoragePath,
    trainable: Any,
    callbacks: list[tune.Callback],
    *,
    time_budget_s: float | None,
) -> tune.Tuner:
    """``Tuner.restore`` of the sweep in ``sweep_dir`` with this session's callbacks and budget.

    The restored Tuner carries unpickled copies of the first session's callbacks and its whole
    time budget. Ray Tune offers no public way to pass new ones (ray-project/ray#41364), so this
    is the one place tauray sets them on the Tuner's internals: this session's callbacks (same
    types, same order) take the copies' places, so that Ray Tune restores the ledger's and the
    MLflow logger's saved state into the objects the driver reads, and the budget is what the
    earlier sessions left (:func:`spent_tune_seconds`). ``tests/platform/test_resume.py``
    checks both.

    Raises:
        ValueError: Ray Tune cannot read the folder's state (one line naming the folder).
    """
    try:
        tuner = tune.Tuner.restore(
            str(sweep_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
    except Exception as error:  # a damaged or foreign tuner.pkl: unpickling can raise anything
        raise ValueError(
            f"--resume {sweep_dir}: Ray Tune cannot read its saved state ({TUNER_STATE}): "
            f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        ) from error
    internal = tuner._local_tuner
    internal.get_run_config().callbacks = callbacks
    internal._tune_config.time_budget_s = time_budget_s
    return tuner

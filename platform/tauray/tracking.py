"""MLflow tracking of sweeps: where runs go, and the one process that writes them.

What a sweep writes (tags, params, metrics, artifacts) is :mod:`tauray.layout`'s; this module
decides the tracking URI, checks it before Ray starts, and holds the writer
(:class:`SweepRecorder`; :mod:`tauray.tracking_models` writes the logged models through it).
Only the sweep driver writes to MLflow (through its Ray Tune callback,
:class:`tauray.sweep.mlflow_logger.MlflowTrialLogger`): the workers never open the tracking
store, so a SQLite file has one writer.

An interrupted sweep (Ctrl-C) ends its parent run and the runs of its unfinished trials as
KILLED; ``tauray tune --resume`` reopens the same runs. A driver killed outright (SIGKILL, a lost
node) can leave a child run for a trial Ray Tune never saved: the resumed sweep never knows that
trial, so at the end of every sweep such runs are ended as lost
(:meth:`SweepRecorder.end_lost_runs`); they are not trials of the sweep (``tauray report`` skips
them).

The tracking URI comes from ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the embedded
default ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts``; it is always made
absolute (Ray workers run in other directories).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tauray import layout
from tauray.run_context import context_tags, dataset_inputs
from tauray.tracking_stores import (
    FILE_STORE_ENV,
    check_database_server,
    check_writable_folder,
    is_sqlite_file,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EMBEDDED_DATABASE = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"

_REMOTE_SCHEMES = ("http", "https")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_OTHER_SCHEMES = ("file", "databricks", "databricks-uc", "uc")
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000


class DropMessages(logging.Filter):
    """Drops the records whose message contains one of ``fragments`` (a filter applies to the
    records of the logger it is attached to, not to its children's)."""

    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextlib.contextmanager
def dropped_messages(loggers: Sequence[str], fragments: Sequence[str]) -> Iterator[None]:
    """Drop the messages containing one of ``fragments`` from ``loggers`` while inside."""
    message_filter = DropMessages(fragments)
    attached = [logging.getLogger(name) for name in loggers]
    for each in attached:
        each.addFilter(message_filter)
    try:
        yield
    finally:
        for each in attached:
            each.removeFilter(message_filter)


# ---- where runs go ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingTarget:
    """An absolute MLflow tracking URI and, for local stores, where new experiments keep artifacts.

    Attributes:
        uri: the tracking (and registry) URI every process uses.
        artifact_location: artifact root for experiments this sweep creates (local stores only;
            a tracking server decides it itself).
        source: where the URI came from: ``flag`` (``--tracking-uri``), ``env``
            (``MLFLOW_TRACKING_URI``) or ``default`` (SQLite under the working directory).
    """

    uri: str
    artifact_location: str | None
    source: Literal["flag", "env", "default"]

    @property
    def is_remote(self) -> bool:
        return urllib.parse.urlparse(self.uri).scheme in _REMOTE_SCHEMES

    def ui_hint(self, experiment_id: str | None = None, run_id: str | None = None) -> str:
        """How to look at the runs: a URL for a server, an ``mlflow ui`` command otherwise."""
        if self.is_remote:
            url = self.uri.rstrip("/")
            if experiment_id and run_id:
                return f"open {url}/#/experiments/{experiment_id}/runs/{run_id}"
            if experiment_id:
                return f"open {url}/#/experiments/{experiment_id}"
            return f"open {url}"
        command = f"mlflow ui --backend-store-uri {self.uri} --port 5000"
        where = "http://127.0.0.1:5000"
        if experiment_id:
            where += f"/#/experiments/{experiment_id}"
            if run_id:
                where += f"/runs/{run_id}"
        return f"run `{command}` and open {where}"


def _absolute_sqlite(uri: str, cwd: Path) -> tuple[str, Path]:
    path_text = uri[len("sqlite:///") :]
    if not path_text or path_text == ":memory:":
        raise ValueError(
            f"tracking URI {uri!r} is an in-memory SQLite database, which other processes cannot "
            "see; use sqlite:///ABSOLUTE/PATH/mlflow.db or an http:// tracking server"
        )
    path = Path(path_text)
    if not path.is_absolute():
        path = (cwd / path).resolve()
    return f"sqlite:///{path}", path


def resolve_tracking_target(
    uri: str | None,
    *,
    cwd: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrackingTarget:
    """Decide the tracking URI: ``uri``, else ``MLFLOW_TRACKING_URI``, else local SQLite.

    Args:
        uri: the ``--tracking-uri`` value, or None.
        cwd: the directory the embedded default and relative SQLite paths live in (default: the
            current working directory).
        environ: the environment to read ``MLFLOW_TRACKING_URI`` from (default: ``os.environ``).

    Returns:
        The target with an absolute URI.

    Raises:
        ValueError: for an empty, relative-path, in-memory or unsupported URI.
    """
    base = Path(cwd if cwd is not None else os.getcwd()).resolve()
    env = os.environ if environ is None else environ
    source: Literal["flag", "env", "default"]
    if uri is not None:
        chosen, source = uri.strip(), "flag"
        if not chosen:
            raise ValueError("--tracking-uri is empty: pass http://HOST:PORT or sqlite:///PATH")
    elif env.get(TRACKING_URI_ENV, "").strip():
        chosen, source = env[TRACKING_URI_ENV].strip(), "env"
    else:
        database = base / EMBEDDED_DATABASE
        return TrackingTarget(
            uri=f"sqlite:///{database}",
            artifact_location=(base / EMBEDDED_ARTIFACTS).as_uri(),
            source="default",
        )
    where = "--tracking-uri" if source == "flag" else TRACKING_URI_ENV
    try:
        parsed = urllib.parse.urlparse(chosen)
        parsed.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as error:
        raise ValueError(f"{where} {chosen!r} is not a valid URI: {error}") from None
    scheme = parsed.scheme.lower()
    if scheme in _REMOTE_SCHEMES:
        if not parsed.netloc:
            raise ValueError(f"{where} {chosen!r} has no host: use http://HOST:PORT")
        return TrackingTarget(uri=chosen.rstrip("/"), artifact_location=None, source=source)
    if scheme == "sqlite":
        if not chosen.startswith("sqlite:///"):
            raise ValueError(f"{where} {chosen!r}: write SQLite URIs as sqlite:///PATH/mlflow.db")
        absolute, path = _absolute_sqlite(chosen, base)
        return TrackingTarget(
            uri=absolute,
            artifact_location=(path.parent / EMBEDDED_ARTIFACTS).as_uri(),
            source=source,
        )
    if scheme == "file":
        path = Path(parsed.path)
        if not path.is_absolute():
            path = (base / path).resolve()
        return TrackingTarget(uri=path.as_uri(), artifact_location=None, source=source)
    if (
        scheme in _DATABASE_SCHEMES
        or scheme in _OTHER_SCHEMES
        or scheme.startswith(_DATABASE_SCHEMES)
    ):
        return TrackingTarget(uri=chosen, artifact_location=None, source=source)
    raise ValueError(
        f"{where} {chosen!r} is not a tracking URI; use http(s)://HOST:PORT (an mlflow server), "
        "sqlite:///PATH/mlflow.db, a database URI (postgresql://, mysql://) or file:///PATH"
    )


def check_tracking_reachable(target: TrackingTarget, *, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial starts, when the tracking store cannot be used.

    A server must answer ``/health`` within ``timeout_s`` (any HTTP answer other than 401/403
    counts as reachable); a SQLite file's folder must exist and be writable, and an existing
    file must be an SQLite database; a file store needs MLflow's opt-in and a writable folder; a
    database URI needs its driver installed and its server to answer within ``timeout_s``.

    Raises:
        ConnectionError: the server does not answer, or rejects our credentials.
        ValueError: a folder that does not exist or is not writable, a file that is not a
            database, a missing driver (naming the package to install).
    """
    parsed = urllib.parse.urlparse(target.uri)
    if parsed.scheme in _REMOTE_SCHEMES:
        health = target.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_s):
                return
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise ConnectionError(
                    f"MLflow tracking server {target.uri} refused us (HTTP {error.code}): set "
                    "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
                ) from None
            return  # it answered: a proxy without /health, say
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(
                f"MLflow tracking server {target.uri} is unreachable ({reason}); start it "
                "(mlflow server --host 127.0.0.1 --port 5000), fix --tracking-uri / "
                f"{TRACKING_URI_ENV}, or unset both to use the local SQLite default"
            ) from None
    if parsed.scheme == "sqlite":
        database = Path(target.uri[len("sqlite:///") :])
        check_writable_folder(database.parent, f"tracking URI {target.uri}")
        if database.is_file() and not is_sqlite_file(database):
            raise ValueError(
                f"tracking URI {target.uri}: {database} is not an SQLite database; point "
                "--tracking-uri at an MLflow database or a new file"
            )
    elif parsed.scheme == "file":
        if os.environ.get(FILE_STORE_ENV, "").lower() != "true":
            raise ValueError(
                f"tracking URI {target.uri}: MLflow's file store is retired and refuses to "
                f"start unless {FILE_STORE_ENV}=true; use sqlite:///PATH/mlflow.db instead"
            )
        check_writable_folder(Path(parsed.path), f"tracking URI {target.uri}")
    elif parsed.scheme.split("+")[0] in _DATABASE_SCHEMES:
        check_database_server(target.uri, timeout_s)


@contextlib.contextmanager
def tracking_scope(target: TrackingTarget) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``target`` for the block, then restore it.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which local Ray workers
    started inside the block inherit (as an absolute URI); the previous value comes back after.
    """
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    env_before = os.environ.get(TRACKING_URI_ENV)
    uri_before = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(target.uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uri_before)  # type: ignore[arg-type]  # None unsets it
        if env_before is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = env_before


# ---- the writer ------------------------------------------------------------------------------


class SweepRecorder:
    """Every MLflow write of one sweep: the experiment, parent run, child runs (the models and
    the registry: :mod:`tauray.tracking_models`, through this recorder).

    Args:
        target: where runs go (see :func:`resolve_tracking_target`).
        experiment: the experiment name (created if missing).

    Raises:
        ValueError: the experiment exists but was deleted.
    """

    def __init__(self, target: TrackingTarget, experiment: str) -> None:
        from mlflow import MlflowClient

        self.target = target
        self.client: MlflowClient = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
        self.experiment_name = experiment
        self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=self.target.artifact_location
                )
            except MlflowException:  # created concurrently by another sweep
                existing = self.client.get_experiment_by_name(name)
                if existing is None:
                    raise
        if existing.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
                f"--experiment-id {existing.experiment_id}) or pass another --experiment"
            )
        return existing.experiment_id

    @functools.cached_property
    def context_tags(self) -> dict[str, str]:
        """MLflow's context tags of every run this recorder creates (:mod:`tauray.run_context`)."""
        return context_tags()

    # ---- runs --------------------------------------------------------------------------------

    def start_sweep_run(
        self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """Create the sweep's parent run; return its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={layout.TAG_KIND: layout.KIND_SWEEP, **self.context_tags, **tags},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_trial_run(self, parent_run_id: str, trial_id: str) -> str | None:
        """The child run of ``trial_id`` under the sweep, if a previous driver created it."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=layout.trial_runs_filter(parent_run_id, trial_id=trial_id),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_trial_run(
        self,
        parent_run_id: str,
        trial_id: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> tuple[str, bool]:
        """Find or create the child run of a trial; return ``(run_id, created)``."""
        existing = self.find_trial_run(parent_run_id, trial_id)
        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            return existing, False
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                **layout.trial_identity_tags(parent_run_id, trial_id),
                **self.context_tags,
                **tags,
            },
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id, True

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(key), layout.param_text(value)) for key, value in params.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])

    def log_metric_items(self, run_id: str, items: Sequence[Metric]) -> None:
        """Log MLflow metrics as they are (their steps, times, models, data sets)."""
        for start in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + _MAX_METRICS_PER_BATCH])

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int) -> None:
        """Log ``values`` at ``step`` (NaN and inf are kept: they say what happened)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = [Metric(key, float(value), timestamp, step) for key, value in values.items()]
        self.log_metric_items(run_id, items)

    def log_metric_history(
        self, run_id: str, key: str, points: Sequence[tuple[int, float]]
    ) -> None:
        """Log ``key`` at each ``(step, value)`` of ``points`` (a curve over steps)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.log_metric_items(
            run_id, [Metric(key, float(value), timestamp, step) for step, value in points]
        )

    def last_step(self, run_id: str, metric: str) -> int | None:
        """The highest step logged for ``metric`` in a run (to skip re-reported epochs)."""
        history = self.client.get_metric_history(run_id, metric)
        return max((entry.step for entry in history), default=None)

    def last_steps(self, run_id: str) -> dict[str, int]:
        """The highest step logged for every metric of a run (to skip re-reported epochs)."""
        logged = self.client.get_run(run_id).data.metrics
        steps: dict[str, int] = {}
        for metric in logged:
            last = self.last_step(run_id, metric)
            if last is not None:
                steps[metric] = last
        return steps

    def find_sweep_run(self, sweep_dir: str, sweep_name: str | None = None) -> str | None:
        """The parent run of the sweep kept in ``sweep_dir`` (tag ``tauray.storage_path``);
        else, when the folder was moved, the one tagged ``tauray.sweep = sweep_name``."""
        searches = [(layout.TAG_STORAGE, sweep_dir)]
        if sweep_name:
            searches.append((layout.TAG_SWEEP, sweep_name))
        for tag, value in searches:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=layout.sweep_runs_filter(tag, value),
                order_by=["attributes.start_time ASC"],
                max_results=1,
            )
            if runs:
                return runs[0].info.run_id
        return None

    def reopen_run(self, run_id: str) -> None:
        """Mark a run of an interrupted sweep RUNNING again (``tauray tune --resume``)."""
        self.client.update_run(run_id, status="RUNNING")

    def running_trial_runs(self, parent_run_id: str) -> dict[str, str]:
        """The sweep's child runs that are RUNNING: ``{run_id: trial_id}``."""
        found: dict[str, str] = {}
        page_token: str | None = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=layout.trial_runs_filter(parent_run_id, running=True),
                max_results=500,
                page_token=page_token,
            )
            for run in page:
                trial_id = run.data.tags.get(layout.TAG_TRIAL_ID)
                if trial_id:  # a nested run tauray did not create is left alone
                    found[run.info.run_id] = trial_id
            page_token = page.token
            if not page_token:
                return found

    def end_lost_runs(self, parent_run_id: str, known_trial_ids: Collection[str]) -> list[str]:
        """End the sweep's RUNNING child runs of trials Ray Tune does not know; return their ids.

        A driver killed after the sweep's MLflow logger created a trial's child run but before
        Ray Tune's next save of the experiment state leaves a run for a trial the restored
        sweep never sees (its searcher suggests a new trial instead); nothing would ever end
        that run. Each one is tagged ``tauray.status = lost`` with ``tauray.lost_reason`` and
        ended as KILLED. Runs of the trials in ``known_trial_ids`` are left as they are.

        Args:
            parent_run_id: the sweep's parent run.
            known_trial_ids: ids of every trial of the sweep (finished, running or pending).
        """
        known = set(known_trial_ids)
        lost = [
            run_id
            for run_id, trial_id in self.running_trial_runs(parent_run_id).items()
            if trial_id not in known
        ]
        for run_id in lost:
            self.set_tags(run_id, layout.lost_tags())
            self.end_run(run_id, "KILLED")
            logger.warning("MLflow: run %s belongs to a trial the sweep lost; ended it", run_id)
        return lost

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, layout.tag_text(value)) for key, value in tags.items()]
        if items:
            self.client.log_batch(run_id, tags=items)

    def rename_run(self, run_id: str, name: str) -> None:
        self.client.update_run(run_id, name=name)

    def end_run(self, run_id: str, status: Literal["FINISHED", "FAILED", "KILLED"]) -> None:
        self.client.set_terminated(run_id, status=status)

    def describe_experiment(self, markdown: str) -> None:
        """Set the experiment's description (MLflow's ``mlflow.note.content`` tag)."""
        self.client.set_experiment_tag(self.experiment_id, "mlflow.note.content", markdown)

    def log_datasets(self, run_id: str, config: Mapping[str, Any]) -> None:
        """Log a run's training and validation data (``config``: its full config) as MLflow
        dataset inputs (:func:`tauray.run_context.dataset_inputs`)."""
        self.client.log_inputs(run_id, datasets=dataset_inputs(config))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path)

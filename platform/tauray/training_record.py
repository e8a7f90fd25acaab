"""``tauray train``'s MLflow run: laid out as a sweep trial, so the two compare side by side.

The layout is :mod:`tauray.layout`'s (the trial's params encoder, metric names, status tags)
and the writes are :class:`tauray.tracking.SweepRecorder`'s: MLflow's context tags (source
``tauray train``), params, ``config.yaml`` and the training and validation data as MLflow
datasets when the run starts, every epoch's metrics (τ among them) at step = epoch as rank 0
reports them, then the self-contained model from the last checkpoint, named after the run and
carrying its final metrics (:mod:`tauray.tracking_models`), ``tauray.status`` and the run's end
(FINISHED, FAILED, or KILLED when interrupted). The tracking URI follows ``tauray tune``'s
rules (:func:`tauray.tracking.resolve_tracking_target`) and is checked before Ray starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from tauray import layout, tracking_models, ui_layout
from tauray.layout import models as model_layout
from tauray.run_context import TRAINING_SOURCE_NAME, context_tags
from tauray.tracking import (
    SweepRecorder,
    TrackingTarget,
    check_tracking_reachable,
    resolve_tracking_target,
)
from tauray.trials import epoch_metrics, result_step
from tauray_trainers.config import TrainConfig

logger = logging.getLogger(__name__)


class TrainingRunRecord:
    """The MLflow run of one ``tauray train``.

    Args:
        target: where runs go.
        experiment: the experiment (created if missing).
        config: the run's config (its params).
        run_name: the run's name (the Ray Train run name).
        resources: ``workers``, ``gpus_per_worker``, ``cpus_per_worker``.

    Raises:
        ValueError: the experiment was deleted.
    """

    def __init__(
        self,
        target: TrackingTarget,
        experiment: str,
        config: TrainConfig,
        run_name: str,
        resources: Mapping[str, Any],
    ) -> None:
        self.recorder = SweepRecorder(target, experiment)
        client = self.recorder.client
        run = client.create_run(
            self.recorder.experiment_id,
            run_name=run_name,
            tags={
                **context_tags(TRAINING_SOURCE_NAME),
                **layout.training_run_tags(config.method),
            },
        )
        self.run_id: str = run.info.run_id
        self.run_name = run_name
        self.config = config.to_dict()
        self.recorder.log_params(self.run_id, layout.training_run_params(self.config, **resources))
        config_file = ui_layout.config_yaml(self.config)
        self.recorder.log_text(self.run_id, config_file, ui_layout.CONFIG_FILE)
        self.recorder.log_datasets(self.run_id, self.config)
        self._last_step = -1

    @classmethod
    def open(
        cls,
        tracking_uri: str | None,
        experiment: str | None,
        config: TrainConfig,
        run_name: str,
        resources: Mapping[str, Any],
    ) -> TrainingRunRecord:
        """Resolve and check the tracking URI as ``tauray tune`` does, then start the run.

        Raises:
            ValueError: a bad URI, an empty or deleted experiment.
            ConnectionError: the tracking server does not answer.
        """
        if experiment is not None and not experiment.strip():
            raise ValueError("--experiment is empty: pass a name, or leave it out for tauray-train")
        target = resolve_tracking_target(tracking_uri)
        check_tracking_reachable(target)
        name = experiment or layout.DEFAULT_TRAINING_EXPERIMENT
        return cls(target, name, config, run_name, resources)

    @property
    def target(self) -> TrackingTarget:
        return self.recorder.target

    def ui_hint(self) -> str:
        """Where to look at the run."""
        return self.target.ui_hint(self.recorder.experiment_id, self.run_id)

    def epoch(self, result: Mapping[str, Any]) -> None:
        """Log one reported epoch's metrics at step = epoch (a re-reported epoch once)."""
        step = result_step(result)
        if step <= self._last_step:
            return
        values = epoch_metrics(result)
        if values:
            self.recorder.log_metrics(self.run_id, values, step)
        self._last_step = step

    def finish(self, checkpoint_path: str | None) -> str | None:
        """Log the model from the last checkpoint (named after the run, its final metrics
        linked), tag the run completed, end it; return the model URI (None, with
        ``tauray.model_error``, when it could not be logged)."""
        model_uri = None
        if checkpoint_path is not None:
            try:
                model_uri = tracking_models.log_model(
                    self.recorder,
                    self.run_id,
                    _load_exported(checkpoint_path),
                    name=model_layout.logged_model_name(self.run_name),
                )
            except Exception as error:
                logger.exception("MLflow: could not log the model of run %s", self.run_id)
                self.recorder.set_tags(self.run_id, layout.model_error_tags(error))
            else:
                self.recorder.set_tags(self.run_id, layout.model_tags(model_uri))
                try:
                    tracking_models.link_final_metrics(
                        self.recorder, self.run_id, model_uri, self.config
                    )
                except Exception:
                    logger.exception("MLflow: could not link run %s's metrics", self.run_id)
        self.recorder.set_tags(self.run_id, {layout.TAG_STATUS: "completed"})
        self.recorder.end_run(self.run_id, "FINISHED")
        return model_uri

    def fail(self, reason: str, status: Literal["FAILED", "KILLED"] = "FAILED") -> None:
        """End the run of a failed (or, KILLED, interrupted) training with the reason."""
        if status == "FAILED":
            self.recorder.set_tags(self.run_id, layout.training_failure_tags(reason))
        else:
            self.recorder.set_tags(self.run_id, {layout.TAG_STATUS: "interrupted"})
        self.recorder.end_run(self.run_id, status)


def _load_exported(checkpoint_path: str) -> Any:
    """The checkpoint's self-contained model (a local folder or an object store's URI)."""
    import ray.train

    from tauray_trainers.models import load_embedding_model

    with ray.train.Checkpoint(path=checkpoint_path).as_directory() as directory:
        return load_embedding_model(directory)[0]

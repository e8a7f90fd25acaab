"""The logged models' MLflow writes: a run's model, its final metrics, the registered champion.

What they write is :mod:`tauray.layout.models`'s; they write through a
:class:`tauray.tracking.SweepRecorder` (its client and tracking URI). Every model tauray logs
(a sweep trial's, a ``tauray train`` run's) is named after its run and carries its run's final
metrics, so the experiment's Models tab lists the models of a sweep by trial and sorts them by
the objective; the champion is the best trial's model, registered with the alias ``@champion``
and tagged as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tauray import layout
from tauray.layout import models as model_layout
from tauray.run_context import datasets, model_requirements
from tauray.tracking import SweepRecorder, dropped_messages, tracking_scope

# MLflow's two notices on every model logged here, a screenful each, that say nothing new:
# the pickle format is chosen on purpose and the serving example cannot be validated
# (log_model says why for both).
_MODEL_LOG_NOTICES = (
    "Saving pytorch model by Pickle or CloudPickle format",
    "Failed to validate serving input example",
)
_MODEL_LOG_LOGGERS = ("mlflow.pytorch", "mlflow.models.model")

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from tauray_trainers.models import ExportedModel


def log_model(recorder: SweepRecorder, run_id: str, exported: ExportedModel, *, name: str) -> str:
    """Log a self-contained embedding model to a run; return its ``models:/<model_id>`` URI.

    ``name`` is the model's name in the experiment's Models tab, made from its run's name
    (:func:`tauray.layout.models.logged_model_name`); link the run's final metrics to it next
    (:func:`link_final_metrics`).

    The model (:class:`tauray_trainers.models.EmbeddingModel`) takes images as a user holds
    them, uint8 in [0, 255] or float in [0, 1], and normalises them itself. It is logged in
    MLflow's ``pickle`` format with tauray_trainers' source as ``code_paths`` (MLflow puts
    it on the path when loading): a ``pt2`` graph (``torch.export``) fixes the input dtype
    when exported (fed uint8, a float32 export fails with "Tensor dtype mismatch!
    Expected: Float, Got: unsigned char") and cannot carry CLIP's tokenizer. The signature
    names the tensors (:mod:`tauray.layout.models`); the input example is the checkpoint's
    real validation images; the metadata is the model's card. (MLflow's PyTorch pyfunc
    rejects the dict its schema enforcement makes of a named tensor input, so MLflow warns
    that it could not validate the serving example: load the model with
    ``mlflow.pytorch.load_model``.) Both MLflow warnings, the pickle one and the serving
    example's, are dropped here: they come with every model and say nothing new.

    Raises:
        mlflow.exceptions.MlflowException: if logging fails (a name MLflow refuses among them).
    """
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import tauray_trainers

    card = exported.card
    image_shape = (-1, card.channels, card.image_size, card.image_size)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), image_shape, model_layout.INPUT_NAME)]),
        outputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, card.embedding_dim), model_layout.OUTPUT_NAME)]
        ),
    )
    with (
        tracking_scope(recorder.target),
        mlflow.start_run(run_id=run_id),
        dropped_messages(_MODEL_LOG_LOGGERS, _MODEL_LOG_NOTICES),
    ):
        info = mlflow.pytorch.log_model(
            exported.model,
            name=name,
            signature=signature,
            input_example=exported.example.detach().cpu().numpy().astype(np.float32),
            metadata=model_layout.model_metadata(card),
            serialization_format="pickle",
            code_paths=[str(Path(tauray_trainers.__file__).resolve().parent)],
            pip_requirements=model_requirements(),
        )
    return str(info.model_uri)


def link_final_metrics(
    recorder: SweepRecorder,
    run_id: str,
    model_uri: str,
    data_config: Mapping[str, Any],
    objective_metric: str | None = None,
) -> None:
    """Link a run's final metrics to the model it logged (the validation metrics with the
    validation data set: :func:`tauray.layout.models.final_model_metrics`), so the Models tab
    shows, sorts and filters the models by them.

    The final values come from one ``get_run`` (its run data holds each metric's last entry
    with its step and time), then one ``log_batch`` per 1,000 metrics: two requests for a
    trial, not one history request per metric.

    Args:
        recorder: the writer.
        run_id: the run that logged the model.
        model_uri: the model's ``models:/<model_id>`` URI (:func:`log_model`'s).
        data_config: the run's full config (its ``data`` section names the data sets).
        objective_metric: a sweep's objective (None for a ``tauray train`` run).

    Raises:
        ValueError: ``model_uri`` is not a logged model's ``models:/<model_id>``.
    """
    model_id = model_layout.logged_model_id(model_uri)
    from mlflow.entities import Metric

    run_data = recorder.client.get_run(run_id).data.to_proto()
    latest = [Metric.from_proto(entry) for entry in run_data.metrics]
    linked = model_layout.final_model_metrics(
        latest, model_id, datasets(data_config), objective_metric
    )
    recorder.log_metric_items(run_id, linked)


def register_champion(recorder: SweepRecorder, model_uri: str, name: str) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` and point ``@champion`` at it.

    The version's description (from the model's metadata) says what it takes and returns and
    the preprocessing it contains (:func:`tauray.layout.models.model_description`); the logged
    model gets :data:`tauray.layout.models.TAG_CHAMPION` (the version it became), so the
    Models tab tells it from the sweep's other models.

    The champion already being ``model_uri`` (a finished sweep resumed again) keeps its
    version: no second version of the same model.

    Raises:
        ValueError: ``model_uri`` is not a logged model's ``models:/<model_id>``.
    """
    import mlflow

    model_id = model_layout.logged_model_id(model_uri)
    client = recorder.client
    try:
        current = client.get_model_version_by_alias(name, layout.CHAMPION_ALIAS)
    except Exception:  # no such model, or no champion yet
        current = None
    if current is not None and current.source == model_uri:
        return current
    with tracking_scope(recorder.target):
        version = mlflow.register_model(model_uri, name)
    client.set_registered_model_alias(name, layout.CHAMPION_ALIAS, version.version)
    client.set_logged_model_tags(model_id, model_layout.champion_model_tags(name, version.version))
    with tracking_scope(recorder.target):
        metadata = mlflow.models.get_model_info(model_uri).metadata
    client.update_model_version(
        name, version.version, description=model_layout.model_description(metadata, model_uri)
    )
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=model_layout.REGISTERED_MODEL_DESCRIPTION)
    return version

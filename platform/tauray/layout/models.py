"""The logged models' layout: their signature's names, metadata and registry descriptions.

Every model tauray logs (a sweep's trials, ``tauray train``, the registered champion) is a
:class:`tauray_trainers.models.EmbeddingModel`: images as a user holds them in, L2-normalised
embeddings out, the data set's normalisation inside. Its signature names the tensors
(:data:`INPUT_NAME` float32 ``[-1, C, H, W]`` -> :data:`OUTPUT_NAME` float32 ``[-1, D]``), its
input example is a few real validation images, and its MLflow metadata (the ``metadata`` of
the ``MLmodel`` file) is :func:`model_metadata`'s, read back by :func:`read_model_metadata`.

In the experiment's Models tab (MLflow's logged models) each model is named after the run it
came from (:func:`logged_model_name`: ``t002-fixed-tau=0p100`` for the trial run
``t002 fixed τ=0.100``, a ``tauray train`` run's name for its model) and carries its run's final
metrics (:func:`metric_data_context` says which were measured on the validation data), so the
tab lists, compares and sorts the models by the sweep's objective. The champion's logged model
also carries :data:`TAG_CHAMPION`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tauray import ui_layout
from tauray.run_context import VALIDATION_CONTEXT
from tauray_trainers import metrics as names

if TYPE_CHECKING:
    from mlflow.entities import Dataset, Metric

    from tauray.trials import TrialRecord
    from tauray_trainers.models import ModelCard

#: Names of the signature's input and output tensors.
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
#: What the model accepts, in words (metadata ``input`` and the descriptions).
INPUT_TEXT = (
    "images N x C x H x W at the trained size, uint8 in [0, 255] or float in [0, 1] "
    "(the signature and pyfunc take float32)"
)
#: Metadata keys and the :class:`ModelCard` fields they hold.
METADATA_FIELDS = {
    "method": "method",
    "backbone": "backbone",
    "data_set": "data_set",
    "image_size": "image_size",
    "channels": "channels",
    "mean": "mean",
    "std": "std",
    "temperature": "temperature",
    "temperature_mode": "temperature_mode",
    "embedding_dim": "embedding_dim",
    "embeds_text": "embeds_text",
}


def model_metadata(card: ModelCard) -> dict[str, Any]:
    """A model's MLflow metadata: its card (lists for mean/std), the input it takes, and how
    to embed text when it can."""
    metadata: dict[str, Any] = {}
    for key, field in METADATA_FIELDS.items():
        value = getattr(card, field)
        metadata[key] = list(value) if isinstance(value, tuple) else value
    metadata["input"] = INPUT_TEXT
    metadata["normalisation"] = "inside the model: (pixels in [0, 1] - mean) / std"
    if card.embeds_text:
        metadata["text"] = "model.embed_text(list_of_strings) -> L2-normalised [N, D]"
    return metadata


def read_model_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card fields of a logged model's metadata (``mlflow.models.get_model_info(uri)
    .metadata``); mean/std as tuples, missing fields left out."""
    found: dict[str, Any] = {}
    for key, field in METADATA_FIELDS.items():
        if metadata and key in metadata:
            value = metadata[key]
            found[field] = tuple(value) if isinstance(value, list) else value
    return found


def model_description(metadata: Mapping[str, Any] | None, model_uri: str) -> str:
    """Markdown for a registered model version, from its logged metadata: what goes in, what
    comes out, the preprocessing it contains, how it trained."""
    card = read_model_metadata(metadata)

    def numbers(key: str) -> str:
        return ", ".join(f"{float(value):.4f}" for value in card.get(key, ()))

    temperature = card.get("temperature")
    tau = f"{float(temperature):.4g}" if isinstance(temperature, (int, float)) else "?"
    lines = [
        f"**{card.get('method', '?')}** ({card.get('backbone', '?')}) trained on "
        f"`{card.get('data_set', '?')}`, final τ {tau} ({card.get('temperature_mode', '?')}).",
        "",
        f"- input `{INPUT_NAME}`: {INPUT_TEXT}; C = {card.get('channels', '?')}, "
        f"H = W = {card.get('image_size', '?')}",
        f"- output `{OUTPUT_NAME}`: L2-normalised, {card.get('embedding_dim', '?')} dimensions",
        "- preprocessing inside the model: uint8 / 255, then (x - mean) / std with mean "
        f"[{numbers('mean')}], std [{numbers('std')}]: feed raw pixels, not normalised ones",
        f"- load: `mlflow.pytorch.load_model({json.dumps(model_uri)})`",
    ]
    if card.get("embeds_text"):
        lines.append(
            "- text: `model.embed_text([...])` returns embeddings in the same space "
            "(zero-shot: one prompt per class, the most similar class wins)"
        )
    return "\n".join(lines)


#: The registered model's description (each version's says what it is).
REGISTERED_MODEL_DESCRIPTION = (
    "Embedding models tauray registered: the alias `@champion` is the sweep's best. Each "
    "version maps raw images (uint8 or float in [0, 1], N x C x H x W) to L2-normalised "
    "embeddings, with the training data's normalisation inside; its description and metadata "
    "give the method, data set, size, mean/std and final τ."
)


# ---- the Models tab ------------------------------------------------------------------------------

#: A champion's logged model's tag: the registered version it became (``models:/NAME/VERSION``).
TAG_CHAMPION = "tauray.champion"
#: The name of a model whose run name leaves nothing to name it by.
FALLBACK_MODEL_NAME = "model"
#: Longest logged-model name written (MLflow's SQL stores keep 500 characters).
MAX_MODEL_NAME_LENGTH = 200
#: Prefix of the metrics the loop measures on the validation split.
VALIDATION_PREFIX = "val/"
# Metrics derived from a sweep's objective: measured where the objective is.
_OBJECTIVE_COLUMNS = frozenset(
    {ui_layout.OBJECTIVE_BEST, ui_layout.OBJECTIVE_AT_FIRST_RUNG, names.RUNG_PREDICTED_FINAL}
)
_WORDS = (("τ", "tau"), ("→", "-to-"), ("×", "x"))
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_=-]+")


def logged_model_name(run_name: str) -> str:
    """The name of the model a run logs, made from the run's name.

    MLflow refuses a logged model's name holding ``/ : . % " '`` and puts the name in
    ``runs:/<run_id>/<name>`` URIs, so the name keeps ASCII letters, digits, ``_``, ``-`` and
    ``=``: ``τ`` becomes ``tau``, ``→`` ``-to-``, ``×`` ``x``, a decimal point ``p``, anything
    else (spaces, other dots) ``-``. ``t002 fixed τ=0.100`` -> ``t002-fixed-tau=0p100``,
    ``t004 cosine τ 0.500→0.030`` -> ``t004-cosine-tau-0p500-to-0p030``. Cut at
    :data:`MAX_MODEL_NAME_LENGTH`; :data:`FALLBACK_MODEL_NAME` when nothing is left.
    """
    text = run_name
    for symbol, word in _WORDS:
        text = text.replace(symbol, word)
    text = _NOT_ALLOWED.sub("-", _DECIMAL_POINT.sub("p", text))
    text = re.sub(r"-{2,}", "-", text).strip("-")[:MAX_MODEL_NAME_LENGTH].rstrip("-")
    return text or FALLBACK_MODEL_NAME


def trial_model_name(record: TrialRecord, confirmed_index: int | None = None) -> str:
    """A trial's model name: its run's name as the trial started (no ``stopped@``), as
    :func:`logged_model_name` writes it (``t012 confirm t003 seed=2`` ->
    ``t012-confirm-t003-seed=2``)."""
    return logged_model_name(ui_layout.trial_run_name(record, confirmed_index))


def metric_data_context(key: str, objective_metric: str | None = None) -> str | None:
    """The data a run's final metric, linked to its logged model, was measured on.

    ``validation`` (:data:`~tauray.run_context.VALIDATION_CONTEXT`) for the loop's ``val/``
    metrics and for the columns derived from a sweep objective that is one
    (``objective/best``, ``objective/at_first_rung``, ``rung/predicted_final``); None for the
    rest (τ, learning rate, costs, the training loss). The Models tab groups a model's metric
    columns by data set (``Dataset: <name>``, ``No dataset``).
    """
    measured = key
    if key in _OBJECTIVE_COLUMNS:
        if objective_metric is None:
            return None
        measured = objective_metric
    return VALIDATION_CONTEXT if measured.startswith(VALIDATION_PREFIX) else None


def logged_model_id(model_uri: str) -> str:
    """The logged model's id in a ``models:/<model_id>`` URI (what ``log_model`` returns and
    the run's ``tauray.model_uri`` tag holds).

    Raises:
        ValueError: a registry URI (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``) or any
            other URI.
    """
    model_id = model_uri.removeprefix("models:/")
    if model_id == model_uri or not model_id or "/" in model_id or "@" in model_id:
        raise ValueError(
            f"model_uri {model_uri!r} is not a logged model's URI: expected "
            "models:/<model_id>, as log_model returns it"
        )
    return model_id


def champion_model_tags(registered_name: str, version: str | int) -> dict[str, str]:
    """The champion's logged-model tags: the registered version it became (MLflow's own
    ``mlflow.modelVersions`` tag lists it too, as JSON)."""
    return {TAG_CHAMPION: f"models:/{registered_name}/{version}"}


def final_model_metrics(
    latest: Iterable[Metric],
    model_id: str,
    datasets: Mapping[str, Dataset],
    objective_metric: str | None = None,
) -> list[Metric]:
    """The metrics that link a run's final values to the model it logged.

    Args:
        latest: the run's last entry of each metric (its run data's metrics, with their steps
            and times: MLflow keeps per key the entry of the highest step, then the latest
            time, then the largest value, so one ``get_run`` reads them all).
        model_id: the logged model's id.
        datasets: the run's data sets by context (:func:`tauray.run_context.datasets`).
        objective_metric: the sweep's objective (None for a ``tauray train`` run).

    Returns:
        Per metric, sorted by key, its last entry with that step and timestamp: MLflow writes a
        model's metric to its run too, and the same key, step, time and value add no second
        point to the run's curve. A metric measured on a data set
        (:func:`metric_data_context`) names that data set.
    """
    from mlflow.entities import Metric

    linked = []
    for last in sorted(latest, key=lambda entry: entry.key):
        context = metric_data_context(last.key, objective_metric)
        dataset = datasets.get(context) if context is not None else None
        linked.append(
            Metric(
                last.key,
                last.value,
                last.timestamp,
                last.step,
                model_id=model_id,
                dataset_name=dataset.name if dataset is not None else None,
                dataset_digest=dataset.digest if dataset is not None else None,
            )
        )
    return linked

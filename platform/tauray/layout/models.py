"""The logged models' layout: their signature's names, metadata and registry descriptions.

Every model tauray logs (a sweep's trials, ``tauray train``, the registered champion) is a
:class:`tauray_trainers.models.EmbeddingModel`: images as a user holds them in, L2-normalised
embeddings out, the data set's normalisation inside. Its signature names the tensors
(:data:`INPUT_NAME` float32 ``[-1, C, H, W]`` -> :data:`OUTPUT_NAME` float32 ``[-1, D]``), its
input example is a few real validation images, and its MLflow metadata (the ``metadata`` of
the ``MLmodel`` file) is :func:`model_metadata`'s, read back by :func:`read_model_metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

"""Models of the three methods behind one interface, built from the typed config.

- :func:`build_model` builds SimCLR, CLIP or DINO (a :class:`ContrastiveMethod`);
- :func:`load_embedding_model` turns a training checkpoint into a self-contained
  :class:`EmbeddingModel` (raw images in, embeddings out) with real example images and its card;
- :mod:`tauray_trainers.models.checkpoint` defines the checkpoint files.
"""

from tauray_trainers.models.backbones import BACKBONES, build_backbone, load_pretrained_weights
from tauray_trainers.models.base import ContrastiveMethod
from tauray_trainers.models.export import EmbeddingModel, ExportedModel, ModelCard
from tauray_trainers.models.factory import (
    build_model,
    dino_student_temperature_config,
    load_embedding_model,
)

__all__ = [
    "BACKBONES",
    "ContrastiveMethod",
    "EmbeddingModel",
    "ExportedModel",
    "ModelCard",
    "build_backbone",
    "build_model",
    "dino_student_temperature_config",
    "load_embedding_model",
    "load_pretrained_weights",
]

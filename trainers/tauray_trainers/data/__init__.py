"""Data for contrastive training: bundled digits, real image sets, captions and loaders.

Entry points:

* :func:`build_data` turns a :class:`~tauray_trainers.config.TrainConfig` into a
  :class:`DataBundle` (training samples for the method, unaugmented train and validation splits,
  classes, prompts, tokenizer).
* :func:`make_loader` (training: every rank the same number of full batches) and
  :func:`make_eval_loader` (evaluation shards, gathered back exactly by
  :func:`tauray_trainers.evaluation.extract_features`).
* :class:`ByteTokenizer`, the project's own byte-level tokenizer (nothing downloaded).

Data sets (``data.name``): ``digits`` (scikit-learn's 8x8 digits upsampled, 1 channel),
``digits-cluttered`` (the default: the same digits at random scale, position and rotation on a
smooth random background, 1 channel), ``cifar10`` and ``stl10`` (torchvision's files under
``data.root``, downloaded only with ``data.download``), ``imagefolder`` and ``manifest``
(CSV/JSONL of image path, caption and optional label).
"""

from tauray_trainers.data.build import DataBundle, build_data, raw_images
from tauray_trainers.data.captions import DIGIT_TEMPLATES, GENERIC_TEMPLATES
from tauray_trainers.data.loaders import EpochDistributedSampler, make_eval_loader, make_loader
from tauray_trainers.data.tokenizer import ByteTokenizer

__all__ = [
    "DIGIT_TEMPLATES",
    "GENERIC_TEMPLATES",
    "ByteTokenizer",
    "DataBundle",
    "EpochDistributedSampler",
    "build_data",
    "make_eval_loader",
    "make_loader",
    "raw_images",
]

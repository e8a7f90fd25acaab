"""Build a method's training and evaluation datasets from a :class:`TrainConfig`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tauray_trainers.config import TrainConfig
from tauray_trainers.data.captions import class_prompts as make_class_prompts
from tauray_trainers.data.captions import digit_prompts
from tauray_trainers.data.digits import DIGIT_WORDS, cluttered_digits, plain_digits
from tauray_trainers.data.sources import (
    ImageSource,
    TensorImages,
    find_manifests,
    read_cifar10,
    read_image_folder,
    read_manifest,
    read_stl10,
    resize_images,
    split_indices,
)
from tauray_trainers.data.tokenizer import ByteTokenizer
from tauray_trainers.data.transforms import (
    SIMCLR_CROP_SCALE,
    clip_transform,
    dino_transforms,
    eval_geometry,
    eval_transform,
    simclr_transform,
)
from tauray_trainers.data.views import (
    CaptionedImages,
    LabelledCaptionedImages,
    LabelledImages,
    MultiCrop,
    TwoViews,
)
from tauray_trainers.distributed import rank

logger = logging.getLogger(__name__)

DIGITS_DATA_SETS = ("digits", "digits-cluttered")
# Measured: SimCLR on the cluttered digits (data seed 0; small CNN, batch 128, Adam 1e-3, tau 0.2,
# 15 epochs, one process) reached kNN top-1 0.348 with crops of at least half the canvas and 0.304
# with 0.2 (random init: 0.181), and learned faster all along.
DIGITS_CROP_MIN_SCALE = 0.5
# Per-channel statistics of ImageNet (torchvision's reference scripts), used for file data whose
# pixels are not all in memory to measure.
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataBundle:
    """Everything the loop needs from the data.

    Attributes:
        train: training samples for the method: simclr ``(view_a, view_b)``; clip
            ``(image, tokens)``; dino ``[global_1, global_2, local_1, ...]``.
        train_eval: the training split without augmentation, ``(image, label)`` (kNN memory bank).
        val: the validation split without augmentation, ``(image, label)``; for clip
            ``(image, label, tokens)``.
        num_classes: number of classes (0 for an unlabelled manifest: no kNN or zero-shot).
        class_names: one name per class.
        channels: image channels (1 for the digits, 3 otherwise).
        image_size: side of the (global) model input.
        class_prompts: per class, its captions (one per template); zero-shot classification
            averages their text embeddings. Empty without classes.
        tokenizer: the byte tokenizer of the captions (``model.context_length`` tokens).
        mean: per-channel mean the images were normalised with.
        std: per-channel standard deviation the images were normalised with.
        name: the data set's name.
    """

    train: Dataset
    train_eval: Dataset
    val: Dataset
    num_classes: int
    class_names: tuple[str, ...]
    channels: int
    image_size: int
    class_prompts: tuple[tuple[str, ...], ...]
    tokenizer: ByteTokenizer | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    name: str = ""


def _channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``[N, C, H, W]`` images, in [0, 1].

    Accumulated over blocks of images in float64, so a large set needs no float copy of itself.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], 1024):
        block = images[start : start + 1024].transpose(0, 1).reshape(channels, -1).double()
        total += block.sum(dim=1)
        squares += block.square().sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    variance = (squares / count - mean.square()) * count / max(count - 1, 1)
    std = variance.clamp_min(0.0).sqrt().div(255.0).clamp_min(1e-3)
    mean = mean / 255.0
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def raw_images(
    dataset: Dataset, image_size: int, count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """An evaluation split's images as a user holds them: uint8 ``[N, C, H, W]`` at the model's
    input size (the evaluation transform without its normalisation), and int labels ``[N]``.

    Args:
        dataset: a :class:`DataBundle`'s ``val`` or ``train_eval``.
        image_size: the bundle's ``image_size``.
        count: only the first ``count`` samples (default: all).

    Raises:
        TypeError: ``dataset`` is not an evaluation split (it has no ``source``).
    """
    source = getattr(dataset, "source", None)
    if not isinstance(source, ImageSource):
        raise TypeError(
            f"dataset must be a DataBundle's val or train_eval split, got {type(dataset).__name__}"
        )
    geometry = eval_geometry(image_size)
    total = len(source) if count is None else min(count, len(source))
    images, labels = [], []
    for index in range(total):
        image, label = source[index]
        images.append(geometry(image))
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _need_root(config: TrainConfig) -> Path:
    if config.data.root is None:
        raise ValueError(
            f"data.root is required for data.name={config.data.name!r} "
            f"(the bundled data sets, which need none, are {', '.join(DIGITS_DATA_SETS)})"
        )
    return Path(config.data.root).expanduser()


def _split(source: ImageSource, config: TrainConfig) -> tuple[ImageSource, ImageSource]:
    train_indices, val_indices = split_indices(
        len(source), config.data.val_fraction, config.data.seed
    )
    return source.subset(train_indices), source.subset(val_indices)


def _cap(source: ImageSource, limit: int | None, seed: int) -> ImageSource:
    """A seeded random subset of at most ``limit`` samples, in the source's order."""
    if limit is None or limit >= len(source):
        return source
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return source.subset(order[:limit].sort().values)


def _resized(source: ImageSource, image_size: int) -> ImageSource:
    if isinstance(source, TensorImages):
        return TensorImages(
            resize_images(source.images, image_size),
            source.labels,
            source.class_names,
            source.captions,
        )
    return source


def _sources(config: TrainConfig) -> tuple[ImageSource, ImageSource]:
    """The train and validation sources of ``config.data`` (unaugmented)."""
    data = config.data
    size = data.image_size
    if data.name in DIGITS_DATA_SETS:
        if data.name == "digits":
            images, labels = plain_digits(size)
        else:
            images, labels = cluttered_digits(size, seed=data.seed)
        return _split(TensorImages(images, labels, DIGIT_WORDS), config)
    if data.name in ("cifar10", "stl10"):
        read = read_cifar10 if data.name == "cifar10" else read_stl10
        root = _need_root(config)
        train = read(root, train=True, download=data.download)
        val = read(root, train=False, download=data.download)
        return train, val
    if data.name == "imagefolder":
        train, val = read_image_folder(_need_root(config))
    else:
        train_file, val_file = find_manifests(_need_root(config))
        train = read_manifest(train_file)
        val = None if val_file is None else read_manifest(val_file)
        if val is not None and val.class_names != train.class_names:
            raise ValueError(
                f"manifests {train_file} and {val_file} have different classes: "
                f"{list(train.class_names)} vs {list(val.class_names)}"
            )
    return _split(train, config) if val is None else (train, val)


def build_data(config: TrainConfig) -> DataBundle:
    """The datasets of ``config.method`` on ``config.data``.

    Splits: the digits, a single manifest and an ImageFolder without ``train``/``val`` folders
    are split at random with ``data.val_fraction`` and ``data.seed``; CIFAR-10 and STL-10 use their
    own train/test splits. ``data.max_train_samples`` / ``max_val_samples`` keep a seeded random
    subset. Training augmentations are seeded by ``config.seed`` (per epoch and sample). CLIP's
    images get CLIP's own augmentation, random resized crops only (:func:`clip_transform`).

    Args:
        config: the run's configuration.

    Returns:
        A :class:`DataBundle`.

    Raises:
        ValueError: if a needed ``data.root`` is missing, or the data cannot serve the method
            (e.g. CLIP on unlabelled data without captions).
        FileNotFoundError: if the data files are missing.
    """
    data = config.data
    train_source, val_source = _sources(config)
    train_source = _cap(train_source, data.max_train_samples, data.seed + 1)
    val_source = _cap(val_source, data.max_val_samples, data.seed + 2)
    train_source = _resized(train_source, data.image_size)
    val_source = _resized(val_source, data.image_size)

    if isinstance(train_source, TensorImages):
        mean, std = _channel_statistics(train_source.images)
    else:
        mean, std = IMAGENET_MEAN[: train_source.channels], IMAGENET_STD[: train_source.channels]
    channels = train_source.channels
    class_names = train_source.class_names
    if data.name in DIGITS_DATA_SETS:
        prompts = digit_prompts()
    else:
        prompts = make_class_prompts(class_names) if class_names else ()
    flip = data.horizontal_flip
    if flip is None:
        flip = data.name not in DIGITS_DATA_SETS
    crop_min_scale = data.crop_min_scale
    if crop_min_scale is None:
        crop_min_scale = (
            DIGITS_CROP_MIN_SCALE if data.name in DIGITS_DATA_SETS else SIMCLR_CROP_SCALE[0]
        )
    crop_scale = (crop_min_scale, 1.0)
    tokenizer = ByteTokenizer(config.model.context_length)
    evaluation = eval_transform(data.image_size, channels, mean, std)

    train: Dataset
    if config.method == "simclr":
        train = TwoViews(
            train_source,
            simclr_transform(
                data.image_size, channels, mean, std, flip=flip, crop_scale=crop_scale
            ),
            config.seed,
        )
    elif config.method == "clip":
        train = CaptionedImages(
            train_source,
            clip_transform(data.image_size, channels, mean, std, flip=flip, crop_scale=crop_scale),
            tokenizer,
            prompts,
            config.seed,
        )
    elif config.method == "dino":
        first, second, local = dino_transforms(
            data.image_size, config.dino.local_crop_size, channels, mean, std, flip=flip
        )
        train = MultiCrop(
            train_source, (first, second), local, config.dino.num_local_crops, config.seed
        )
    else:  # pragma: no cover - TrainConfig validates the method
        raise ValueError(f"method must be simclr, clip or dino, got {config.method!r}")

    if config.method == "clip":
        val: Dataset = LabelledCaptionedImages(
            val_source, evaluation, tokenizer, prompts, data.seed
        )
    else:
        val = LabelledImages(val_source, evaluation)
    bundle = DataBundle(
        train=train,
        train_eval=LabelledImages(train_source, evaluation),
        val=val,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        channels=channels,
        image_size=data.image_size,
        class_prompts=prompts,
        tokenizer=tokenizer,
        mean=tuple(mean),
        std=tuple(std),
        name=data.name,
    )
    logger.log(
        logging.INFO if rank() == 0 else logging.DEBUG,
        "data %s for %s: %d train, %d val, %d classes, %d channel(s) at %dpx",
        data.name,
        config.method,
        len(train_source),
        len(val_source),
        bundle.num_classes,
        channels,
        data.image_size,
    )
    return bundle

"""Augmentation pipelines (torchvision transforms v2) on uint8 ``[C, H, W]`` image tensors.

* :func:`simclr_transform`: SimCLR's recipe (Chen et al. 2020, appendix A): random resized crop,
  horizontal flip, colour jitter (p=0.8), random grayscale (p=0.2), Gaussian blur (p=0.5), sized
  for small images: crop scale from 0.2 (the 0.08 of ImageNet leaves almost nothing of a 32x32
  image; :func:`~tauray_trainers.data.build_data` uses 0.5 for the digits, see
  ``data.crop_min_scale``), jitter strength 0.5 as the paper's CIFAR-10 runs, blur kernel about a
  tenth of the side.
* :func:`clip_transform`: CLIP's recipe (Radford et al. 2021, sec. 2.3: "a random square crop
  from resized images is the only data augmentation used"): random resized crop and optional
  flip, no colour jitter or blur. A caption describes the whole picture, and distortions that
  SimCLR needs to make its two views hard to match only hide what the caption names.
* :func:`dino_transforms`: DINO's multi-crop (Caron et al. 2021): two global crops (scale 0.4-1,
  blur always on the first, blur p=0.1 and solarisation p=0.2 on the second) and local crops
  (scale 0.05-0.4, blur p=0.5) at a smaller size.
* :func:`eval_transform`: resize the short side, centre crop, normalise.

Single-channel images get brightness and contrast jitter only (saturation, hue and grayscale do
nothing to them). Every pipeline ends in float32 normalised by the data set's per-channel
mean and standard deviation. Randomness comes from torch's global generator, which
:mod:`tauray_trainers.data.views` seeds per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

SIMCLR_CROP_SCALE: tuple[float, float] = (0.2, 1.0)
DINO_GLOBAL_CROP_SCALE: tuple[float, float] = (0.4, 1.0)
DINO_LOCAL_CROP_SCALE: tuple[float, float] = (0.05, 0.4)
JITTER_STRENGTH = 0.5
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)


def _check(image_size: int, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need {channels} values each, got {len(mean)} and {len(std)}"
        )
    if any(value <= 0 for value in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}")


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel of about a tenth of the image side, at least 3."""
    size = max(3, round(image_size / 10))
    return size if size % 2 == 1 else size + 1


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def _colour(channels: int, strength: float) -> list[v2.Transform]:
    if channels == 1:
        jitter = v2.ColorJitter(brightness=0.8 * strength, contrast=0.8 * strength)
        return [v2.RandomApply([jitter], p=0.8)]
    jitter = v2.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)
    return [v2.RandomApply([jitter], p=0.8), v2.RandomGrayscale(p=0.2)]


def _blur(image_size: int, p: float) -> list[v2.Transform]:
    if p <= 0:
        return []
    blur = v2.GaussianBlur(blur_kernel_size(image_size), sigma=BLUR_SIGMA)
    return [blur] if p >= 1 else [v2.RandomApply([blur], p=p)]


def _flip(flip: bool) -> list[v2.Transform]:
    return [v2.RandomHorizontalFlip()] if flip else []


def simclr_transform(
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    flip: bool = True,
    crop_scale: tuple[float, float] = SIMCLR_CROP_SCALE,
    blur_probability: float = 0.5,
) -> v2.Compose:
    """One SimCLR view: crop, flip, colour jitter, grayscale, blur, normalise.

    Args:
        image_size: side of the output view.
        channels: 1 or 3.
        mean: per-channel mean (in [0, 1] units) to subtract.
        std: per-channel standard deviation to divide by.
        flip: random horizontal flips (off for digits: a mirrored digit is another glyph).
        crop_scale: area range of the random resized crop.
        blur_probability: chance of a Gaussian blur.

    Returns:
        A transform from uint8 ``[C, H, W]`` to float32 ``[C, image_size, image_size]``.

    Raises:
        ValueError: on an invalid size, channel count or statistics.
    """
    _check(image_size, channels, mean, std)
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            *_flip(flip),
            *_colour(channels, JITTER_STRENGTH),
            *_blur(image_size, blur_probability),
            *_finish(mean, std),
        ]
    )


def clip_transform(
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    flip: bool = True,
    crop_scale: tuple[float, float] = SIMCLR_CROP_SCALE,
) -> v2.Compose:
    """One CLIP training image: random resized crop, optional flip, normalise.

    Measured on the cluttered digits (CLIP, small CNN, batch 64, τ 0.1, caption groups,
    10 epochs, seed 0): zero-shot top-1 0.897 with this transform at crop scale 0.5-1 (0.911
    at 0.8-1 and without crops), 0.822 with colour jitter added, 0.872 with blur added, 0.749
    with both (SimCLR's pipeline); see benchmarks/README.md, "CLIP on the cluttered digits".

    Args:
        image_size: side of the output image.
        channels: 1 or 3.
        mean: per-channel mean (in [0, 1] units) to subtract.
        std: per-channel standard deviation to divide by.
        flip: random horizontal flips (off for digits).
        crop_scale: area range of the random resized crop.

    Returns:
        A transform from uint8 ``[C, H, W]`` to float32 ``[C, image_size, image_size]``.

    Raises:
        ValueError: on an invalid size, channel count or statistics.
    """
    _check(image_size, channels, mean, std)
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            *_flip(flip),
            *_finish(mean, std),
        ]
    )


def dino_transforms(
    image_size: int,
    local_crop_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    flip: bool = True,
) -> tuple[v2.Compose, v2.Compose, v2.Compose]:
    """DINO's multi-crop pipelines: ``(first_global, second_global, local)``.

    Args:
        image_size: side of the two global crops.
        local_crop_size: side of the local crops.
        channels: 1 or 3.
        mean: per-channel mean to subtract.
        std: per-channel standard deviation to divide by.
        flip: random horizontal flips.

    Raises:
        ValueError: on an invalid size, channel count or statistics.
    """
    _check(image_size, channels, mean, std)
    _check(local_crop_size, channels, mean, std)

    def crop(size: int, scale: tuple[float, float]) -> list[v2.Transform]:
        return [v2.RandomResizedCrop(size, scale=scale, antialias=True), *_flip(flip)]

    colour = _colour(channels, JITTER_STRENGTH)
    first = v2.Compose(
        [
            *crop(image_size, DINO_GLOBAL_CROP_SCALE),
            *colour,
            *_blur(image_size, 1.0),
            *_finish(mean, std),
        ]
    )
    second = v2.Compose(
        [
            *crop(image_size, DINO_GLOBAL_CROP_SCALE),
            *colour,
            *_blur(image_size, 0.1),
            v2.RandomSolarize(threshold=128, p=0.2),
            *_finish(mean, std),
        ]
    )
    local = v2.Compose(
        [
            *crop(local_crop_size, DINO_LOCAL_CROP_SCALE),
            *colour,
            *_blur(local_crop_size, 0.5),
            *_finish(mean, std),
        ]
    )
    return first, second, local


def eval_transform(
    image_size: int, channels: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """Deterministic evaluation transform: resize the short side, centre crop, normalise.

    Raises:
        ValueError: on an invalid size, channel count or statistics.
    """
    _check(image_size, channels, mean, std)
    return v2.Compose([*eval_geometry(image_size).transforms, *_finish(mean, std)])


def eval_geometry(image_size: int) -> v2.Compose:
    """The evaluation transform's geometry alone: uint8 images at the model's input size, the
    pixels an exported model (which normalises itself) is fed.

    Raises:
        ValueError: on an invalid size.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])

"""The bundled data: scikit-learn's 8x8 digits, plain (upsampled) or cluttered.

Nothing is downloaded: scikit-learn ships the 1,797 digit images (10 classes) of the UCI
"Optical Recognition of Handwritten Digits" set. Two variants are offered:

* ``digits``: each 8x8 image upsampled (bilinear) to ``image_size``. Too easy to show what
  tuning buys: raw-pixel kNN is already in the high 90s.
* ``digits-cluttered`` (the default data set): each digit is drawn at a random scale (its 8x8 box
  covers 40-60% of the canvas side), a random position (fully inside the canvas) and a small
  random rotation (+-15 degrees) over a smooth random background (bicubically upsampled low
  resolution noise at two scales, random brightness and contrast), with ink brighter than the
  background. Every image is a pure function of ``seed`` (CPU, float32), so two processes, or two
  ranks, that build the set with the same seed hold identical pixels.

Both are single-channel uint8 images ``[N, 1, image_size, image_size]``.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

# Geometry of the cluttered variant (fractions of the canvas side, degrees).
CLUTTERED_SCALE_RANGE: tuple[float, float] = (0.40, 0.60)
CLUTTERED_MAX_ROTATION_DEGREES: float = 15.0


def load_digit_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """The raw scikit-learn digits as tensors.

    Returns:
        ``(images, labels)``: float32 ``[1797, 8, 8]`` with ink in ``[0, 1]`` (scikit-learn's
        0-16 counts divided by 16) and int64 ``[1797]`` labels in ``0..9``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def plain_digits(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits upsampled to ``image_size`` (bilinear), one channel.

    Args:
        image_size: side of the square output, >= 8.

    Returns:
        ``(images, labels)``: uint8 ``[1797, 1, image_size, image_size]`` and int64 ``[1797]``.

    Raises:
        ValueError: if ``image_size`` is not an int >= 8.
    """
    _check_image_size(image_size)
    digits, labels = load_digit_arrays()
    images = digits.unsqueeze(1)
    if image_size != 8:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    return _to_uint8(images), labels


def _smooth_noise(generator: torch.Generator, count: int, grid: int, size: int) -> torch.Tensor:
    """Low-resolution uniform noise, bicubically upsampled: ``[count, 1, size, size]``."""
    coarse = torch.rand(count, 1, grid, grid, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def render_cluttered(digits: torch.Tensor, *, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Draw each 8x8 digit at a random scale, position and rotation over a smooth background.

    Args:
        digits: float ``[N, 8, 8]`` (or ``[N, h, w]``) ink intensities in ``[0, 1]``.
        image_size: canvas side, >= 8.
        seed: seeds a private ``torch.Generator``; the output depends on nothing else.

    Returns:
        uint8 ``[N, 1, image_size, image_size]``.

    Raises:
        ValueError: if ``digits`` is not 3-D or ``image_size`` is invalid.
    """
    _check_image_size(image_size)
    if digits.dim() != 3:
        raise ValueError(f"digits must be [N, h, w], got shape {tuple(digits.shape)}")
    count = digits.shape[0]
    generator = torch.Generator().manual_seed(int(seed))

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    # Geometry, in the [-1, 1] coordinates of affine_grid: the digit box has half-side `scale`.
    scale = uniform(*CLUTTERED_SCALE_RANGE)
    angle = uniform(-1.0, 1.0) * math.radians(CLUTTERED_MAX_ROTATION_DEGREES)
    free = 1.0 - scale  # the box's centre may move this far from the canvas centre
    shift_x = uniform(-1.0, 1.0) * free
    shift_y = uniform(-1.0, 1.0) * free
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output point p maps to input point R(-angle) (p - shift) / scale.
    inverse = torch.stack(
        [torch.stack([cos, sin], dim=1), torch.stack([-sin, cos], dim=1)], dim=1
    ) / scale.view(-1, 1, 1)
    offset = -(inverse @ torch.stack([shift_x, shift_y], dim=1).unsqueeze(2))
    theta = torch.cat([inverse, offset], dim=2)
    grid = F.affine_grid(theta, [count, 1, image_size, image_size], align_corners=False)
    ink_mask = F.grid_sample(
        digits.unsqueeze(1).float(),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).clamp(0.0, 1.0)

    # Background: two octaves of smooth noise, random brightness and contrast per image.
    texture = 0.65 * _smooth_noise(generator, count, 4, image_size) + 0.35 * _smooth_noise(
        generator, count, 8, image_size
    )
    low = texture.amin(dim=(1, 2, 3), keepdim=True)
    high = texture.amax(dim=(1, 2, 3), keepdim=True)
    texture = (texture - low) / (high - low).clamp_min(1e-6)
    contrast = uniform(0.1, 0.3).view(-1, 1, 1, 1)
    brightness = uniform(0.0, 0.25).view(-1, 1, 1, 1)
    background = brightness + contrast * texture
    ink = uniform(0.75, 1.0).view(-1, 1, 1, 1)
    canvas = background * (1.0 - ink_mask) + ink * ink_mask
    return _to_uint8(canvas)


def cluttered_digits(image_size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cluttered digits variant (see the module docstring), one image per source digit.

    Args:
        image_size: canvas side, >= 8 (the measured figures are for 32).
        seed: generation seed; the same seed gives identical images.

    Returns:
        ``(images, labels)``: uint8 ``[1797, 1, image_size, image_size]`` and int64 ``[1797]``.
    """
    digits, labels = load_digit_arrays()
    images = render_cluttered(digits, image_size=image_size, seed=seed)
    logger.debug("rendered %d cluttered digits at %dpx (seed %d)", len(images), image_size, seed)
    return images, labels

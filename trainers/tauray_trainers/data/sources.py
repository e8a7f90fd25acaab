"""Image sources: labelled (and optionally captioned) images before any transform.

A source yields uint8 image tensors ``[C, H, W]``. Small data sets (digits, CIFAR-10, STL-10) live
in memory as one uint8 tensor, resized once to the model's input size when they are read; file
data (ImageFolder, manifests) are decoded from disk per sample with PIL. Labels are ints in
``0..num_classes-1``, or -1 where a manifest has none.

Readers:

* :func:`read_cifar10`: the ``cifar-10-batches-py`` pickled batches torchvision's ``CIFAR10``
  downloads (``root/cifar-10-batches-py/data_batch_*``, ``test_batch``, ``batches.meta``);
* :func:`read_stl10`: the ``stl10_binary`` files torchvision's ``STL10`` downloads (the 5,000
  labelled ``train`` images and the 8,000 ``test`` images, 96x96);
* :func:`read_image_folder`: torchvision ``ImageFolder`` layout (``root/<class>/<image>``), or
  ``root/train/<class>/...`` + ``root/val/<class>/...`` for a fixed split;
* :func:`read_manifest`: a CSV (header row) or JSON Lines file of ``image`` (path relative to the
  manifest's folder), ``caption`` and optional ``label`` fields.

These files are read directly (torchvision is used to download them, with its checksums): the
torchvision classes refuse files whose MD5 differs from the published archive, which rules out the
small stand-in files the tests write.
"""

from __future__ import annotations

import csv
import json
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl")
IMAGE_FIELD = "image"
CAPTION_FIELD = "caption"
LABEL_FIELD = "label"


class ImageSource(Dataset):
    """Base of the sources: ``source[i] -> (uint8 image [C, H, W], label)``.

    Attributes:
        labels: int64 ``[N]``, -1 where unknown.
        class_names: one name per class (empty when unlabelled).
        captions: one caption per image, or None when captions come from class names.
        channels: image channels (1 or 3).
    """

    labels: torch.Tensor
    class_names: tuple[str, ...]
    captions: tuple[str, ...] | None
    channels: int

    def __len__(self) -> int:
        return int(self.labels.numel())

    def image(self, index: int) -> torch.Tensor:
        """The uint8 ``[C, H, W]`` image at ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> ImageSource:
        """A source holding ``self[i]`` for each ``i`` in ``indices`` (int64 ``[M]``), in order."""
        raise NotImplementedError

    def caption(self, index: int) -> str | None:
        """The image's own caption, or None."""
        return None if self.captions is None else self.captions[index]


class TensorImages(ImageSource):
    """An in-memory source.

    Args:
        images: uint8 ``[N, C, H, W]``.
        labels: int ``[N]`` (-1 for unknown).
        class_names: names of the classes.
        captions: one caption per image, or None.

    Raises:
        ValueError: on inconsistent shapes or dtypes.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: Sequence[str],
        captions: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        if captions is not None and len(captions) != images.shape[0]:
            raise ValueError(f"{len(captions)} captions for {images.shape[0]} images")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = tuple(class_names)
        self.captions = None if captions is None else tuple(captions)
        self.channels = int(images.shape[1])

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def subset(self, indices: torch.Tensor) -> TensorImages:
        captions = None if self.captions is None else [self.captions[i] for i in indices.tolist()]
        return TensorImages(self.images[indices], self.labels[indices], self.class_names, captions)


class FileImages(ImageSource):
    """Images decoded from files on every access (PIL), as RGB (3 channels) or L (1 channel).

    Args:
        paths: one image file per sample.
        labels: int ``[N]`` (-1 for unknown).
        class_names: names of the classes.
        captions: one caption per image, or None.
        channels: 3 (RGB) or 1 (grayscale).

    Raises:
        ValueError: on inconsistent lengths or ``channels`` not in (1, 3).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: torch.Tensor,
        class_names: Sequence[str],
        captions: Sequence[str] | None = None,
        channels: int = 3,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if labels.shape != (len(paths),):
            raise ValueError(f"labels must have shape ({len(paths)},), got {tuple(labels.shape)}")
        if captions is not None and len(captions) != len(paths):
            raise ValueError(f"{len(captions)} captions for {len(paths)} images")
        self.paths = tuple(Path(p) for p in paths)
        self.labels = labels.to(torch.int64)
        self.class_names = tuple(class_names)
        self.captions = None if captions is None else tuple(captions)
        self.channels = channels

    def image(self, index: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        with Image.open(self.paths[index]) as handle:
            picture = handle.convert("RGB" if self.channels == 3 else "L")
        return pil_to_tensor(picture)

    def subset(self, indices: torch.Tensor) -> FileImages:
        chosen = indices.tolist()
        captions = None if self.captions is None else [self.captions[i] for i in chosen]
        return FileImages(
            [self.paths[i] for i in chosen],
            self.labels[indices],
            self.class_names,
            captions,
            self.channels,
        )


def resize_images(images: torch.Tensor, image_size: int, chunk: int = 512) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` images to ``image_size`` squares (antialiased bilinear).

    Returns the input unchanged when it already has that size.
    """
    if images.shape[-2:] == (image_size, image_size):
        return images
    parts = []
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(
            block,
            size=(image_size, image_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        parts.append(block.round().clamp(0, 255).to(torch.uint8))
    return (
        torch.cat(parts)
        if parts
        else images.new_empty((0, images.shape[1], image_size, image_size))
    )


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random train/validation split of ``range(count)``.

    The validation part has ``round(val_fraction * count)`` indices (at least 1, and at least one
    index is left for training); both parts are sorted.

    Args:
        count: number of samples (>= 2).
        val_fraction: share of the validation split, in (0, 1).
        seed: seeds the permutation.

    Returns:
        ``(train_indices, val_indices)``, int64.

    Raises:
        ValueError: if ``count`` < 2 or ``val_fraction`` is outside (0, 1).
    """
    if count < 2:
        raise ValueError(f"need at least 2 samples to split, got {count}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    num_val = min(max(round(val_fraction * count), 1), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(int(seed)))
    return order[num_val:].sort().values, order[:num_val].sort().values


def _require(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found; {hint}")
    return path


def read_cifar10(root: str | Path, *, train: bool, download: bool = False) -> TensorImages:
    """CIFAR-10 from torchvision's pickled batches under ``root/cifar-10-batches-py``.

    Args:
        root: the folder that holds ``cifar-10-batches-py`` (torchvision's ``root``).
        train: the 50,000 training images, or the 10,000 test images.
        download: fetch (and checksum) the archive with torchvision first.

    Returns:
        uint8 ``[N, 3, 32, 32]`` images with labels and the class names of ``batches.meta``.

    Raises:
        FileNotFoundError: if a batch file is missing (with ``download`` off).
    """
    from torchvision.datasets import CIFAR10

    if download:
        CIFAR10(str(root), train=train, download=True)
    folder = Path(root) / CIFAR10.base_folder
    hint = "set data.download=true to fetch CIFAR-10, or point data.root at its parent folder"
    arrays, labels = [], []
    for name, _checksum in CIFAR10.train_list if train else CIFAR10.test_list:
        with _require(folder / name, "CIFAR-10", hint).open("rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        arrays.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    with _require(folder / CIFAR10.meta["filename"], "CIFAR-10", hint).open("rb") as handle:
        class_names = pickle.load(handle, encoding="latin1")[CIFAR10.meta["key"]]
    images = torch.from_numpy(np.concatenate(arrays).reshape(-1, 3, 32, 32).copy())
    return TensorImages(images, torch.tensor(labels, dtype=torch.int64), class_names)


def read_stl10(root: str | Path, *, train: bool, download: bool = False) -> TensorImages:
    """STL-10's labelled split (``train``: 5,000 images, ``test``: 8,000), 96x96 RGB.

    Args:
        root: the folder that holds ``stl10_binary`` (torchvision's ``root``).
        train: the labelled training images, or the test images.
        download: fetch (and checksum) the archive with torchvision first.

    Raises:
        FileNotFoundError: if a file is missing (with ``download`` off).
    """
    from torchvision.datasets import STL10

    if download:
        STL10(str(root), split="train" if train else "test", download=True)
    folder = Path(root) / STL10.base_folder
    hint = "set data.download=true to fetch STL-10, or point data.root at its parent folder"
    (images_file, _), (labels_file, _) = (STL10.train_list if train else STL10.test_list)[:2]
    raw = np.fromfile(_require(folder / images_file, "STL-10", hint), dtype=np.uint8)
    # Stored column-major per channel: transpose H and W to get row-major images.
    images = torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())
    labels = np.fromfile(_require(folder / labels_file, "STL-10", hint), dtype=np.uint8)
    if len(labels) != len(images):
        raise ValueError(f"STL-10 {labels_file} has {len(labels)} labels for {len(images)} images")
    names_path = _require(folder / STL10.class_names_file, "STL-10", hint)
    class_names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    return TensorImages(images, torch.from_numpy(labels.astype(np.int64) - 1), class_names)


def _folder_source(root: Path, channels: int) -> FileImages:
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root))
    paths = [Path(path) for path, _ in folder.samples]
    labels = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    return FileImages(paths, labels, folder.classes, None, channels)


def read_image_folder(root: str | Path, channels: int = 3) -> tuple[FileImages, FileImages | None]:
    """An ImageFolder tree (``root/<class>/<image>``), split in ``train``/``val`` if present.

    Returns:
        ``(train, val)`` when ``root`` has ``train`` and ``val`` class trees (their class lists
        must match), else ``(everything, None)`` for the caller to split.

    Raises:
        FileNotFoundError: if ``root`` is not a folder or holds no images (torchvision's error).
        ValueError: if ``train`` and ``val`` have different classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a folder of class folders")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = _folder_source(root / "train", channels)
        val = _folder_source(root / "val", channels)
        if train.class_names != val.class_names:
            raise ValueError(
                f"ImageFolder classes differ: train {list(train.class_names)} "
                f"vs val {list(val.class_names)}"
            )
        return train, val
    return _folder_source(root, channels), None


def _manifest_rows(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    return rows


def _is_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def read_manifest(path: str | Path, channels: int = 3) -> FileImages:
    """Image-caption pairs from a CSV (with a header) or JSON Lines manifest.

    Fields: ``image`` (path, relative to the manifest's folder unless absolute), ``caption``,
    optional ``label``. Labels are either all non-negative integers (class ``i`` is named
    ``str(i)``, ``max + 1`` classes) or names (classes sorted by name). Without a ``label`` field
    every label is -1 and there are no classes.

    Raises:
        FileNotFoundError: if the manifest or an image file is missing.
        ValueError: on a wrong suffix, a missing field, an empty manifest or a row with a label
            when others have none.
    """
    path = Path(path)
    if path.suffix not in MANIFEST_SUFFIXES:
        raise ValueError(
            f"manifest {str(path)!r} must end in one of {', '.join(MANIFEST_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"manifest file {path} not found")
    rows = _manifest_rows(path)
    if not rows:
        raise ValueError(f"manifest {path} holds no rows")
    paths, captions, raw_labels = [], [], []
    for number, row in enumerate(rows, start=1):
        missing = [key for key in (IMAGE_FIELD, CAPTION_FIELD) if row.get(key) in (None, "")]
        if missing:
            raise ValueError(
                f"{path} row {number}: missing field(s) {missing}; each row needs "
                f"{IMAGE_FIELD!r} and {CAPTION_FIELD!r}, optionally {LABEL_FIELD!r}"
            )
        image_path = Path(str(row[IMAGE_FIELD]))
        image_path = image_path if image_path.is_absolute() else path.parent / image_path
        if not image_path.is_file():
            raise FileNotFoundError(f"{path} row {number}: image file {image_path} not found")
        paths.append(image_path)
        captions.append(str(row[CAPTION_FIELD]))
        label = row.get(LABEL_FIELD)
        raw_labels.append(None if label in (None, "") else label)
    labelled = [label is not None for label in raw_labels]
    if any(labelled) and not all(labelled):
        first = labelled.index(False) + 1
        raise ValueError(f"{path} row {first}: no {LABEL_FIELD!r} while other rows have one")
    if not any(labelled):
        labels = torch.full((len(rows),), -1, dtype=torch.int64)
        class_names: list[str] = []
    elif all(_is_integer(label) for label in raw_labels):
        values = [int(str(label).strip()) for label in raw_labels]
        labels = torch.tensor(values, dtype=torch.int64)
        class_names = [str(i) for i in range(max(values) + 1)]
    else:
        class_names = sorted({str(label) for label in raw_labels})
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([lookup[str(label)] for label in raw_labels], dtype=torch.int64)
    logger.debug("manifest %s: %d images, %d classes", path, len(paths), len(class_names))
    return FileImages(paths, labels, class_names, captions, channels)


def find_manifests(root: Path) -> tuple[Path, Path | None]:
    """The manifest(s) at ``root``: the file itself, or ``train.*`` (+ ``val.*``) in a folder.

    Raises:
        FileNotFoundError: if no manifest is found.
    """
    if root.is_file():
        return root, None
    if root.is_dir():
        train = [root / f"train{suffix}" for suffix in MANIFEST_SUFFIXES]
        val = [root / f"val{suffix}" for suffix in MANIFEST_SUFFIXES]
        train_found = [p for p in train if p.is_file()]
        if train_found:
            val_found = [p for p in val if p.is_file()]
            return train_found[0], (val_found[0] if val_found else None)
    raise FileNotFoundError(
        f"data.root={str(root)!r}: expected a manifest file (.csv or .jsonl) or a folder "
        "holding train.csv|train.jsonl (and optionally val.csv|val.jsonl)"
    )

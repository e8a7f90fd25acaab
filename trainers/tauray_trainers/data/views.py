"""Datasets that turn an image source into what each method trains or evaluates on.

Training augmentations are a pure function of ``(seed, epoch, index)``: each sample runs its
transforms with torch's global CPU generator seeded from those three numbers (and the generator's
previous state restored afterwards). A sample therefore gets the same views whatever the number of
ranks, loader workers or the batch it lands in, and a resumed run sees the same augmentations as an
uninterrupted one. The epoch comes from :meth:`AugmentedDataset.set_epoch`, which the training
sampler of :func:`tauray_trainers.data.make_loader` calls from its own ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch
from torch.utils.data import Dataset

from tauray_trainers.data.sources import ImageSource
from tauray_trainers.data.tokenizer import ByteTokenizer

Transform = Callable[[torch.Tensor], torch.Tensor]

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers such as ``(seed, epoch, index)``."""
    state = 0
    for value in values:
        state = _splitmix64(state ^ (int(value) & _MASK64))
    return state >> 1


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Run a block with torch's default CPU generator seeded, then restore its state."""
    state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


class AugmentedDataset(Dataset):
    """Base of the training datasets: a source, a seed and the current epoch.

    Args:
        source: the images.
        seed: the run's seed (``TrainConfig.seed``).
    """

    def __init__(self, source: ImageSource, seed: int) -> None:
        self.source = source
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of ``epoch`` (called by the training sampler)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> AbstractContextManager[None]:
        return seeded_cpu_rng(sample_seed(self.seed, self.epoch, index))


class TwoViews(AugmentedDataset):
    """SimCLR's input: ``dataset[i] -> (view_a, view_b)``, two float ``[C, H, W]`` views.

    The label is not returned: contrastive training must not see it.
    """

    def __init__(self, source: ImageSource, transform: Transform, seed: int) -> None:
        super().__init__(source, seed)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.source.image(index)
        with self._rng(index):
            return self.transform(image), self.transform(image)


class MultiCrop(AugmentedDataset):
    """DINO's input: ``dataset[i] -> [global_1, global_2, local_1, ..., local_n]``.

    Global crops are ``[C, image_size, image_size]``, local crops
    ``[C, local_crop_size, local_crop_size]`` (float32).
    """

    def __init__(
        self,
        source: ImageSource,
        global_transforms: tuple[Transform, Transform],
        local_transform: Transform,
        num_local_crops: int,
        seed: int,
    ) -> None:
        if num_local_crops < 0:
            raise ValueError(f"num_local_crops must be >= 0, got {num_local_crops}")
        super().__init__(source, seed)
        self.global_transforms = global_transforms
        self.local_transform = local_transform
        self.num_local_crops = num_local_crops

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        image = self.source.image(index)
        with self._rng(index):
            crops = [transform(image) for transform in self.global_transforms]
            crops.extend(self.local_transform(image) for _ in range(self.num_local_crops))
        return crops


class _Captions:
    """Caption tokens of a sample (its own caption, or one of its class's prompts) and its
    caption group.

    The group says which captions describe the sample: for captions made from class prompts it
    is the class (every prompt of class c describes every image of class c), for own captions
    the caption's text (identical captions share a group, numbered in order of first
    appearance, so every rank holding the same source numbers them alike).
    """

    def __init__(
        self,
        source: ImageSource,
        tokenizer: ByteTokenizer,
        class_prompts: Sequence[Sequence[str]],
    ) -> None:
        self.tokenizer = tokenizer
        self.own = source.captions
        self.prompt_tokens: list[torch.Tensor] = []
        self.own_groups: list[int] = []
        if self.own is not None:
            numbers: dict[str, int] = {}
            self.own_groups = [numbers.setdefault(text, len(numbers)) for text in self.own]
        else:
            if not class_prompts:
                raise ValueError("a source without captions needs class prompts to caption it")
            labels = source.labels
            if bool((labels < 0).any()) or int(labels.max()) >= len(class_prompts):
                raise ValueError(
                    f"labels must lie in [0, {len(class_prompts)}) to caption images from "
                    f"class prompts, got [{int(labels.min())}, {int(labels.max())}]"
                )
            self.prompt_tokens = [tokenizer(list(prompts)) for prompts in class_prompts]

    def tokens(self, index: int, label: int, draw: Callable[[int], int]) -> torch.Tensor:
        if self.own is not None:
            return self.tokenizer(self.own[index])[0]
        choices = self.prompt_tokens[label]
        return choices[draw(len(choices))]

    def group(self, index: int, label: int) -> int:
        return self.own_groups[index] if self.own is not None else int(label)


class CaptionedImages(AugmentedDataset):
    """CLIP's training input: ``dataset[i] -> (image, tokens, group)``.

    ``image`` is one augmented float ``[C, H, W]`` view, ``tokens`` int64 ``[context_length]``:
    the sample's own caption (manifests), else one of its class's prompts, drawn per
    ``(seed, epoch, index)``. ``group`` (int) is the caption group the losses may treat as
    positives (``loss.positives``): the class for class-prompt captions, else the caption's
    text.
    """

    def __init__(
        self,
        source: ImageSource,
        transform: Transform,
        tokenizer: ByteTokenizer,
        class_prompts: Sequence[Sequence[str]],
        seed: int,
    ) -> None:
        super().__init__(source, seed)
        self.transform = transform
        self.captions = _Captions(source, tokenizer, class_prompts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.source[index]
        with self._rng(index):
            view = self.transform(image)
            tokens = self.captions.tokens(index, label, lambda n: int(torch.randint(n, ()).item()))
        return view, tokens, self.captions.group(index, label)


class LabelledImages(Dataset):
    """Evaluation input: ``dataset[i] -> (image, label)`` through a deterministic transform."""

    def __init__(self, source: ImageSource, transform: Transform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index]
        return self.transform(image), label


class LabelledCaptionedImages(LabelledImages):
    """CLIP's evaluation input: ``dataset[i] -> (image, label, tokens)``.

    The caption is the sample's own, else a class prompt fixed per ``(seed, index)``, so the
    validation pairs never change between epochs.
    """

    def __init__(
        self,
        source: ImageSource,
        transform: Transform,
        tokenizer: ByteTokenizer,
        class_prompts: Sequence[Sequence[str]],
        seed: int,
    ) -> None:
        super().__init__(source, transform)
        self.seed = int(seed)
        self.captions = _Captions(source, tokenizer, class_prompts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, label = self.source[index]
        pick = sample_seed(self.seed, index)
        tokens = self.captions.tokens(index, label, lambda n: pick % n)
        return self.transform(image), label, tokens

"""Data: bundled digits, real-data readers on files the tests write, views, captions, loaders."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tauray_trainers.config import build_config
from tauray_trainers.data import DataBundle, build_data, make_eval_loader, make_loader
from tauray_trainers.data.captions import class_prompts, digit_prompts, with_article
from tauray_trainers.data.digits import cluttered_digits, plain_digits
from tauray_trainers.data.sources import split_indices
from tauray_trainers.evaluation import knn_top1

# --------------------------------------------------------------------------- helpers


def _bundle(method: str = "simclr", **data: object) -> DataBundle:
    return build_data(build_config({"method": method, "data": data}))


def _raw_images(dataset: Dataset) -> torch.Tensor:
    """The unaugmented uint8 images of a train_eval/val dataset."""
    return dataset.source.images  # type: ignore[attr-defined]


def _transform_types(transform: v2.Compose) -> list[type]:
    found: list[type] = []
    for item in transform.transforms:
        found.append(type(item))
        if isinstance(item, v2.RandomApply):
            found.extend(type(inner) for inner in item.transforms)
    return found


class _Indices(Dataset):
    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


# --------------------------------------------------------------------------- bundled digits


def test_plain_digits_shapes_and_labels() -> None:
    images, labels = plain_digits(32)
    assert images.shape == (1797, 1, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert int(images.max()) == 255  # full-ink pixels of scikit-learn's 0-16 scale


def test_cluttered_digits_are_deterministic_per_seed() -> None:
    first, labels = cluttered_digits(32, seed=3)
    again, labels_again = cluttered_digits(32, seed=3)
    other, _ = cluttered_digits(32, seed=4)
    assert first.shape == (1797, 1, 32, 32) and first.dtype == torch.uint8
    assert torch.equal(first, again) and torch.equal(labels, labels_again)
    assert not torch.equal(first, other)
    assert torch.equal(labels, plain_digits(8)[1])  # one cluttered image per source digit
    # A smooth background: no canvas is blank, and the backgrounds differ between images.
    assert (first.flatten(1).float().std(dim=1) > 5).all()
    assert first[:, :, 0, 0].unique().numel() > 100


def test_split_sizes_and_determinism() -> None:
    train, val = split_indices(1797, 0.2, seed=0)
    assert (len(train), len(val)) == (1438, 359)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1797))
    train_again, val_again = split_indices(1797, 0.2, seed=0)
    assert torch.equal(val, val_again) and torch.equal(train, train_again)
    assert not torch.equal(val, split_indices(1797, 0.2, seed=1)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, seed=0)


def test_bundle_splits_caps_and_metadata() -> None:
    bundle = _bundle()
    assert bundle.name == "digits-cluttered"
    assert (len(bundle.train), len(bundle.train_eval), len(bundle.val)) == (1438, 1438, 359)
    assert (bundle.num_classes, bundle.channels, bundle.image_size) == (10, 1, 32)
    assert bundle.class_names[7] == "seven"
    assert len(bundle.mean) == len(bundle.std) == 1 and 0 < bundle.mean[0] < 1
    capped = _bundle(max_train_samples=100, max_val_samples=30)
    assert (len(capped.train), len(capped.train_eval), len(capped.val)) == (100, 100, 30)
    # The same data seed gives the same pixels and split; another seed other pixels.
    again = _bundle()
    assert torch.equal(_raw_images(bundle.val), _raw_images(again.val))
    assert not torch.equal(_raw_images(bundle.val), _raw_images(_bundle(seed=1).val))


def test_cluttered_digits_are_measurably_harder_than_plain() -> None:
    """Raw-pixel weighted kNN: near-perfect on plain digits, far lower once cluttered."""

    def raw_pixel_knn(name: str) -> float:
        bundle = _bundle(name=name)
        train = _raw_images(bundle.train_eval).flatten(1).float()
        val = _raw_images(bundle.val).flatten(1).float()
        centre = train.mean(dim=0)
        return knn_top1(
            train - centre,
            bundle.train_eval.source.labels,  # type: ignore[attr-defined]
            val - centre,
            bundle.val.source.labels,  # type: ignore[attr-defined]
            num_classes=10,
        )

    plain, cluttered = raw_pixel_knn("digits"), raw_pixel_knn("digits-cluttered")
    print(f"raw-pixel kNN top-1: plain {plain:.3f}, cluttered {cluttered:.3f}")
    assert plain > 0.9
    assert cluttered < plain - 0.3
    assert cluttered > 0.15  # still learnable: well above chance (0.1)


# --------------------------------------------------------------------------- methods' samples


def test_simclr_views_shapes_and_seeded_augmentations() -> None:
    bundle = _bundle("simclr", max_train_samples=64)
    view_a, view_b = bundle.train[5]
    assert view_a.shape == view_b.shape == (1, 32, 32) and view_a.dtype == torch.float32
    assert not torch.equal(view_a, view_b)
    # A pure function of (seed, epoch, index): independent of the global RNG, which it restores.
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    again_a, again_b = bundle.train[5]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(view_a, again_a) and torch.equal(view_b, again_b)
    bundle.train.set_epoch(1)  # type: ignore[attr-defined]
    assert not torch.equal(bundle.train[5][0], view_a)
    bundle.train.set_epoch(0)  # type: ignore[attr-defined]
    assert torch.equal(bundle.train[5][0], view_a)
    other_seed = build_data(build_config({"seed": 1, "data": {"max_train_samples": 64}})).train
    assert not torch.equal(other_seed[5][0], view_a)


def test_eval_datasets_are_unaugmented_and_normalised() -> None:
    bundle = _bundle()
    image, label = bundle.val[3]
    raw = _raw_images(bundle.val)[3].float() / 255
    expected = (raw - bundle.mean[0]) / bundle.std[0]
    assert torch.allclose(image, expected, atol=1e-6)
    assert label == int(bundle.val.source.labels[3])  # type: ignore[attr-defined]
    assert torch.equal(bundle.val[3][0], image)


def test_flips_are_off_for_digits_and_configurable() -> None:
    digits = _bundle("simclr", max_train_samples=8)
    assert v2.RandomHorizontalFlip not in _transform_types(digits.train.transform)
    flipped = _bundle("simclr", max_train_samples=8, horizontal_flip=True)
    assert v2.RandomHorizontalFlip in _transform_types(flipped.train.transform)
    types = _transform_types(digits.train.transform)
    assert v2.RandomResizedCrop in types and v2.ColorJitter in types
    assert v2.GaussianBlur in types and v2.RandomGrayscale not in types  # 1 channel


def test_clip_images_get_crops_only() -> None:
    clip = _bundle("clip", max_train_samples=8)
    types = _transform_types(clip.train.transform)
    assert types[0] is v2.RandomResizedCrop
    assert not {v2.ColorJitter, v2.GaussianBlur, v2.RandomGrayscale} & set(types)
    assert v2.RandomHorizontalFlip not in types  # digits
    flipped = _bundle("clip", max_train_samples=8, horizontal_flip=True)
    assert v2.RandomHorizontalFlip in _transform_types(flipped.train.transform)


def _crop_scale(transform: v2.Compose) -> tuple[float, float]:
    crops = [t for t in transform.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert len(crops) == 1
    return tuple(crops[0].scale)


def test_crop_scale_defaults_per_data_set_and_override() -> None:
    assert _crop_scale(_bundle("simclr", max_train_samples=8).train.transform) == (0.5, 1.0)
    assert _crop_scale(_bundle("clip", max_train_samples=8).train.transform) == (0.5, 1.0)
    custom = _bundle("simclr", max_train_samples=8, crop_min_scale=0.3)
    assert _crop_scale(custom.train.transform) == (0.3, 1.0)


def test_clip_samples_captions_from_the_class_templates() -> None:
    bundle = build_data(
        build_config(
            {"method": "clip", "model": {"context_length": 64}, "data": {"max_train_samples": 50}}
        )
    )
    tokenizer = bundle.tokenizer
    assert tokenizer is not None and tokenizer.context_length == 64
    assert len(bundle.class_prompts) == 10
    assert "a photo of the digit seven" in bundle.class_prompts[7]
    assert "handwritten 7" in bundle.class_prompts[7]
    labels = bundle.train.source.labels  # type: ignore[attr-defined]
    seen: set[str] = set()
    for epoch in range(4):
        bundle.train.set_epoch(epoch)  # type: ignore[attr-defined]
        for index in range(20):
            image, tokens, group = bundle.train[index]
            assert image.shape == (1, 32, 32) and tokens.shape == (64,)
            assert tokens.dtype == torch.int64
            caption = tokenizer.decode(tokens)
            assert caption in bundle.class_prompts[int(labels[index])]
            assert group == int(labels[index])  # every prompt of a class describes its images
            seen.add(caption)
    assert len(seen) > 20  # several templates are drawn, not one per class
    image, label, tokens = bundle.val[4]
    assert tokenizer.decode(tokens) in bundle.class_prompts[label]
    assert torch.equal(bundle.val[4][2], tokens)  # fixed validation captions


def test_dino_multicrop_counts_and_sizes() -> None:
    bundle = build_data(
        build_config(
            {
                "method": "dino",
                "dino": {"num_local_crops": 3, "local_crop_size": 12},
                "data": {"max_train_samples": 16},
            }
        )
    )
    crops = bundle.train[0]
    assert isinstance(crops, list) and len(crops) == 5
    assert [tuple(c.shape) for c in crops] == [(1, 32, 32)] * 2 + [(1, 12, 12)] * 3
    batch = next(
        iter(
            make_loader(bundle.train, 4, shuffle=True, drop_last=True, seed=0, rank=0, world_size=1)
        )
    )
    assert [tuple(c.shape) for c in batch] == [(4, 1, 32, 32)] * 2 + [(4, 1, 12, 12)] * 3


# --------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(("count", "world_size", "batch_size"), [(103, 2, 8), (100, 3, 7)])
def test_every_rank_takes_the_same_number_of_full_steps(
    count: int, world_size: int, batch_size: int
) -> None:
    dataset = _Indices(count)
    per_rank: list[list[list[int]]] = []
    for rank in range(world_size):
        loader = make_loader(
            dataset,
            batch_size,
            shuffle=True,
            drop_last=True,
            seed=7,
            rank=rank,
            world_size=world_size,
        )
        loader.sampler.set_epoch(2)
        per_rank.append([batch.tolist() for batch in loader])
    steps = {len(batches) for batches in per_rank}
    assert steps == {count // world_size // batch_size}
    assert all(len(b) == batch_size for batches in per_rank for b in batches)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen))  # no sample on two ranks in one epoch
    # Same seed and epoch: the same order again; another epoch reshuffles.
    loader = make_loader(
        dataset, batch_size, shuffle=True, drop_last=True, seed=7, rank=0, world_size=world_size
    )
    loader.sampler.set_epoch(2)
    assert [b.tolist() for b in loader] == per_rank[0]
    loader.sampler.set_epoch(3)
    assert [b.tolist() for b in loader] != per_rank[0]


def test_sampler_epoch_reaches_the_dataset_and_workers_see_the_same_views() -> None:
    bundle = _bundle("simclr", max_train_samples=32)
    in_process = make_loader(
        bundle.train, 8, shuffle=True, drop_last=True, seed=1, rank=0, world_size=1
    )
    in_process.sampler.set_epoch(4)
    assert bundle.train.epoch == 4  # type: ignore[attr-defined]
    expected = [torch.cat(views) for views in in_process]
    with_workers = make_loader(
        bundle.train, 8, shuffle=True, drop_last=True, seed=1, rank=0, world_size=1, workers=2
    )
    with_workers.sampler.set_epoch(4)
    got = [torch.cat(views) for views in with_workers]
    assert len(got) == len(expected) == 4
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_eval_loader_shards_cover_every_sample() -> None:
    dataset = _Indices(23)
    shards = [
        [
            i
            for batch in make_eval_loader(dataset, 4, rank=rank, world_size=3)
            for i in batch.tolist()
        ]
        for rank in range(3)
    ]
    assert {len(shard) for shard in shards} == {8}  # padded to equal shards
    assert set().union(*map(set, shards)) == set(range(23))


def test_loader_arguments_are_checked() -> None:
    dataset = _Indices(10)
    with pytest.raises(ValueError, match="batch_size=8 exceeds the 5 samples"):
        make_loader(dataset, 8, shuffle=True, drop_last=True, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be an int in"):
        make_loader(dataset, 2, shuffle=True, drop_last=True, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_eval_loader(dataset, 0, rank=0, world_size=1)


# --------------------------------------------------------------------------- CIFAR-10 / STL-10

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _write_cifar10(root: Path, per_batch: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Pickled batches in the layout and format torchvision's CIFAR10 reads."""
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(seed)
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    written: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, files in (("train", CIFAR10.train_list), ("test", CIFAR10.test_list)):
        for name, _ in files:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, size=per_batch).tolist()
            with (folder / name).open("wb") as handle:
                pickle.dump({"data": data, "labels": labels, "batch_label": name}, handle)
            written[split].append(data)
    with (folder / CIFAR10.meta["filename"]).open("wb") as handle:
        pickle.dump({CIFAR10.meta["key"]: CIFAR_CLASSES, "num_vis": 3072}, handle)
    return {split: np.concatenate(parts) for split, parts in written.items()}


def test_cifar10_reader_matches_torchvision(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import CIFAR10

    written = _write_cifar10(tmp_path)
    bundle = _bundle("simclr", name="cifar10", root=str(tmp_path))
    assert (len(bundle.train), len(bundle.val)) == (30, 6)  # 5 batches of 6, 1 test batch
    assert (bundle.channels, bundle.num_classes) == (3, 10)
    assert bundle.class_names == tuple(CIFAR_CLASSES)
    assert bundle.class_prompts[0][0] == "a photo of an airplane."
    assert torch.equal(
        _raw_images(bundle.train_eval).flatten(1), torch.from_numpy(written["train"])
    )
    # Same pixels and labels as torchvision's own reader (its MD5 check skipped: fake files).
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *a, **k: True)
    reference = CIFAR10(str(tmp_path), train=False)
    assert torch.equal(
        _raw_images(bundle.val).permute(0, 2, 3, 1), torch.from_numpy(reference.data)
    )
    assert bundle.val.source.labels.tolist() == reference.targets  # type: ignore[attr-defined]
    view_a, _ = bundle.train[0]
    assert view_a.shape == (3, 32, 32)
    assert v2.RandomHorizontalFlip in _transform_types(bundle.train.transform)
    assert _crop_scale(bundle.train.transform) == (0.2, 1.0)
    small = _bundle("simclr", name="cifar10", root=str(tmp_path), image_size=16)
    assert small.val[0][0].shape == (3, 16, 16)


def test_cifar10_without_files_or_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data\.download=true"):
        _bundle(name="cifar10", root=str(tmp_path))
    with pytest.raises(ValueError, match=r"data\.root is required"):
        _bundle(name="cifar10")


def _write_stl10(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """STL-10's binary files: column-major 96x96 images, 1-based labels, class_names.txt."""
    from torchvision.datasets import STL10

    rng = np.random.default_rng(seed)
    folder = root / STL10.base_folder
    folder.mkdir(parents=True)
    images = {}
    for split, count in counts.items():
        pictures = rng.integers(0, 256, size=(count, 3, 96, 96), dtype=np.uint8)
        pictures.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (rng.integers(0, 10, size=count, dtype=np.uint8) + 1).tofile(folder / f"{split}_y.bin")
        images[split] = pictures
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / STL10.class_names_file).write_text("\n".join(names) + "\n")
    return images


def test_stl10_reader_matches_torchvision(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import STL10

    written = _write_stl10(tmp_path, {"train": 7, "test": 5})
    bundle = _bundle("simclr", name="stl10", root=str(tmp_path), image_size=96)
    assert (len(bundle.train), len(bundle.val), bundle.channels) == (7, 5, 3)
    assert bundle.class_names[7] == "monkey"
    assert torch.equal(_raw_images(bundle.train_eval), torch.from_numpy(written["train"]))
    monkeypatch.setattr("torchvision.datasets.stl10.check_integrity", lambda *a, **k: True)
    reference = STL10(str(tmp_path), split="test")
    assert torch.equal(_raw_images(bundle.val), torch.from_numpy(reference.data))
    assert bundle.val.source.labels.tolist() == reference.labels.tolist()  # type: ignore
    resized = _bundle("simclr", name="stl10", root=str(tmp_path))
    assert _raw_images(resized.val).shape == (5, 3, 32, 32)
    assert resized.train[0][0].shape == (3, 32, 32)


# --------------------------------------------------------------------------- files on disk


def _write_png(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_image_folder_with_a_seeded_split(tmp_path: Path) -> None:
    for c, name in enumerate(["cat", "dog", "pickup_truck"]):
        for i in range(5):
            _write_png(tmp_path / name / f"{i}.png", seed=10 * c + i)
    bundle = _bundle("clip", name="imagefolder", root=str(tmp_path), val_fraction=0.2)
    assert (len(bundle.train), len(bundle.val)) == (12, 3)
    assert bundle.class_names == ("cat", "dog", "pickup_truck")
    assert bundle.channels == 3 and bundle.mean == (0.485, 0.456, 0.406)
    assert "a photo of a pickup truck." in bundle.class_prompts[2]
    image, tokens, group = bundle.train[0]
    assert image.shape == (3, 32, 32)
    label = int(bundle.train.source.labels[0])  # type: ignore[attr-defined]
    assert bundle.tokenizer.decode(tokens) in bundle.class_prompts[label]
    assert group == label
    val_image, val_label, _ = bundle.val[0]
    assert val_image.shape == (3, 32, 32) and 0 <= val_label < 3


def test_image_folder_with_train_and_val_folders(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            for i in range(count):
                _write_png(tmp_path / split / name / f"{i}.png", seed=i, size=(20, 20))
    bundle = _bundle("dino", name="imagefolder", root=str(tmp_path), image_size=16)
    assert (len(bundle.train), len(bundle.val)) == (8, 4)
    crops = bundle.train[0]
    assert [tuple(c.shape) for c in crops[:2]] == [(3, 16, 16)] * 2


def _manifest_rows(tmp_path: Path, labelled: bool) -> list[dict[str, object]]:
    rows = []
    for i in range(10):
        relative = f"images/{i}.png"
        _write_png(tmp_path / relative, seed=i)
        row: dict[str, object] = {"image": relative, "caption": f"picture number {i}, a test"}
        if labelled:
            row["label"] = ["red", "green"][i % 2]
        rows.append(row)
    return rows


def test_csv_manifest_with_own_captions_and_labels(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, labelled=True)
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "caption", "label"])
        writer.writeheader()
        writer.writerows(rows)
    bundle = _bundle("clip", name="manifest", root=str(path), val_fraction=0.3)
    assert (len(bundle.train), len(bundle.val)) == (7, 3)
    assert bundle.class_names == ("green", "red") and bundle.num_classes == 2
    source = bundle.train.source  # type: ignore[attr-defined]
    groups = []
    for index in range(len(bundle.train)):
        image, tokens, group = bundle.train[index]
        groups.append(group)
        assert image.shape == (3, 32, 32)
        assert bundle.tokenizer.decode(tokens) == source.captions[index]
        number = int(source.paths[index].stem)
        assert source.captions[index] == f"picture number {number}, a test"
        assert int(source.labels[index]) == {"red": 1, "green": 0}[["red", "green"][number % 2]]
    # Own captions are grouped by their text, not by the label: all differ here.
    assert groups == list(range(len(bundle.train)))


def test_identical_own_captions_share_a_group(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, labelled=False)
    for i, row in enumerate(rows):
        row["caption"] = ["a red square", "a blue dot", "a red square", "two lines"][i % 4]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bundle = _bundle("clip", name="manifest", root=str(path), val_fraction=0.1)
    source = bundle.train.source  # type: ignore[attr-defined]
    by_caption: dict[str, set[int]] = {}
    for index in range(len(bundle.train)):
        _, tokens, group = bundle.train[index]
        by_caption.setdefault(bundle.tokenizer.decode(tokens), set()).add(group)
        assert bundle.tokenizer.decode(tokens) == source.captions[index]
    assert len(by_caption) == 3 and all(len(ids) == 1 for ids in by_caption.values())
    assert len({next(iter(ids)) for ids in by_caption.values()}) == 3


def test_jsonl_manifest_without_labels(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path, labelled=False)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bundle = _bundle("clip", name="manifest", root=str(path))
    assert (len(bundle.train), len(bundle.val)) == (8, 2)
    assert bundle.num_classes == 0 and bundle.class_prompts == ()
    _, label, tokens = bundle.val[0]
    assert label == -1
    assert bundle.tokenizer.decode(tokens).startswith("picture number")
    simclr = _bundle("simclr", name="manifest", root=str(path))
    assert simclr.train[0][0].shape == (3, 32, 32)


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", seed=0)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"image": "a.png"}) + "\n")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['caption'\]"):
        _bundle("clip", name="manifest", root=str(path))
    path.write_text(json.dumps({"image": "missing.png", "caption": "x"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        _bundle("clip", name="manifest", root=str(path))
    with pytest.raises(FileNotFoundError, match=r"train\.csv\|train\.jsonl"):
        _bundle("clip", name="manifest", root=str(tmp_path))


# --------------------------------------------------------------------------- captions


def test_caption_templates() -> None:
    prompts = digit_prompts()
    assert len(prompts) == 10 and len({len(p) for p in prompts}) == 1
    assert "a photo of the digit seven" in prompts[7] and "handwritten 7" in prompts[7]
    assert "an image of an eight" in prompts[8] and "an image of a one" in prompts[1]
    assert with_article("apple") == "an apple" and with_article("truck") == "a truck"
    assert class_prompts(["sea_lion"], ["a photo of {a_name}."]) == (("a photo of a sea lion.",),)
    with pytest.raises(ValueError, match="unknown field"):
        class_prompts(["x"], ["{colour} {name}"])

"""Evaluation metrics against naive references, and exact rank-aware feature extraction."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tauray_trainers.data import make_eval_loader, make_loader
from tauray_trainers.evaluation import (
    alignment,
    caption_groups,
    class_embeddings,
    effective_rank,
    extract_features,
    extract_text_features,
    knn_top1,
    pair_infonce,
    recall_at_k,
    uniformity,
    zeroshot_top1,
)

# --------------------------------------------------------------------------- naive references


def naive_knn(train, train_labels, val, val_labels, k, temperature, num_classes) -> float:
    train = [t / t.norm() for t in train.double()]
    correct = 0
    for query, label in zip(val.double(), val_labels.tolist(), strict=True):
        query = query / query.norm()
        similarities = sorted(
            ((float(query @ t), int(y)) for t, y in zip(train, train_labels, strict=True)),
            reverse=True,
        )[:k]
        votes = [0.0] * num_classes
        for similarity, neighbour_label in similarities:
            votes[neighbour_label] += math.exp(similarity / temperature)
        correct += int(max(range(num_classes), key=votes.__getitem__) == label)
    return correct / len(val)


def naive_zeroshot(images, classes, labels) -> float:
    correct = 0
    for image, label in zip(images.double(), labels.tolist(), strict=True):
        scores = [float(F.cosine_similarity(image, c.double(), dim=0)) for c in classes]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == label)
    return correct / len(images)


def naive_recall(queries, keys, k, groups=None) -> float:
    """Share of queries whose first correct key (by descending cosine) is among the top k."""
    count = len(queries)
    groups = list(range(count)) if groups is None else groups.tolist()
    hits = 0
    for i in range(count):
        scores = F.cosine_similarity(queries[i : i + 1].double(), keys.double(), dim=1)
        order = torch.argsort(scores, descending=True).tolist()
        first_correct = min(p for p, j in enumerate(order) if groups[j] == groups[i])
        hits += int(first_correct < k)
    return hits / count


def clustered(count: int, num_classes: int, dim: int, spread: float, seed: int):
    """Noisy points around class centres that are the same for every seed."""
    centres = torch.randn(
        num_classes, dim, generator=torch.Generator().manual_seed(1234), dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (count,), generator=generator)
    noise = spread * torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return centres[labels] + noise, labels


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    ("k", "temperature", "spread"), [(1, 0.07, 1.0), (5, 0.5, 1.5), (20, 0.07, 1.2), (400, 1.0, 2)]
)
def test_knn_matches_naive_reference(k: int, temperature: float, spread: float) -> None:
    train, train_labels = clustered(150, 6, 8, spread, seed=1)
    val, val_labels = clustered(40, 6, 8, spread, seed=2)
    expected = naive_knn(train, train_labels, val, val_labels, min(k, 150), temperature, 6)
    for chunk_size in (None, 7):
        got = knn_top1(
            train,
            train_labels,
            val,
            val_labels,
            k=k,
            temperature=temperature,
            num_classes=6,
            chunk_size=chunk_size,
        )
        assert got == expected
    assert 0.2 < expected < 1.0  # a case where the vote matters


def test_knn_small_temperature_does_not_overflow() -> None:
    train, train_labels = clustered(60, 3, 4, 0.3, seed=3)
    val, val_labels = clustered(20, 3, 4, 0.3, seed=4)
    got = knn_top1(
        train.float(), train_labels, val.float(), val_labels, k=10, temperature=1e-4, num_classes=3
    )
    # At a tiny temperature the nearest neighbour decides alone: same as k=1.
    assert got == naive_knn(train, train_labels, val, val_labels, 1, 1.0, 3)


def test_knn_rejects_bad_input() -> None:
    train, labels = clustered(10, 2, 3, 1.0, seed=0)
    with pytest.raises(ValueError, match="train_labels must lie in"):
        knn_top1(train, labels + 5, train, labels, num_classes=2)
    with pytest.raises(ValueError, match="temperature"):
        knn_top1(train, labels, train, labels, temperature=0.0, num_classes=2)
    with pytest.raises(ValueError, match="differ in dimension"):
        knn_top1(train, labels, train[:, :2], labels, num_classes=2)


def test_zeroshot_matches_naive_reference_and_averages_templates() -> None:
    generator = torch.Generator().manual_seed(5)
    per_template = torch.randn(5, 3, 8, generator=generator, dtype=torch.float64)
    images, labels = clustered(60, 5, 8, 2.0, seed=6)
    ensembled = F.normalize(F.normalize(per_template, dim=-1).mean(dim=1), dim=-1)
    expected = naive_zeroshot(images, ensembled, labels)
    assert zeroshot_top1(images, per_template, labels) == expected
    assert zeroshot_top1(images, ensembled * 3.0, labels) == expected  # scale-free
    assert torch.allclose(class_embeddings(per_template), ensembled)
    with pytest.raises(ValueError, match="labels must lie in"):
        zeroshot_top1(images, per_template[:2], labels)


def test_recall_matches_naive_reference() -> None:
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(50, 6, generator=generator, dtype=torch.float64)
    texts = images + 1.2 * torch.randn(50, 6, generator=generator, dtype=torch.float64)
    result = recall_at_k(images, texts, ks=(1, 5, 10), chunk_size=8)
    for k in (1, 5, 10):
        assert result[f"i2t@{k}"] == naive_recall(images, texts, k)
        assert result[f"t2i@{k}"] == naive_recall(texts, images, k)
        assert result[f"mean@{k}"] == pytest.approx((result[f"i2t@{k}"] + result[f"t2i@{k}"]) / 2)
    assert 0.1 < result["i2t@1"] < result["i2t@5"] < 1.0
    assert set(result) == {f"{d}@{k}" for d in ("i2t", "t2i", "mean") for k in (1, 5, 10)}


def test_recall_with_shared_captions_and_a_collapsed_model() -> None:
    tokens = torch.tensor([[1, 5, 2], [1, 6, 2], [1, 5, 2], [1, 7, 2], [1, 6, 2], [1, 5, 2]])
    groups = caption_groups(tokens)
    assert groups.tolist()[0] == groups.tolist()[2] == groups.tolist()[5]
    assert len(set(groups.tolist())) == 3
    generator = torch.Generator().manual_seed(8)
    caption_space = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    texts = caption_space[groups]  # identical captions embed identically
    images = texts + 0.05 * torch.randn(6, 4, generator=generator, dtype=torch.float64)
    with_groups = recall_at_k(images, texts, ks=(1,), groups=groups)
    assert with_groups["i2t@1"] == 1.0 == naive_recall(images, texts, 1, groups)
    assert with_groups["t2i@1"] == naive_recall(texts, images, 1, groups) == 1.0
    # Without groups, a tied duplicate caption counts against the image.
    assert recall_at_k(images, texts, ks=(1,))["i2t@1"] < 1.0
    collapsed = torch.ones(6, 4)
    assert recall_at_k(collapsed, collapsed, ks=(1, 5))["mean@5"] == 0.0


def test_alignment_and_uniformity_match_wang_and_isola() -> None:
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(70, 5, generator=generator, dtype=torch.float64)
    y = x + 0.3 * torch.randn(70, 5, generator=generator, dtype=torch.float64)
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    expected_alignment = sum(float((xn[i] - yn[i]).norm() ** 2) for i in range(70)) / 70
    assert alignment(x, y) == pytest.approx(expected_alignment, rel=1e-12)
    assert alignment(x, y, alpha=1) == pytest.approx(float((xn - yn).norm(dim=1).mean()))
    reference = float(torch.pdist(xn, p=2).pow(2).mul(-2).exp().mean().log())
    assert uniformity(x) == pytest.approx(reference, rel=1e-10)
    assert uniformity(x, chunk_size=9) == pytest.approx(reference, rel=1e-10)
    reference_t1 = float(torch.pdist(xn, p=2).pow(2).mul(-1).exp().mean().log())
    assert uniformity(x, t=1, chunk_size=16) == pytest.approx(reference_t1, rel=1e-10)
    assert uniformity(torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-6)  # collapsed: worst
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(x[:1])


def test_effective_rank_is_rankme() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(50, 6, generator=generator, dtype=torch.float64)
    singular = np.linalg.svd(x.numpy(), compute_uv=False)
    p = singular / singular.sum()
    assert effective_rank(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)
    # Its range: 1 for embeddings on one line, the dimension for a flat spectrum.
    line = torch.outer(torch.arange(1.0, 9.0), torch.tensor([1.0, -2.0, 0.5]))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.eye(5) * 3) == pytest.approx(5.0, rel=1e-9)
    assert effective_rank(torch.zeros(4, 3)) == 1.0
    with pytest.raises(ValueError, match=r"effective_rank needs \[N, D\] embeddings"):
        effective_rank(torch.zeros(3))


# --------------------------------------------------------------------------- feature extraction


class Points(Dataset):
    """``(features, label, caption id)`` rows made from a seed, identical in every process."""

    def __init__(self, count: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(count, 5, generator=generator, dtype=torch.float64)
        self.labels = torch.randint(3, (count,), generator=generator)
        self.captions = torch.randint(100, (count, 4), generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], int(self.labels[index]), self.captions[index]


def embed(x: torch.Tensor) -> torch.Tensor:
    weight = torch.linspace(-1.0, 1.0, 5 * 3, dtype=torch.float64).reshape(5, 3)
    return torch.tanh(x @ weight)


def test_extract_features_restores_dataset_order_on_one_rank() -> None:
    data = Points(23)
    loader = make_eval_loader(data, 4, rank=0, world_size=1)
    features, labels = extract_features(embed, loader, "cpu")
    assert torch.equal(features, embed(data.x)) and torch.equal(labels, data.labels)
    shuffled = DataLoader(
        data, batch_size=5, sampler=DistributedSampler(data, 1, 0, shuffle=True, seed=3)
    )
    features, labels = extract_features(embed, shuffled, "cpu")
    assert torch.equal(features, embed(data.x)) and torch.equal(labels, data.labels)
    tokens, _ = extract_features(lambda t: t, loader, "cpu", input_index=2)
    assert torch.equal(tokens, data.captions)
    assert torch.equal(extract_text_features(lambda t: t * 2, shuffled, "cpu"), data.captions * 2)


def test_extract_features_refuses_loaders_that_drop_samples() -> None:
    data = Points(23)
    dropping = make_loader(data, 4, shuffle=False, drop_last=True, seed=0, rank=0, world_size=1)
    with pytest.raises(ValueError, match="drop_last"):
        extract_features(embed, dropping, "cpu")
    with pytest.raises(ValueError, match="label at 5"):
        extract_features(
            embed, make_eval_loader(data, 4, rank=0, world_size=1), "cpu", label_index=5
        )


WORLD = 2
COUNT = 23  # not a multiple of the world size: the sampler pads one shard


def _rank_main(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        data = Points(COUNT)
        loader = make_eval_loader(data, 4, rank=rank, world_size=WORLD)
        features, labels = extract_features(embed, loader, "cpu")
        tokens = extract_text_features(lambda t: t, loader, "cpu")
        memory_bank, bank_labels = extract_features(
            embed, make_eval_loader(Points(40, seed=1), 8, rank=rank, world_size=WORLD), "cpu"
        )
        knn = knn_top1(memory_bank, bank_labels, features, labels, k=5, num_classes=3)
        np.savez(
            Path(out_dir) / f"rank{rank}.npz",
            features=features.numpy(),
            labels=labels.numpy(),
            tokens=tokens.numpy(),
            shard=np.array(len(loader.sampler)),
            knn=np.array(knn),
        )
    finally:
        dist.destroy_process_group()


def test_extract_features_on_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned ranks
    mp.spawn(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    data, bank = Points(COUNT), Points(40, seed=1)
    expected_knn = knn_top1(
        embed(bank.x), bank.labels, embed(data.x), data.labels, k=5, num_classes=3
    )
    for rank in range(WORLD):
        result = np.load(tmp_path / f"rank{rank}.npz")
        assert int(result["shard"]) == 12  # 23 samples: 12 + 12 with one repeat
        assert np.array_equal(result["features"], embed(data.x).numpy())
        assert np.array_equal(result["labels"], data.labels.numpy())
        assert np.array_equal(result["tokens"], data.captions.numpy())
        assert float(result["knn"]) == expected_knn


def test_pair_infonce_matches_a_naive_reference() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    y = x + 0.3 * torch.randn(7, 5, generator=generator, dtype=torch.float64)
    a = x / x.norm(dim=1, keepdim=True)
    b = y / y.norm(dim=1, keepdim=True)
    expected = 0.0
    for i in range(7):
        row = [float(a[i] @ b[j]) / 0.1 for j in range(7)]
        column = [float(a[j] @ b[i]) / 0.1 for j in range(7)]
        expected += -row[i] + math.log(sum(math.exp(v) for v in row))
        expected += -column[i] + math.log(sum(math.exp(v) for v in column))
    expected /= 2 * 7
    assert pair_infonce(x, y) == pytest.approx(expected, rel=1e-9)
    # Perfectly aligned, well separated pairs score near 0; only the first max_pairs count.
    eye = torch.eye(4, dtype=torch.float64)
    assert pair_infonce(eye, eye, 0.01) < 1e-20
    noisy = (torch.cat([eye, x[:2, :4]]), torch.cat([eye, y[:2, :4]]))
    assert pair_infonce(*noisy, 0.01, max_pairs=4) < 1e-20
    assert pair_infonce(*noisy, 0.01) > 1e-3
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pair_infonce(x, y, 0.0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        pair_infonce(x[:1], y[:1])

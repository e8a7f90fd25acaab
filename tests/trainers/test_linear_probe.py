"""The linear probe: scikit-learn's optimum, ~1.0 on separable and ~chance on random embeddings,
the same value on two gloo ranks as in one process, and ``val/linear_top1`` from every method."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.linear_model import LogisticRegression
from torch.utils.data import Dataset

from tauray_trainers import linear_probe
from tauray_trainers import metrics as names
from tauray_trainers.config import build_config
from tauray_trainers.data import make_eval_loader
from tauray_trainers.evaluation import extract_features
from tauray_trainers.linear_probe import fit_linear_probe, linear_probe_top1
from tauray_trainers.loop import evaluate_untrained, train_locally


def clusters(
    count: int, classes: int, dim: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around random class centres: separable when ``spread`` is small."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 3
    labels = torch.arange(count) % classes
    noise = torch.randn(count, dim, generator=generator) * spread
    return centres[labels] + noise, labels


def test_separable_embeddings_score_one() -> None:
    train, train_labels = clusters(300, 5, 16, 0.3, seed=0)
    val, val_labels = clusters(200, 5, 16, 0.3, seed=1)
    assert linear_probe_top1(train, train_labels, val, val_labels, num_classes=5) >= 0.99


def test_random_embeddings_score_chance() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(1000, 32, generator=generator)
    val = torch.randn(2000, 32, generator=generator)
    train_labels = torch.randint(10, (1000,), generator=generator)
    val_labels = torch.randint(10, (2000,), generator=generator)
    accuracy = linear_probe_top1(train, train_labels, val, val_labels, num_classes=10)
    # Chance is 0.1; the binomial SD over 2,000 samples is 0.0067.
    assert 0.07 <= accuracy <= 0.13, accuracy


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-2])
def test_fit_reaches_scikit_learns_optimum(weight_decay: float) -> None:
    train, labels = clusters(400, 4, 8, 2.5, seed=2)
    weight, bias, mean, std = fit_linear_probe(
        train, labels, num_classes=4, weight_decay=weight_decay
    )
    standardized = ((train.double() - mean) / std).numpy()
    # scikit-learn minimises C * sum(cross-entropy) + ||W||^2 / 2: C = 1 / (λ N).
    reference = LogisticRegression(C=1 / (weight_decay * len(train)), tol=1e-10, max_iter=10_000)
    reference.fit(standardized, labels.numpy())
    ours = torch.softmax(torch.from_numpy(standardized) @ weight.T + bias, dim=1).numpy()
    assert np.abs(ours - reference.predict_proba(standardized)).max() < 1e-4


@pytest.mark.gpu
def test_on_gpu_under_bf16_autocast_the_probe_matches_the_cpu() -> None:
    train, train_labels = clusters(600, 6, 32, 3.0, seed=5)
    val, val_labels = clusters(300, 6, 32, 3.0, seed=6)
    expected = linear_probe_top1(train, train_labels, val, val_labels, num_classes=6)
    cuda = [t.cuda() for t in (train, train_labels, val, val_labels)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert linear_probe_top1(*cuda, num_classes=6) == pytest.approx(expected, abs=1 / 300)


def test_the_fit_is_deterministic() -> None:
    train, train_labels = clusters(300, 6, 12, 3.0, seed=3)
    val, val_labels = clusters(300, 6, 12, 3.0, seed=4)
    first = linear_probe_top1(train, train_labels, val, val_labels, num_classes=6)
    second = linear_probe_top1(train, train_labels, val, val_labels, num_classes=6)
    assert first == second and 0.3 < first < 1.0


def test_bad_input_names_the_argument_and_the_value() -> None:
    train, labels = clusters(20, 2, 4, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 2, got 1"):
        linear_probe_top1(train, labels, train, labels, num_classes=1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got \[0, 5\]"):
        linear_probe_top1(train, labels * 5, train, labels, num_classes=2)
    with pytest.raises(ValueError, match=r"weight_decay must be a number >= 0, got -1"):
        linear_probe_top1(train, labels, train, labels, num_classes=2, weight_decay=-1)
    with pytest.raises(ValueError, match="differ in dimension: 4 vs 3"):
        linear_probe_top1(train, labels, train[:, :3], labels, num_classes=2)
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe_top1(train * math.nan, labels, train, labels, num_classes=2)
    with pytest.raises(TypeError, match="integer class indices"):
        linear_probe_top1(train, labels.float(), train, labels, num_classes=2)


def test_config_key_is_validated() -> None:
    assert build_config({}).eval.linear_probe_every_epochs == 1
    with pytest.raises(ValueError, match=r"eval\.linear_probe_every_epochs=0"):
        build_config({"eval": {"linear_probe_every_epochs": 0}})
    with pytest.raises(ValueError, match=r"eval\.linear_probe_weight_decay=0\.0"):
        build_config({"eval": {"linear_probe_weight_decay": 0.0}})
    assert names.VAL_LINEAR_TOP1 in names.ALL_METRICS


# ---- two gloo ranks --------------------------------------------------------------------------

WORLD = 2


class Blobs(Dataset):
    """``(embedding, label)`` rows: the same in every process (odd sizes pad a shard)."""

    def __init__(self, count: int, seed: int) -> None:
        self.x, self.labels = clusters(count, 5, 8, 2.5, seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index], int(self.labels[index])


def _rank_main(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        train = extract_features(
            torch.tanh, make_eval_loader(Blobs(201, 0), 16, rank=rank, world_size=WORLD), "cpu"
        )
        val = extract_features(
            torch.tanh, make_eval_loader(Blobs(99, 1), 16, rank=rank, world_size=WORLD), "cpu"
        )
        accuracy = linear_probe_top1(*train, *val, num_classes=5)
        np.save(Path(out_dir) / f"rank{rank}.npy", np.array(accuracy))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_one_process_value(tmp_path: Path) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned ranks
    mp.spawn(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    train, val = Blobs(201, 0), Blobs(99, 1)
    expected = linear_probe_top1(
        torch.tanh(train.x), train.labels, torch.tanh(val.x), val.labels, num_classes=5
    )
    assert 0.3 < expected < 1.0  # neither trivial nor chance: a wrong gather would show
    for rank in range(WORLD):
        assert float(np.load(tmp_path / f"rank{rank}.npy")) == expected


# ---- in the loop -----------------------------------------------------------------------------

TINY: dict[str, Any] = {
    "epochs": 1,
    "batch_size_per_worker": 16,
    "data": {"image_size": 16, "max_train_samples": 64, "max_val_samples": 48},
    "model": {"hidden_dim": 64, "embedding_dim": 32, "dino_out_dim": 64, "text_width": 32},
    "dino": {"num_local_crops": 2, "local_crop_size": 8},
    "eval": {"knn_k": 5},
}


@pytest.mark.parametrize("method", ["simclr", "clip", "dino"])
def test_every_method_reports_the_linear_probe(method: str) -> None:
    metrics = evaluate_untrained({**TINY, "method": method})
    assert 0.0 <= metrics[names.VAL_LINEAR_TOP1] <= 1.0


@pytest.mark.parametrize(("every_epochs", "probe_every_epochs"), [(1, 3), (3, 1)])
def test_the_probe_runs_at_evaluations_of_the_first_last_and_every_nth_epoch(
    monkeypatch: pytest.MonkeyPatch, every_epochs: int, probe_every_epochs: int
) -> None:
    calls: list[float] = []

    def counted(*args: Any, **kwargs: Any) -> float:
        calls.append(linear_probe_top1(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(linear_probe, "linear_probe_top1", counted)
    config = {**TINY, "method": "simclr", "epochs": 4}
    config["eval"] = {
        "knn_k": 5,
        "every_epochs": every_epochs,
        "linear_probe_every_epochs": probe_every_epochs,
    }
    reports = train_locally(config, device="cpu")
    # Probes at epochs 1, 3 and 4 either way (never outside an evaluation); epoch 2 repeats 1's.
    assert len(calls) == 3
    assert [r[names.VAL_LINEAR_TOP1] for r in reports] == [calls[0], calls[0], *calls[1:]]

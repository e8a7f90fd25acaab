"""The per-worker loop without Ray: config errors, batch split, LR schedule, the NaN and OOM
guards, checkpoints and exact resume (a run resumed from its epoch-1 checkpoint reports the same
metrics as the uninterrupted run)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from tauray_trainers import metrics as names
from tauray_trainers.checkpointing import TrainingState
from tauray_trainers.config import build_config, per_worker_batch_size
from tauray_trainers.distributed import state_divergence
from tauray_trainers.epoch import train_one_epoch
from tauray_trainers.failures import NonFiniteLossError, TrialOutOfMemoryError
from tauray_trainers.loop import LocalRuntime, run_worker, train_locally
from tauray_trainers.models import ContrastiveMethod, build_model
from tauray_trainers.models.checkpoint import CHECKPOINT_KEYS, read_checkpoint
from tauray_trainers.optimization import (
    Precision,
    WarmupCosine,
    build_optimizer,
    resolve_precision,
    scaled_learning_rate,
)
from tauray_trainers.temperature import FixedTemperature

# Small enough for seconds per epoch on one core, big enough to train.
TINY: dict[str, Any] = {
    "method": "simclr",
    "epochs": 3,
    "batch_size_per_worker": 16,
    "data": {"image_size": 16, "max_train_samples": 64, "max_val_samples": 48},
    "model": {"hidden_dim": 64, "embedding_dim": 32},
    "eval": {"knn_k": 5},
}


class Spec:
    channels = 1
    image_size = 16


# ---- config -------------------------------------------------------------------------------------


def test_unknown_config_key_fails_first_naming_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown config key 'optimizer\.learning_rate'") as info:
        run_worker({"optimizer": {"learning_rate": 0.1}}, LocalRuntime())
    assert "lr" in str(info.value) and "weight_decay" in str(info.value)


def test_global_batch_split_over_workers() -> None:
    assert per_worker_batch_size(build_config({"global_batch_size": 128}), 2) == 64
    assert per_worker_batch_size(build_config({"batch_size_per_worker": 24}), 4) == 24
    with pytest.raises(ValueError, match="global_batch_size=100 is not divisible by the 3"):
        per_worker_batch_size(build_config({"global_batch_size": 100}), 3)
    with pytest.raises(ValueError, match="leaves 1 sample"):
        per_worker_batch_size(build_config({"global_batch_size": 4}), 4)


def test_learning_rate_scaling_rules() -> None:
    def lr(rule: str, batch: int) -> float:
        config = build_config(
            {"optimizer": {"lr": 0.1, "lr_scaling": rule, "base_batch_size": 256}}
        )
        return scaled_learning_rate(config.optimizer, batch)

    assert lr("none", 1024) == pytest.approx(0.1)
    assert lr("linear", 1024) == pytest.approx(0.4)
    assert lr("sqrt", 1024) == pytest.approx(0.2)
    assert lr("linear", 128) == pytest.approx(0.05)


def test_warmup_cosine_multiplier() -> None:
    schedule = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(14) == pytest.approx(0.1)
    assert schedule(100) == pytest.approx(0.1)
    assert all(schedule(s) >= schedule(s + 1) for s in range(4, 20))
    with pytest.raises(ValueError, match="min_ratio"):
        WarmupCosine(1, 10, 1.5)


def test_optimizer_groups_and_per_step_schedule() -> None:
    config = build_config(
        {
            **TINY,
            "epochs": 2,
            "temperature": {"mode": "learnable", "value": 0.1, "lr_multiplier": 5.0},
            "optimizer": {
                "name": "sgd",
                "lr": 0.2,
                "momentum": 0.8,
                "warmup_epochs": 1.0,
                "lr_scaling": "linear",
                "base_batch_size": 16,
            },
        }
    )
    torch.manual_seed(0)
    method = build_model(config, Spec(), steps_per_epoch=4)
    optimizer, schedule = build_optimizer(method, config, global_batch_size=32, steps_per_epoch=4)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(group["momentum"] == 0.8 for group in optimizer.param_groups)
    tau_group = next(g for g in optimizer.param_groups if g.get("name") == "temperature")
    main_group = optimizer.param_groups[0]
    peak = 0.2 * 32 / 16  # linear scaling
    seen = []
    for _ in range(8):
        seen.append((main_group["lr"], tau_group["lr"]))
        optimizer.step()
        schedule.step()
    assert seen[0][0] == pytest.approx(peak / 4)  # warm-up step 1 of 4
    assert seen[3][0] == pytest.approx(peak)
    assert seen[7][0] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert all(tau == pytest.approx(5.0 * lr) for lr, tau in seen)
    assert tau_group["weight_decay"] == 0.0


def test_mixed_precision_only_on_gpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == Precision(None, False)
    assert resolve_precision("fp32", torch.device("cuda")) == Precision(None, False)
    assert resolve_precision("bf16", torch.device("cuda")) == Precision(torch.bfloat16, False)
    assert resolve_precision("fp16", torch.device("cuda")) == Precision(torch.float16, True)


# ---- guards -------------------------------------------------------------------------------------


class _Scripted(ContrastiveMethod):
    """A one-parameter method whose loss the test decides."""

    method_name: ClassVar[str] = "scripted"

    def __init__(self, make_loss: Any) -> None:
        super().__init__(FixedTemperature(0.05))
        self.weight = nn.Parameter(torch.ones(1))
        self.make_loss = make_loss

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tau = self.temperature(step)
        return self.make_loss(self.weight, step), {"temperature": tau}

    def image_encoder(self) -> nn.Module:
        return nn.Identity()


def _epoch(method: ContrastiveMethod, batches: int = 4, epoch: int = 2) -> TrainingState:
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _s: 1.0)
    state = TrainingState(global_step=10)
    loader = [(torch.zeros(2, 1),)] * batches
    train_one_epoch(
        method,
        optimizer,
        schedule,
        loader,
        epoch=epoch,
        state=state,
        precision=Precision(None, False),
        grad_scaler=None,
        grad_clip_norm=1.0,
        device=torch.device("cpu"),
        world_size=1,
        batch_size=2,
    )
    return state


def test_non_finite_loss_names_the_step_and_the_temperature() -> None:
    def loss(weight: torch.Tensor, step: int) -> torch.Tensor:
        return weight.sum() * (float("nan") if step == 12 else 1.0)

    with pytest.raises(NonFiniteLossError) as info:
        _epoch(_Scripted(loss))
    error = info.value
    assert isinstance(error, ValueError)
    assert "at step 12 (epoch 2)" in str(error) and "temperature 0.05" in str(error)
    assert (error.step, error.epoch, error.temperature) == (12, 2, pytest.approx(0.05))
    # Ray ships worker errors pickled: the error must survive the trip intact.
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.step == 12


def test_out_of_memory_becomes_a_trial_error_with_the_batch_size() -> None:
    def loss(weight: torch.Tensor, step: int) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(TrialOutOfMemoryError) as info:
        _epoch(_Scripted(loss))
    error = info.value
    assert error.batch_size_per_worker == 2 and error.global_batch_size == 2
    assert "out of memory" in str(error) and "batch_size_per_worker=2" in str(error)
    assert isinstance(error.__cause__, torch.OutOfMemoryError)
    assert pickle.loads(pickle.dumps(error)).batch_size_per_worker == 2


def test_a_cuda_out_of_memory_runtime_error_is_out_of_memory_too() -> None:
    def loss(weight: torch.Tensor, step: int) -> torch.Tensor:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(TrialOutOfMemoryError) as info:
        _epoch(_Scripted(loss))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_other_runtime_errors_pass_through_unchanged() -> None:
    def loss(weight: torch.Tensor, step: int) -> torch.Tensor:
        raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(RuntimeError, match="device-side assert") as info:
        _epoch(_Scripted(loss))
    assert not isinstance(info.value, TrialOutOfMemoryError)


def test_the_step_hook_runs_before_every_step() -> None:
    calls: list[tuple[int, int]] = []
    method = _Scripted(lambda weight, step: weight.sum())
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _s: 1.0)
    train_one_epoch(
        method,
        optimizer,
        schedule,
        [(torch.zeros(2, 1),)] * 3,
        epoch=5,
        state=TrainingState(),
        precision=Precision(None, False),
        grad_scaler=None,
        grad_clip_norm=None,
        device=torch.device("cpu"),
        world_size=1,
        batch_size=2,
        before_step=lambda epoch, step: calls.append((epoch, step)),
    )
    assert calls == [(5, 0), (5, 1), (5, 2)]


def test_steps_advance_the_state_and_clip_gradients() -> None:
    def loss(weight: torch.Tensor, step: int) -> torch.Tensor:
        return 1000.0 * weight.sum()

    method = _Scripted(loss)
    state = _epoch(method, batches=3)
    assert state.global_step == 13
    # grad 1000 clipped to norm 1: three SGD steps of lr 0.1 move the weight by 0.3.
    assert float(method.weight.detach()) == pytest.approx(0.7)


def test_state_divergence_is_zero_in_one_process() -> None:
    torch.manual_seed(0)
    method = build_model(build_config(TINY), Spec(), steps_per_epoch=1)
    assert state_divergence(method) == 0.0


# ---- checkpoints and resume ---------------------------------------------------------------------


# Everything except wall-clock measurements must match between the two runs.
_TIMED = (names.PERF_SAMPLES_PER_SECOND, "cost/worker_seconds", "cost/cpu_seconds")


def _comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in _TIMED}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("uninterrupted")
    config = {
        **TINY,
        "temperature": {"mode": "scheduled", "schedule": "cosine", "min": 0.1, "max": 0.5},
    }
    reports = train_locally(config, device="cpu", checkpoint_root=root)
    return reports, root


def test_reports_every_epoch_with_the_metric_names(uninterrupted: tuple[list[dict], Path]) -> None:
    reports, root = uninterrupted
    assert [r[names.EPOCH] for r in reports] == [1, 2, 3]
    for key in (
        names.TRAIN_LOSS,
        names.TRAIN_TEMPERATURE,
        names.TRAIN_TEMPERATURE_AT_BOUND,
        names.TRAIN_LR,
        names.VAL_KNN_TOP1,
        names.VAL_LINEAR_TOP1,
        names.VAL_ALIGNMENT,
        names.VAL_UNIFORMITY,
        names.PERF_SAMPLES_PER_SECOND,
        names.COST_WORKER_SECONDS,
        names.COST_CPU_SECONDS,
        names.COST_SAMPLES_SEEN,
    ):
        assert all(math.isfinite(r[key]) for r in reports), key
    # 64 samples / batch 16 = 4 steps per epoch; τ follows the cosine schedule, not a constant.
    assert [r[names.GLOBAL_STEP] for r in reports] == [4, 8, 12]
    assert [r[names.COST_SAMPLES_SEEN] for r in reports] == [64, 128, 192]
    assert reports[0][names.TRAIN_TEMPERATURE] != reports[1][names.TRAIN_TEMPERATURE]
    # train/lr is the rate of each epoch's last step (warm-up over the first epoch, then cosine).
    schedule = WarmupCosine(warmup_steps=4, total_steps=12)
    assert [r[names.TRAIN_LR] for r in reports] == pytest.approx(
        [1e-3 * schedule(s) for s in (3, 7, 11)]
    )
    # No GPU reserved: no GPU-seconds column of zeros; no bare "step" beside MLflow's own axis.
    assert all(names.COST_GPU_SECONDS not in r and "step" not in r for r in reports)
    assert reports[1][names.COST_WORKER_SECONDS] > reports[0][names.COST_WORKER_SECONDS]
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint_epoch_0001",
        "checkpoint_epoch_0002",
        "checkpoint_epoch_0003",
    ]


def test_checkpoint_holds_the_documented_state(uninterrupted: tuple[list[dict], Path]) -> None:
    _, root = uninterrupted
    saved = read_checkpoint(root / "checkpoint_epoch_0002")
    assert set(saved) == set(CHECKPOINT_KEYS)
    assert saved["epoch"] == 2 and saved["global_step"] == 8 and saved["sampler_epoch"] == 2
    assert saved["optimizer"]["state"], "optimizer moments are saved"
    assert saved["lr_schedule"]["last_epoch"] == 8
    assert int(saved["temperature"]["last_step"]) == 7
    assert saved["cost"]["samples_seen"] == 128
    assert (root / "checkpoint_epoch_0002" / "metrics.json").is_file()


def test_resume_continues_exactly(uninterrupted: tuple[list[dict], Path], tmp_path: Path) -> None:
    reports, root = uninterrupted
    config = {
        **TINY,
        "temperature": {"mode": "scheduled", "schedule": "cosine", "min": 0.1, "max": 0.5},
    }
    resumed = train_locally(
        config, device="cpu", checkpoint_root=tmp_path, resume_from=root / "checkpoint_epoch_0001"
    )
    assert [r[names.EPOCH] for r in resumed] == [2, 3]
    for before, after in zip(reports[1:], resumed, strict=True):
        expected = _comparable(before)
        actual = _comparable(after)
        assert actual.keys() == expected.keys()
        for key, value in expected.items():
            assert actual[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    # Cost counters continue from the checkpoint instead of restarting at zero.
    assert resumed[0][names.COST_WORKER_SECONDS] > reports[0][names.COST_WORKER_SECONDS]
    first = read_checkpoint(root / "checkpoint_epoch_0003")["model"]
    second = read_checkpoint(tmp_path / "checkpoint_epoch_0003")["model"]
    for key, value in first.items():
        assert torch.allclose(second[key].float(), value.float(), atol=1e-6), key


def test_resume_refuses_another_method(
    uninterrupted: tuple[list[dict], Path], tmp_path: Path
) -> None:
    _, root = uninterrupted
    other = {**TINY, "method": "dino", "model": {"dino_out_dim": 16, "hidden_dim": 32}}
    with pytest.raises(ValueError, match="is a simclr run, this run is dino"):
        train_locally(other, device="cpu", resume_from=root / "checkpoint_epoch_0001")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_gpu(precision: str, tmp_path: Path) -> None:
    config = {**TINY, "epochs": 2, "method": "clip", "precision": precision}
    reports = train_locally(config, device="cuda", checkpoint_root=tmp_path)
    assert all(math.isfinite(r[names.TRAIN_LOSS]) for r in reports)
    assert reports[-1][names.COST_GPU_SECONDS] > 0
    saved = read_checkpoint(tmp_path / "checkpoint_epoch_0002")
    assert (saved["grad_scaler"] is not None) == (precision == "fp16")

"""Distributed parity of every loss on 1, 2 and 3 gloo ranks started with spawn.

Three ranks are spawned once for the module and run every case in process groups of 3, 2 and 1
rank(s); each rank writes its results as numpy arrays. The main process compares them with the
same loss on the whole batch in one process (itself checked against naive references in
test_losses.py):

(a) mean over ranks of the returned loss = single-process loss;
(b) gradient of each rank's local embeddings = W x the single-process gradient of those rows;
(c) temperature (and SigLIP bias) gradient averaged over ranks = single-process gradient.

Shards are equal in some cases and unequal in others (the loss must not assume drop_last), and
some cases make the gather's backward reduce-scatter in many small pieces.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tauray_trainers import distributed
from tauray_trainers.losses import ClipLoss, DINOLoss, NTXentLoss, SigLipLoss

DIM = 6
DINO_DIM = 10
DINO_STUDENT_CROPS = 4


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    loss: str  # clip | ntxent | siglip | dino
    sizes_by_world: dict[int, tuple[int, ...]]
    tau: float
    chunk_size: int | None = None
    bias: float = 0.0
    # Bytes per reduce-scatter call in the gather's backward (None: the default).
    piece_bytes: int | None = None
    grouped: bool = False  # positives are the pairs that share a group id (UniCL)


EQUAL = {1: (8,), 2: (4, 4), 3: (3, 3, 3)}
UNEQUAL = {1: (7,), 2: (3, 5), 3: (2, 5, 3)}

CASES = [
    *(Case(f"clip-tau{t}", "clip", EQUAL, t) for t in (0.01, 0.07, 1.0)),
    Case("clip-uneven", "clip", UNEQUAL, 0.1),
    *(Case(f"clip-tiled{k}", "clip", EQUAL, 0.05, chunk_size=k) for k in (1, 3)),
    Case("clip-tiled-uneven", "clip", UNEQUAL, 0.3, chunk_size=4),
    Case("clip-tiled-uneven-pieces", "clip", UNEQUAL, 0.3, chunk_size=2, piece_bytes=1),
    *(Case(f"ntxent-tau{t}", "ntxent", EQUAL, t) for t in (0.01, 0.5)),
    Case("ntxent-uneven", "ntxent", UNEQUAL, 0.2),
    Case("ntxent-tiled", "ntxent", EQUAL, 0.07, chunk_size=5),
    Case("ntxent-tiled-uneven", "ntxent", UNEQUAL, 1.0, chunk_size=2),
    Case("ntxent-uneven-pieces", "ntxent", UNEQUAL, 0.2, piece_bytes=400),
    Case("clip-grouped", "clip", EQUAL, 0.07, grouped=True),
    Case("clip-grouped-tiled-uneven", "clip", UNEQUAL, 0.2, chunk_size=2, grouped=True),
    Case("siglip", "siglip", EQUAL, 0.1, bias=-10.0),
    Case("siglip-uneven", "siglip", UNEQUAL, 0.01, bias=1.5),
    Case("siglip-grouped-uneven", "siglip", UNEQUAL, 0.1, bias=-2.0, grouped=True),
    Case("dino", "dino", EQUAL, 0.1),
    Case("dino-uneven", "dino", UNEQUAL, 0.3),
]


def global_inputs(case: Case, total: int) -> list[torch.Tensor]:
    """The whole batch of a case, identical in every process (seeded, float64; grouped cases
    end with int64 group ids, three groups spread over the ranks)."""
    generator = torch.Generator().manual_seed(sum(map(ord, case.name)))
    if case.loss == "dino":
        count, dim = DINO_STUDENT_CROPS + 2, DINO_DIM  # student crops, then teacher crops
    else:
        count, dim = 2, DIM
    inputs = [
        torch.randn(total, dim, generator=generator, dtype=torch.float64) for _ in range(count)
    ]
    if case.grouped:
        inputs.append(torch.randint(0, 3, (total,), generator=generator))
    return inputs


def run_case(case: Case, inputs: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Loss and gradients of one case on the given rows (the shard, or the whole batch)."""
    default_piece_bytes = distributed.REDUCE_SCATTER_PIECE_BYTES
    if case.piece_bytes is not None:
        distributed.REDUCE_SCATTER_PIECE_BYTES = case.piece_bytes
    try:
        return _run_case(case, inputs)
    finally:
        distributed.REDUCE_SCATTER_PIECE_BYTES = default_piece_bytes


def _run_case(case: Case, inputs: list[torch.Tensor]) -> dict[str, np.ndarray]:
    groups = inputs[-1] if case.grouped else None
    leaves = [x.clone().requires_grad_() for x in inputs if x.is_floating_point()]
    tau = torch.tensor(case.tau, dtype=torch.float64, requires_grad=True)
    extra: dict[str, torch.Tensor] = {}
    if case.loss == "clip":
        loss = ClipLoss(case.chunk_size)(leaves[0], leaves[1], temperature=tau, groups=groups)
    elif case.loss == "ntxent":
        loss = NTXentLoss(case.chunk_size)(leaves[0], leaves[1], temperature=tau)
    elif case.loss == "siglip":
        extra["bias"] = torch.tensor(case.bias, dtype=torch.float64, requires_grad=True)
        loss = SigLipLoss()(
            leaves[0], leaves[1], temperature=tau, bias=extra["bias"], groups=groups
        )
    else:
        dino = DINOLoss(DINO_DIM, center_momentum=0.8).double()
        dino.center.copy_(torch.linspace(-1, 1, DINO_DIM, dtype=torch.float64)[None, :])
        students, teachers = leaves[:DINO_STUDENT_CROPS], leaves[DINO_STUDENT_CROPS:]
        loss = dino(students, teachers, student_temperature=tau, teacher_temperature=0.05)
    loss.backward()
    result = {
        "loss": loss.detach().numpy(),
        "tau_grad": tau.grad.numpy(),
        **{f"grad{i}": leaf.grad.numpy() for i, leaf in enumerate(leaves) if leaf.grad is not None},
        **{f"{k}_grad": v.grad.numpy() for k, v in extra.items()},
    }
    if case.loss == "dino":
        result["center"] = dino.center.numpy()
    return {k: np.array(v, copy=True) for k, v in result.items()}


def exchange_checks(rank: int, world: int) -> dict[str, np.ndarray]:
    """distributed.py directly: gathers in rank order with uneven shards, sums, means."""
    rows = rank + 1
    ints = torch.arange(rows, dtype=torch.int64) + 10 * rank
    x = torch.full((rows, 2), float(rank + 1), dtype=torch.float64, requires_grad=True)
    gathered = distributed.all_gather_with_grad(x)
    # Rank r weights the gathered rows by (r + 1): x's gradient must be the sum over ranks.
    (gathered * (rank + 1)).sum().backward()
    return {
        "ints": distributed.gather_no_grad(ints).numpy(),
        "gathered": gathered.detach().numpy(),
        "x_grad": x.grad.numpy(),
        "sum": distributed.all_reduce_sum(torch.tensor([rank + 1.0])).numpy(),
        "mean": distributed.all_reduce_mean(torch.tensor([rank + 1.0])).numpy(),
        "world": np.array(distributed.world_size()),
        "rank": np.array(distributed.rank()),
    }


WORLD_SIZES = (3, 2, 1)


def worker(rank: int, out_dir: str) -> None:
    """Run every case in process groups of 3, then 2, then 1 rank(s), reusing the processes.

    Starting a process (importing torch) is what costs on a small machine, so the three ranks
    are spawned once; rank r takes part in every world of size > r, each with a fresh gloo
    process group.
    """
    torch.set_num_threads(1)
    for world in WORLD_SIZES:
        if rank >= world:
            continue
        store = Path(out_dir) / f"store{world}"
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        try:
            results: dict[str, np.ndarray] = {}
            for case in CASES:
                sizes = case.sizes_by_world[world]
                start = sum(sizes[:rank])
                inputs = global_inputs(case, sum(sizes))
                shard = [x[start : start + sizes[rank]] for x in inputs]
                for key, value in run_case(case, shard).items():
                    results[f"{case.name}/{key}"] = value
            for key, value in exchange_checks(rank, world).items():
                results[f"exchange/{key}"] = value
            np.savez(Path(out_dir) / f"world{world}_rank{rank}.npz", **results)
        finally:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("ranks")
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned ranks
    try:
        mp.spawn(worker, args=(str(out_dir),), nprocs=max(WORLD_SIZES), join=True)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    return out_dir


@pytest.fixture(params=sorted(WORLD_SIZES), ids=lambda w: f"world{w}")
def ranks(request: pytest.FixtureRequest, spawned: Path) -> Any:
    world = request.param
    loaded = []
    for rank in range(world):
        with np.load(spawned / f"world{world}_rank{rank}.npz") as data:
            loaded.append({k: data[k] for k in data.files})
    return world, loaded


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_distributed_parity(ranks: Any, case: Case) -> None:
    world, per_rank = ranks
    sizes = case.sizes_by_world[world]
    full = run_case(case, global_inputs(case, sum(sizes)))
    results = [
        {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith(case.name + "/")}
        for r in per_rank
    ]

    # (a) the mean over ranks of the returned loss is the single-process loss.
    close(np.mean([r["loss"] for r in results]), full["loss"])
    # (b) each rank's embedding gradient is W times the single-process gradient of its rows.
    grad_keys = sorted(k for k in full if k.startswith("grad"))
    assert grad_keys, "the single-process run produced no embedding gradients"
    for rank, result in enumerate(results):
        start = sum(sizes[:rank])
        for key in grad_keys:
            close(result[key], world * full[key][start : start + sizes[rank]])
    # (c) the temperature (and bias) gradients averaged over ranks are the single-process ones.
    for key in ("tau_grad", "bias_grad"):
        if key in full:
            close(np.mean([r[key] for r in results]), full[key])
    if case.loss == "dino":
        for result in results:  # identical on every rank, and equal to one process's update
            np.testing.assert_array_equal(result["center"], results[0]["center"])
        close(results[0]["center"], full["center"])


def test_exchange_primitives(ranks: Any) -> None:
    world, per_rank = ranks
    expected_ints = np.concatenate([np.arange(r + 1) + 10 * r for r in range(world)])
    expected_rows = np.concatenate([np.full((r + 1, 2), r + 1.0) for r in range(world)])
    weight_sum = world * (world + 1) / 2
    for rank, result in enumerate(per_rank):
        data = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("exchange/")}
        assert int(data["world"]) == world and int(data["rank"]) == rank
        np.testing.assert_array_equal(data["ints"], expected_ints)
        np.testing.assert_array_equal(data["gathered"], expected_rows)
        np.testing.assert_array_equal(data["x_grad"], np.full((rank + 1, 2), weight_sum))
        np.testing.assert_array_equal(data["sum"], [weight_sum])
        np.testing.assert_allclose(data["mean"], [weight_sum / world])


def test_without_process_group_is_single_process() -> None:
    assert not dist.is_initialized()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert not distributed.is_distributed()
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    assert torch.equal(distributed.gather_no_grad(x), x.detach())
    assert distributed.gather_sizes(3) == [3]
    assert torch.equal(distributed.all_reduce_mean(x.detach()), x.detach())
    with pytest.raises(TypeError, match="floating point"):
        distributed.all_reduce_mean(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at least one dimension"):
        distributed.gather_no_grad(torch.tensor(1.0))
    with pytest.raises(ValueError, match="local_size must be >= 0, got -1"):
        distributed.gather_sizes(-1)

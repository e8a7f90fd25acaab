"""Single-process loss parity: every loss against a naive float64 reference written here.

The references use explicit exp/log/sum formulas (no log-softmax, no cross_entropy, nothing from
tauray_trainers) over several temperatures, batch sizes and dimensions, forward and backward;
the tiled InfoNCE path must equal the untiled one.
"""

from __future__ import annotations

import math

import pytest
import torch

from tauray_trainers.losses import (
    ClipLoss,
    DINOLoss,
    NTXentLoss,
    SigLipLoss,
    logsumexp_rows_and_columns,
)
from tauray_trainers.losses._checks import NORM_EPS, normalize_rows

TEMPERATURES = [0.01, 0.07, 0.5, 1.0]
SHAPES = [(1, 3), (5, 3), (16, 32), (33, 7)]


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True))


def naive_clip(a: torch.Tensor, b: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Mean of the image→text and text→image cross-entropies, written out."""
    logits = unit_rows(a) @ unit_rows(b).T / tau
    n = logits.shape[0]
    image_to_text = sum(-logits[i, i] + torch.log(torch.exp(logits[i, :]).sum()) for i in range(n))
    text_to_image = sum(-logits[j, j] + torch.log(torch.exp(logits[:, j]).sum()) for j in range(n))
    return (image_to_text / n + text_to_image / n) / 2


def naive_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """SimCLR's NT-Xent: 2N views, each against its positive over all other 2N-1 views."""
    views = unit_rows(torch.cat([z_a, z_b]))
    n = z_a.shape[0]
    logits = views @ views.T / tau
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(torch.exp(logits[i, k]) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(logits[i, positive]) / denominator)
    return total / (2 * n)


def naive_siglip(
    a: torch.Tensor, b: torch.Tensor, tau: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    logits = unit_rows(a) @ unit_rows(b).T / tau + bias
    labels = 2 * torch.eye(a.shape[0], dtype=a.dtype) - 1
    return -torch.log(1 / (1 + torch.exp(-labels * logits))).sum() / a.shape[0]


def naive_dino(
    students: list[torch.Tensor],
    teachers: list[torch.Tensor],
    center: torch.Tensor,
    tau_s: torch.Tensor,
    tau_t: float,
) -> torch.Tensor:
    def softmax(x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x - x.max(dim=1, keepdim=True).values)
        return e / e.sum(dim=1, keepdim=True)

    total, pairs = 0.0, 0
    for q, teacher in enumerate(teachers):
        target = softmax((teacher.detach() - center) / tau_t)
        for v, student in enumerate(students):
            if v == q:
                continue
            log_prob = torch.log(softmax(student / tau_s))
            total = total + (-(target * log_prob).sum(dim=1)).mean()
            pairs += 1
    return total / pairs


def make(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).requires_grad_()


def grads(value: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, inputs))


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("tau_value", TEMPERATURES)
@pytest.mark.parametrize(("n", "dim"), SHAPES)
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_clip_matches_naive_reference(
    tau_value: float, n: int, dim: int, chunk_size: int | None
) -> None:
    a, b = make(n, dim, seed=1, scale=3.0), make(n, dim, seed=2)
    tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
    loss = ClipLoss(chunk_size)(a, b, temperature=tau)
    reference = naive_clip(a, b, tau)
    assert_close(loss, reference)
    for got, want in zip(grads(loss, [a, b, tau]), grads(reference, [a, b, tau]), strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("tau_value", TEMPERATURES)
@pytest.mark.parametrize(("n", "dim"), SHAPES)
@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_ntxent_matches_naive_reference(
    tau_value: float, n: int, dim: int, chunk_size: int | None
) -> None:
    z_a, z_b = make(n, dim, seed=3), make(n, dim, seed=4, scale=0.2)
    tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
    loss = NTXentLoss(chunk_size)(z_a, z_b, temperature=tau)
    reference = naive_ntxent(z_a, z_b, tau)
    assert_close(loss, reference)
    for got, want in zip(
        grads(loss, [z_a, z_b, tau]), grads(reference, [z_a, z_b, tau]), strict=True
    ):
        assert_close(got, want)


@pytest.mark.parametrize("tau_value", TEMPERATURES)
@pytest.mark.parametrize(("n", "dim"), SHAPES)
@pytest.mark.parametrize("bias_value", [-10.0, 0.0, 2.5])
def test_siglip_matches_naive_reference(
    tau_value: float, n: int, dim: int, bias_value: float
) -> None:
    a, b = make(n, dim, seed=5), make(n, dim, seed=6, scale=4.0)
    tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(bias_value, dtype=torch.float64, requires_grad=True)
    loss = SigLipLoss()(a, b, temperature=tau, bias=bias)
    reference = naive_siglip(a, b, tau, bias)
    assert_close(loss, reference)
    inputs = [a, b, tau, bias]
    for got, want in zip(grads(loss, inputs), grads(reference, inputs), strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("tau_s_value", [0.1, 0.5])
@pytest.mark.parametrize("tau_t", [0.04, 0.07])
@pytest.mark.parametrize(("n", "out_dim", "local_crops"), [(1, 4, 0), (6, 9, 2), (3, 32, 4)])
def test_dino_matches_naive_reference(
    tau_s_value: float, tau_t: float, n: int, out_dim: int, local_crops: int
) -> None:
    teachers = [make(n, out_dim, seed=10 + i, scale=2.0) for i in range(2)]
    students = [make(n, out_dim, seed=20 + i) for i in range(2 + local_crops)]
    tau_s = torch.tensor(tau_s_value, dtype=torch.float64, requires_grad=True)
    loss_fn = DINOLoss(out_dim, center_momentum=0.9).double()
    loss_fn.center.copy_(torch.linspace(-0.5, 0.5, out_dim, dtype=torch.float64)[None, :])
    center_before = loss_fn.center.clone()
    loss = loss_fn(students, teachers, student_temperature=tau_s, teacher_temperature=tau_t)
    reference = naive_dino(students, teachers, center_before, tau_s, tau_t)
    assert_close(loss, reference)
    inputs = [*students, tau_s]
    for got, want in zip(grads(loss, inputs), grads(reference, inputs), strict=True):
        assert_close(got, want)
    # Center: EMA of the teachers' batch mean, taken after the loss used the old center.
    batch_mean = torch.cat([t.detach() for t in teachers]).mean(dim=0, keepdim=True)
    assert_close(loss_fn.center, 0.9 * center_before + 0.1 * batch_mean)


def test_dino_teacher_gets_no_gradient_and_eval_keeps_center() -> None:
    teachers = [make(4, 6, seed=i) for i in range(2)]
    students = [make(4, 6, seed=5 + i) for i in range(3)]
    loss_fn = DINOLoss(6).double()
    loss = loss_fn(students, teachers, student_temperature=0.1, teacher_temperature=0.04)
    loss.backward()
    assert all(t.grad is None for t in teachers)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)
    moved = loss_fn.center.clone()
    assert moved.abs().sum() > 0
    loss_fn.eval()
    loss_fn(students, teachers, student_temperature=0.1, teacher_temperature=0.04)
    assert torch.equal(loss_fn.center, moved)
    state = loss_fn.state_dict()
    assert set(state) == {"center"} and torch.equal(state["center"], moved)
    restored = DINOLoss(6).double()
    restored.load_state_dict(state)
    assert torch.equal(restored.center, moved)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 8, 50])
def test_tiled_equals_untiled_rows_and_columns(chunk_size: int) -> None:
    queries, keys = make(5, 4, seed=30, scale=3.0), make(8, 4, seed=31, scale=3.0)
    for self_offset in (None, 2):
        plain_rows, plain_cols = logsumexp_rows_and_columns(
            queries, keys, None, self_offset=self_offset, with_columns=True
        )
        tiled_rows, tiled_cols = logsumexp_rows_and_columns(
            queries, keys, chunk_size, self_offset=self_offset, with_columns=True
        )
        assert plain_cols is not None and tiled_cols is not None
        assert_close(tiled_rows, plain_rows)
        assert_close(tiled_cols, plain_cols)
        weights_r = torch.linspace(-1, 2, 5, dtype=torch.float64)
        weights_c = torch.linspace(1, -3, 8, dtype=torch.float64)
        plain = (plain_rows * weights_r).sum() + (plain_cols * weights_c).sum()
        tiled = (tiled_rows * weights_r).sum() + (tiled_cols * weights_c).sum()
        for got, want in zip(
            grads(tiled, [queries, keys]), grads(plain, [queries, keys]), strict=True
        ):
            assert_close(got, want)


def test_tiled_backward_passes_gradcheck() -> None:
    a, b = make(5, 3, seed=40), make(5, 3, seed=41)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, t: ClipLoss(2)(x, y, temperature=t), (a, b, tau))
    assert torch.autograd.gradcheck(lambda x, y, t: NTXentLoss(3)(x, y, temperature=t), (a, b, tau))
    rows_only = lambda q, k: logsumexp_rows_and_columns(q, k, 2)[0]  # noqa: E731
    assert torch.autograd.gradcheck(rows_only, (a, b))


@pytest.mark.parametrize("cls", [ClipLoss, NTXentLoss])
@pytest.mark.parametrize("which", ["first", "second", "both"])
def test_tiled_gradients_with_a_float_temperature_and_one_input_requiring_grad(
    cls: type[torch.nn.Module], which: str
) -> None:
    """The tiled backward skips the gradients nobody asked for and still matches untiled."""
    first, second = make(11, 6, seed=60, scale=2.0), make(11, 6, seed=61)
    wanted = {"first": [first], "second": [second], "both": [first, second]}[which]
    for x in (first, second):
        x.requires_grad_(any(x is w for w in wanted))
    tiled = cls(chunk_size=4)(first, second, temperature=0.15)
    plain = cls()(first, second, temperature=0.15)
    assert_close(tiled, plain)
    for got, want in zip(grads(tiled, wanted), grads(plain, wanted), strict=True):
        assert_close(got, want)


def test_normalize_rows_matches_functional_normalize_including_tiny_rows() -> None:
    x = make(6, 4, seed=70)
    with torch.no_grad():
        x[1] = 0.0  # a zero row: the norm is clamped at eps
        x[2] *= 1e-14  # below eps: the norm is the constant eps
    x2 = x.detach().clone().requires_grad_()
    weights = torch.linspace(-2, 3, 24, dtype=torch.float64).reshape(6, 4)
    ours = normalize_rows(x)
    reference = torch.nn.functional.normalize(x2, dim=1, eps=NORM_EPS)
    assert_close(ours, reference)
    assert_close(grads((ours * weights).sum(), [x])[0], grads((reference * weights).sum(), [x2])[0])


def test_readme_two_by_two_example() -> None:
    """[1,0]/[0,1] pairs at τ = 1: each direction -log(e/(e+1)) ≈ 0.313, the mean too."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = ClipLoss()(images, images.clone(), temperature=1.0)
    expected = -math.log(math.e / (math.e + 1))
    assert abs(loss.item() - expected) < 1e-6
    assert round(loss.item(), 3) == 0.313


def test_losses_use_cosine_similarity_and_accept_float_temperature() -> None:
    a, b = make(6, 5, seed=50), make(6, 5, seed=51)
    tau = torch.tensor(0.2, dtype=torch.float64)
    for loss_fn in (ClipLoss(), ClipLoss(4), NTXentLoss(), NTXentLoss(4)):
        reference = loss_fn(a, b, temperature=tau)
        assert_close(loss_fn(a * 7.0, b * 0.01, temperature=0.2), reference)
    assert_close(
        SigLipLoss()(a * 5, b, temperature=0.2, bias=-1.0),
        SigLipLoss()(a, b, temperature=tau, bias=torch.tensor(-1.0, dtype=torch.float64)),
    )


def test_half_precision_inputs_compute_in_float32() -> None:
    a = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    b = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    for loss_fn in (ClipLoss(), ClipLoss(3), NTXentLoss(2), SigLipLoss()):
        half = loss_fn(a.bfloat16(), b.bfloat16(), temperature=0.1)
        full = loss_fn(a.bfloat16().float(), b.bfloat16().float(), temperature=0.1)
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, full)


@pytest.mark.parametrize("loss_fn", [ClipLoss(), NTXentLoss(chunk_size=2), SigLipLoss()])
def test_pair_losses_reject_bad_input(loss_fn: torch.nn.Module) -> None:
    good = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3\) and \(5, 3\)"):
        loss_fn(good, torch.randn(5, 3), temperature=0.1)
    with pytest.raises(ValueError, match=r"shape \(batch >= 1, dim >= 1\), got \(4,\)"):
        loss_fn(torch.randn(4), torch.randn(4), temperature=0.1)
    with pytest.raises(ValueError, match=r"got \(0, 3\)"):
        loss_fn(torch.randn(0, 3), torch.randn(0, 3), temperature=0.1)
    with pytest.raises(TypeError, match="floating point"):
        loss_fn(torch.ones(4, 3, dtype=torch.int64), good, temperature=0.1)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        loss_fn([[1.0, 2.0]], good, temperature=0.1)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=rf"temperature must be a finite number > 0, got {bad}"
        ):
            loss_fn(good, good, temperature=bad)
    with pytest.raises(ValueError, match=r"temperature must be a float or a 0-dim tensor"):
        loss_fn(good, good, temperature=torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match="temperature must be a float"):
        loss_fn(good, good, temperature="0.1")


def test_constructors_reject_bad_arguments() -> None:
    for cls in (ClipLoss, NTXentLoss):
        with pytest.raises(ValueError, match=r"chunk_size must be >= 1.*got 0"):
            cls(chunk_size=0)
        with pytest.raises(TypeError, match=r"chunk_size must be an int >= 1 or None, got 2.5"):
            cls(chunk_size=2.5)
    with pytest.raises(ValueError, match=r"bias must be a finite number, got nan"):
        SigLipLoss()(torch.randn(2, 2), torch.randn(2, 2), temperature=0.1, bias=float("nan"))
    with pytest.raises(ValueError, match=r"out_dim must be an int >= 1, got 0"):
        DINOLoss(0)
    with pytest.raises(ValueError, match=r"center_momentum must lie in \[0, 1\), got 1.0"):
        DINOLoss(4, center_momentum=1.0)


def test_dino_rejects_bad_crops() -> None:
    loss_fn = DINOLoss(4)
    crop = torch.randn(3, 4)
    with pytest.raises(TypeError, match="non-empty list"):
        loss_fn(crop, [crop], student_temperature=0.1, teacher_temperature=0.04)
    with pytest.raises(TypeError, match="non-empty list"):
        loss_fn([crop, crop], [], student_temperature=0.1, teacher_temperature=0.04)
    with pytest.raises(ValueError, match=r"teacher_outputs\[1\] must have shape .*out_dim=4"):
        loss_fn([crop, crop], [crop, torch.randn(3, 5)], 0.1, 0.04)
    with pytest.raises(ValueError, match=r"student_outputs\[1\] has 2 rows"):
        loss_fn([crop, torch.randn(2, 4)], [crop], 0.1, 0.04)
    with pytest.raises(ValueError, match="at least one"):
        loss_fn([crop], [crop], 0.1, 0.04)
    with pytest.raises(ValueError, match=r"teacher_temperature must be a finite number > 0"):
        loss_fn([crop, crop], [crop], 0.1, 0.0)
    with pytest.raises(ValueError, match=r"student_temperature must be a finite number > 0"):
        loss_fn([crop, crop], [crop], -1.0, 0.04)
    assert torch.equal(loss_fn.center, torch.zeros(1, 4))  # nothing ran, nothing moved

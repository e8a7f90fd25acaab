"""Linear-probe accuracy: a logistic-regression head on frozen embeddings.

The standard evaluation of self-supervised and contrastive representations beside kNN (Chen et
al. 2020, SimCLR; Radford et al. 2021, CLIP, whose probe is an L-BFGS logistic regression): a
multinomial logistic regression is fitted on the frozen embeddings of the training split and
scored on the validation split. The loop feeds it the same gathered embeddings as
:func:`~tauray_trainers.evaluation.knn_top1` (:func:`~tauray_trainers.evaluation.
extract_features`: every rank's shard, in dataset order, on every rank), so it costs no extra
forward pass, and every rank computes the same number.

The fit is exact, not stochastic: features are standardised with the training split's mean and
standard deviation, the weights start at zero, and full-batch L-BFGS with a strong-Wolfe line
search minimises the mean cross-entropy plus ``weight_decay / 2 * ||W||^2`` (bias not decayed),
a strictly convex problem with one minimum, in float64. Nothing is random, so the accuracy is a
function of the embeddings alone (which the run's seed determines).

Why torch L-BFGS rather than scikit-learn's ``LogisticRegression(solver="lbfgs")``, which solves
the same problem: it runs on the rank's device (no copy of a large training split to the host),
adds no dependency to the trainer, and is as exact: on the embeddings below both give the same
validation accuracy at every regularisation tried (λ 1e-5 to 1e-2), in comparable time (0.8-2.4 s
against 0.6-6.8 s, under load). Float64 with ``tolerance_grad=1e-6`` gives the same accuracy as
a 1e-9 tolerance in 222 instead of 320 function evaluations.

Cost, measured on this 2-core machine while another benchmark kept it loaded (load average
6-7), SimCLR with the default config on the cluttered digits (1,438 training and 359 validation
embeddings, D=128, 10 classes), epochs 1-4: the probe took 1.3, 0.7, 0.4 and 0.4 s against
24, 12, 15 and 9 s of training (2.7-5.7% of an epoch's training, about a sixth of the
evaluation that extracts the embeddings). Cheap enough to run at every evaluation by default
(``eval.linear_probe_every_epochs=1``); the metric scored 0.63-0.74 where ``val/knn_top1``
scored 0.16-0.31 on the same embeddings. Regularisation: λ = 1e-3 scored 0.738 after 3 epochs
against 0.694, 0.719 and 0.685 for 1e-5, 1e-4 and 1e-2, hence the default. At CIFAR-10's size
(50,000 x 128 synthetic embeddings, 10 classes) one fit took 5 s on one CPU thread (load average
16): still cheap beside an epoch over 50,000 images, but worth a larger
``eval.linear_probe_every_epochs`` on bigger splits or slow CPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tauray_trainers.evaluation import as_labels, as_matrix

__all__ = ["DEFAULT_WEIGHT_DECAY", "fit_linear_probe", "linear_probe_top1"]

DEFAULT_WEIGHT_DECAY = 1e-3
"""L2 penalty on standardised features (the config's ``eval.linear_probe_weight_decay``)."""

_MIN_STD = 1e-6


def _matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    x = as_matrix(name, x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return x.detach().double()


def _labels(name: str, labels: object, count: int, num_classes: int) -> torch.Tensor:
    labels = as_labels(name, labels, count)  # type: ignore[arg-type]
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    max_iterations: int = 500,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit the L2-regularised multinomial logistic regression (full-batch L-BFGS, float64).

    Args:
        features: ``[N, D]`` frozen training embeddings.
        labels: ``[N]`` int labels in ``[0, num_classes)``.
        num_classes: number of classes C (>= 2).
        weight_decay: ``λ`` of ``mean cross-entropy + λ/2 ||W||^2`` on standardised features
            (>= 0; 0 can diverge on separable data, where the optimum is at infinity).
        max_iterations: L-BFGS iterations (>= 1).

    Returns:
        ``(weight [C, D], bias [C], mean [D], std [D])``, float64 on the features' device:
        the logits of ``x`` are ``((x - mean) / std) @ weight.T + bias``.

    Raises:
        ValueError: on shapes, labels outside ``[0, num_classes)``, non-finite features,
            ``num_classes`` < 2, ``weight_decay`` < 0 or ``max_iterations`` < 1.
        TypeError: on non-tensor or wrongly typed inputs.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    x = _matrix("features", features)
    y = _labels("labels", labels, x.shape[0], num_classes).to(x.device)
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0).clamp_min(_MIN_STD)
    x = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
    bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iterations,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(x @ weight.T + bias, y)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    # Evaluation runs under no_grad and, on GPUs, autocast: the fit needs gradients, in float64.
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


def linear_probe_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    max_iterations: int = 500,
) -> float:
    """Top-1 accuracy on the validation split of a linear probe fitted on the training split.

    Args:
        train_features: ``[N, D]`` frozen training embeddings (gathered over ranks).
        train_labels: ``[N]`` int labels in ``[0, num_classes)``.
        val_features: ``[M, D]`` validation embeddings.
        val_labels: ``[M]`` int labels.
        num_classes: number of classes (>= 2).
        weight_decay: see :func:`fit_linear_probe`.
        max_iterations: see :func:`fit_linear_probe`.

    Returns:
        The share of validation samples whose highest logit is their label, in [0, 1].

    Raises:
        ValueError: on mismatched shapes or dimensions, labels outside ``[0, num_classes)``,
            non-finite features, or bad ``num_classes``/``weight_decay``/``max_iterations``.
        TypeError: on non-tensor or wrongly typed inputs.
    """
    weight, bias, mean, std = fit_linear_probe(
        train_features,
        train_labels,
        num_classes=num_classes,
        weight_decay=weight_decay,
        max_iterations=max_iterations,
    )
    val = _matrix("val_features", val_features).to(weight.device)
    if val.shape[1] != weight.shape[1]:
        raise ValueError(
            f"train_features and val_features differ in dimension: {weight.shape[1]} vs "
            f"{val.shape[1]}"
        )
    y = _labels("val_labels", val_labels, val.shape[0], num_classes).to(val.device)
    with torch.autocast(val.device.type, enabled=False):
        predictions = (((val - mean) / std) @ weight.T + bias).argmax(dim=1)
    return float((predictions == y).double().mean())

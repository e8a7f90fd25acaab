"""Argument checks and small conversions shared by the loss families."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

Scalar = float | torch.Tensor


def check_chunk_size(chunk_size: int | None) -> int | None:
    """Validate a tiled loss's ``chunk_size`` (None = untiled).

    Raises:
        TypeError: if it is not an int.
        ValueError: if it is < 1.
    """
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None for untiled), got {chunk_size}")
    return chunk_size


def check_embeddings(name: str, x: object) -> torch.Tensor:
    """A 2-D floating point tensor with at least one row.

    Raises:
        TypeError: if ``x`` is not a floating point tensor.
        ValueError: if it is not 2-D or has no rows.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (batch >= 1, dim >= 1), got {tuple(x.shape)}")
    return x


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ValueError unless the two embedding batches have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (paired rows), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (AMP), else the input's own dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


NORM_EPS = 1e-12
"""Smallest row norm divided by, as in ``torch.nn.functional.normalize``."""


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows in the loss's compute dtype (cosine similarity)."""
    return F.normalize(x.to(compute_dtype(x)), dim=1, eps=NORM_EPS)


def scaled_inverse_norms(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale / max(|x_i|, eps)`` per row: ``normalize(x) * scale == x * result[:, None]``.

    Lets a loss scale its similarity rows instead of materialising a normalised copy of ``x``.
    """
    return scale / torch.linalg.vector_norm(x, dim=1).clamp_min(NORM_EPS)


def as_scalar_tensor(
    value: Scalar, name: str, like: torch.Tensor, positive: bool = True
) -> torch.Tensor:
    """A 0-dim tensor on ``like``'s device and dtype; tensors keep their autograd graph.

    Floats are checked (finite, and > 0 when ``positive``); tensors only for shape, so that
    checking never forces a device synchronisation.

    Raises:
        TypeError: if ``value`` is neither a real number nor a tensor.
        ValueError: if the value is out of range or the tensor has more than one element.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a float or a 0-dim tensor, got shape {tuple(value.shape)}"
            )
        return value.reshape(()).to(device=like.device, dtype=like.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a 0-dim tensor, got {type(value).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        allowed = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return torch.tensor(float(value), device=like.device, dtype=like.dtype)


def logit_scale(temperature: Scalar, like: torch.Tensor, name: str = "temperature") -> torch.Tensor:
    """``1 / temperature`` as a 0-dim tensor (keeps the temperature's gradient)."""
    return as_scalar_tensor(temperature, name, like).reciprocal()


ROW_BLOCK_ELEMENTS = 2**18
"""Elements per block of :func:`row_dots`' temporary (1 MiB in float32)."""


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(dim=1)`` for ``(m, D)`` tensors, a block of rows at a time.

    The product is formed for at most :data:`ROW_BLOCK_ELEMENTS` elements at once instead of a
    whole ``(m, D)`` temporary. No autograd (used inside backward passes).
    """
    out = a.new_empty(a.shape[0])
    step = max(1, ROW_BLOCK_ELEMENTS // max(1, a.shape[1]))
    for start in range(0, a.shape[0], step):
        stop = start + step
        torch.sum(a[start:stop] * b[start:stop], dim=1, out=out[start:stop])
    return out


class _NormalizeRows(torch.autograd.Function):
    """``x / max(|x_i|, eps)`` per row, whose backward allocates one ``(m, D)`` tensor (its
    result) where autograd through ``F.normalize`` allocates four."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        norms = torch.linalg.vector_norm(x, dim=1)
        inverse = norms.clamp_min(NORM_EPS).reciprocal_()
        ctx.save_for_backward(x, inverse, norms >= NORM_EPS)
        return x * inverse[:, None]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # d/dx of x/|x|: (g - y (y . g)) / |x|, y = x/|x|; below eps the norm is the constant eps.
        x, inverse, unclamped = ctx.saved_tensors
        out = x * inverse[:, None]
        along = row_dots(out, grad).mul_(unclamped)
        return out.mul_(along.neg_()[:, None]).add_(grad).mul_(inverse[:, None])


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`normalize` (same values and gradients) with a lighter backward (see
    :class:`_NormalizeRows`); first-order gradients only."""
    return _NormalizeRows.apply(x.to(compute_dtype(x)))

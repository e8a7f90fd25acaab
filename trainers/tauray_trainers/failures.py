"""How a training run fails on purpose: the errors the loop raises, and what counts as running
out of memory.

The platform marks a trial that ran out of memory *infeasible* (the searcher learns that the
batch is too big) instead of failed, so "is this out of memory?" has one answer, here:
:func:`is_out_of_memory` for an exception, :func:`mentions_out_of_memory` for the text a failed
trial left behind (a traceback, a stored reason). Unwrapping Ray's own exception types is the
platform's part. No torch import: a torch exception can only exist once torch is loaded.
"""

from __future__ import annotations

import re
import sys
from typing import Any

# Lower-cased text, with spaces, "_" and "-" removed, that names an out-of-memory error: Python
# and torch type names (OutOfMemoryError, torch.cuda.OutOfMemoryError, TrialOutOfMemoryError),
# "CUDA out of memory", CUDA_ERROR_OUT_OF_MEMORY, cuBLAS failing to allocate its workspace.
_SQUASHED_WORDS = ("outofmemory", "cublasstatusallocfailed")
# "OOM" as a word of its own ("CUDA OOM", "OOMKilled", "oom-killer"), not inside "room".
_OOM_WORD = re.compile(r"(?<![a-z0-9])oom(?:kill(?:ed|er)?)?(?![a-z0-9])")


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; names the step, the epoch and the temperature."""

    def __init__(self, step: int, epoch: int, temperature: float, loss: float) -> None:
        self.step = step
        self.epoch = epoch
        self.temperature = temperature
        self.loss = loss
        super().__init__(
            f"non-finite loss ({loss}) at step {step} (epoch {epoch}) with temperature "
            f"{temperature:.6g}; lower optimizer.lr, raise temperature.value / temperature.min, "
            "set optimizer.grad_clip_norm or use precision=fp32"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.epoch, self.temperature, self.loss))


class TrialOutOfMemoryError(RuntimeError):
    """The device ran out of memory at this batch size (the platform marks the trial infeasible)."""

    def __init__(
        self, batch_size_per_worker: int, global_batch_size: int, device: str, detail: str = ""
    ) -> None:
        self.batch_size_per_worker = batch_size_per_worker
        self.global_batch_size = global_batch_size
        self.device = device
        self.detail = detail
        super().__init__(
            f"out of memory on {device} with batch_size_per_worker={batch_size_per_worker} "
            f"(global batch {global_batch_size}); use a smaller batch, loss.chunk_size, or "
            f"precision=bf16. {detail}".strip()
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.batch_size_per_worker, self.global_batch_size, self.device, self.detail),
        )


def mentions_out_of_memory(text: str) -> bool:
    """Whether ``text`` (an error's type and message, a traceback) reports running out of memory.

    True for ``OutOfMemoryError`` of any module (``TrialOutOfMemoryError`` included), "CUDA out
    of memory", ``CUDA_ERROR_OUT_OF_MEMORY``, ``CUBLAS_STATUS_ALLOC_FAILED``, and "OOM" as a word
    ("OOMKilled" too); False for "room" or "zoom".
    """
    lowered = text.lower()
    squashed = re.sub(r"[\s_-]+", "", lowered)
    return any(word in squashed for word in _SQUASHED_WORDS) or bool(_OOM_WORD.search(lowered))


def _torch_out_of_memory_type() -> type[BaseException] | None:
    torch = sys.modules.get("torch")  # not loaded: no torch error can exist
    error_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return error_type if isinstance(error_type, type) else None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error``, or an exception it was raised from or while handling, is out of memory.

    Follows ``__cause__`` and ``__context__``. Counts :class:`TrialOutOfMemoryError`,
    ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), and any exception whose type
    name and message :func:`mentions_out_of_memory` (a CUDA ``RuntimeError`` such as "CUDA
    error: out of memory", an error re-raised under another type).
    """
    torch_type = _torch_out_of_memory_type()
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TrialOutOfMemoryError):
            return True
        if torch_type is not None and isinstance(current, torch_type):
            return True
        if mentions_out_of_memory(f"{type(current).__name__}: {current}"):
            return True
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False

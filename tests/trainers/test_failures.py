"""The loop's errors and the one out-of-memory classifier."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from tauray_trainers.failures import (
    NonFiniteLossError,
    TrialOutOfMemoryError,
    is_out_of_memory,
    mentions_out_of_memory,
)
from tauray_trainers.loop import NonFiniteLossError as LoopNonFiniteLossError
from tauray_trainers.loop import TrialOutOfMemoryError as LoopTrialOutOfMemoryError


def test_the_loop_still_exports_the_errors_the_platform_catches() -> None:
    assert LoopTrialOutOfMemoryError is TrialOutOfMemoryError
    assert LoopNonFiniteLossError is NonFiniteLossError


@pytest.mark.parametrize(
    "text",
    [
        "TrialOutOfMemoryError: out of memory on cuda:0 with batch_size_per_worker=512",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "RuntimeError: CUDA error: out of memory",
        "CUDA_ERROR_OUT_OF_MEMORY",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "MPS backend out of memory (MPS allocated: 1 GB)",
        "the worker was OOMKilled",
        "oom-killer ended the process",
        "CUDA OOM at batch 512",
        "out_of_memory",
    ],
)
def test_texts_that_report_running_out_of_memory(text: str) -> None:
    assert mentions_out_of_memory(text)


@pytest.mark.parametrize(
    "text",
    [
        "ValueError: no room left in the queue",
        "zoom level 3 is not supported",
        "NonFiniteLossError: non-finite loss (nan) at step 7",
        "memory usage 3 GB",
        "",
    ],
)
def test_texts_that_do_not(text: str) -> None:
    assert not mentions_out_of_memory(text)


def test_out_of_memory_errors_by_type_and_by_message() -> None:
    assert is_out_of_memory(TrialOutOfMemoryError(64, 128, "cuda:0"))
    assert is_out_of_memory(torch.OutOfMemoryError("Tried to allocate 20 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(NonFiniteLossError(7, 1, 0.05, float("nan")))
    assert not is_out_of_memory(ValueError("no room"))


def test_the_cause_and_the_context_are_followed() -> None:
    def raised_from(cause: BaseException) -> BaseException:
        try:
            raise ValueError("wrapped") from cause
        except ValueError as error:
            return error

    def raised_while_handling(first: BaseException) -> BaseException:
        try:
            try:
                raise first
            except BaseException:
                raise KeyError("while handling") from None
        except KeyError as error:
            error.__suppress_context__ = False
            return error

    oom = torch.OutOfMemoryError("no")
    assert is_out_of_memory(raised_from(raised_from(oom)))
    assert is_out_of_memory(raised_while_handling(oom))
    assert not is_out_of_memory(raised_from(ValueError("plain")))


def test_a_cycle_in_the_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert not is_out_of_memory(first)


def test_errors_survive_pickling() -> None:
    oom = pickle.loads(pickle.dumps(TrialOutOfMemoryError(64, 128, "cuda:0", "detail")))
    assert (oom.batch_size_per_worker, oom.global_batch_size, oom.detail) == (64, 128, "detail")
    assert "batch_size_per_worker=64" in str(oom) and str(oom).endswith("detail")
    loss = pickle.loads(pickle.dumps(NonFiniteLossError(7, 2, 0.05, float("inf"))))
    assert (loss.step, loss.epoch) == (7, 2) and "temperature 0.05" in str(loss)


def test_the_classifier_loads_no_torch() -> None:
    # The platform classifies failures in processes that never load torch.
    code = "import sys, tauray_trainers.failures; print('torch' in sys.modules)"
    # The child imports the modules this test sees (sys.path), not an installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"

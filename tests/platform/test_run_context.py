"""tauray.run_context: MLflow's context tags and a run's data as MLflow datasets (no server:
the runs a sweep writes are read back from a real one in ``test_tracking.py``)."""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path

from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_USER,
)

from tauray import __version__, run_context
from tauray_trainers.config import build_config

ROOT = Path(__file__).resolve().parents[2]


def test_context_tags_name_the_user_the_command_and_the_commit() -> None:
    tags = run_context.context_tags()
    assert tags[MLFLOW_USER] == getpass.getuser()
    assert tags[MLFLOW_SOURCE_NAME] == "tauray tune"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if head:  # run from a checkout (a wheel has no commit to name)
        assert tags[MLFLOW_GIT_COMMIT] == head
        assert run_context.code_version().split(".dirty")[0] == f"{__version__}+g{head[:12]}"
    else:
        assert run_context.code_version() == __version__


def test_a_run_logs_its_two_splits_with_a_digest_of_what_selects_them() -> None:
    config = build_config({"data": {"name": "digits-cluttered", "seed": 3}}).to_dict()
    inputs = run_context.dataset_inputs(config)
    assert [item.dataset.name for item in inputs] == [
        "digits-cluttered-train",
        "digits-cluttered-validation",
    ]
    assert [{tag.key: tag.value for tag in item.tags} for item in inputs] == [
        {MLFLOW_DATASET_CONTEXT: "train"},
        {MLFLOW_DATASET_CONTEXT: "validation"},
    ]
    assert '"seed": "3"' in inputs[0].dataset.source
    # The same images: the same digest, whatever the loader settings; other images: another.
    same = build_config({"data": {"seed": 3, "loader_workers": 2}}).to_dict()
    other = build_config({"data": {"seed": 4}}).to_dict()
    digest = inputs[0].dataset.digest
    assert run_context.dataset_inputs(same)[0].dataset.digest == digest
    assert run_context.dataset_inputs(other)[0].dataset.digest != digest

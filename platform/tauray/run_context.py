"""Where a run came from and what it trained on, in MLflow's own terms.

Every run tauray creates carries MLflow's context tags (``mlflow.user``, ``mlflow.source.name``,
``mlflow.source.type``, and ``mlflow.source.git.commit`` / ``.branch`` when tauray runs from a
git checkout): the runs table's User and Source columns. A trial run also logs its training and
validation data as MLflow datasets (``mlflow.data`` :class:`~mlflow.data.meta_dataset.MetaDataset`,
inputs with ``mlflow.data.context`` = ``train`` / ``validation``): the Dataset column. The data
are described, not loaded: the name, split and every setting that selects the images (so two
runs on the same images show the same digest).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Dataset, DatasetInput

logger = logging.getLogger(__name__)

#: The source name of the runs a sweep writes, and of a ``tauray train`` run (the runs table's
#: Source column).
SOURCE_NAME = "tauray tune"
TRAINING_SOURCE_NAME = "tauray train"
#: ``mlflow.data.context`` of a trial's two data sets.
TRAIN_CONTEXT = "train"
VALIDATION_CONTEXT = "validation"
# Data settings that change how images are read or augmented, not which images a split holds.
_NOT_SELECTING = frozenset({"download", "loader_workers", "horizontal_flip", "crop_min_scale"})


def _run_git(package_dir: str, *args: str) -> str:
    """What ``git -C package_dir ARGS`` prints (stripped); '' where git or a checkout is missing."""
    try:
        return subprocess.run(
            ["git", "-C", package_dir, *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@cache
def _checkout(package_dir: str) -> tuple[str, str, bool]:
    """The commit, branch and dirty flag of the git checkout tauray runs from ('' outside one).

    One lookup per process: the context tags of every run and the sweep's ``code_version``
    param read it. Dirty means tracked files differ from the commit (untracked ones don't count).
    """
    commit = _run_git(package_dir, "rev-parse", "HEAD")
    if not commit:
        return "", "", False
    branch = _run_git(package_dir, "rev-parse", "--abbrev-ref", "HEAD")
    dirty = bool(_run_git(package_dir, "status", "--porcelain", "--untracked-files=no"))
    return commit, "" if branch == "HEAD" else branch, dirty


def _git_tags() -> dict[str, str]:
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT

    commit, branch, _ = _checkout(str(Path(__file__).resolve().parent))
    found = {MLFLOW_GIT_COMMIT: commit, MLFLOW_GIT_BRANCH: branch}
    return {key: value for key, value in found.items() if value}


def context_tags(source_name: str = SOURCE_NAME) -> dict[str, str]:
    """MLflow's context tags of a run this process creates.

    MLflow's own resolution (user, source type, and whatever its context providers add) with
    ``source_name`` as the source, and the git commit and branch of tauray's checkout where
    tauray runs from one (an installed wheel has none).
    """
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME

    try:
        tags = dict(resolve_tags())
    except Exception:  # a context provider failing never stops a sweep
        logger.warning("MLflow could not resolve the run context", exc_info=True)
        tags = {}
    tags[MLFLOW_SOURCE_NAME] = source_name
    tags.update(_git_tags())
    return tags


def data_description(config: Mapping[str, Any], context: str) -> dict[str, str]:
    """What selects the images of one split of a run's data (``config``: its full config)."""
    data = config["data"]
    selecting = {
        key: str(value)
        for key, value in sorted(data.items())
        if key not in _NOT_SELECTING and value is not None
    }
    return {**selecting, "split": context}


def datasets(config: Mapping[str, Any]) -> dict[str, Dataset]:
    """A run's training and validation data as MLflow datasets, by ``mlflow.data.context``
    (their names and digests also tag the final metrics linked to a logged model)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    found = {}
    for context in (TRAIN_CONTEXT, VALIDATION_CONTEXT):
        description = data_description(config, context)
        dataset = MetaDataset(
            CodeDatasetSource(tags=description), name=f"{config['data']['name']}-{context}"
        )
        found[context] = dataset._to_mlflow_entity()
    return found


def dataset_inputs(config: Mapping[str, Any]) -> list[DatasetInput]:
    """A run's training and validation data as MLflow dataset inputs (for ``log_inputs``)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return [
        DatasetInput(dataset=dataset, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)])
        for context, dataset in datasets(config).items()
    ]


def code_version() -> str:
    """tauray's version, plus the git commit (and ``.dirty``) when run from a checkout."""
    from tauray import __version__

    commit, _, dirty = _checkout(str(Path(__file__).resolve().parent))
    if not commit:
        return __version__
    return f"{__version__}+g{commit[:12]}{'.dirty' if dirty else ''}"


def model_requirements() -> list[str]:
    """The pip requirements of a logged model: torch and what tauray_trainers imports."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("torch", "torchvision", "numpy", "pydantic", "pyyaml"):
        try:
            requirements.append(f"{package}=={version(package).split('+', 1)[0]}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements

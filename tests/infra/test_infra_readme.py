"""infra/README.md tells the truth about the manifests: the secrets it creates are the ones the
pods reference, the paths and services it names exist, the versions it pins are pinned."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from infra_helpers import (
    INFRA,
    KUSTOMIZATIONS,
    PLATFORMS,
    ROOT,
    SWEEP_OF,
    containers,
    objects_of,
    one,
    ray_cluster_specs,
    render,
)

README = INFRA / "README.md"


def shell_commands() -> list[list[str]]:
    """Every command of the README's bash blocks, split like a shell would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def after(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(f"{flag}="):
            return word.split("=", 1)[1]
    return None


def created_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the README's `kubectl create secret` commands."""
    created: dict[str, set[str]] = {}
    for words in shell_commands():
        if words[0] != "kubectl" or "secret" not in words or "create" not in words:
            continue
        kind_index = words.index("secret") + 1
        kind, name = words[kind_index], words[kind_index + 1]
        keys = created.setdefault(name, set())
        if kind == "tls":
            keys |= {"tls.crt", "tls.key"}
        for word in words:
            if word.startswith("--from-literal="):
                keys.add(word.split("=", 2)[1])
        assert after(words, "-n") == "tauray", f"secret {name} not created in namespace tauray"
    return created


def referenced_secrets(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> keys the manifests need (envFrom secrets: the env names they must hold)."""
    needed: dict[str, set[str]] = {}
    for doc in docs:
        for _, container in containers(doc):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    needed.setdefault(ref["name"], set()).add(ref["key"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    needed.setdefault(source["secretRef"]["name"], set())
        for _, cluster in ray_cluster_specs(doc):
            if cluster.get("authOptions", {}).get("mode") == "token":
                needed.setdefault(cluster["authOptions"]["secretName"], set()).add("auth_token")
        if doc["kind"] == "Ingress":
            for tls in doc["spec"].get("tls", []):
                needed.setdefault(tls["secretName"], set()).update({"tls.crt", "tls.key"})
    return needed


def test_the_readme_creates_every_secret_and_key_the_manifests_reference() -> None:
    created = created_secrets()
    needed: dict[str, set[str]] = {}
    for platform in PLATFORMS:
        docs = render(platform) + render(SWEEP_OF[platform])
        for name, keys in referenced_secrets(docs).items():
            needed.setdefault(name, set()).update(keys)
    assert needed.keys() == created.keys(), (sorted(needed), sorted(created))
    for name, keys in needed.items():
        assert keys <= created[name], f"{name}: README lacks keys {sorted(keys - created[name])}"
    # An envFrom Secret becomes environment variables: its keys must be the names MLflow reads.
    assert created["tauray-mlflow-client"] == {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }


def test_the_secret_cross_check_can_fail() -> None:
    docs = render("overlays/local")
    deployment = one(docs, "Deployment", "tauray-mlflow")
    deployment["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "tauray-postgres", "key": "x"}}}
    )
    needed = referenced_secrets(docs)
    assert "x" in needed["tauray-postgres"] and "x" not in created_secrets()["tauray-postgres"]


def test_the_operator_is_installed_pinned_where_the_network_policy_expects_it() -> None:
    helm = [w for w in shell_commands() if w[:2] == ["helm", "install"]]
    assert len(helm) == 1
    (words,) = helm
    assert "kuberay/kuberay-operator" in words
    assert re.fullmatch(r"\d+\.\d+\.\d+", after(words, "--version") or ""), words
    namespace = after(words, "--namespace")
    policy = one(render("overlays/local"), "NetworkPolicy", "tauray-ray")
    namespaces = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer
    ]
    assert namespaces == [namespace]


def test_the_kustomize_paths_and_services_the_readme_names_exist() -> None:
    applied = [
        after(words, "-k")
        for words in shell_commands()
        if words[0] == "kubectl" and ("apply" in words or "create" in words) and "-k" in words
    ]
    assert "infra/k8s/overlays/local" in applied and "infra/k8s/overlays/local/sweep" in applied
    for path in applied:
        assert path.removeprefix("infra/k8s/") in KUSTOMIZATIONS, path
    text = README.read_text()
    assert "kubectl apply -k infra/k8s/overlays/gpu" in text
    forwarded = [
        words[words.index("port-forward") + 1]
        for words in shell_commands()
        if "port-forward" in words
    ]
    docs = render("overlays/local")
    services = {f"svc/{s['metadata']['name']}" for s in objects_of(docs, "Service")}
    services |= {f"svc/{c['metadata']['name']}-head-svc" for c in objects_of(docs, "RayCluster")}
    assert set(forwarded) == {"svc/tauray-head-svc", "svc/tauray-mlflow"}
    assert set(forwarded) <= services


def test_the_images_the_readme_builds_are_the_ones_the_overlays_deploy() -> None:
    builds = [w for w in shell_commands() if w[:2] == ["docker", "build"]]
    tags = {after(words, "-t") for words in builds}
    for words in builds:
        assert (ROOT / after(words, "-f")).is_file(), words
        assert words[-1] == ".", "build from the repository root (the .dockerignore is there)"
    cpu_builds = [w for w in builds if "VARIANT=cpu" in w]
    assert cpu_builds and all(after(w, "-t").endswith(":0.2.0-cpu") for w in cpu_builds)
    deployed = set()
    for platform in PLATFORMS:
        for doc in render(platform) + render(SWEEP_OF[platform]):
            deployed |= {c["image"] for _, c in containers(doc) if c.get("image")}
    tauray_images = {
        image for image in deployed if "/tauray" in image or image.startswith("tauray")
    }
    for image in tauray_images:
        name, tag = image.rsplit(":", 1)
        assert any(t.endswith(f"{name.rsplit('/', 1)[-1]}:{tag}") for t in tags), image


def test_the_readme_documents_basic_auth() -> None:
    text = README.read_text()
    assert "--app-name basic-auth" in text and "MLFLOW_AUTH_CONFIG_PATH" in text
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        compile(block, str(README), "exec")


@pytest.mark.parametrize("flag", ["shutdownAfterJobFinishes", "activeDeadlineSeconds"])
def test_the_readme_explains_the_rayjob_lifecycle(flag: str) -> None:
    assert flag in README.read_text()

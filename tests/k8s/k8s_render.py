"""Render a kustomization: with `kustomize build` or `kubectl kustomize` when installed, else in Python.

The Python renderer covers the subset of kustomize that deploy/ uses, and refuses anything else
(KustomizeFeatureError), so a manifest change that needs more fails loudly instead of rendering
differently. Where a real kustomize is installed, test_k8s_render checks that both agree.

Subset: `resources` (files and directories), `namespace`, `labels` (without includeSelectors),
`images` (newName/newTag/digest), `patches` with `path:` only (strategic merge, target found by the
patch's kind and name). Strategic merge: maps merge, `null` deletes a key, lists of containers,
env, volumes and volumeMounts merge by their key, every other list is replaced (atomic).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"})
# Lists that strategic merge joins item by item on a key (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name"}
MERGE_KEYS["volumeMounts"] = "mountPath"
# Keyed lists whose key depends on where they are (ports: containerPort vs port): not supported.
UNSUPPORTED_LISTS = frozenset({"ports", "imagePullSecrets", "topologySpreadConstraints", "hostAliases"})
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"})
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class KustomizeFeatureError(ValueError):
    """The kustomization uses something outside the subset this renderer implements."""


def kustomize_command() -> list[str] | None:
    """The real kustomize on this machine, if any: `kustomize build` or `kubectl kustomize`."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_with_kustomize(directory: Path, command: list[str]) -> list[Manifest]:
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render(directory: Path) -> list[Manifest]:
    """`kustomize build DIRECTORY` for the supported subset."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeFeatureError(f"{directory}: kustomization fields {sorted(unknown)} not supported")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            manifests += render(path)
        else:
            manifests += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeFeatureError(f"{directory}: only `patches: - path: FILE` is supported")
        for document in yaml.safe_load_all((directory / patch["path"]).read_text()):
            _apply_patch(manifests, document, directory / patch["path"])
    if "namespace" in kustomization:
        _set_namespace(manifests, kustomization["namespace"])
    for labels in kustomization.get("labels", []):
        _add_labels(manifests, labels)
    for image in kustomization.get("images", []):
        _set_image(manifests, image)
    return manifests


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into `base` (neither is modified)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise KustomizeFeatureError(f"patch directives {sorted(patch)} not supported")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        if field in UNSUPPORTED_LISTS:
            raise KustomizeFeatureError(f"strategic merge of `{field}` lists not supported")
        if field in MERGE_KEYS:
            return _merge_keyed(base, patch, MERGE_KEYS[field])
    return copy.deepcopy(patch)


def _merge_keyed(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = copy.deepcopy(base)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(key) == item[key]), None)
        if index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def _apply_patch(manifests: list[Manifest], patch: Manifest, source: Path) -> None:
    name = patch["metadata"]["name"]
    matches = [
        i
        for i, manifest in enumerate(manifests)
        if manifest["kind"] == patch["kind"] and manifest["metadata"]["name"] == name
    ]
    if len(matches) != 1:
        raise KustomizeFeatureError(f"{source}: {len(matches)} targets for {patch['kind']}/{name}")
    target = manifests[matches[0]]
    body = {key: value for key, value in patch.items() if key not in ("apiVersion", "kind", "metadata")}
    metadata = {key: value for key, value in patch["metadata"].items() if key != "name"}
    merged = strategic_merge(target, {**body, "metadata": metadata} if metadata else body)
    manifests[matches[0]] = merged


def _set_namespace(manifests: list[Manifest], namespace: str) -> None:
    for manifest in manifests:
        if manifest["kind"] == "Namespace":
            manifest["metadata"]["name"] = namespace  # as kustomize does: the namespace is renamed
        elif manifest["kind"] not in CLUSTER_SCOPED:
            manifest["metadata"]["namespace"] = namespace


def _add_labels(manifests: list[Manifest], labels: dict[str, Any]) -> None:
    if labels.get("includeSelectors") or set(labels) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeFeatureError(f"labels {labels}: only pairs and includeTemplates are supported")
    pairs = {str(key): str(value) for key, value in labels["pairs"].items()}
    for manifest in manifests:
        manifest["metadata"].setdefault("labels", {}).update(pairs)
        if labels.get("includeTemplates") and manifest["kind"] in POD_TEMPLATE_KINDS:
            template = manifest["spec"]["template"]
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_image(manifests: list[Manifest], image: dict[str, str]) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeFeatureError(f"images entry {image} not supported")
    for manifest in manifests:
        if manifest["kind"] not in POD_TEMPLATE_KINDS:
            continue
        pod = manifest["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, tag, digest = split_image(container["image"])
            if name == image["name"]:
                container["image"] = _new_image(image, name, tag, digest)


def _new_image(image: dict[str, str], name: str, tag: str | None, digest: str | None) -> str:
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in image else "")


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """`registry/name:tag@digest` -> (registry/name, tag, digest); a registry port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None

"""deploy/ renders: each overlay gives the expected objects, and the Python renderer agrees with kustomize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_manifests import APP, DEPLOY, OVERLAYS, Rendered
from k8s_render import (
    KustomizeFeatureError,
    Manifest,
    kustomize_command,
    render,
    render_with_kustomize,
    split_image,
    strategic_merge,
)

KINDS = {
    "Namespace",
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
}


def by_identity(manifests: list[Manifest]) -> dict[tuple[str, str, str, str], Manifest]:
    identities = {
        (m["apiVersion"], m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]): m
        for m in manifests
    }
    assert len(identities) == len(manifests), "two objects with the same kind, namespace and name"
    return identities


def test_overlay_renders_every_object_once_in_one_namespace(rendered: Rendered) -> None:
    identities = by_identity(rendered.manifests)
    assert {kind for _, kind, _, _ in identities} == KINDS
    assert {name for *_, name in identities} == {APP}
    assert rendered.one("Namespace")["metadata"]["name"] == APP
    assert {m["metadata"].get("namespace") for m in rendered.manifests if m["kind"] != "Namespace"} == {APP}
    accelerator = {m["metadata"]["labels"].get("derain/accelerator") for m in rendered.manifests}
    assert accelerator == {rendered.overlay}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_renderer_matches_kustomize(overlay: str) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl installed: the Python renderer is used unchecked")
    directory = DEPLOY / "overlays" / overlay
    assert by_identity(render(directory)) == by_identity(render_with_kustomize(directory, command))


def test_strategic_merge_semantics() -> None:
    """The rules the overlays rely on, as kustomize applies them."""
    base: dict[str, Any] = {
        "containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1", "gpu": 1}}}],
        "tolerations": [{"key": "old"}],
        "metrics": [{"type": "Pods"}],
    }
    patch = {
        "containers": [{"name": "a", "resources": {"limits": {"gpu": None}}}, {"name": "b", "image": "y"}],
        "tolerations": [{"key": "new"}],
        "metrics": [{"type": "Resource"}],
    }
    assert strategic_merge(base, patch) == {
        "containers": [
            {
                "name": "a",
                "image": "x",
                "resources": {"limits": {"cpu": "1"}},
            },  # merged by name, null deletes
            {"name": "b", "image": "y"},
        ],
        "tolerations": [{"key": "new"}],  # lists without a merge key are replaced
        "metrics": [{"type": "Resource"}],
    }
    assert base["containers"][0]["resources"]["limits"]["gpu"] == 1, "the base must not be modified"


def test_split_image_keeps_registry_port_out_of_the_tag() -> None:
    assert split_image("ghcr.io/derain/derain:cpu") == ("ghcr.io/derain/derain", "cpu", None)
    assert split_image("localhost:5000/derain") == ("localhost:5000/derain", None, None)
    assert split_image("r:5000/d:1@sha256:ab") == ("r:5000/d", "1", "sha256:ab")


@pytest.mark.parametrize(
    "kustomization",
    [
        {"resources": ["cm.yaml"], "configMapGenerator": [{"name": "x", "literals": ["A=1"]}]},
        {"resources": ["cm.yaml"], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"resources": ["cm.yaml"], "patches": [{"path": "cm.yaml", "target": {"kind": "ConfigMap"}}]},
    ],
    ids=["generator", "selector-labels", "targeted-patch"],
)
def test_python_renderer_refuses_what_it_does_not_implement(tmp_path: Path, kustomization: dict) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with pytest.raises(KustomizeFeatureError):
        render(tmp_path)

"""deploy/ renders with the real kustomize (`kubectl kustomize`): each overlay gives the expected objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_manifests import APP, Manifest, Rendered, kubectl, kustomize

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


def test_overlay_patches_reach_the_deployment(rendered: Rendered) -> None:
    """The overlays' patches and image tags as kustomize applies them: the GPU limit and :latest on gpu."""
    limits = rendered.container["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (rendered.overlay == "gpu")
    tag = {"gpu": "latest", "cpu": "cpu"}[rendered.overlay]
    assert rendered.container["image"] == f"ghcr.io/derain/derain:{tag}"


def test_kustomize_is_the_real_one_and_refuses_a_broken_kustomization(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(AssertionError, match="missing.yaml"):
        kustomize(tmp_path)
    assert Path(kubectl()).name == "kubectl"

"""The rendered overlays of deploy/ and the service's contract, shared by the Kubernetes tests.

Rendering uses a real kustomize where one is installed (`kustomize` or `kubectl kustomize`), else the
Python renderer in k8s_render.py; test_k8s_render checks that the two agree where both exist.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from k8s_render import Manifest, kustomize_command, render, render_with_kustomize

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu")
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"
APP = "derain"  # name of every object and of the container

# The service's metrics (service/metrics.py), exactly as exposed, with their kind.
SERVICE_METRICS = {
    "derain_requests_total": "counter",
    "derain_stage_duration_seconds": "histogram",
    "derain_tiles_total": "counter",
    "derain_batch_size": "histogram",
    "derain_queue_tiles": "gauge",
    "derain_inflight_requests": "gauge",
    "derain_rejections_total": "counter",
    "derain_input_megapixels": "histogram",
    "derain_model_info": "gauge",
    "derain_provider_fallback": "gauge",
}


@dataclass(frozen=True)
class Rendered:
    overlay: str
    manifests: list[Manifest]
    renderer: str  # "kustomize build", "kubectl kustomize" or "k8s_render"

    def one(self, kind: str) -> Manifest:
        found = [m for m in self.manifests if m["kind"] == kind]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}, found {len(found)}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = {c["name"]: c for c in self.pod["containers"]}
        assert set(containers) == {APP}, f"containers {sorted(containers)}"
        return containers[APP]

    @property
    def config(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap").get("data", {})
        return data


@functools.cache
def render_overlay(overlay: str) -> Rendered:
    directory = DEPLOY / "overlays" / overlay
    command = kustomize_command()
    if command is None:
        return Rendered(overlay, render(directory), "k8s_render")
    return Rendered(overlay, render_with_kustomize(directory, command), " ".join(command))


def import_service(module: str) -> ModuleType:
    """A module of service/, or a skip while the service is not there yet."""
    if not (REPO / "service" / "__init__.py").is_file():
        pytest.skip("service/ is not in this checkout yet")
    return importlib.import_module(module)

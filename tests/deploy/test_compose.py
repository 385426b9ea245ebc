"""docker-compose.yml and its CPU override: the Compose Specification schema, then what it refers to.

The schema (tests/deploy/compose-spec.json, Apache-2.0, see compose-spec.LICENSE) is the Compose
Specification's own JSON schema as vendored in check-jsonschema 0.39.0
(sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64); no network at test time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_files import (
    ALERTS,
    COMPOSE,
    COMPOSE_CPU,
    PROMETHEUS_CONFIG,
    REPO,
    bind_mounts,
    default_value,
    dockerfile,
    environment,
    host_path,
    load_yaml,
    parse_port,
    setting_env_names,
    settings_class,
)

SCHEMA = Path(__file__).with_name("compose-spec.json")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def cpu_override() -> dict[str, Any]:
    return load_yaml(COMPOSE_CPU)


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load_yaml(path))
    ]
    assert not errors, "\n".join(errors)


def test_schema_check_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["derain"]["helthcheck"] = broken["services"]["derain"].pop("healthcheck")
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_top_comment_says_how_to_run_without_a_gpu() -> None:
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up" in header


def test_build_targets_exist_in_the_dockerfile(compose: dict[str, Any], cpu_override: dict[str, Any]) -> None:
    stage_names = {stage.name for stage in dockerfile()[1]}
    build = compose["services"]["derain"]["build"]
    assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    assert build["target"] == "gpu" and "gpu" in stage_names
    assert cpu_override["services"]["derain"]["build"]["target"] == "cpu" and "cpu" in stage_names


def test_service_reserves_one_nvidia_gpu_and_the_override_removes_it(
    compose: dict[str, Any], cpu_override: dict[str, Any]
) -> None:
    devices = compose["services"]["derain"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "!reset" in COMPOSE_CPU.read_text() and cpu_override["services"]["derain"]["deploy"] == {}
    assert (
        environment(cpu_override["services"]["derain"])["DERAIN_PROVIDERS"]
        == "${DERAIN_PROVIDERS:-CPUExecutionProvider}"
    )


def test_service_runs_hardened_and_checks_readiness(compose: dict[str, Any]) -> None:
    derain = compose["services"]["derain"]
    assert derain["read_only"] is True and "/tmp" in derain["tmpfs"]
    assert derain["cap_drop"] == ["ALL"] and "no-new-privileges:true" in derain["security_opt"]
    command = " ".join(derain["healthcheck"]["test"])
    assert derain["healthcheck"]["test"][0] == "CMD" and "http://127.0.0.1:8000/readyz" in command
    assert derain["stop_signal"] == "SIGTERM"


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def test_grace_period_outlasts_the_drain_timeout(compose: dict[str, Any]) -> None:
    derain = compose["services"]["derain"]
    drain = float(default_value(environment(derain)["DERAIN_DRAIN_TIMEOUT_S"]) or 0)
    assert seconds(derain["stop_grace_period"]) > drain > 0


def test_ports_are_unique_and_match_the_containers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expose = {stage.name: stage.all("EXPOSE") for stage in dockerfile()[1]}
    expected = {"derain": int(expose["gpu"][0]), "prometheus": 9090, "grafana": 3000}
    host_ports = []
    for name, container_port in expected.items():
        (port,) = [parse_port(spec) for spec in services[name]["ports"]]
        assert port[1] == container_port, name
        host_ports.append(port[0])
    assert len(set(host_ports)) == len(host_ports)


def test_services_wait_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["prometheus"]["depends_on"]["derain"]["condition"] == "service_healthy"
    assert "prometheus" in services["grafana"]["depends_on"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits on {dependency}, which has no healthcheck"
                )


def test_every_bind_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"


def test_prometheus_reads_the_mounted_config_and_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = bind_mounts(prometheus)
    (config_flag,) = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config_in_container = config_flag.split("=", 1)[1]
    assert host_path(mounts, config_in_container) == PROMETHEUS_CONFIG
    config = load_yaml(PROMETHEUS_CONFIG)
    rule_dir = Path(config_in_container).parent
    for rule_file in config["rule_files"]:
        assert host_path(mounts, str(rule_dir / rule_file)) == ALERTS


def test_prometheus_scrapes_the_service_port(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "derain"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["derain"] and "derain" in compose["services"]
    assert sd["port"] == parse_port(compose["services"]["derain"]["ports"][0])[1]


def test_grafana_provisioning_resolves_inside_the_container(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = host_path(mounts, "/etc/grafana/provisioning")
    assert provisioning is not None
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()  # type: ignore[union-attr]
    assert host in compose["services"] and int(port) == parse_port(compose["services"][host]["ports"][0])[1]
    (provider,) = load_yaml(provisioning / "dashboards" / "derain.yml")["providers"]
    dashboards = host_path(mounts, provider["options"]["path"])
    assert dashboards is not None and (dashboards / "derain.json").is_file()
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(mounts, home) == dashboards / "derain.json"


def test_environment_values_are_strings_with_defaults(
    compose: dict[str, Any], cpu_override: dict[str, Any]
) -> None:
    for document in (compose, cpu_override):
        for name, service in document["services"].items():
            for key, value in environment(service).items():
                # YAML would turn `true` or `8` into bool/int; compose wants strings (or null = pass-through).
                assert value is None or isinstance(value, str), f"{name}.{key} = {value!r} is not a string"
                if isinstance(value, str) and "${" in value:
                    assert re.fullmatch(r"\$\{\w+:-[^}]+\}", value), (
                        f"{name}.{key}: give a default, ${{VAR:-x}}"
                    )


def compose_defaults(document: dict[str, Any]) -> dict[str, str | None]:
    return {key: default_value(value) for key, value in environment(document["services"]["derain"]).items()}


def test_every_derain_variable_is_a_service_setting(
    compose: dict[str, Any], cpu_override: dict[str, Any]
) -> None:
    known = setting_env_names(settings_class())
    for document in (compose, cpu_override):
        unknown = {key for key in compose_defaults(document) if key.startswith("DERAIN_")} - known
        assert not unknown, f"{sorted(unknown)} are not fields of the service settings"


@pytest.mark.parametrize("override", [False, True], ids=["gpu", "cpu"])
def test_default_settings_are_accepted_by_the_service(
    compose: dict[str, Any],
    cpu_override: dict[str, Any],
    override: bool,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cls = settings_class()  # skips before the tiny model is exported when there is no service yet
    values = compose_defaults(compose) | (compose_defaults(cpu_override) if override else {})
    # The image's model is not on this machine (its path is checked by the Dockerfile tests).
    values["DERAIN_MODEL_PATH"] = str(request.getfixturevalue("tiny_onnx"))
    for key in list(os.environ):
        if key.startswith("DERAIN_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        if key.startswith("DERAIN_") and value is not None:
            monkeypatch.setenv(key, value)
    cls()  # raises ValidationError naming the field on a bad value


def test_alert_queue_limit_matches_the_compose_default(compose: dict[str, Any]) -> None:
    limit = compose_defaults(compose)["DERAIN_MAX_QUEUE_TILES"]
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    (recorded,) = [rule for rule in rules if rule.get("record") == "derain:queue_limit_tiles"]
    assert recorded["expr"] == f"vector({limit})"
    (alert,) = [rule for rule in rules if rule.get("alert") == "DerainQueueSaturated"]
    assert f"limit {limit}" in alert["annotations"]["description"]

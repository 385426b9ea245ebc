"""`docker compose up` of the CPU profile with the real Compose v2: the service and Prometheus from the
images built here, Prometheus scraping the service over the compose network, read back through
Prometheus's own HTTP API."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.docker.docker_harness import COMPOSE, COMPOSE_CPU, FIGURES, REPO, Engine, run, step

TEST_OVERRIDE = REPO / "tests" / "docker" / "compose.test.yml"
SCRAPED_WITHIN_S = 120.0


@dataclass
class Project:
    command: list[str]  # docker-compose -p NAME -f ... -f ...

    def port(self, service: str, port: int) -> str:
        address = run([*self.command, "port", service, str(port)], timeout=30).stdout.strip()
        host, _, published = address.rpartition(":")
        assert host == "127.0.0.1", f"{service} published on {address}, not on loopback"
        return f"http://127.0.0.1:{published}"


@pytest.fixture(scope="module")
def project(engine: Engine, cpu_image: str, prometheus_image: str) -> Iterator[Project]:
    name = f"derain-test-{os.getpid()}"
    files = [COMPOSE, COMPOSE_CPU, TEST_OVERRIDE]
    command = [*engine.compose, "--project-name", name, *(arg for f in files for arg in ("--file", str(f)))]
    try:
        with step("10 docker compose up (CPU profile)"):
            run([*command, "config", "--quiet"], timeout=60)  # Compose's own validation of the merge
            run([*command, "up", "--detach", "--no-build", "--wait", "--wait-timeout", "300"], timeout=420)
        yield Project(command)
    finally:
        logs = run([*command, "logs", "--no-color", "--tail", "15"], timeout=60, check=False)
        print(f"\n--- compose logs ---\n{logs.stdout[-3000:]}")
        run([*command, "down", "--volumes", "--remove-orphans", "--timeout", "60"], timeout=180, check=False)


def services(project: Project) -> dict[str, dict[str, Any]]:
    done = run([*project.command, "ps", "--all", "--format", "json"], timeout=30)
    text = done.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    return {row["Service"]: row for row in rows}


def test_compose_starts_the_service_and_prometheus_healthy_without_grafana(project: Project) -> None:
    running = services(project)
    assert set(running) == {"derain", "prometheus"}, "Grafana stays out (its profile is not enabled)"
    for name, row in running.items():
        assert row["State"] == "running" and row["Health"] == "healthy", (name, row["State"], row["Health"])
    assert httpx.get(f"{project.port('derain', 8000)}/readyz", timeout=10).status_code == 200


def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "success", response.text[:300]
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def test_prometheus_scrapes_the_service_over_the_compose_network(project: Project) -> None:
    prometheus = project.port("prometheus", 9090)
    with step("11 Prometheus scrapes the service (its HTTP API)"):
        deadline = time.monotonic() + SCRAPED_WITHIN_S
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:  # bounded: DNS discovery, then the first 10 s scrape
            response = httpx.get(f"{prometheus}/api/v1/targets", params={"state": "active"}, timeout=10)
            targets = [t for t in response.json()["data"]["activeTargets"] if t["labels"]["job"] == "derain"]
            if targets and all(t["health"] == "up" for t in targets):
                break
            time.sleep(2)
    assert targets, "Prometheus discovered no `derain` target through Docker's DNS"
    (target,) = targets  # one replica
    assert target["health"] == "up", f"{target['health']}: {target.get('lastError')}"
    host = target["labels"]["instance"].rsplit(":", 1)[0]
    assert not host.startswith("127."), f"scraped {host}: the compose network's address is expected"
    FIGURES["prometheus target"] = f"{target['scrapeUrl']} {target['health']}"
    (up,) = query(prometheus, 'up{job="derain"}')
    assert up["value"][1] == "1"
    (info,) = query(prometheus, "derain_model_info")
    assert info["metric"]["provider"] == "CPUExecutionProvider" and info["metric"]["job"] == "derain"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    alerts = {rule["name"] for group in rules for rule in group["rules"] if rule["type"] == "alerting"}
    assert "DerainDown" in alerts, f"alerts.yml not loaded: {sorted(alerts)}"

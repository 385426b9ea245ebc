"""A running service exports the metric contract, and a real Prometheus server scrapes it.

The Prometheus test runs the Debian `prometheus` binary on loopback with a temporary config (scrape
every second, the alert rules of docker/prometheus/alerts.yml), sends a few requests to the service
and asks Prometheus's HTTP API what arrived.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from deploy_files import ALERTS
from live_service import RunningService, free_port, log_tail, stop
from metric_contract import CONTRACT, DERAIN_METRICS, PROCESS_METRICS, STAGES
from prometheus_client.parser import text_string_to_metric_families

WAIT_S = 30.0
T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = WAIT_S, explain: Callable[[], str] = str
) -> T:
    """Call `probe` every 0.25 s until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what} {explain()}"
        time.sleep(0.25)


def test_metrics_endpoint_exports_every_contract_metric(running_service: RunningService) -> None:
    running_service.derain(2)
    text = httpx.get(f"{running_service.url}/metrics", timeout=10.0).text
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    for metric in CONTRACT:
        kind = declared.get(metric.name, declared.get(metric.family))
        assert kind == metric.kind, f"{metric.name}: expected a {metric.kind}, /metrics declares {kind}"
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    for metric in DERAIN_METRICS:
        for sample in (s for s in samples if s.name in metric.series and not s.name.endswith("_created")):
            assert set(sample.labels) - {"le"} == set(metric.labels), f"{sample.name} labels {sample.labels}"
    stages = {s.labels["stage"] for s in samples if s.name == "derain_stage_duration_seconds_count"}
    assert stages == set(STAGES)
    (info,) = [s for s in samples if s.name == "derain_model_info"]
    assert info.labels["provider"] == "CPUExecutionProvider" and info.value == 1
    assert [s.value for s in samples if s.name == "derain_provider_fallback"] == [0]


@pytest.fixture
def prometheus(running_service: RunningService, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server on 127.0.0.1 scraping the running service every second; stopped afterwards."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    target = running_service.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "derain", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), tmp_path / "prometheus.log"
    command = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited:\n{log_tail(log)}"
            try:
                return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("Prometheus to be ready", ready)
        yield url
    finally:
        stop(process)


def api(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5.0)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def scalar(url: str, query: str) -> float | None:
    """Value of a one-series instant query, None while it has no result."""
    result = api(url, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_derain_series_and_evaluates_the_alerts(
    running_service: RunningService, prometheus: str
) -> None:
    wait_for("the first scrape", lambda: scalar(prometheus, 'up{job="derain"}') == 1)
    served = 'sum(derain_requests_total{job="derain", route=~".*derain.*", status="200"})'
    before = scalar(prometheus, served) or 0.0
    running_service.derain(3)
    wait_for(
        "3 more requests in derain_requests_total", lambda: (scalar(prometheus, served) or 0) >= before + 3
    )

    def names() -> set[str]:
        return set(api(prometheus, "label/__name__/values", **{"match[]": '{job="derain"}'}))

    expected = {m.required_series for m in DERAIN_METRICS + PROCESS_METRICS if m.always_present}
    wait_for("every contract series", lambda: expected <= names(), explain=lambda: f"{expected - names()}")
    assert (scalar(prometheus, 'sum(derain_tiles_total{job="derain"})') or 0) >= 3
    assert scalar(prometheus, 'derain_model_info{job="derain", provider="CPUExecutionProvider"}') == 1
    assert scalar(prometheus, 'derain_provider_fallback{job="derain"}') == 0
    assert scalar(prometheus, 'sum(derain_stage_duration_seconds_count{job="derain", stage="total"})')

    def evaluated_rules() -> list[dict[str, Any]] | None:
        found = [rule for group in api(prometheus, "rules")["groups"] for rule in group["rules"]]
        return found if found and all(rule["health"] != "unknown" for rule in found) else None

    for rule in wait_for("the alert rules to be evaluated", evaluated_rules):
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    # DerainDown is pending until the first scrape lands; on a healthy service every alert then clears.
    def active() -> list[str]:
        return [f"{a['labels']['alertname']} {a['state']}" for a in api(prometheus, "alerts")["alerts"]]

    wait_for("no pending or firing alert", lambda: not active(), timeout=10.0, explain=lambda: f"{active()}")

"""Prometheus config and alert rules: promtool's checks and unit tests, and the metric contract."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_files import ALERTS, PROMETHEUS_CONFIG, load_yaml
from metric_contract import TARGET_LABELS, metric_of_series
from promql import analyse

ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
EXPECTED_ALERTS = {"DerainDown", "DerainHighErrorRate", "DerainQueueSaturated", "DerainCPUFallback"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    """Each alert fires on a bad series and stays quiet on a healthy one (tests/deploy/alerts_test.yml)."""
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_we_promised_exist_with_severity_and_text() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) >= EXPECTED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, f"{name} would fire on a single bad evaluation"
    assert "derain_provider_fallback" in alerts["DerainCPUFallback"]["expr"]
    assert 'status=~"5.."' in alerts["DerainHighErrorRate"]["expr"]


def test_rule_expressions_use_only_contract_metrics_and_labels() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        usage = analyse(rule["expr"])
        for series in usage.metrics - recorded - {"up"}:
            metric = metric_of_series(series)
            assert metric is not None, (
                f"{rule.get('alert', rule.get('record'))}: {series} is not in the contract"
            )
            allowed = set(metric.labels) | TARGET_LABELS | ({"le"} if series.endswith("_bucket") else set())
            assert usage.matcher_labels.get(series, set()) <= allowed, f"{series}: unknown label"
        assert usage.other_labels <= TARGET_LABELS | {"status", "route", "stage", "reason", "le"}


def test_rule_check_catches_an_unknown_metric() -> None:
    usage = analyse('sum(rate(derain_request_total{status=~"5.."}[5m]))')  # `requests` misspelt
    assert [metric_of_series(series) for series in usage.metrics] == [None]

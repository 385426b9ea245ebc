"""The Grafana dashboard and its provisioning: valid JSON, queries over contract metrics only."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_files import DASHBOARD, GRAFANA, load_yaml
from metric_contract import DERAIN_METRICS, TARGET_LABELS, metric_of_series
from promql import Usage, analyse


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel.get("targets", [])
    ]


def test_dashboard_has_identity_and_a_grid(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_panel_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        for holder in [panel, *panel["targets"]]:
            assert holder["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]


def check_usage(where: str, usage: Usage) -> None:
    for series in usage.metrics:
        metric = metric_of_series(series)
        assert metric is not None, f"{where}: {series} is not in tests/deploy/metric_contract.py"
        allowed = set(metric.labels) | TARGET_LABELS | ({"le"} if series.endswith("_bucket") else set())
        assert usage.matcher_labels.get(series, set()) <= allowed, f"{where}: unknown label on {series}"
    labels = {label for series in usage.metrics for label in metric_of_series(series).labels}  # type: ignore[union-attr]
    assert usage.other_labels <= labels | TARGET_LABELS | {"le"}, f"{where}: groups by a label no metric has"


def test_queries_name_only_contract_metrics_and_their_labels(dashboard: dict[str, Any]) -> None:
    assert expressions(dashboard)
    for title, expr in expressions(dashboard):
        check_usage(title, analyse(expr))
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        (series,) = re.findall(r"label_values\((\w+)", query)
        assert metric_of_series(series) is not None, variable["name"]


def test_dashboard_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    exprs = [" ".join(expr.split()) for _, expr in expressions(dashboard)]
    used = set().union(*(analyse(expr).metrics for expr in exprs))
    for metric in DERAIN_METRICS:
        assert used & metric.series, f"no panel shows {metric.name}"
    assert any("by (status)" in e and "derain_requests_total" in e for e in exprs), "request rate by status"
    assert any("by (reason)" in e and "derain_rejections_total" in e for e in exprs), "rejections by reason"
    latency = [e for e in exprs if "derain_stage_duration_seconds_bucket" in e and "by (stage, le)" in e]
    quantiles = {float(q) for e in latency for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert quantiles >= {0.5, 0.95, 0.99}, "latency per stage p50/p95/p99"
    assert any("rate(derain_tiles_total" in e for e in exprs), "tiles/s"
    provider = [
        p for p in panels(dashboard) if any("derain_model_info" in t["expr"] for t in p.get("targets", []))
    ]
    assert any("{{provider}}" in t["legendFormat"] for p in provider for t in p["targets"]), "provider shown"


def test_dashboard_provider_loads_the_dashboard_folder() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "derain.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"

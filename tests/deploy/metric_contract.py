"""The metrics the service exports: a contract between service/metrics.py and the deployment files.

The Grafana dashboard (docker/grafana/dashboards/derain.json) and the alert rules
(docker/prometheus/alerts.yml) may name only these; the live tests check that a running service
exports every one. Change a name here, in the service and in those files together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
STAGES = ("decode", "queue", "inference", "encode", "total")
# Labels that Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed in the text format: counters with their `_total` suffix
    kind: Kind
    labels: tuple[str, ...] = ()
    # Series that appear as soon as the service is up and has answered a few requests; a labelled
    # counter such as rejections has none until its first event.
    always_present: bool = True

    @property
    def family(self) -> str:
        """Name in `# TYPE` lines of the OpenMetrics format (counters lose `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def series(self) -> frozenset[str]:
        """Sample names a PromQL query may use for this metric."""
        if self.kind == "histogram":
            return frozenset(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created"))
        if self.kind == "counter":
            return frozenset({self.name, f"{self.family}_created"})
        return frozenset({self.name})

    @property
    def required_series(self) -> str:
        """The one sample name that proves the metric is exported."""
        return f"{self.name}_count" if self.kind == "histogram" else self.name


DERAIN_METRICS: tuple[Metric, ...] = (
    Metric("derain_requests_total", "counter", ("route", "status")),
    Metric("derain_stage_duration_seconds", "histogram", ("stage",)),  # stage in STAGES
    Metric("derain_tiles_total", "counter"),
    Metric("derain_batch_size", "histogram"),
    Metric("derain_queue_tiles", "gauge"),
    Metric("derain_inflight_requests", "gauge"),
    Metric("derain_rejections_total", "counter", ("reason",), always_present=False),
    Metric("derain_input_megapixels", "histogram"),
    Metric(
        "derain_model_info",
        "gauge",
        ("preset", "weights_sha256", "provider", "requested_provider", "precision"),
    ),
    Metric("derain_provider_fallback", "gauge"),
)

# prometheus_client's process collector (Linux).
PROCESS_METRICS: tuple[Metric, ...] = (
    Metric("process_cpu_seconds_total", "counter"),
    Metric("process_resident_memory_bytes", "gauge"),
    Metric("process_virtual_memory_bytes", "gauge"),
    Metric("process_start_time_seconds", "gauge"),
    Metric("process_open_fds", "gauge"),
    Metric("process_max_fds", "gauge"),
)

CONTRACT: tuple[Metric, ...] = DERAIN_METRICS + PROCESS_METRICS


def metric_of_series(series_name: str) -> Metric | None:
    """The contract metric that a PromQL sample name belongs to, or None."""
    for metric in CONTRACT:
        if series_name in metric.series:
            return metric
    return None

"""Prometheus metrics, all named `derain_*`, on one registry per app (so tests can build several apps).

The names and labels below are a contract with the dashboards and alerts: change them together.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

# Seconds-long work: a 256 px tile on CPU takes ~0.1-1 s, a 12 MP photo tens of seconds.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
SCALE_BUCKETS = (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
MEGAPIXEL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 12, 16, 24, 32, 40, 64)
STAGES = ("decode", "queue", "inference", "encode", "total")
CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # no `*_created` series: they double the sample count and no dashboard uses them


class Metrics:
    """Every metric of one app: stage `queue` is per tile, `inference` per batch, the rest per request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        process_collector.ProcessCollector(registry=reg)
        platform_collector.PlatformCollector(registry=reg)
        gc_collector.GCCollector(registry=reg)
        self.requests = Counter(
            "derain_requests_total",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=reg,
        )
        self.stage_seconds = Histogram(
            "derain_stage_duration_seconds",
            "Time per stage: decode/encode/total per request, queue wait per tile, inference per batch",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=reg,
        )
        self.tiles = Counter("derain_tiles_total", "Tiles run through the model", registry=reg)
        self.tiles_dropped = Counter(
            "derain_tiles_dropped_total",
            "Queued tiles dropped before inference (request timed out or client left)",
            registry=reg,
        )
        self.batch_size = Histogram(
            "derain_batch_size", "Tiles per inference call", buckets=BATCH_BUCKETS, registry=reg
        )
        self.queue_tiles = Gauge(
            "derain_queue_tiles",
            "Tiles admitted and waiting for inference (reserved or queued)",
            registry=reg,
        )
        self.inflight = Gauge("derain_inflight_requests", "POST /derain requests in progress", registry=reg)
        self.rejections = Counter(
            "derain_rejections_total", "Requests refused or failed, by reason", ["reason"], registry=reg
        )
        self.input_megapixels = Histogram(
            "derain_input_megapixels", "Decoded input size", buckets=MEGAPIXEL_BUCKETS, registry=reg
        )
        self.work_scale = Histogram(
            "derain_work_scale",
            "Working-scale factor each image was derained at (1 = full size; auto's pick or the client's)",
            buckets=SCALE_BUCKETS,
            registry=reg,
        )
        self.second_passes = Counter(
            "derain_second_passes_total",
            "Images auto derained a second time, across their streaks (photos above the size cap)",
            registry=reg,
        )
        self.model_info = Gauge(
            "derain_model_info",
            "The loaded model (value 1) and the execution provider really active",
            ["preset", "weights_sha256", "provider", "requested_provider", "precision"],
            registry=reg,
        )
        self.provider_fallback = Gauge(
            "derain_provider_fallback", "1 when CUDA was requested but the model runs on CPU", registry=reg
        )
        for stage in STAGES:  # expose every series from the start, so rate() works on the first scrape
            self.stage_seconds.labels(stage=stage)

    def set_model(
        self, preset: str, weights_sha256: str, provider: str, requested: str, precision: str, fallback: bool
    ) -> None:
        self.model_info.clear()
        self.model_info.labels(
            preset=preset,
            weights_sha256=weights_sha256,
            provider=provider,
            requested_provider=requested,
            precision=precision,
        ).set(1)
        self.provider_fallback.set(1 if fallback else 0)

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Helpers shared by the service and reliability tests (`from tests.service.svc_helpers import ...`)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.core.runtime import ModelInfo, Runner
from service.http.app import create_app
from service.settings import Settings

SettingsFactory = Callable[..., Settings]  # the `make_settings` fixture: overrides -> Settings
# The tiny model's test settings: 64 px tiles so small images take the tiled path (fixed tiles, not the
# CPU's whole-image path); CPU only; fast batches.
SMALL_TILES: dict[str, object] = {
    "providers": "CPUExecutionProvider",
    "tile_size": 64,
    "tile_overlap": 16,
    "whole_max_pixels": 0,
    "max_wait_ms": 2,
    "threads": 1,
    "log_format": "text",
}
SECRET = "RuntimeError at /secret/path/model.onnx"  # what a failing runner says; must never reach a client


def settings_factory(model: Path, **defaults: object) -> SettingsFactory:
    """`make_settings(**overrides)` for `model`: SMALL_TILES, then `defaults`, then the overrides."""

    def build(**overrides: object) -> Settings:
        return Settings(**{"model_path": model, **SMALL_TILES, **defaults, **overrides})  # type: ignore[arg-type]

    return build


class FakeRunner:
    """A Runner that computes 0.5 * x + 0.25, records batch sizes, can block on `gate` and can fail."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            path=Path("fake.onnx"),
            preset="fake",
            weights_sha256="f" * 64,
            precision="fp32",
            pad_multiple=8,
            exporter_version="1",
        )
        self.active_provider = "CPUExecutionProvider"
        self.lanes = 1
        self.requested_providers: tuple[str, ...] = ("CPUExecutionProvider",)
        self.gate = threading.Event()
        self.gate.set()
        self.batch_sizes: list[int] = []
        self.tiles_seen: list[np.ndarray] = []
        self.fail_when = lambda batch: False
        self.entered = threading.Event()  # set when a call reached the model (and maybe blocks on gate)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        self.batch_sizes.append(len(batch))
        self.tiles_seen.extend(batch.copy())
        if self.fail_when(batch):
            raise RuntimeError(SECRET)
        return 0.5 * batch + 0.25


def png_bytes(array: np.ndarray, **save: object) -> bytes:
    return encoded(Image.fromarray(array), "PNG", **save)


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)  # type: ignore[arg-type]
    return buffer.getvalue()


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@contextmanager
def serve(settings: Settings, runner: Runner | None = None, ready: bool = True) -> Iterator[TestClient]:
    """The app under TestClient (lifespan runs); waits for readiness unless `ready` is False."""
    app = create_app(settings) if runner is None else create_app(settings, runner_factory=lambda _: runner)
    with TestClient(app) as client:
        if ready:
            wait_until(lambda: client.get("/readyz").status_code == 200)
        yield client


def metric(client: TestClient, name: str, **labels: str) -> float:
    """Value of one sample from /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture
def fake_runner() -> Iterator[FakeRunner]:
    """A FakeRunner whose gate is opened after the test (never leaves a worker thread blocked)."""
    runner = FakeRunner()
    yield runner
    runner.gate.set()

"""Fixtures for the service tests: settings on the tiny exported model, apps served by TestClient, fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_helpers import FakeRunner, SettingsFactory

from service.settings import Settings


@pytest.fixture
def make_settings(tiny_onnx: Path) -> SettingsFactory:
    """Small tiles so small images take the tiled path; CPU only; fast batches."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "model_path": tiny_onnx,
            "providers": "CPUExecutionProvider",
            "tile_size": 64,
            "tile_overlap": 16,
            "max_wait_ms": 2,
            "threads": 1,
            "log_format": "text",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def fake_runner() -> Iterator[FakeRunner]:
    runner = FakeRunner()
    yield runner
    runner.gate.set()  # never leave a worker thread blocked

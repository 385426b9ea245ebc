"""Fixtures for the service tests: settings on the tiny exported model, apps served by TestClient, fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.svc_helpers import (
    SettingsFactory,
    fake_runner,  # noqa: F401  (a fixture, shared with tests/reliability)
    settings_factory,
)


@pytest.fixture
def make_settings(tiny_onnx: Path) -> SettingsFactory:
    """Small tiles so small images take the tiled path; CPU only; fast batches."""
    return settings_factory(tiny_onnx)

"""Fixtures of the reliability tests, and a summary of the load test's figures at the end of the run.

The service tests' helpers (FakeRunner, serve, metric, image makers) are shared, not copied: imported
from tests.service.svc_helpers like every test helper (`from tests.<folder>.<module> import ...`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.reliability_helpers import FIGURES, FakeService, live_server
from tests.service.svc_helpers import (
    FakeRunner,
    SettingsFactory,
    fake_runner,  # noqa: F401  (a fixture, collected from here)
    settings_factory,
)

DRAIN_S = 5  # short drains, so a server a test left busy stops quickly


@pytest.fixture
def make_settings(tiny_onnx: Path) -> SettingsFactory:
    """The tiny model on CPU, 64 px tiles at full size (scale 1) so small images are tiled, fast batches,
    short drains."""
    return settings_factory(tiny_onnx, drain_timeout_s=DRAIN_S, default_scale="1")


@pytest.fixture(scope="module")
def fake_service(tiny_onnx: Path) -> Iterator[FakeService]:
    """One server for a whole module of independent requests (the FakeRunner computes 0.5 x + 0.25)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("DERAIN_"):
                patch.delenv(name)
        settings = settings_factory(tiny_onnx, drain_timeout_s=DRAIN_S, default_scale="1")()
    runner = FakeRunner()
    with live_server(settings, runner) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        try:
            yield FakeService(live, runner, http)
        finally:
            runner.gate.set()  # a test that failed with the model blocked must not block the shutdown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)

"""Fixtures of the reliability tests, and a summary of the load test's figures at the end of the run.

The service tests' helpers (FakeRunner, serve, metric, image makers) are shared, not copied: their
folder goes on sys.path, as pytest does for it when it collects those tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "service"))

from reliability_helpers import FIGURES, FakeService, live_server  # noqa: E402
from svc_helpers import (  # noqa: E402
    FakeRunner,
    SettingsFactory,
    fake_runner,  # noqa: E402, F401  (a fixture, collected from here)
    settings_factory,
)

DRAIN_S = 5  # short drains, so a server a test left busy stops quickly


@pytest.fixture
def make_settings(tiny_onnx: Path) -> SettingsFactory:
    """The tiny model on CPU, 64 px tiles so small images are tiled, fast batches, short drains."""
    return settings_factory(tiny_onnx, drain_timeout_s=DRAIN_S)


@pytest.fixture(scope="module")
def fake_service(tiny_onnx: Path) -> Iterator[FakeService]:
    """One server for a whole module of independent requests (the FakeRunner computes 0.5 x + 0.25)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("DERAIN_"):
                patch.delenv(name)
        settings = settings_factory(tiny_onnx, drain_timeout_s=DRAIN_S)()
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

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
from svc_helpers import FakeRunner, SettingsFactory  # noqa: E402

from service.settings import Settings  # noqa: E402

SMALL_TILES: dict[str, object] = {
    "providers": "CPUExecutionProvider",
    "tile_size": 64,  # small images take the tiled path
    "tile_overlap": 16,
    "max_wait_ms": 2,
    "threads": 1,
    "log_format": "text",
    "drain_timeout_s": 5,
}


@pytest.fixture
def make_settings(tiny_onnx: Path) -> SettingsFactory:
    """The tiny model on CPU, 64 px tiles so small images are tiled, fast batches, short drains."""

    def build(**overrides: object) -> Settings:
        values = {"model_path": tiny_onnx, **SMALL_TILES, **overrides}
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def fake_runner() -> Iterator[FakeRunner]:
    runner = FakeRunner()
    yield runner
    runner.gate.set()  # never leave a worker thread blocked


@pytest.fixture(scope="module")
def fake_service(tiny_onnx: Path) -> Iterator[FakeService]:
    """One server for a whole module of independent requests (the FakeRunner computes 0.5 x + 0.25)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("DERAIN_"):
                patch.delenv(name)
        settings = Settings(model_path=tiny_onnx, **SMALL_TILES)  # type: ignore[arg-type]
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

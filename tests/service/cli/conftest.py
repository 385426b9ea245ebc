"""Fixtures of the `derain` CLI tests: a clean environment, and a real uvicorn serving the tiny model."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from service.http.app import create_app
from service.settings import Settings
from tests.loopback import free_port, wait_ready
from tests.service.cli.cli_helpers import API_KEY, TILE


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DERAIN_* of the developer's (DERAIN_API_KEY is a CLI default); loopback never through a proxy."""
    _drop_derain_env(monkeypatch)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _drop_derain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DERAIN_"):
            monkeypatch.delenv(name)


def _settings(model: Path) -> Settings:
    return Settings(
        model_path=model,
        providers=("CPUExecutionProvider",),
        threads=1,
        max_wait_ms=2,
        api_key=API_KEY,  # type: ignore[arg-type]
        log_format="text",
        log_level="WARNING",
        **TILE,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def server_url(tiny_onnx: Path) -> Iterator[str]:
    """The app under a real uvicorn on a loopback port (in a thread), with an API key; stopped after."""
    with pytest.MonkeyPatch.context() as env:
        _drop_derain_env(env)
        settings = _settings(tiny_onnx)
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cli-test-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, 30, alive=thread.is_alive)
    yield url
    server.should_exit = True
    thread.join(10)

"""A real `python -m service` process on a free loopback port, for the live deploy tests."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from deploy_files import REPO
from PIL import Image

from tests.loopback import free_port, wait_ready

START_TIMEOUT_S = 30.0


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def png(width: int, height: int, seed: int) -> bytes:
    """A small random RGB PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class RunningService:
    url: str
    log: Path

    def derain(self, count: int) -> None:
        """POST `count` small PNGs to /derain; each must come back whole."""
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            for i in range(count):
                body = png(40 + 8 * i, 32, seed=i)
                response = client.post("/derain", files={"image": (f"rain{i}.png", body, "image/png")})
                assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                assert Image.open(io.BytesIO(response.content)).size == (40 + 8 * i, 32)


@pytest.fixture(scope="session")
def running_service(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """`python -m service` on 127.0.0.1 with the tiny model on CPU, ready; stopped after the session."""
    if importlib.util.find_spec("service") is None or not (REPO / "service" / "__main__.py").exists():
        pytest.skip("service package (python -m service) does not exist yet")
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "service.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DERAIN_")}
    env |= {"DERAIN_MODEL_PATH": str(tiny_onnx), "DERAIN_PROVIDERS": "CPUExecutionProvider"}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, START_TIMEOUT_S, alive=lambda: process.poll() is None, interval=0.2)
        except AssertionError as error:
            raise AssertionError(f"{error} (exit code {process.poll()}):\n{log_tail(log)}") from None
        yield RunningService(url, log)
    finally:
        stop(process)

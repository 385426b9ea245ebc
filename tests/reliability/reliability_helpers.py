"""Real servers for the reliability tests, all on 127.0.0.1 and stopped by the tests themselves:

- `live_server`: the app under the service's own uvicorn configuration (h11 protocol, header and
  connection limits, draining shutdown) in a thread of the test process, so a FakeRunner can drive it;
- `ServiceProcess`: `python -m service` as a subprocess on the tiny model, for signals, exit codes,
  memory and logs;
- `raw_exchange`: bytes that no well-behaved client would send, and the responses parsed back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.core.runtime import Runner
from service.http.app import create_app
from service.http.server import DrainingServer, uvicorn_config
from service.settings import Settings
from tests.loopback import free_port, wait_ready
from tests.paths import REPO
from tests.service.svc_helpers import FakeRunner

START_TIMEOUT_S = 60.0  # a cold `python -m service` imports onnxruntime and warms up on 2 busy cores
FIGURES: list[str] = []  # lines for the end-of-run summary (conftest.py prints them)


@dataclass
class LiveServer:
    url: str
    port: int
    server: DrainingServer
    thread: threading.Thread


@contextmanager
def live_server(settings: Settings, runner: Runner | None = None) -> Iterator[LiveServer]:
    """The service on an ephemeral loopback port, in a thread; shut down (drained) on exit."""
    app = create_app(settings) if runner is None else create_app(settings, runner_factory=lambda _: runner)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = int(sock.getsockname()[1])
    server = DrainingServer(
        uvicorn_config(app, settings), app.state.service.lifecycle, settings.drain_timeout_s
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    live = LiveServer(f"http://127.0.0.1:{port}", port, server, thread)
    try:
        wait_ready(live.url, START_TIMEOUT_S, alive=thread.is_alive)
        yield live
    finally:
        server.should_exit = True
        thread.join(settings.drain_timeout_s + 10)
        sock.close()


@dataclass
class FakeService:
    """A live server (real sockets, the service's uvicorn configuration) on a FakeRunner."""

    live: LiveServer
    runner: FakeRunner
    http: httpx.Client


def service_env(model: Path, **settings: object) -> dict[str, str]:
    """Environment for `python -m service` on the tiny model: CPU, 64 px tiles at full size (scale 1),
    one thread, JSON logs."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DERAIN_")}
    env.update(
        DERAIN_MODEL_PATH=str(model),
        DERAIN_PROVIDERS="CPUExecutionProvider",
        DERAIN_TILE_SIZE="64",
        DERAIN_TILE_OVERLAP="16",
        DERAIN_WHOLE_MAX_PIXELS="0",  # fixed tiles and full size: the tile counts these tests load with
        DERAIN_DEFAULT_SCALE="1",
        DERAIN_THREADS="1",
        DERAIN_LOG_FORMAT="json",
    )
    env.update({f"DERAIN_{key.upper()}": str(value) for key, value in settings.items()})
    return env


@dataclass
class ServiceProcess:
    """`python -m service` on a free loopback port; stderr goes to a file (a full pipe would block it)."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, "start() first"
        return self.process

    def wait_ready(self) -> None:
        wait_ready(self.url, START_TIMEOUT_S, alive=lambda: self.proc.poll() is None)

    def rss_mib(self) -> float:
        """Resident memory of the server process (MiB), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL when it is still there after 15 s (a test failed half-way)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, object]]:
        """The JSON log lines (other lines, such as a traceback or the start-up verdict, are skipped)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> list[RawResponse]:
    """Send `payload` as is, read until the server closes (or `timeout`), parse every response in it."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return parse_responses(bytes(received))


def parse_responses(data: bytes) -> list[RawResponse]:
    """HTTP/1.1 responses with a Content-Length, one after another."""
    responses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        responses.append(RawResponse(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses

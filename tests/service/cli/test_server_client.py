"""`derain --url` against a scripted stand-in server: what goes over the wire, and the 429 retry."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main


class Recorder(BaseHTTPRequestHandler):
    """Answers the scripted (status, headers, body) in turn; records path, headers and body of each POST."""

    script: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, dict(self.headers), body))
        status, headers, content = self.script.pop(0)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(content))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:  # quiet: no access lines in the test output
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    Recorder.script, Recorder.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def webp(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, "WEBP")
    return buffer.getvalue()


def test_the_image_key_and_options_are_sent_and_429_is_retried(stand_in: str, tmp_path: Path) -> None:
    source = tmp_path / "rainy.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(source)
    busy = (429, {"Retry-After": "0", "Content-Type": "application/json"}, b'{"detail": "queue full"}')
    Recorder.script = [busy, (200, {"Content-Type": "image/webp"}, webp(30, 20))]
    argv = [str(source), "-o", str(tmp_path / "out"), "--url", stand_in + "/", "--api-key", "k-123"]
    assert main([*argv, "--format", "webp", "--quality", "70", "-q"]) == 0

    assert len(Recorder.seen) == 2  # the 429, then the retry
    for path, headers, body in Recorder.seen:
        assert path == "/derain?format=webp&quality=70"
        assert headers["Authorization"] == "Bearer k-123"
        assert headers["Content-Type"] == "application/octet-stream"
        assert body == source.read_bytes()
    assert Image.open(tmp_path / "out" / "rainy.webp").size == (30, 20)


def test_a_lasting_overload_fails_the_image_with_the_services_words(
    stand_in: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "rainy.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source)
    busy = (429, {"Retry-After": "0", "Content-Type": "application/json"}, b'{"detail": "queue full"}')
    Recorder.script = [busy] * 4
    assert main([str(source), "-o", str(tmp_path / "out"), "--url", stand_in, "-q"]) == 1
    assert len(Recorder.seen) == 4 and "Authorization" not in Recorder.seen[0][1]
    assert "the service answered 429: queue full" in capsys.readouterr().err

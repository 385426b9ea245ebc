"""Security: the API key (constant-time check, never logged), the connection limit, and nothing a request
carries (file name, path, exception text) ever reaching the disk or a response.

The header and upload limits are in test_bad_input.py (431) and tests/service (413); the container's
non-root user and read-only root filesystem in tests/deploy.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.core import derainer as engine
from service.logs import JsonFormatter
from tests.reliability.reliability_helpers import live_server, raw_exchange
from tests.service.svc_helpers import FakeRunner, SettingsFactory, metric, noise, png_bytes, serve

KEY = "sk-live-4f9d2c7e1b"
WRONG = "sk-live-00000000000"


class _FileWrites:
    """An audit hook (process-wide, all threads) recording files opened for writing while active."""

    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    TMPFILE = getattr(os, "O_TMPFILE", 0)  # an unnamed temporary file, as spooled uploads use

    def __init__(self) -> None:
        self.active = False
        self.paths: list[str] = []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if not self.active or event != "open":
            return
        path, _, flags = args
        writes = isinstance(flags, int) and (
            bool(flags & self.WRITE) or bool(self.TMPFILE and flags & self.TMPFILE == self.TMPFILE)
        )
        if writes and not str(path).endswith(".pyc"):  # a lazy import may cache its bytecode
            self.paths.append(str(path))


_FILE_WRITES: list[_FileWrites] = []  # audit hooks cannot be removed: one for the whole session


@contextmanager
def files_written() -> Iterator[list[str]]:
    if not _FILE_WRITES:
        _FILE_WRITES.append(_FileWrites())
    hook = _FILE_WRITES[0]
    hook.paths = []
    hook.active = True
    try:
        yield hook.paths
    finally:
        hook.active = False


def everything_logged(records: list[logging.LogRecord]) -> str:
    """Every record as the JSON collector would get it: message, extra fields, traceback."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in records)


def test_the_api_key_is_compared_in_constant_time(
    make_settings: SettingsFactory, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check is one hmac.compare_digest of two SHA-256 digests: its time depends neither on how
    much of a guess is right nor on the guess's length."""
    compared: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("service.http.routes.hmac.compare_digest", spy)
    body = png_bytes(noise(20, 20))
    with serve(make_settings(api_key=KEY), fake_runner) as client:
        for token, status in ((KEY, 200), (WRONG, 401), (KEY[:-1], 401), ("x" * 500, 401), ("", 401)):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
            assert client.post("/derain", content=body, headers=headers).status_code == status
    assert len(compared) == 5
    assert all(len(a) == len(b) == 32 for a, b in compared)


def test_the_api_key_and_presented_tokens_are_never_logged(
    make_settings: SettingsFactory, fake_runner: FakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = png_bytes(noise(20, 20))
    with serve(make_settings(api_key=KEY, log_level="DEBUG"), fake_runner) as client:
        for token in (KEY, WRONG):
            client.post("/derain", content=body, headers={"Authorization": f"Bearer {token}"})
        client.post("/derain", content=b"junk", headers={"Authorization": f"Bearer {WRONG}"})
    logged = everything_logged(caplog.records)
    assert "api_key_set" in logged  # the start-up line with the settings was captured
    assert KEY not in logged and WRONG not in logged


def test_the_connection_and_header_limits_follow_their_settings(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    """DERAIN_MAX_CONNECTIONS=3: three idle keep-alive connections are served; a fourth is refused
    with JSON and Retry-After, and closed; once they go, requests are served again.
    DERAIN_MAX_HEADER_BYTES=4096: a 5 kB header is refused with 431."""
    with live_server(make_settings(max_connections=3, max_header_bytes=4096), fake_runner) as live:
        big_head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n" % (b"a" * 5000)
        (too_big,) = raw_exchange(live.port, big_head)
        assert too_big.status == 431
        assert too_big.json() == {
            "detail": "request line and headers are larger than the limit of 4096 bytes"
        }
        idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(3)]
        try:
            request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            (refused,) = raw_exchange(live.port, request)
            assert refused.status == 503
            assert refused.json() == {"detail": "too many open connections (limit 3); retry in 1 s"}
            assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        finally:
            for sock in idle:
                sock.close()
        ok = raw_exchange(live.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert [response.status for response in ok] == [200]
        (malformed,) = raw_exchange(live.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        assert malformed.status == 400
        with httpx.Client(base_url=live.url) as client:  # the HTTP layer's refusals are counted too
            counted = {
                reason: metric(client, "derain_rejections_total", reason=reason)  # type: ignore[arg-type]
                for reason in ("header_too_large", "too_many_connections", "malformed_http")
            }
        assert counted == {"header_too_large": 1, "too_many_connections": 1, "malformed_http": 1}


def _read_until_closed(sock: socket.socket, deadline_s: float, trickle: bytes = b"") -> tuple[bytes, float]:
    """Send `trickle` one byte per 50 ms (while the server lets us) and read until the server closes;
    returns what was read and when the close came (bounded by `deadline_s`)."""
    started = time.monotonic()
    received, pending = b"", list(trickle)
    sock.settimeout(0.05)
    while time.monotonic() - started < deadline_s:
        if pending:
            with contextlib.suppress(OSError):
                sock.sendall(bytes([pending.pop(0)]))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_slow_and_silent_request_heads_get_408_and_free_their_slot(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    """DERAIN_HEADER_TIMEOUT_S=0.5: a client that connects and sends nothing, and one that dribbles a
    header byte every 50 ms (slowloris), are both answered 408 and closed after about 0.5 s, so with a
    limit of 2 connections the service is reachable again; a slow upload after a complete head is not
    cut by this timeout."""
    expected = b'{"detail":"request line and headers not received within 0.5 s"}'
    with live_server(make_settings(header_timeout_s=0.5, max_connections=2), fake_runner) as live:
        silent = socket.create_connection(("127.0.0.1", live.port))
        slow = socket.create_connection(("127.0.0.1", live.port))
        try:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            trickled, slow_closed_after = _read_until_closed(slow, 5.0, b"X-Slow: " + b"a" * 200)
            said_nothing, _ = _read_until_closed(silent, 5.0)
        finally:
            slow.close()
            silent.close()
        for response in (trickled, said_nothing):
            assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert response.endswith(expected) and b"connection: close" in response
        assert 0.4 <= slow_closed_after < 3.0  # 200 header bytes would have taken 10 s
        with httpx.Client(base_url=live.url) as client:
            assert metric(client, "derain_rejections_total", reason="header_timeout") == 2  # type: ignore[arg-type]

        # A complete head, then a body sent in 6 pieces over ~1.2 s: longer than the head timeout.
        body = png_bytes(noise(24, 32))
        head = b"POST /derain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as upload:
            upload.sendall(head)
            step = len(body) // 6 + 1
            for start in range(0, len(body), step):
                time.sleep(0.2)
                upload.sendall(body[start : start + step])
            answer, _ = _read_until_closed(upload, 10.0)
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_file_names_paths_and_exception_text_reach_neither_disk_nor_responses(
    make_settings: SettingsFactory,
    fake_runner: FakeRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 3 MiB multipart upload (above the size at which form parsers spool to disk) named like a path
    traversal is handled in memory; neither the name nor an internal exception's text comes back."""
    scratch, workdir = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    workdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(workdir)
    caplog.set_level(logging.DEBUG)
    name = "../../../../../tmp/pwned<script>.png"
    big = png_bytes(noise(1024, 1024))
    assert len(big) > 3 * 1024 * 1024
    settings = make_settings(max_pixels=2_000_000)
    with (
        live_server(settings, fake_runner) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
        files_written() as written,
    ):
        served = client.post("/derain", files={"image": (name, big, "image/png")})
        refused = client.post("/derain", files={"image": (name, b"not an image", "image/png")})
        with monkeypatch.context() as patch:
            patch.setattr(engine, "decode", _raise_with_a_path)
            failed = client.post("/derain", files={"image": (name, big, "image/png")})
    assert written == []
    assert served.status_code == 200 and refused.status_code == 400
    assert failed.status_code == 500 and failed.json() == {"detail": "internal error"}
    for response in (served, refused, failed):
        text = response.text if response.status_code != 200 else str(response.headers)
        assert "pwned" not in text and "/etc/derain" not in text
    assert os.listdir(scratch) == [] and os.listdir(workdir) == []
    assert "pwned" not in everything_logged(caplog.records)


def _raise_with_a_path(data: bytes, max_pixels: int) -> object:
    raise RuntimeError("cannot read /etc/derain/secret-config.yaml")


def test_unknown_routes_and_methods_do_not_echo_the_path(
    fake_runner: FakeRunner, make_settings: SettingsFactory
) -> None:
    with live_server(make_settings(), fake_runner) as live, httpx.Client(base_url=live.url) as http:
        for response in (http.get("/etc/passwd%00<script>"), http.delete("/derain"), http.get("/derain")):
            assert response.status_code in (404, 405)
            assert response.headers["content-type"] == "application/json"
            assert "passwd" not in response.text and "script" not in response.text

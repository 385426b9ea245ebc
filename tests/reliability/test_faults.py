"""Faults, over real sockets: a failing batch, a client that leaves, a request past its deadline, and a
model that cannot be served.

Requests are told apart by their pixels: each test image is one constant grey level, so every tile the
(fake) model saw can be traced back to its request.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from tests.loopback import free_port
from tests.paths import REPO
from tests.reliability.reliability_helpers import live_server, service_env
from tests.service.svc_helpers import SECRET, FakeRunner, SettingsFactory, metric, png_bytes, wait_until

GENERIC_500 = {"detail": "inference failed; the request can be retried"}


def flat(level: int, height: int = 20, width: int = 20) -> bytes:
    """A grey PNG of one level: its tiles are recognisable in what the model saw."""
    return png_bytes(np.full((height, width, 3), level, np.uint8))


def saw(runner: FakeRunner, level: int) -> int:
    """How many tiles of grey `level` reached the model."""
    return sum(bool(np.all(np.abs(tile - level / 255) < 1e-6)) for tile in runner.tiles_seen)


def in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    results: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    return thread, results


def test_a_failing_batch_fails_only_its_own_requests(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    """Batch 1 = tiles of A (poisoned) and B; batch 2 = tiles of C and D. A and B get a generic 500,
    C and D their images, and the service goes on serving."""
    fake_runner.fail_when = lambda batch: any(np.all(np.abs(t - 201 / 255) < 1e-6) for t in batch)
    settings = make_settings(max_batch=2, max_wait_ms=5000)  # a batch waits for both A and B
    with live_server(settings, fake_runner) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        fake_runner.gate.clear()
        fake_runner.entered.clear()
        fake_runner.batch_sizes.clear()

        def post(level: int) -> Callable[[], httpx.Response]:
            return lambda: http.post("/derain", content=flat(level), headers={"Content-Type": "image/png"})

        first = [in_background(post(level)) for level in (201, 10)]
        wait_until(fake_runner.entered.is_set)  # A and B are in the model, which is held
        second = [in_background(post(level)) for level in (50, 90)]
        wait_until(lambda: metric(http, "derain_queue_tiles") == 2)
        fake_runner.gate.set()
        for thread, _ in first + second:
            thread.join(30)
        (a,), (b,) = (results for _, results in first)
        (c,), (d,) = (results for _, results in second)
        assert fake_runner.batch_sizes == [2, 2]
        assert (a.status_code, b.status_code, c.status_code, d.status_code) == (500, 500, 200, 200)
        assert a.json() == b.json() == GENERIC_500
        assert SECRET not in a.text + b.text  # the exception's text stays in the logs
        fake_runner.fail_when = lambda batch: False
        assert (
            http.post("/derain", content=flat(201), headers={"Content-Type": "image/png"}).status_code == 200
        )
        assert metric(http, "derain_rejections_total", reason="inference_error") == 2


def test_a_client_that_disconnects_frees_its_tiles(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    """A 6-tile request whose client closes the socket while its first tile is in the (held) model:
    its 5 queued tiles leave the queue before the model is released, and never run."""
    with live_server(make_settings(max_batch=1), fake_runner) as live:
        fake_runner.gate.clear()
        fake_runner.entered.clear()
        body = flat(123, 100, 150)  # 6 tiles of 64 px
        head = b"POST /derain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
        with httpx.Client(base_url=live.url, timeout=30) as http:
            sock = socket.create_connection(("127.0.0.1", live.port))
            sock.sendall(head % len(body) + body)
            wait_until(lambda: fake_runner.entered.is_set() and metric(http, "derain_queue_tiles") == 5)
            sock.close()
            wait_until(lambda: metric(http, "derain_queue_tiles") == 0)  # freed, model still held
            fake_runner.gate.set()
            wait_until(lambda: metric(http, "derain_inflight_requests") == 0)
            assert metric(http, "derain_tiles_dropped_total") == 5
            assert metric(http, "derain_rejections_total", reason="disconnected") == 1
            assert saw(fake_runner, 123) == 1  # only the tile that was already in the model
            assert (
                http.post("/derain", content=flat(7), headers={"Content-Type": "image/png"}).status_code
                == 200
            )


def test_a_client_that_leaves_mid_upload_is_not_an_internal_error(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    body = flat(99, 100, 150)
    head = b"POST /derain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
    with live_server(make_settings(), fake_runner) as live, httpx.Client(base_url=live.url) as http:
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head % len(body) + body[: len(body) // 2])
            wait_until(lambda: metric(http, "derain_inflight_requests") == 1)
        wait_until(lambda: metric(http, "derain_rejections_total", reason="disconnected") == 1)
        assert metric(http, "derain_rejections_total", reason="internal") == 0
        assert metric(http, "derain_requests_total", route="/derain", status="499") == 1
        assert saw(fake_runner, 99) == 0


def test_a_request_past_its_deadline_gets_504_and_its_tiles_never_run(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    """X (1 tile) holds the model; Y (6 tiles) queues behind it. Both pass their 1 s deadline and get
    504; Y's tiles are dropped from the queue and never reach the model, even once it is released."""
    with live_server(make_settings(max_batch=1, request_timeout_s=1), fake_runner) as live:
        fake_runner.gate.clear()
        fake_runner.entered.clear()
        with httpx.Client(base_url=live.url, timeout=30) as http:

            def post(body: bytes) -> Callable[[], httpx.Response]:
                return lambda: http.post("/derain", content=body, headers={"Content-Type": "image/png"})

            x_thread, x = in_background(post(flat(33)))
            wait_until(fake_runner.entered.is_set)
            y_thread, y = in_background(post(flat(77, 100, 150)))
            for thread in (x_thread, y_thread):
                thread.join(30)
            detail = {"detail": "request did not finish within 1 s; its tiles were dropped"}
            assert x[0].status_code == y[0].status_code == 504
            assert x[0].json() == y[0].json() == detail
            assert metric(http, "derain_queue_tiles") == 0
            fake_runner.gate.set()
            wait_until(lambda: len(fake_runner.batch_sizes) == 2)  # the warm-up and X's tile
            time.sleep(0.2)  # would-be batches of Y's tiles have had time to run
            assert saw(fake_runner, 33) == 1 and saw(fake_runner, 77) == 0
            assert metric(http, "derain_tiles_dropped_total") == 6
            assert (
                http.post("/derain", content=flat(5), headers={"Content-Type": "image/png"}).status_code
                == 200
            )


def missing_model(tiny: Path, folder: Path) -> Path:
    return folder / "absent.onnx"


def corrupt_model(tiny: Path, folder: Path) -> Path:
    path = folder / "corrupt.onnx"
    path.write_bytes(b"\x08\x01garbage" * 100)
    return path


def model_for_minus_one_to_one(tiny: Path, folder: Path) -> Path:
    """The tiny model, its metadata claiming the original TensorFlow value range."""
    model = onnx.load(str(tiny))
    props = {p.key: p.value for p in model.metadata_props} | {"value_range": "-1,1"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path = folder / "minus-one-to-one.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("make_model", "code", "message"),
    [
        pytest.param(
            missing_model, 2,
            "invalid setting DERAIN_MODEL_PATH: Value error, model file {path} does not exist; "
            "export one with `python -m model_export --weights W --out {path}` or set DERAIN_MODEL_PATH",
            id="missing",
        ),
        pytest.param(corrupt_model, 1, "start-up failed: cannot load model {path}: ", id="corrupt"),
        pytest.param(
            model_for_minus_one_to_one, 1,
            "start-up failed: model {path} has value_range='-1,1'; the service needs '0,1'",
            id="wrong-metadata",
        ),
    ],
)  # fmt: skip
def test_a_model_that_cannot_be_served_stops_start_up(
    tiny_onnx: Path,
    tmp_path: Path,
    make_model: Callable[[Path, Path], Path],
    code: int,
    message: str,
) -> None:
    """`python -m service` exits non-zero with the reason as its last line, never having opened its port."""
    model = make_model(tiny_onnx, tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)], cwd=REPO, env=service_env(model),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    accepted = False
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            accepted = accepted or probe.connect_ex(("127.0.0.1", port)) == 0
        time.sleep(0.02)
    try:
        _, stderr = process.communicate(timeout=5)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert not accepted, "the port accepted connections: a half-alive server"
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith(message.format(path=model)), stderr

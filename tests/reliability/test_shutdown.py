"""Graceful shutdown of a real `python -m service` (uvicorn, tiny model) on SIGTERM with requests in flight.

tests/service/http/test_lifecycle.py covers readiness flipping inside the app and a SIGTERM with nothing in
flight; here the process drains real requests: readiness answers 503 at once (the port stays open while
draining), new work gets 503 with Retry-After, every in-flight request completes, and the process exits
0 within the drain timeout. When the drain timeout is too short, whatever is still in flight gets 503
with Retry-After (never a cut connection or a 500) and the exit still comes on time.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.reliability.reliability_helpers import FIGURES, ServiceProcess, service_env
from tests.service.svc_helpers import metric, noise, png_bytes, wait_until

BIG = png_bytes(noise(640, 640, seed=3))  # 169 tiles of 64 px: ~0.4 s of the tiny model each
SMALL = png_bytes(noise(20, 20))
PNG = {"Content-Type": "image/png"}
DRAINING = {"detail": "the service is shutting down; retry elsewhere"}


def start(tiny_onnx: Path, log: Path, drain_timeout_s: float) -> ServiceProcess:
    env = service_env(tiny_onnx, max_queue_tiles=4096, max_batch=8, drain_timeout_s=drain_timeout_s)
    server = ServiceProcess(env, log).start()
    server.wait_ready()
    return server


def send_in_flight(
    pool: ThreadPoolExecutor, server: ServiceProcess, count: int
) -> list[Future[httpx.Response]]:
    """`count` big requests, returned once the server counts all of them in flight."""
    futures = [
        pool.submit(httpx.post, f"{server.url}/derain", content=BIG, headers=PNG, timeout=60)
        for _ in range(count)
    ]
    with httpx.Client(base_url=server.url) as client:
        wait_until(lambda: metric(client, "derain_inflight_requests") == count, timeout=30)  # type: ignore[arg-type]
    return futures


@pytest.mark.slow
def test_sigterm_drains_every_request_in_flight(tiny_onnx: Path, tmp_path: Path) -> None:
    server = start(tiny_onnx, tmp_path / "server.log", drain_timeout_s=30)
    try:
        with ThreadPoolExecutor(6) as pool:
            in_flight = send_in_flight(pool, server, 6)
            server.terminate()
            signalled = time.monotonic()
            readiness = httpx.get(f"{server.url}/readyz", timeout=5)
            unready_after_s = time.monotonic() - signalled
            refused = httpx.post(f"{server.url}/derain", content=SMALL, headers=PNG, timeout=5)
            responses = [future.result(timeout=60) for future in in_flight]
        code = server.proc.wait(30)
        exited_after_s = time.monotonic() - signalled
    finally:
        server.stop()
    assert readiness.status_code == 503 and readiness.json() == DRAINING
    assert unready_after_s < 1
    assert refused.status_code == 503 and refused.json() == DRAINING
    assert refused.headers["retry-after"] == "1"
    assert [r.status_code for r in responses] == [200] * 6
    assert all(Image.open(io.BytesIO(r.content)).size == (640, 640) for r in responses)
    assert code == 0 and exited_after_s < 30
    messages = [line["message"] for line in server.log_lines()]
    assert "draining 6 requests in flight" in messages and "stopped" in messages
    FIGURES.append(
        f"shutdown: SIGTERM with 6 requests in flight (169 tiles each): readiness 503 after "
        f"{unready_after_s * 1000:.0f} ms, all 6 answered 200, exit 0 after {exited_after_s:.1f} s"
    )


@pytest.mark.slow
def test_a_drain_timeout_answers_the_rest_503_and_exits_on_time(tiny_onnx: Path, tmp_path: Path) -> None:
    drain_timeout_s = 2.0
    server = start(tiny_onnx, tmp_path / "server.log", drain_timeout_s=drain_timeout_s)
    try:
        with ThreadPoolExecutor(10) as pool:
            in_flight = send_in_flight(pool, server, 10)  # ~4 s of work: more than the drain allows
            server.terminate()
            signalled = time.monotonic()
            code = server.proc.wait(30)
            exited_after_s = time.monotonic() - signalled
            responses = [future.result(timeout=30) for future in in_flight]
    finally:
        server.stop()
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json() == DRAINING and response.headers["retry-after"] == "1"
    assert code == 0
    assert exited_after_s < drain_timeout_s + 1.5  # + the interpreter's own exit on 2 busy cores
    FIGURES.append(
        f"shutdown: drain timeout {drain_timeout_s:g} s with 10 requests in flight: "
        f"{statuses.count(200)} answered 200, {statuses.count(503)} answered 503 + Retry-After, "
        f"exit 0 after {exited_after_s:.1f} s"
    )
    timeouts = [
        str(line["message"]) for line in server.log_lines() if "drain timeout" in str(line["message"])
    ]
    assert len(timeouts) == 1 and timeouts[0].endswith(" requests in flight get 503"), timeouts

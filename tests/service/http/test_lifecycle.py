"""Readiness transitions, metrics with values, cross-request batching and disconnects over HTTP,
the OpenAPI description, structured logs and the `python -m service` entry point."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.core.runtime import ModelError
from service.http.app import create_app
from service.logs import JsonFormatter, RequestIdFilter, request_id
from tests.loopback import free_port, wait_ready
from tests.paths import REPO
from tests.service.svc_helpers import FakeRunner, SettingsFactory, metric, noise, png_bytes, serve, wait_until

PNG = png_bytes(noise(20, 20))


def test_readiness_follows_warm_up_and_shutdown(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    fake_runner.gate.clear()
    app = create_app(make_settings(), runner_factory=lambda _: fake_runner)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 503
        assert client.get("/readyz").json() == {"detail": "the model is still loading; retry shortly"}
        fake_runner.gate.set()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        body = client.get("/readyz").json()
        assert body == {
            "status": "ready", "preset": "fake", "provider": "CPUExecutionProvider",
            "precision": "fp32", "tile_size": "64", "max_batch": "1",  # auto: 1 on the CPU
        }  # fmt: skip
        app.state.service.lifecycle.begin_shutdown()  # what SIGTERM does under `python -m service`
        assert client.get("/readyz").json() == {"detail": "the service is shutting down; retry elsewhere"}
        assert client.get("/healthz").status_code == 200
    assert app.state.service.lifecycle.state == "draining"


@pytest.mark.parametrize(("lanes", "warm_up"), [(1, [1]), (2, [1, 3])])
def test_cpu_warm_up_runs_a_full_batch_only_when_there_are_lanes(
    make_settings: SettingsFactory, fake_runner: FakeRunner, lanes: int, warm_up: list[int]
) -> None:
    fake_runner.lanes = lanes
    with serve(make_settings(max_batch=3), fake_runner):
        assert fake_runner.batch_sizes == warm_up


def test_a_failed_warm_up_keeps_the_service_unready(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    fake_runner.fail_when = lambda batch: True
    with serve(make_settings(), fake_runner, ready=False) as client:
        wait_until(lambda: client.get("/healthz").status_code == 503)
        assert client.get("/readyz").json() == {
            "detail": "the model failed its warm-up; see the service logs"
        }
        refused = client.post("/derain", content=PNG)
        assert refused.status_code == 503 and "retry-after" not in refused.headers  # it will not recover


def test_a_bad_model_stops_start_up(make_settings: SettingsFactory, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with (
        pytest.raises(ModelError, match="cannot load model"),
        TestClient(create_app(make_settings(model_path=corrupt))),
    ):
        pass


def test_metrics_count_a_request_with_values(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    with serve(make_settings(max_batch=4, max_wait_ms=1), fake_runner) as client:
        assert client.post("/derain", content=png_bytes(noise(100, 150))).status_code == 200  # 6 tiles
        values = {
            "requests": metric(client, "derain_requests_total", route="/derain", status="200"),
            "tiles": metric(client, "derain_tiles_total"),
            "batches": metric(client, "derain_batch_size_count"),
            "batched_tiles": metric(client, "derain_batch_size_sum"),
            "megapixels": metric(client, "derain_input_megapixels_sum"),
            "inflight": metric(client, "derain_inflight_requests"),
            "queued": metric(client, "derain_queue_tiles"),
            "fallback": metric(client, "derain_provider_fallback"),
        }
        stages = {
            stage: metric(client, "derain_stage_duration_seconds_count", stage=stage)
            for stage in ("decode", "queue", "inference", "encode", "total")
        }
        info = metric(
            client, "derain_model_info", preset="fake", weights_sha256="f" * 64,
            provider="CPUExecutionProvider", requested_provider="CPUExecutionProvider", precision="fp32",
        )  # fmt: skip
        text = client.get("/metrics").text
    assert values == {
        "requests": 1, "tiles": 6, "batches": 2, "batched_tiles": 6, "megapixels": 0.015,
        "inflight": 0, "queued": 0, "fallback": 0,
    }  # fmt: skip
    assert stages == {"decode": 1, "queue": 6, "inference": 2, "encode": 1, "total": 1}
    assert info == 1
    assert 'derain_stage_duration_seconds_bucket{le="120.0",stage="total"} 1.0' in text
    assert "process_cpu_seconds_total" in text and "python_info" in text


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available")
def test_cuda_asked_but_cpu_active_is_a_metric(make_settings: SettingsFactory) -> None:
    with serve(make_settings(providers="CUDAExecutionProvider,CPUExecutionProvider")) as client:
        assert metric(client, "derain_provider_fallback") == 1
        assert metric(
            client, "derain_model_info", provider="CPUExecutionProvider",
            requested_provider="CUDAExecutionProvider,CPUExecutionProvider",
        ) == 1  # fmt: skip


def test_tiles_of_concurrent_requests_share_batches(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    with serve(make_settings(max_batch=4, max_wait_ms=1000), fake_runner) as client:
        fake_runner.batch_sizes.clear()
        statuses: list[int] = []
        workers = [
            threading.Thread(target=lambda: statuses.append(client.post("/derain", content=PNG).status_code))
            for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert statuses == [200, 200, 200]
    assert sum(fake_runner.batch_sizes) == 3 and len(fake_runner.batch_sizes) < 3  # at least two shared
    assert fake_runner.batch_sizes[0] >= 2


def test_a_client_that_disconnects_has_its_tiles_dropped(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    body = png_bytes(noise(100, 150))  # 6 tiles
    with serve(make_settings(max_batch=1), fake_runner) as client:
        fake_runner.gate.clear()
        sent: list[dict[str, object]] = []

        async def call() -> None:
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, object]:
                return messages.pop() if messages else {"type": "http.disconnect"}

            async def send(message: dict[str, object]) -> None:
                sent.append(message)

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": "/derain", "raw_path": b"/derain", "query_string": b"",
                "root_path": "", "headers": [(b"content-type", b"image/png")],
                "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
                "state": client.app_state.copy(),  # the lifespan's state, as a server passes it on
            }  # fmt: skip
            await client.app(scope, receive, send)  # type: ignore[arg-type]

        client.portal.call(call)  # type: ignore[union-attr]
        fake_runner.gate.set()
        wait_until(lambda: metric(client, "derain_queue_tiles") == 0)
        assert sent[0]["status"] == 499
        assert metric(client, "derain_tiles_dropped_total") == 5
        assert metric(client, "derain_rejections_total", reason="disconnected") == 1


def test_openapi_documents_bodies_parameters_headers_and_errors(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    with serve(make_settings(), fake_runner) as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    operation = spec["paths"]["/derain"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "multipart/form-data",
        "image/*",
        "application/octet-stream",
    }
    assert {p["name"] for p in operation["parameters"]} == {"format", "quality", "scale"}
    assert set(operation["responses"]) == {
        "200",
        "400",
        "401",
        "408",
        "413",
        "415",
        "422",
        "429",
        "500",
        "503",
        "504",
    }
    assert set(operation["responses"]["200"]["headers"]) == {
        "X-Derain-Tiles",
        "X-Derain-Scale",
        "X-Derain-Passes",
        "X-Derain-Inference-Ms",
        "X-Request-Id",
    }
    assert set(operation["responses"]["200"]["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]


def test_json_logs_carry_the_request_id() -> None:
    record = logging.LogRecord("service.x", logging.INFO, __file__, 1, "served %s", ("it",), None)
    record.status = 200
    token = request_id.set("req-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "served it" and entry["request_id"] == "req-42" and entry["status"] == 200
    assert entry["level"] == "INFO" and entry["logger"] == "service.x"


def test_python_m_service_refuses_bad_settings(tiny_onnx: Path) -> None:
    env = {**os.environ, "DERAIN_MODEL_PATH": str(tiny_onnx), "DERAIN_TILE_SIZE": "100"}
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert (
        "invalid setting DERAIN_TILE_SIZE: Value error, tile size 100 px is not a multiple of 8"
        in done.stderr.decode()
    )


def test_python_m_service_serves_and_drains_on_sigterm(tiny_onnx: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "DERAIN_MODEL_PATH": str(tiny_onnx), "DERAIN_PROVIDERS": "CPUExecutionProvider",
        "DERAIN_TILE_SIZE": "64", "DERAIN_TILE_OVERLAP": "16", "DERAIN_THREADS": "1",
    }  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 60, alive=lambda: server.poll() is None, interval=0.1)
        response = httpx.post(
            f"{base}/derain", content=PNG, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.stderr.read().decode() if server.stderr else ""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["message"] == "ready" for line in lines)
    assert any(line.get("route") == "/derain" and line.get("status") == 200 for line in lines)

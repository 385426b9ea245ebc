"""Every row of the error table: status, one-line JSON detail, headers, the rejection counted."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.errors import DerainError
from service.http.error_table import ERROR_STATUS
from tests.service.svc_helpers import (
    SECRET,
    FakeRunner,
    SettingsFactory,
    metric,
    noise,
    png_bytes,
    serve,
    wait_until,
)

PNG = png_bytes(noise(20, 20))


def assert_error(response: object, status: int, detail: str, reason: str, client: TestClient) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    assert response.json() == {"detail": detail}  # type: ignore[attr-defined]
    assert "x-request-id" in response.headers  # type: ignore[attr-defined]
    assert metric(client, "derain_rejections_total", reason=reason) >= 1


def test_the_table_covers_every_domain_error() -> None:
    def leaves(cls: type[DerainError]) -> set[type[DerainError]]:
        return {cls}.union(*(leaves(sub) for sub in cls.__subclasses__()))

    mapped = {cls for cls in leaves(DerainError) if any(base in ERROR_STATUS for base in cls.__mro__)}
    assert mapped == leaves(DerainError) - {DerainError}


@pytest.mark.parametrize(
    ("body", "headers", "detail"),
    [
        (b"", {"Content-Type": "image/png"}, "empty upload: send the image bytes"),
        (b"\x00" * 100, {}, "not a decodable image; send JPEG, PNG, WebP, TIFF or BMP"),
        (PNG[:120], {"Content-Type": "image/png"}, "image data is truncated or corrupt"),
    ],
)
def test_400_bad_image(
    make_settings: SettingsFactory, fake_runner: FakeRunner, body: bytes, headers: dict[str, str], detail: str
) -> None:
    with serve(make_settings(), fake_runner) as client:
        assert_error(client.post("/derain", content=body, headers=headers), 400, detail, "bad_image", client)


def test_400_multipart_without_the_image_field(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    with serve(make_settings(), fake_runner) as client:
        response = client.post("/derain", files={"photo": ("a.png", PNG, "image/png")})
        detail = "multipart body has no 'image' field; send the file as field 'image'"
        assert_error(response, 400, detail, "bad_image", client)


def test_401_without_the_api_key(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    with serve(make_settings(api_key="s3cret"), fake_runner) as client:
        detail = "missing or invalid API key; send 'Authorization: Bearer <key>'"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = client.post("/derain", content=PNG, headers=headers)
            assert_error(response, 401, detail, "unauthorized", client)
            assert response.headers["www-authenticate"] == "Bearer"
        assert (
            client.post("/derain", content=PNG, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        )
        assert client.get("/healthz").status_code == client.get("/metrics").status_code == 200


def test_413_upload_too_large_declared_or_streamed(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    detail = "upload is larger than the limit of 2048 bytes"
    with serve(make_settings(max_upload_bytes=2048), fake_runner) as client:
        assert_error(client.post("/derain", content=b"\0" * 4096), 413, detail, "too_large", client)
        chunks = iter([b"\0" * 1500, b"\0" * 1500])  # no Content-Length: counted while reading
        assert_error(client.post("/derain", content=chunks), 413, detail, "too_large", client)
        files = {"image": ("a.png", b"\0" * 4096, "image/png")}
        assert_error(client.post("/derain", files=files), 413, detail, "too_large", client)


def test_413_too_many_pixels(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    with serve(make_settings(max_pixels=300), fake_runner) as client:
        detail = "image is 20x20 = 0.0 megapixels; the limit is 0.0 megapixels"
        assert_error(client.post("/derain", content=PNG), 413, detail, "too_large", client)
    assert fake_runner.batch_sizes == [1]  # only the warm-up ran


def test_415_unsupported_content_or_format(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    with serve(make_settings(), fake_runner) as client:
        response = client.post("/derain", content=b"hello", headers={"Content-Type": "text/plain"})
        detail = (
            "content type text/plain is not accepted; send multipart field 'image' "
            "or the raw image with an image/* or application/octet-stream content type"
        )
        assert_error(response, 415, detail, "unsupported", client)
        gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
        response = client.post("/derain", content=gif, headers={"Content-Type": "image/gif"})
        assert_error(
            response,
            415,
            "GIF images are not supported; send JPEG, PNG, WebP, TIFF or BMP",
            "unsupported",
            client,
        )


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("format=gif", "query parameter 'format': Input should be 'png', 'jpeg', 'jpg' or 'webp'"),
        ("quality=0", "query parameter 'quality': Input should be greater than or equal to 1"),
        ("quality=101", "query parameter 'quality': Input should be less than or equal to 100"),
    ],
)
def test_422_invalid_query(
    make_settings: SettingsFactory, fake_runner: FakeRunner, query: str, detail: str
) -> None:
    with serve(make_settings(), fake_runner) as client:
        assert_error(client.post(f"/derain?{query}", content=PNG), 422, detail, "invalid_request", client)


def test_429_when_the_queue_is_full(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    """A request of 6 tiles fills the queue (model blocked); the next one is refused at once."""
    settings = make_settings(max_batch=1, max_queue_tiles=4)
    big = png_bytes(noise(100, 150))  # 6 tiles of 64 px
    with serve(settings, fake_runner) as client:
        fake_runner.gate.clear()
        fake_runner.entered.clear()
        first: dict[str, int] = {}
        worker = threading.Thread(
            target=lambda: first.update(status=client.post("/derain", content=big).status_code)
        )
        worker.start()
        wait_until(lambda: fake_runner.entered.is_set() and metric(client, "derain_queue_tiles") == 5)
        response = client.post("/derain", content=PNG)
        retry = int(response.headers["retry-after"])  # from the warm-up's throughput: fast fake, 1 s
        assert 1 <= retry <= 600
        assert_error(response, 429, f"too many tiles queued (5); retry in {retry} s", "queue_full", client)
        fake_runner.gate.set()
        worker.join(10)
        assert first == {"status": 200}
        assert client.post("/derain", content=PNG).status_code == 200


def test_500_inference_failure_reveals_nothing(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    with serve(make_settings(), fake_runner) as client:
        fake_runner.fail_when = lambda batch: True
        response = client.post("/derain", content=PNG)
        assert_error(response, 500, "inference failed; the request can be retried", "inference_error", client)
        assert SECRET not in response.text
        fake_runner.fail_when = lambda batch: False
        assert client.post("/derain", content=PNG).status_code == 200  # still serving


def test_503_before_ready_and_while_shutting_down(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    fake_runner.gate.clear()  # warm-up blocks
    with serve(make_settings(), fake_runner, ready=False) as client:
        response = client.post("/derain", content=PNG)
        assert_error(response, 503, "the model is still loading; retry shortly", "not_ready", client)
        assert response.headers["retry-after"] == "5"
        fake_runner.gate.set()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        client.app.state.service.lifecycle.begin_shutdown()  # type: ignore[attr-defined]
        response = client.post("/derain", content=PNG)
        detail = "the service is shutting down; retry elsewhere"
        assert_error(response, 503, detail, "shutting_down", client)
        assert response.headers["retry-after"] == "1"


def test_504_timeout_drops_the_queued_tiles(make_settings: SettingsFactory, fake_runner: FakeRunner) -> None:
    settings = make_settings(request_timeout_s=0.5, max_batch=1)
    with serve(settings, fake_runner) as client:
        fake_runner.gate.clear()
        response = client.post("/derain", content=png_bytes(noise(100, 150)))  # 6 tiles, model blocked
        detail = "request did not finish within 0.5 s; its tiles were dropped"
        assert_error(response, 504, detail, "timeout", client)
        fake_runner.gate.set()
        wait_until(lambda: metric(client, "derain_queue_tiles") == 0)
        assert metric(client, "derain_tiles_dropped_total") == 5  # all but the one in the model
        assert len(fake_runner.batch_sizes) == 1 + 1  # warm-up + the batch that was already running


def test_unknown_routes_and_methods_answer_json(
    make_settings: SettingsFactory, fake_runner: FakeRunner
) -> None:
    with serve(make_settings(), fake_runner) as client:
        assert client.get("/nope").json() == {"detail": "Not Found"}
        assert client.get("/derain").status_code == 405
        assert np.isclose(metric(client, "derain_requests_total", route="other", status="404"), 1)

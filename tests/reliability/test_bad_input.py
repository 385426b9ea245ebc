"""Bad input over real sockets: every kind of junk gets its exact 4xx with a one-line JSON reason, never
a 5xx, and none of it reaches the model. The server is the service's own uvicorn configuration (h11,
header limit) on a FakeRunner, so protocol-level junk (huge headers, a body longer than its
Content-Length) is answered by the same code as in production."""

from __future__ import annotations

import io
import re
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.reliability_helpers import (
    FakeService,
    RawResponse,
    live_server,
    parse_responses,
    raw_exchange,
)
from tests.service.svc_helpers import FakeRunner, SettingsFactory, encoded, noise, png_bytes

ACCEPTED = "send JPEG, PNG, WebP, TIFF or BMP"
NOT_DECODABLE = f"not a decodable image; {ACCEPTED}"
TRUNCATED = "image data is truncated or corrupt"
PNG = png_bytes(noise(64, 64))
JPEG = encoded(Image.fromarray(noise(64, 64)), "JPEG")
RANDOM = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"
TEXT = b"this is a letter, not a picture\n"


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_zero_width() -> bytes:
    """A 1x1 TIFF whose ImageWidth tag is patched to 0."""
    buffer = io.BytesIO()
    Image.fromarray(noise(1, 1)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 256:  # ImageWidth
            data[at + 8 : at + 12] = bytes(4)
    return bytes(data)


def multipart(parts: bytes, boundary: str = "XYZ") -> tuple[bytes, dict[str, str]]:
    return parts, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_refused(response: httpx.Response | RawResponse, status: int, detail: str) -> None:
    """The exact status and reason, as one line of JSON; the request id is there to quote to support."""
    if isinstance(response, httpx.Response):
        got, body = response.status_code, response.content
    else:
        got, body = response.status, response.body
    assert got == status, body
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": detail}
    assert "\n" not in body.decode() and len(detail) < 200


IMAGE_PNG = {"Content-Type": "image/png"}
IMAGE_JPEG = {"Content-Type": "image/jpeg"}
OCTETS = {"Content-Type": "application/octet-stream"}
NO_FIELD = "multipart body has no 'image' field; send the file as field 'image'"
BAD_FORMAT = "query parameter 'format': Input should be 'png', 'jpeg', 'jpg' or 'webp'"
CONTENT_TYPE_REFUSED = (
    "is not accepted; send multipart field 'image' "
    "or the raw image with an image/* or application/octet-stream content type"
)


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        pytest.param(b"", IMAGE_PNG, 400, "empty upload: send the image bytes", id="empty-body"),
        pytest.param(RANDOM, OCTETS, 400, NOT_DECODABLE, id="random-bytes"),
        pytest.param(PNG[: len(PNG) // 2], IMAGE_PNG, 400, TRUNCATED, id="truncated-png"),
        pytest.param(JPEG[: len(JPEG) // 2], IMAGE_JPEG, 400, TRUNCATED, id="truncated-jpeg"),
        pytest.param(JPEG[:100], IMAGE_JPEG, 400, NOT_DECODABLE, id="jpeg-cut-in-header"),
        pytest.param(TEXT, {"Content-Type": "text/plain"}, 415,
                     f"content type text/plain {CONTENT_TYPE_REFUSED}", id="text"),
        pytest.param(TEXT, IMAGE_PNG, 400, NOT_DECODABLE, id="text-posing-as-png"),
        pytest.param(SVG, {"Content-Type": "image/svg+xml"}, 415, f"SVG images are not supported; {ACCEPTED}",
                     id="svg"),
        pytest.param(PDF, {"Content-Type": "application/pdf"}, 415,
                     f"content type application/pdf {CONTENT_TYPE_REFUSED}", id="pdf"),
        pytest.param(PDF, OCTETS, 415, f"PDF images are not supported; {ACCEPTED}", id="pdf-as-octets"),
        pytest.param(HTML, {"Content-Type": "image/jpeg"}, 415, f"HTML images are not supported; {ACCEPTED}",
                     id="html-posing-as-jpeg"),
        pytest.param(png_claiming(60000, 60000), IMAGE_PNG, 413,
                     "image is larger than the limit of 40.0 megapixels", id="png-header-60000x60000"),
        pytest.param(png_claiming(7000, 7000), IMAGE_PNG, 413,
                     "image is 7000x7000 = 49.0 megapixels; the limit is 40.0 megapixels",
                     id="png-header-49mp"),
        pytest.param(png_claiming(0, 16), IMAGE_PNG, 400, NOT_DECODABLE, id="png-zero-width"),
        pytest.param(png_claiming(16, 0), IMAGE_PNG, 400, NOT_DECODABLE, id="png-zero-height"),
        pytest.param(tiff_zero_width(), {"Content-Type": "image/tiff"}, 400, NOT_DECODABLE,
                     id="tiff-zero-width"),
        pytest.param(
            *multipart(b'--XYZ\r\nContent-Disposition: form-data; name="photo"; filename="a.png"\r\n\r\n'
                       + PNG + b"\r\n--XYZ--\r\n"),
            400, NO_FIELD, id="wrong-multipart-field",
        ),
        pytest.param(PNG, {"Content-Type": "multipart/form-data"}, 400, "multipart body without a boundary",
                     id="multipart-without-boundary"),
        pytest.param(*multipart(b"--XYZ\r\nno colon in this header\r\n\r\nx\r\n--XYZ--\r\n"), 400,
                     "malformed multipart body", id="malformed-multipart"),
        pytest.param(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", {"Content-Type": "image/gif"}, 415,
                     f"GIF images are not supported; {ACCEPTED}", id="gif"),
        pytest.param(TEXT, {"Content-Type": "text/<script>alert(1)</script>"}, 415,
                     f"this content type {CONTENT_TYPE_REFUSED}", id="content-type-not-echoed"),
    ],
)  # fmt: skip
def test_junk_bodies_get_their_4xx(
    fake_service: FakeService, body: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    batches = len(fake_service.runner.batch_sizes)
    started = time.perf_counter()
    response = fake_service.http.post("/derain", content=body, headers=headers)
    assert_refused(response, status, detail)
    assert len(fake_service.runner.batch_sizes) == batches  # nothing reached the model
    assert time.perf_counter() - started < 5  # a bomb is refused from its header, not decoded


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("format=gif", BAD_FORMAT),
        ("format=../../etc/passwd", BAD_FORMAT),
        ("quality=0", "query parameter 'quality': Input should be greater than or equal to 1"),
        ("quality=101", "query parameter 'quality': Input should be less than or equal to 100"),
        ("quality=-5", "query parameter 'quality': Input should be greater than or equal to 1"),
        ("quality=high", "query parameter 'quality': Input should be a valid integer, "
                         "unable to parse string as an integer"),
    ],
)  # fmt: skip
def test_unknown_format_and_out_of_range_quality_get_422(
    fake_service: FakeService, query: str, detail: str
) -> None:
    response = fake_service.http.post(f"/derain?{query}", content=PNG, headers=IMAGE_PNG)
    assert_refused(response, 422, detail)


def test_huge_headers_get_431_before_the_app_runs(fake_service: FakeService) -> None:
    limit = 16 * 1024  # DERAIN_MAX_HEADER_BYTES default
    for size in (limit + 1, 64 * 1024, 1024 * 1024):
        response = fake_service.http.post(
            "/derain", content=PNG, headers={**IMAGE_PNG, "X-Padding": "a" * size}
        )
        detail = f"request line and headers are larger than the limit of {limit} bytes"
        assert_refused(response, 431, detail)
        assert response.headers["connection"] == "close"
    huge_url = fake_service.http.post("/derain?" + "a=1&" * (limit // 4), content=PNG, headers=IMAGE_PNG)
    assert huge_url.status_code == 431
    near_limit = fake_service.http.post("/derain", content=PNG, headers={**IMAGE_PNG, "X-Pad": "a" * 15000})
    assert near_limit.status_code == 200  # a big but allowed head is served


def test_a_body_longer_than_its_content_length_gets_only_4xx(fake_service: FakeService) -> None:
    """The first Content-Length bytes are the upload (a truncated PNG: 400); the rest is not an HTTP
    request (400, connection closed). Nothing is 5xx, and the server goes on serving."""
    head = b"POST /derain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
    payload = head % (len(PNG) // 2) + PNG + b"\r\n\r\n"
    responses = raw_exchange(fake_service.live.port, payload)
    assert [r.status for r in responses] == [400, 400]
    assert_refused(responses[0], 400, TRUNCATED)
    assert_refused(responses[1], 400, "malformed HTTP request")
    assert responses[1].headers["connection"] == "close"
    assert fake_service.http.post("/derain", content=PNG, headers=IMAGE_PNG).status_code == 200


def test_a_malformed_request_line_gets_json_400(fake_service: FakeService) -> None:
    for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"this is not HTTP\r\n\r\n"):
        (response,) = raw_exchange(fake_service.live.port, junk)
        assert_refused(response, 400, "malformed HTTP request")


def test_a_body_shorter_than_its_content_length_gets_408(make_settings: SettingsFactory) -> None:
    """A client that declares more than it sends and waits is slow or broken, not the service: 408."""
    with live_server(make_settings(request_timeout_s=1), FakeRunner()) as live:
        head = b"POST /derain HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(head % len(PNG) + PNG[:100])  # and then nothing
            (response,) = parse_responses(_read_response(sock))
    assert_refused(response, 408, "the upload did not arrive within 1 s")
    assert response.headers["connection"] == "close"


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    match = re.search(rb"content-length: (\d+)", data, re.IGNORECASE)
    return int(match.group(1)) if match else 0

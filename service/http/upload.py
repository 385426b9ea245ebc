"""Read the uploaded image from the request stream, enforcing the byte limit while reading.

Two ways in: multipart/form-data with the file in field `image`, or the raw bytes as the body with an
image/* or application/octet-stream content type (or none). The multipart body is parsed as it streams,
in memory: the image never touches the disk and other fields are discarded.
"""

from __future__ import annotations

import re

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from service.errors import BadImage, ClientDisconnected, TooLarge, UnsupportedMedia

FIELD = "image"
MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing and small extra fields allowed on top
# A content type is echoed in an error only when it is a plain `type/subtype` token: nothing else a
# client sends is ever reflected back.
_MEDIA_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


async def read_image(request: Request, max_bytes: int) -> bytes:
    """The image bytes; raises BadImage, TooLarge, UnsupportedMedia, or ClientDisconnected mid-upload."""
    try:
        return await _read(request, max_bytes)
    except ClientDisconnect:
        raise ClientDisconnected("client disconnected during the upload") from None


async def _read(request: Request, max_bytes: int) -> bytes:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    media = media_type.decode("latin-1").lower()
    if media == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadImage("multipart body without a boundary")
        return await _read_multipart(request, boundary, max_bytes)
    if media and not (media.startswith("image/") or media == "application/octet-stream"):
        named = f"content type {media}" if _MEDIA_TOKEN.fullmatch(media) else "this content type"
        raise UnsupportedMedia(
            f"{named} is not accepted; send multipart field '{FIELD}' "
            "or the raw image with an image/* or application/octet-stream content type"
        )
    _check_declared_length(request, max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"upload is larger than the limit of {limit} bytes")


class _ImageField:
    """Collects the data of the first multipart part named `image`."""

    def __init__(self, max_bytes: int) -> None:
        self.data = bytearray()
        self.found = False
        self._max_bytes = max_bytes
        self._in_field = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_field = options.get(b"name") == FIELD.encode() and not self.found
        self.found = self.found or self._in_field
        self._headers = {}

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field:
            self.data += data[start:end]
            if len(self.data) > self._max_bytes:
                raise _too_large(self._max_bytes)

    def on_part_end(self) -> None:
        self._in_field = False


async def _read_multipart(request: Request, boundary: bytes, max_bytes: int) -> bytes:
    limit = max_bytes + MULTIPART_OVERHEAD
    _check_declared_length(request, limit)
    field = _ImageField(max_bytes)
    callbacks = {
        "on_header_field": field.on_header_field,
        "on_header_value": field.on_header_value,
        "on_header_end": field.on_header_end,
        "on_headers_finished": field.on_headers_finished,
        "on_part_data": field.on_part_data,
        "on_part_end": field.on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise BadImage("malformed multipart body") from None
    if not field.found:
        raise BadImage(f"multipart body has no '{FIELD}' field; send the file as field '{FIELD}'")
    return bytes(field.data)

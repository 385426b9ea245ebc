"""HTTP/1.1 connections: uvicorn's h11 protocol with the service's limits and one-line JSON refusals.

`python -m service` pins h11 (pure Python) instead of httptools because only h11 bounds a request's
head: a request line plus headers longer than DERAIN_MAX_HEADER_BYTES is refused with 431 before the app
sees it. For an image service the cost is nil (microseconds of parsing against tens of milliseconds
of inference per request).

uvicorn answers malformed requests and its connection limit in plain text; here they get the service's
JSON body {"detail": "<one line>"} like every other error, and the limit's 503 carries Retry-After:
- malformed request (bad request line or header, bytes past a body's Content-Length that do not
  form a request): 400, connection closed;
- request head above the limit: 431, connection closed;
- request head not complete DERAIN_HEADER_TIMEOUT_S after the connection opened or the head's first byte
  arrived (a client that sends nothing, or dribbles its headers a byte at a time to hold a connection
  slot: "slowloris"): 408, connection closed. Once the head is in, the upload itself is bounded by
  DERAIN_REQUEST_TIMEOUT_S instead, and an idle keep-alive connection by uvicorn's keep-alive timeout;
- more than DERAIN_MAX_CONNECTIONS connections open (idle keep-alive ones included): 503 with
  Retry-After, connection closed. Each connection can hold an upload of up to DERAIN_MAX_UPLOAD_BYTES,
  so this limit is what bounds the memory that uploads can take.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger(__name__)

CONNECTION_RETRY_AFTER_S = 1  # a connection slot frees as soon as one response is sent


class _Connection(h11.Connection):
    """An h11 server connection that refuses request heads above `max_head_bytes` and remembers the
    status to answer the peer's protocol error with.

    h11's own limit applies only while a head is incomplete: a whole head that arrives in one read
    passes it, so the size of every complete request head is checked here too.
    """

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.refused_status = 400

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and head_bytes(event) > self.max_head_bytes:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        except h11.RemoteProtocolError as error:
            # 431 = head too large; h11's other hints (501 for an unknown Transfer-Encoding) are the
            # client's doing all the same: answer 400 rather than a 5xx.
            self.refused_status = 431 if error.error_status_hint == 431 else 400
            raise
        return event


def head_bytes(request: h11.Request) -> int:
    """Bytes of a request head: `METHOD target HTTP/1.1` CRLF, then `name: value` CRLF each, then CRLF."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    headers = sum(len(name) + len(value) + len(b": \r\n") for name, value in request.headers.raw_items())
    return line + headers + len(b"\r\n")


class LimitedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a bounded request head (size and time), a connection limit and JSON
    refusals. `configured` makes the class the server is configured with."""

    head_timeout_s: float | None = None
    # called with the reason of each refusal made here, before the app (a metrics counter)
    count_refusal: Callable[[str], None] = staticmethod(lambda reason: None)
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(
        cls, head_timeout_s: float, count_refusal: Callable[[str], None] | None = None
    ) -> type[LimitedH11Protocol]:
        attributes: dict[str, object] = {"head_timeout_s": head_timeout_s}
        if count_refusal is not None:
            attributes["count_refusal"] = staticmethod(count_refusal)
        return type(cls.__name__, (cls,), attributes)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = _Connection(self.max_head_bytes)
        # uvicorn's own check answers text/plain without Retry-After; this class checks instead.
        self.max_connections = self.limit_concurrency
        self.limit_concurrency = None
        self.app = self._limited(self.app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first bytes of the next request on a keep-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in (or the connection failed and is closing)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._cancel_head_timer()
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        if self.head_timeout_s:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        log.warning("refused: request head not received within %.3g s", self.head_timeout_s)
        self.count_refusal("header_timeout")
        # h11 cannot answer before a request has been parsed, so the bytes are written directly.
        body = _json(f"request line and headers not received within {self.head_timeout_s:g} s")
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def _limited(self, app: ASGIApp) -> ASGIApp:
        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            limit = self.max_connections
            # This connection and this request's task are already counted.
            if (
                scope["type"] == "http"
                and limit is not None
                and (len(self.connections) > limit or len(self.tasks) > limit)
            ):
                log.warning("refused: %d connections open, the limit is %d", len(self.connections), limit)
                self.count_refusal("too_many_connections")
                detail = f"too many open connections (limit {limit}); retry in {CONNECTION_RETRY_AFTER_S} s"
                headers = [(b"retry-after", str(CONNECTION_RETRY_AFTER_S).encode())]
                await _send_json(send, 503, detail, headers)
                return
            await app(scope, receive, send)

        return limited

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn when h11 refuses the peer's bytes; answers JSON and closes the connection."""
        assert isinstance(self.conn, _Connection)
        status = self.conn.refused_status
        self.count_refusal("header_too_large" if status == 431 else "malformed_http")
        if status == 431:
            detail = f"request line and headers are larger than the limit of {self.max_head_bytes} bytes"
        else:
            detail = "malformed HTTP request"
        body = _json(detail)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = HTTPStatus(status).phrase.encode()
        try:
            self.transport.write(
                self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
            )
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a response was already under way on this connection
            pass
        self.transport.close()


def _json(detail: str) -> bytes:
    return json.dumps({"detail": detail}, separators=(",", ":")).encode()


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = _json(detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})

"""Per-request context as plain ASGI middleware: request id, access log line, request counter, total time.

The id comes from the client's X-Request-Id when it is a short token, else a fresh one; it is echoed in
the X-Request-Id response header of every response (errors too) and stamped on every log line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import Metrics

log = logging.getLogger("service.access")

ROUTES = frozenset({"/", "/derain", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: debug level
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id = Headers(scope=scope).get("x-request-id", "")
        rid = client_id if _CLIENT_ID.fullmatch(client_id) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500  # if the app fails before starting a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        if route == "/derain":
            self.metrics.observe("total", seconds)
        level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
        log.log(
            level,
            "%s %s %d %.1f ms",
            scope.get("method", ""),
            route,
            status,
            seconds * 1000,
            extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 1)},
        )

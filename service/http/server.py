"""`python -m service [--host H] [--port P]`: serve with uvicorn, draining in-flight requests on SIGTERM.

Start-up: invalid settings exit 2 with the setting named; a model that cannot be served (missing,
corrupt, wrong metadata) exits 1 with the reason as the last line on stderr, before the port is opened,
so there is never a half-alive server.

Shutdown (SIGTERM, or the first Ctrl-C): readiness turns 503 and new /derain requests get 503 with
Retry-After at once, while the listener stays open so that probes and late clients are answered rather
than refused; when the last in-flight /derain request has finished, or DERAIN_DRAIN_TIMEOUT_S has
passed, uvicorn closes the listener, waits for the responses still being sent (within what is left of
the drain timeout), stops the batcher and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.http.app import create_app
from service.http.lifecycle import Lifecycle
from service.http.protocol import LimitedH11Protocol
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05
# s uvicorn gets, after the in-flight /derain requests are done, to finish writing the last responses
# (and to answer requests that arrived meanwhile); taken out of the drain timeout, not added to it.
RESPONSE_GRACE_S = 1


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that turns unready and drains in-flight requests before it stops listening."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_timeout_s = drain_timeout_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._lifecycle.begin_shutdown()
        if sig == signal.SIGTERM:  # a drained SIGTERM is a clean stop: exit 0, do not re-raise it
            self.should_exit = True
            return
        super().handle_exit(sig, frame)  # SIGINT: a second one forces the exit

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain with the listener open, then uvicorn's shutdown (close, finish responses, lifespan)."""
        self._lifecycle.begin_shutdown()  # also when stopped by other means than a signal
        deadline = time.monotonic() + max(0.0, self._drain_timeout_s - RESPONSE_GRACE_S)
        if self._lifecycle.inflight:
            log.info("draining %d requests in flight", self._lifecycle.inflight)
        while self._lifecycle.inflight and time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(DRAIN_POLL_S)
        if self._lifecycle.inflight:
            log.warning("drain timeout: %d requests in flight get 503", self._lifecycle.inflight)
            await self._lifecycle.abandon()
        await super().shutdown(sockets)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration the service runs under, limits included (tests serve with it too)."""
    rejections = app.state.service.metrics.rejections
    protocol = LimitedH11Protocol.configured(
        settings.header_timeout_s, lambda reason: rejections.labels(reason=reason).inc()
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        ws="none",  # no WebSocket routes: upgrade requests are plain HTTP requests here
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=RESPONSE_GRACE_S,  # after DrainingServer's own drain
        access_log=False,  # the service logs its own access lines, with request ids
        log_config=None,
        lifespan="on",
        server_header=False,  # no software version in responses
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="address to listen on (default DERAIN_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default DERAIN_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "settings"
            sys.stderr.write(f"invalid setting DERAIN_{where.upper()}: {problem['msg']}\n")
        return 2
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    state = app.state.service
    server = DrainingServer(uvicorn_config(app, settings), state.lifecycle, settings.drain_timeout_s)
    with contextlib.suppress(SystemExit):  # uvicorn's way out when start-up failed or the port is taken
        server.run()
    if not server.started:
        sys.stderr.write(f"start-up failed: {state.startup_error or 'see the log lines above'}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

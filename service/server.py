"""`python -m service [--host H] [--port P]`: serve with uvicorn, draining in-flight requests on SIGTERM.

Readiness turns 503 the moment the signal arrives; uvicorn stops accepting connections, lets in-flight
requests finish for up to DERAIN_DRAIN_TIMEOUT_S, then runs the lifespan shutdown.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.logs import configure_logging
from service.main import create_app
from service.settings import Settings


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips readiness before uvicorn starts its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_shutdown()
        if sig == signal.SIGTERM:  # a drained SIGTERM is a clean stop: exit 0, do not re-raise it
            self.should_exit = True
            return
        super().handle_exit(sig, frame)


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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        access_log=False,  # the service logs its own access lines, with request ids
        log_config=None,
        lifespan="on",
    )
    server = DrainingServer(config, app.state.service.lifecycle.begin_shutdown)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())

"""The server's lifecycle (starting -> ready -> draining, or failed), which readiness reports, and the
count of /derain requests in flight, which a graceful shutdown waits for and the
`derain_inflight_requests` gauge reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from service.errors import NotReady, ShuttingDown

State = Literal["starting", "ready", "draining", "failed"]
LOADING_RETRY_AFTER_S = 5  # s a client is told to wait while the model loads and warms up


class Lifecycle:
    """starting -> ready (model loaded and warmed up) -> draining (shutdown began); or starting -> failed.

    Also counts the /derain requests in flight (the one count: POST /derain enters `admitted`, the
    shutdown drain and the metrics gauge read `inflight`), and holds what to do with the work still
    queued when the drain times out.
    """

    def __init__(self) -> None:
        self.state: State = "starting"
        self.inflight = 0
        self._stop_work: Callable[[], Awaitable[None]] | None = None

    def on_abandon(self, stop_work: Callable[[], Awaitable[None]]) -> None:
        """Register how to stop the batcher (its queued and running tiles fail with ShuttingDown)."""
        self._stop_work = stop_work

    async def abandon(self) -> None:
        """The drain timed out: requests still waiting for tiles get 503 + Retry-After, not a cut
        connection."""
        self.begin_shutdown()
        if self._stop_work is not None:
            await self._stop_work()

    def mark_ready(self) -> None:
        if self.state == "starting":
            self.state = "ready"

    def mark_failed(self) -> None:
        if self.state == "starting":
            self.state = "failed"

    def begin_shutdown(self) -> None:
        self.state = "draining"

    def check_ready(self) -> None:
        """Raise NotReady / ShuttingDown unless requests may be admitted."""
        if self.state == "draining":
            raise ShuttingDown("the service is shutting down; retry elsewhere")
        if self.state == "failed":
            raise NotReady("the model failed its warm-up; see the service logs")
        if self.state == "starting":
            raise NotReady("the model is still loading; retry shortly", LOADING_RETRY_AFTER_S)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Admit one request (NotReady / ShuttingDown unless ready) and count it as in flight for as long
        as the block runs. Checked and counted in one step, with no await between: a request is either
        refused or counted, so the drain that begins with shutdown never misses one it let in."""
        self.check_ready()
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

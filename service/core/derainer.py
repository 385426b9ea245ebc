"""One derain request end to end, without HTTP:
probe -> admit -> decode -> split -> batch -> stitch -> encode.

Also the service's lifecycle (starting -> ready -> draining, or failed), which readiness reports.
The api calls `Derainer.derain` with the upload's bytes; nothing here knows about FastAPI or onnxruntime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import numpy as np

from service.batcher import Batcher, Ticket, TileResult, gather_tiles
from service.errors import NotReady, ShuttingDown
from service.metrics import Metrics
from service.pipeline import (
    MEDIA_TYPES,
    ImageInfo,
    OutputFormat,
    TileGrid,
    decode,
    encode,
    output_format,
    plan_grid,
    probe,
    split,
    stitch,
)
from service.settings import Settings

T = TypeVar("T")
State = Literal["starting", "ready", "draining", "failed"]
LOADING_RETRY_AFTER_S = 5  # s a client is told to wait while the model loads and warms up


class Lifecycle:
    """starting -> ready (model loaded and warmed up) -> draining (shutdown began); or starting -> failed.

    Also counts the /derain requests in flight, which a graceful shutdown waits for, and holds what
    to do with the work still queued when that wait times out.
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
    def in_flight(self) -> Iterator[None]:
        """Count one request as in flight for as long as the block runs."""
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


@dataclass(frozen=True)
class DerainResult:
    content: bytes  # the encoded image
    media_type: str  # image/png | image/jpeg | image/webp
    tiles: int  # tiles this image was cut into
    inference_ms: float  # model time of the batches that carried this request's tiles


class Derainer:
    def __init__(
        self, batcher: Batcher, metrics: Metrics, tile_size: int, overlap: int, align: int, max_pixels: int
    ) -> None:
        self._batcher = batcher
        self._metrics = metrics
        self._tile_size = tile_size
        self._overlap = overlap
        self._align = align  # the model's pad_multiple: tiles start on its pooling grid
        self._max_pixels = max_pixels

    async def derain(
        self,
        data: bytes,
        fmt: OutputFormat | None,
        quality: int | None,
        is_disconnected: Callable[[], Awaitable[bool]],
    ) -> DerainResult:
        """Raises the service.errors domain errors; cancelling it drops the request's queued tiles."""
        height, width = await asyncio.to_thread(probe, data, self._max_pixels)
        grid = plan_grid(height, width, self._tile_size, self._overlap, self._align)
        ticket = self._batcher.admit(grid.count)  # before decoding: overload costs no memory
        try:
            info, futures = await self._decode_and_queue(data, ticket)
        finally:
            self._batcher.release(ticket)
        results = await gather_tiles(futures, is_disconnected)
        target = output_format(info, fmt)
        outputs = [result.output for result in results]
        content = await self._timed("encode", partial(_finish, outputs, grid, info, target, quality))
        batches = {result.batch_id: result.batch_seconds for result in results}
        return DerainResult(content, MEDIA_TYPES[target], grid.count, 1000.0 * sum(batches.values()))

    async def _decode_and_queue(
        self, data: bytes, ticket: Ticket
    ) -> tuple[ImageInfo, list[asyncio.Future[TileResult]]]:
        """Decode and queue the tiles; the decoded pixels live on only in the queued tiles (views)."""
        decoded = await self._timed("decode", partial(decode, data, self._max_pixels))
        self._metrics.input_megapixels.observe(decoded.info.megapixels)
        tiles, _ = split(decoded.rgb, self._tile_size, self._overlap, self._align)
        return decoded.info, self._batcher.submit(ticket, tiles)

    async def _timed(self, stage: str, work: Callable[[], T]) -> T:
        """Run CPU-bound work off the event loop and record its duration under `stage`."""
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(work)
        finally:
            self._metrics.observe(stage, time.perf_counter() - started)


def _finish(
    outputs: Sequence[np.ndarray], grid: TileGrid, info: ImageInfo, fmt: OutputFormat, quality: int | None
) -> bytes:
    return encode(stitch(outputs, grid), info, fmt, quality)


@dataclass
class ServiceState:
    """What the routes reach through `service.api.get_state`; filled in by the lifespan."""

    metrics: Metrics
    lifecycle: Lifecycle
    settings: Settings | None = None  # None until the lifespan has read and checked them
    derainer: Derainer | None = None
    model: dict[str, str] | None = None  # preset, provider, ... for /readyz
    startup_error: str | None = None  # why the model could not be served, for `python -m service`

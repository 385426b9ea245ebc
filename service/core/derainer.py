"""One image end to end, without HTTP: probe -> plan the grid -> admit -> decode -> split -> batch ->
stitch -> encode.

The service's routes call `Derainer.derain` with an upload's bytes; the CLI's local backend calls the
same methods (`derain`, `derain_pixels`) in its own event loop, so a pipeline change is made here once.
Nothing here knows about FastAPI or onnxruntime (`build_derainer` takes the runner's `run` function).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from service.core.batcher import Batcher, Ticket, TileResult, gather_tiles
from service.core.pipeline import (
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
from service.metrics import Metrics

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]  # whether the client has gone (its tiles are then dropped)


async def never_disconnected() -> bool:
    """For callers without a client that can leave (the CLI)."""
    return False


@dataclass(frozen=True)
class Tiling:
    tile_size: int  # px, side of the square tiles the model sees
    overlap: int  # px shared by neighbouring tiles
    align: int  # the model's pad_multiple: tiles start on its pooling grid


@dataclass(frozen=True)
class DerainResult:
    content: bytes  # the encoded image
    media_type: str  # image/png | image/jpeg | image/webp
    tiles: int  # tiles this image was cut into
    inference_ms: float  # model time of the batches that carried this request's tiles


@dataclass(frozen=True)
class Derained:
    """A derained image before encoding."""

    rgb: np.ndarray  # (3, H, W) float32 RGB in [0, 1], the upload's size (after EXIF orientation)
    info: ImageInfo  # what the encoder restores (alpha, gray, bit depth, ICC)


@dataclass(frozen=True)
class _Tiled:
    """The model's tiles of one image, not yet stitched."""

    outputs: list[np.ndarray]  # (3, T, T) each, in the grid's order
    grid: TileGrid
    info: ImageInfo
    inference_ms: float  # model time of the batches that carried them


class Derainer:
    def __init__(self, batcher: Batcher, metrics: Metrics, tiling: Tiling, max_pixels: int) -> None:
        self._batcher = batcher
        self._metrics = metrics
        self._tiling = tiling
        self._max_pixels = max_pixels

    async def derain(
        self,
        data: bytes,
        fmt: OutputFormat | None,
        quality: int | None,
        is_disconnected: Disconnected = never_disconnected,
    ) -> DerainResult:
        """Raises the service.errors domain errors; cancelling it drops the request's queued tiles."""
        tiled = await self._run_tiles(data, is_disconnected)
        target = output_format(tiled.info, fmt)
        finish = partial(_stitch_and_encode, tiled, target, quality)
        content = await self._timed("encode", finish)
        return DerainResult(content, MEDIA_TYPES[target], tiled.grid.count, tiled.inference_ms)

    async def derain_pixels(
        self, data: bytes, is_disconnected: Disconnected = never_disconnected
    ) -> Derained:
        """The derained pixels of an encoded image, not encoded (the CLI's side-by-side images)."""
        tiled = await self._run_tiles(data, is_disconnected)
        return Derained(await asyncio.to_thread(stitch, tiled.outputs, tiled.grid), tiled.info)

    async def _run_tiles(self, data: bytes, is_disconnected: Disconnected) -> _Tiled:
        height, width = await asyncio.to_thread(probe, data, self._max_pixels)
        tiling = self._tiling
        grid = plan_grid(height, width, tiling.tile_size, tiling.overlap, tiling.align)
        ticket = self._batcher.admit(grid.count)  # before decoding: overload costs no memory
        try:
            info, futures = await self._decode_and_queue(data, grid, ticket)
        finally:
            self._batcher.release(ticket)
        results = await gather_tiles(futures, is_disconnected)
        batches = {result.batch_id: result.batch_seconds for result in results}
        return _Tiled([result.output for result in results], grid, info, 1000.0 * sum(batches.values()))

    async def _decode_and_queue(
        self, data: bytes, grid: TileGrid, ticket: Ticket
    ) -> tuple[ImageInfo, list[asyncio.Future[TileResult]]]:
        """Decode and queue the tiles; the decoded pixels live on only in the queued tiles (views)."""
        decoded = await self._timed("decode", partial(decode, data, self._max_pixels))
        self._metrics.input_megapixels.observe(decoded.info.megapixels)
        return decoded.info, self._batcher.submit(ticket, split(decoded.rgb, grid))

    async def _timed(self, stage: str, work: Callable[[], T]) -> T:
        """Run CPU-bound work off the event loop and record its duration under `stage`."""
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(work)
        finally:
            self._metrics.observe(stage, time.perf_counter() - started)


def _stitch_and_encode(tiled: _Tiled, fmt: OutputFormat, quality: int | None) -> bytes:
    return encode(stitch(tiled.outputs, tiled.grid), tiled.info, fmt, quality)


def build_derainer(
    run: Callable[[np.ndarray], np.ndarray],
    metrics: Metrics,
    tiling: Tiling,
    max_batch: int,
    max_wait_s: float,
    max_queue_tiles: int,
    max_pixels: int,
) -> tuple[Batcher, Derainer]:
    """A batcher over the model's `run` and the derainer that feeds it (start the batcher in the loop
    that will run the derainer; stop it when done)."""
    batcher = Batcher(run, metrics, max_batch, max_wait_s, max_queue_tiles)
    return batcher, Derainer(batcher, metrics, tiling, max_pixels)

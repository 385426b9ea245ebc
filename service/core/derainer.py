"""One image end to end, without HTTP: probe -> plan -> admit -> decode -> pick the working scale ->
shrink -> split -> batch -> stitch -> bring the rain layer back to full size -> encode.

The working scale (service.core.pipeline.scale): the model sees the image shrunk by a factor s and
predicts its rain there; only that rain layer comes back to full size, subtracted from the untouched
input. A fixed s comes from the client; `auto` decodes first, runs one small probe batch through the
same batcher and picks (scale.probe_pick). Room in the queue is reserved before decoding for the probe
and the size rule's plan, and resized once the factor is known.

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
    DecodedImage,
    ImageInfo,
    OutputFormat,
    TileGrid,
    decode,
    encode,
    output_format,
    plan_work,
    probe,
    split,
    stitch,
)
from service.core.pipeline import scale as sc
from service.metrics import Metrics

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]  # whether the client has gone (its tiles are then dropped)


async def never_disconnected() -> bool:
    """For callers without a client that can leave (the CLI)."""
    return False


# On the CPU a working image whose padded canvas has at most this many pixels runs whole, in one call
# (DERAIN_WHOLE_MAX_PIXELS): ~1.4 kB of ONNX Runtime memory per pixel (1.4 GB at this size), and the
# CPU runs a 1 MP image as fast per pixel as 256 px tiles with their overlaps (README, Performance).
WHOLE_PIXELS = 1 << 20
CPU_PROVIDER = "CPUExecutionProvider"


def whole_pixels(provider: str, budget: int = WHOLE_PIXELS) -> int:
    """The whole-image budget for a provider: `budget` on the CPU; 0 (fixed square tiles, one static
    shape for batches, cuDNN search, CUDA graphs and TensorRT) on a GPU."""
    return budget if provider == CPU_PROVIDER else 0


@dataclass(frozen=True)
class Tiling:
    tile_size: int  # px, side of the square tiles the model sees
    overlap: int  # px shared by neighbouring tiles
    align: int  # the model's pad_multiple: tiles start on its pooling grid
    whole_pixels: int = 0  # CPU: whole working images up to this canvas size, else fitted tiles; 0: fixed
    train_short_side: int = sc.DEFAULT_TRAIN_SHORT_SIDE  # px, the model's training images (its metadata)

    def plan(self, height: int, width: int) -> TileGrid:
        return plan_work(height, width, self.tile_size, self.overlap, self.align, self.whole_pixels)


@dataclass(frozen=True)
class DerainResult:
    content: bytes  # the encoded image
    media_type: str  # image/png | image/jpeg | image/webp
    tiles: int  # tiles this image was cut into (at the working scale, every pass; probe crops not counted)
    inference_ms: float  # model time of the batches that carried this request's tiles (probe included)
    scale: float  # the working-scale factor used (the first pass's)
    passes: tuple[sc.Factor, ...]  # each pass's factor: (4,) or, with auto's second pass, (4, (4, 2))


@dataclass(frozen=True)
class Derained:
    """A derained image before encoding."""

    rgb: np.ndarray  # (3, H, W) float32 RGB in [0, 1], the upload's size (after EXIF orientation)
    info: ImageInfo  # what the encoder restores (alpha, gray, bit depth, ICC)
    scale: float  # the working-scale factor used (the first pass's)
    passes: tuple[sc.Factor, ...]  # each pass's factor


@dataclass(frozen=True)
class _Tiled:
    """The model's tiles of one pass over an image, not yet stitched."""

    outputs: list[np.ndarray]  # (3, T, T) each, in the grid's order
    grid: TileGrid  # of the working image
    decoded: DecodedImage  # the full-size input
    base: np.ndarray  # (3, H, W) what this pass derains: the input, or the first pass's result
    working: np.ndarray  # the working image (`base` itself at scale 1)
    factor: sc.Factor  # this pass's
    inference_ms: float  # model time of the batches that carried this pass's tiles and the earlier ones'
    tiles: int  # this pass's and the earlier ones'
    passes: tuple[sc.Factor, ...]  # the factors of the earlier passes and this one

    @property
    def info(self) -> ImageInfo:
        return self.decoded.info

    @property
    def scale(self) -> float:
        return sc.axes(self.passes[0])[0]

    def derained(self) -> np.ndarray:
        """The model's output at working scale (stitched)."""
        return stitch(self.outputs, self.grid)

    def restore(
        self, derained: np.ndarray | None = None, upsampling: sc.Upsampling = "bicubic"
    ) -> np.ndarray:
        """The full-size derained image: stitch at working scale, bring the rain layer back (a guided
        filter is scale.ABOVE_CAP_GUIDED's)."""
        derained = self.derained() if derained is None else derained
        return sc.restore(self.base, self.working, derained, self.factor, upsampling, sc.ABOVE_CAP_GUIDED)


class Derainer:
    def __init__(
        self, batcher: Batcher, metrics: Metrics, tiling: Tiling, max_pixels: int, second_pass: bool = True
    ) -> None:
        self._batcher = batcher
        self._metrics = metrics
        self._tiling = tiling
        self._max_pixels = max_pixels
        self._second_pass = second_pass  # auto's pass across the streaks of photos above the cap

    async def derain(
        self,
        data: bytes,
        fmt: OutputFormat | None,
        quality: int | None,
        is_disconnected: Disconnected = never_disconnected,
        scale: sc.ScaleChoice = sc.AUTO,
    ) -> DerainResult:
        """Raises the service.errors domain errors; cancelling it drops the request's queued tiles."""
        tiled = await self._run_tiles(data, is_disconnected, scale)
        target = output_format(tiled.info, fmt)
        finish = partial(_restore_and_encode, tiled, target, quality)
        content = await self._timed("encode", finish)
        return DerainResult(
            content, MEDIA_TYPES[target], tiled.tiles, tiled.inference_ms, tiled.scale, tiled.passes
        )

    async def derain_pixels(
        self, data: bytes, is_disconnected: Disconnected = never_disconnected, scale: sc.ScaleChoice = sc.AUTO
    ) -> Derained:
        """The derained pixels of an encoded image, not encoded (the CLI's side-by-side images, the
        evaluate CLI's scores)."""
        tiled = await self._run_tiles(data, is_disconnected, scale)
        return Derained(await asyncio.to_thread(tiled.restore), tiled.info, tiled.scale, tiled.passes)

    async def _run_tiles(self, data: bytes, is_disconnected: Disconnected, scale: sc.ScaleChoice) -> _Tiled:
        height, width = await asyncio.to_thread(probe, data, self._max_pixels)
        tiling = self._tiling
        prior, candidates = float(scale.factor or 1.0), [float(scale.factor or 1.0)]
        if scale.auto:
            prior, candidates = sc.auto_candidates(height, width, tiling.train_short_side)
        spots = sc.probe_spots(height, width, tiling.train_short_side) if len(candidates) > 1 else 0
        expected = tiling.plan(*sc.working_size(height, width, prior))
        probes = len(candidates) * spots
        second = 0  # room for the second pass, reserved with the first (either orientation): no 429 half-way
        if scale.auto and self._second_pass and sc.second_pass(height, width, prior, tiling.train_short_side):
            shapes = (sc.working_size(height, width, sc.across_factor(prior, angle)) for angle in (0.0, 90.0))
            second = max(tiling.plan(*shape).count for shape in shapes)
        # Reserved before decoding, so overload costs no memory.
        ticket = self._batcher.admit(expected.count + probes + second)
        probe_ticket = self._batcher.take(ticket, probes) if probes else None
        second_ticket = self._batcher.take(ticket, second) if second else None
        try:
            try:
                decoded = await self._timed("decode", partial(decode, data, self._max_pixels))
                self._metrics.input_megapixels.observe(decoded.info.megapixels)
                factor, probe_ms = prior, 0.0
                if probe_ticket is not None:
                    factor, probe_ms = await self._probe(
                        decoded.rgb, prior, candidates, spots, probe_ticket, is_disconnected
                    )
                working = await asyncio.to_thread(sc.shrink, decoded.rgb, factor)
                grid = tiling.plan(working.shape[1], working.shape[2])
                self._batcher.resize(ticket, grid.count)  # auto picked another factor: 429 if no room
                futures = self._batcher.submit(ticket, split(working, grid))
            finally:
                self._batcher.release(ticket)
                if probe_ticket is not None:
                    self._batcher.release(probe_ticket)
            self._metrics.work_scale.observe(factor)
            outputs, model_ms = await _gather(futures, is_disconnected)
            tiled = _Tiled(
                outputs,
                grid,
                decoded,
                decoded.rgb,
                working,
                factor,
                probe_ms + model_ms,
                grid.count,
                (factor,),
            )
            if second_ticket is not None and sc.second_pass(height, width, factor, tiling.train_short_side):
                tiled = await self._across(tiled, second_ticket, is_disconnected)
            return tiled
        finally:
            if second_ticket is not None:
                self._batcher.release(second_ticket)

    async def _across(self, first: _Tiled, ticket: Ticket, is_disconnected: Disconnected) -> _Tiled:
        """auto's second pass (scale.second_pass): the first result shrunk by its factor along the streaks
        and by less across them, through the model again; its rain layer comes out of the first result."""
        base, working, factor = await asyncio.to_thread(_second_working, first)
        grid = self._tiling.plan(working.shape[1], working.shape[2])
        self._batcher.resize(ticket, grid.count)  # never grows: room for either orientation was reserved
        futures = self._batcher.submit(ticket, split(working, grid))
        self._metrics.second_passes.inc()
        outputs, model_ms = await _gather(futures, is_disconnected)
        total_ms, tiles = first.inference_ms + model_ms, first.tiles + grid.count
        return _Tiled(
            outputs, grid, first.decoded, base, working, factor, total_ms, tiles, (*first.passes, factor)
        )

    async def _probe(
        self,
        rgb: np.ndarray,
        prior: float,
        candidates: list[float],
        spots: int,
        ticket: Ticket,
        is_disconnected: Disconnected,
    ) -> tuple[float, float]:
        """scale=auto: one small crop per candidate factor (and spot) through the model; (factor, ms)."""
        crops = await asyncio.to_thread(sc.probe_crops, rgb, candidates, spots)
        outputs, model_ms = await _gather(self._batcher.submit(ticket, list(crops)), is_disconnected)
        return sc.probe_pick(prior, candidates, crops, np.stack(outputs)), model_ms

    async def _timed(self, stage: str, work: Callable[[], T]) -> T:
        """Run CPU-bound work off the event loop and record its duration under `stage`."""
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(work)
        finally:
            self._metrics.observe(stage, time.perf_counter() - started)


def _restore_and_encode(tiled: _Tiled, fmt: OutputFormat, quality: int | None) -> bytes:
    return encode(tiled.restore(), tiled.info, fmt, quality)


def _second_working(first: _Tiled) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(the first pass's full-size result, the second pass's working image, its factor): the factor
    follows the orientation of the rain the first pass found, and the first pass's rain layer comes
    back with a guided filter (scale.ABOVE_CAP_GUIDED: the photo's streaks are thinner than a working
    pixel)."""
    derained = first.derained()
    factor = sc.across_factor(sc.axes(first.factor)[0], sc.rain_orientation(first.working, derained))
    base = first.restore(derained, "guided")
    return base, sc.shrink(base, factor), factor


async def _gather(
    futures: list[asyncio.Future[TileResult]], is_disconnected: Disconnected
) -> tuple[list[np.ndarray], float]:
    """The tiles' outputs, in order, and the model time (ms) of the batches that carried them."""
    results = await gather_tiles(futures, is_disconnected)
    batches = {result.batch_id: result.batch_seconds for result in results}
    return [result.output for result in results], 1000.0 * sum(batches.values())


def build_derainer(
    run: Callable[[np.ndarray], np.ndarray],
    metrics: Metrics,
    tiling: Tiling,
    max_batch: int,
    max_wait_s: float,
    max_queue_tiles: int,
    max_pixels: int,
    second_pass: bool = True,
) -> tuple[Batcher, Derainer]:
    """A batcher over the model's `run` and the derainer that feeds it (start the batcher in the loop
    that will run the derainer; stop it when done). `second_pass`: auto's pass across the streaks of
    photos above the cap (scale.second_pass)."""
    batcher = Batcher(run, metrics, max_batch, max_wait_s, max_queue_tiles, tiling.tile_size**2)
    return batcher, Derainer(batcher, metrics, tiling, max_pixels, second_pass)

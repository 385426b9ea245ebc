"""Cross-request tile batching: one asyncio task owns a bounded queue of (tile, future) items.

A batch closes when it holds `max_batch` tiles or when its oldest tile has waited `max_wait_s`, then
takes, without waiting, further queued tiles of its shape while it holds no more pixels than `max_batch`
full tiles (`tile_pixels` each): small crops share one call even where `max_batch` is 1. The
blocking model call runs on one worker thread (one inference at a time) and each tile's future gets its
output, or, when the call fails, the same InferenceFailed as every other tile of that batch.

Admission happens before a request decodes its image: `admit(n)` reserves room for n tiles or raises
Overloaded (429) with a Retry-After estimated from recent throughput, so memory stays bounded under
overload. A request bigger than the whole queue is admitted only into an empty queue. Cancelled futures
(request timed out, client left) are skipped when batches form: their tiles never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.errors import ClientDisconnected, InferenceFailed, Overloaded, ShuttingDown
from service.metrics import Metrics

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600
DISCONNECT_POLL_S = 0.25


@dataclass(frozen=True)
class TileResult:
    output: np.ndarray  # (C, T, T) float32, a view into its batch's output
    batch_id: int
    batch_seconds: float  # duration of the model call that produced it


@dataclass(eq=False)
class Ticket:
    """Room for `tiles` tiles, held from admission until the tiles are queued or the request gives up."""

    tiles: int
    open: bool = True


@dataclass(eq=False)
class _Item:
    tile: np.ndarray
    future: asyncio.Future[TileResult]
    enqueued: float = field(default_factory=time.perf_counter)
    taken: bool = False  # in a batch (or dropped): no longer counted as waiting


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        metrics: Metrics,
        max_batch: int,
        max_wait_s: float,
        max_queue_tiles: int,
        tile_pixels: int = 0,
    ) -> None:
        self._run = run
        self._metrics = metrics
        self._max_batch = max_batch
        # A full batch still takes queued tiles of its shape while all of it holds no more pixels than
        # max_batch tiles of this many: scale=auto's 64 px probe crops ride in one model call even
        # where max_batch is 1 (three crops ran 1.3x faster in one call than in three; README).
        self._max_pixels = max_batch * tile_pixels
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue_tiles
        self._items: deque[_Item] = deque()
        self._waiting = 0  # reserved + queued tiles not yet taken into a batch
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derain-inference")
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Item] = []  # the batch in the model right now
        self._closed = False
        self._batch_ids = itertools.count(1)
        self.tiles_per_second = 0.0  # moving average of recent inference throughput

    @property
    def waiting_tiles(self) -> int:
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="derain-batcher")

    async def stop(self) -> None:
        """Refuse new work, stop the loop and fail whatever is still queued or running (idempotent)."""
        if self._closed:
            return
        self._closed = True
        leftovers = [*self._running, *self._items]
        self._items.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(ShuttingDown("the service is shutting down; retry elsewhere"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def seed_throughput(self, tiles_per_second: float) -> None:
        """Start the Retry-After estimate from a measured warm-up instead of a guess."""
        if tiles_per_second > 0 and not self.tiles_per_second:
            self.tiles_per_second = tiles_per_second

    def admit(self, tiles: int) -> Ticket:
        """Reserve room for a request's tiles, or raise Overloaded (429) / ShuttingDown (503)."""
        if self._closed:
            raise ShuttingDown("the service is shutting down; retry elsewhere")
        if self._waiting and self._waiting + tiles > self._max_queue:
            retry = self.retry_after_s(tiles)
            raise Overloaded(f"too many tiles queued ({self._waiting}); retry in {retry} s", retry)
        self._waiting += tiles
        self._update_gauge()
        return Ticket(tiles)

    def resize(self, ticket: Ticket, tiles: int) -> None:
        """Change an open ticket's room to `tiles` (a request that reserved for the plan it expected and
        then chose another: scale=auto). Growing is admitted like `admit` (Overloaded, ShuttingDown)."""
        if not ticket.open or tiles < 0:
            raise ValueError("resize needs an open ticket")
        extra = tiles - ticket.tiles
        if extra > 0:
            if self._closed:
                raise ShuttingDown("the service is shutting down; retry elsewhere")
            others = self._waiting - ticket.tiles
            if others and self._waiting + extra > self._max_queue:
                retry = self.retry_after_s(extra)
                raise Overloaded(f"too many tiles queued ({self._waiting}); retry in {retry} s", retry)
        self._waiting += extra
        ticket.tiles = tiles
        self._update_gauge()

    def take(self, ticket: Ticket, tiles: int) -> Ticket:
        """Move room for `tiles` tiles out of an open ticket into a new one (one admission for two
        submissions: scale=auto's probe crops, then the image's tiles)."""
        if not ticket.open or not 0 <= tiles <= ticket.tiles:
            raise ValueError("take needs an open ticket at least that large")
        ticket.tiles -= tiles
        return Ticket(tiles)

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket whose tiles were never submitted (no-op after submit)."""
        if ticket.open:
            ticket.open = False
            self._waiting -= ticket.tiles
            self._update_gauge()

    def submit(self, ticket: Ticket, tiles: Sequence[np.ndarray]) -> list[asyncio.Future[TileResult]]:
        """Queue the tiles a ticket was admitted for; each future resolves to that tile's output."""
        if not ticket.open or len(tiles) != ticket.tiles:
            raise ValueError("submit needs an open ticket for exactly these tiles")
        if self._closed:  # stopped between admission and now (a request mid-way through scale=auto)
            self.release(ticket)
            raise ShuttingDown("the service is shutting down; retry elsewhere")
        ticket.open = False
        loop = asyncio.get_running_loop()
        futures = []
        for tile in tiles:
            item = _Item(tile, loop.create_future())
            item.future.add_done_callback(lambda _, item=item: self._on_done(item))  # type: ignore[misc]
            self._items.append(item)
            futures.append(item.future)
        self._wakeup.set()
        return futures

    def retry_after_s(self, tiles: int) -> int:
        """Seconds until the queue has drained enough for `tiles` more, at the recent throughput."""
        excess = self._waiting if tiles > self._max_queue else self._waiting + tiles - self._max_queue
        rate = self.tiles_per_second or 1.0
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(max(excess, 1) / rate)))

    def _on_done(self, item: _Item) -> None:
        if item.future.cancelled() and not item.taken:
            item.taken = True
            self._waiting -= 1
            self._metrics.tiles_dropped.inc()
            self._update_gauge()

    def _update_gauge(self) -> None:
        self._metrics.queue_tiles.set(self._waiting)

    def _pop_live(self, shape: tuple[int, ...] | None = None) -> _Item | None:
        """The oldest live tile; with `shape`, only if it has that shape (a batch holds one shape: on
        the CPU, whole working images and fitted tiles differ from image to image)."""
        while self._items:
            item = self._items[0]
            if item.taken:
                self._items.popleft()
                continue
            if shape is not None and item.tile.shape != shape:
                return None
            self._items.popleft()
            item.taken = True
            self._waiting -= 1
            return item
        return None

    async def _loop(self) -> None:
        while True:
            await self._step()

    async def _step(self) -> None:
        """One batch; its tiles (views of whole request images) are released when this returns."""
        batch = await self._collect()
        try:
            await self._execute(batch)
        except Exception:  # never let one bad batch stop the service
            log.exception("batch handling failed")
            _fail(batch)

    async def _collect(self) -> list[_Item]:
        """Wait for a first tile, then take more until the batch is full or its oldest tile is due."""
        batch: list[_Item] = []
        while len(batch) < self._max_batch:
            item = self._pop_live(batch[0].tile.shape if batch else None)
            if item is not None:
                batch.append(item)
                continue
            if batch and self._items:  # the next tile has another shape: it starts the next batch
                break
            timeout = None
            if batch:
                timeout = batch[0].enqueued + self._max_wait_s - time.perf_counter()
                if timeout <= 0:
                    break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                break
        # Top up, without waiting, with small tiles of the batch's shape while one more still fits.
        while batch and (len(batch) + 1) * _pixels(batch[0].tile) <= self._max_pixels:
            item = self._pop_live(batch[0].tile.shape)
            if item is None:
                break
            batch.append(item)
        self._update_gauge()
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        self._metrics.tiles_dropped.inc(len(batch) - len(live))
        if not live:
            return
        started = time.perf_counter()
        for item in live:
            self._metrics.observe("queue", started - item.enqueued)
        loop = asyncio.get_running_loop()
        self._running = live
        try:
            outputs, seconds = await loop.run_in_executor(self._executor, self._infer, [i.tile for i in live])
        except Exception:
            log.exception("inference failed for a batch of %d tiles", len(live))
            _fail(live)
            return
        finally:
            self._running = []
        self._record(len(live), seconds)
        batch_id = next(self._batch_ids)
        for item, output in zip(live, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(TileResult(output, batch_id, seconds))

    def _infer(self, tiles: list[np.ndarray]) -> tuple[np.ndarray, float]:
        batch = np.stack(tiles)
        started = time.perf_counter()
        outputs = self._run(batch)
        seconds = time.perf_counter() - started
        if outputs.shape != batch.shape:
            raise ValueError(f"model returned shape {outputs.shape} for a batch of shape {batch.shape}")
        return outputs, seconds

    def _record(self, tiles: int, seconds: float) -> None:
        self._metrics.tiles.inc(tiles)
        self._metrics.batch_size.observe(tiles)
        self._metrics.observe("inference", seconds)
        rate = tiles / max(seconds, 1e-6)
        self.tiles_per_second = (
            rate if not self.tiles_per_second else 0.8 * self.tiles_per_second + 0.2 * rate
        )


def _pixels(tile: np.ndarray) -> int:
    return int(tile.shape[-2] * tile.shape[-1])


def _fail(items: Sequence[_Item]) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(InferenceFailed("inference failed; the request can be retried"))


async def gather_tiles(
    futures: Sequence[asyncio.Future[TileResult]],
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = DISCONNECT_POLL_S,
) -> list[TileResult]:
    """Await every tile of one request, failing fast on the first error and dropping the rest when the
    client disconnects. Cancelling this coroutine (the request's deadline) drops the queued tiles too."""
    pending: set[asyncio.Future[TileResult]] = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, timeout=poll_s, return_when=asyncio.FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            if pending and await is_disconnected():
                raise ClientDisconnected("client disconnected")
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()

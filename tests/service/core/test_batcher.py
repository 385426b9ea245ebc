"""The batcher on its own: cross-request batches, failure isolation, dropped tiles, admission."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from service.core.batcher import Batcher, TileResult, gather_tiles
from service.errors import ClientDisconnected, InferenceFailed, Overloaded, ShuttingDown
from service.metrics import Metrics
from tests.service.svc_helpers import FakeRunner

T = 8  # tile side for these tests


def tiles(count: int, value: float) -> list[np.ndarray]:
    return [np.full((3, T, T), value + k, np.float32) for k in range(count)]


async def never() -> bool:
    return False


def run_with(runner: FakeRunner, scenario: Callable[[Batcher], Awaitable[None]], **limits: float) -> Metrics:
    metrics = Metrics()

    async def main() -> None:
        batcher = Batcher(
            runner.run,
            metrics,
            max_batch=int(limits.get("max_batch", 4)),
            max_wait_s=limits.get("max_wait_s", 0.05),
            max_queue_tiles=int(limits.get("max_queue_tiles", 64)),
            tile_pixels=int(limits.get("tile_pixels", 0)),
        )
        batcher.start()
        try:
            await asyncio.wait_for(scenario(batcher), timeout=20)
        finally:
            runner.gate.set()
            await batcher.stop()

    asyncio.run(main())
    return metrics


async def request(batcher: Batcher, inputs: list[np.ndarray]) -> list[TileResult]:
    futures = batcher.submit(batcher.admit(len(inputs)), inputs)
    return await gather_tiles(futures, never)


def test_tiles_of_different_requests_share_a_batch(fake_runner: FakeRunner) -> None:
    async def scenario(batcher: Batcher) -> None:
        first, second = await asyncio.gather(request(batcher, tiles(2, 0)), request(batcher, tiles(2, 10)))
        assert [r.output[0, 0, 0] for r in first] == [0.25, 0.75]  # 0.5 * x + 0.25, each its own tile
        assert [r.output[0, 0, 0] for r in second] == [5.25, 5.75]
        assert len({r.batch_id for r in first + second}) == 1

    metrics = run_with(fake_runner, scenario)
    assert fake_runner.batch_sizes == [4]
    assert metrics.tiles._value.get() == 4  # type: ignore[attr-defined]


def test_a_partial_batch_closes_after_the_wait(fake_runner: FakeRunner) -> None:
    async def scenario(batcher: Batcher) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        (result,) = await request(batcher, tiles(1, 0))
        assert 0.04 <= loop.time() - started < 2
        assert result.batch_seconds >= 0

    run_with(fake_runner, scenario, max_wait_s=0.05)
    assert fake_runner.batch_sizes == [1]


def test_big_requests_are_cut_into_full_batches(fake_runner: FakeRunner) -> None:
    async def scenario(batcher: Batcher) -> None:
        results = await request(batcher, tiles(10, 0))
        assert [r.output[0, 0, 0] for r in results] == [0.5 * k + 0.25 for k in range(10)]

    run_with(fake_runner, scenario, max_batch=4, max_wait_s=0.01)
    assert fake_runner.batch_sizes == [4, 4, 2]


def test_a_failing_batch_fails_only_its_requests(fake_runner: FakeRunner) -> None:
    fake_runner.fail_when = lambda batch: bool((batch == 99).any())

    async def scenario(batcher: Batcher) -> None:
        poisoned, neighbour, other = await asyncio.gather(
            request(batcher, tiles(1, 99)),
            request(batcher, tiles(1, 0)),
            request(batcher, tiles(2, 20)),
            return_exceptions=True,
        )
        assert isinstance(poisoned, InferenceFailed) and isinstance(neighbour, InferenceFailed)
        assert str(poisoned) == "inference failed; the request can be retried"
        assert isinstance(other, list) and other[0].output[0, 0, 0] == 10.25
        later = await request(batcher, tiles(1, 0))  # the service keeps serving
        assert later[0].output[0, 0, 0] == 0.25

    run_with(fake_runner, scenario, max_batch=2, max_wait_s=0.01)
    assert fake_runner.batch_sizes == [2, 2, 1]


def test_a_timed_out_request_has_its_queued_tiles_dropped(fake_runner: FakeRunner) -> None:
    async def scenario(batcher: Batcher) -> None:
        fake_runner.gate.clear()
        blocker = asyncio.ensure_future(request(batcher, tiles(1, 0)))
        await asyncio.to_thread(fake_runner.entered.wait, 5)  # the model is busy with the first batch
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(request(batcher, tiles(3, 50)), timeout=0.1)
        assert batcher.waiting_tiles == 0
        fake_runner.gate.set()
        await blocker
        await request(batcher, tiles(1, 0))

    metrics = run_with(fake_runner, scenario, max_batch=4, max_wait_s=0.001)
    assert not any((tile >= 50).any() for tile in fake_runner.tiles_seen)  # they never ran
    assert metrics.tiles_dropped._value.get() == 3  # type: ignore[attr-defined]
    assert metrics.queue_tiles._value.get() == 0  # type: ignore[attr-defined]


def test_a_disconnected_client_has_its_tiles_dropped(fake_runner: FakeRunner) -> None:
    async def gone() -> bool:
        return True

    async def scenario(batcher: Batcher) -> None:
        fake_runner.gate.clear()
        blocker = asyncio.ensure_future(request(batcher, tiles(1, 0)))
        await asyncio.to_thread(fake_runner.entered.wait, 5)
        futures = batcher.submit(batcher.admit(2), tiles(2, 50))
        with pytest.raises(ClientDisconnected):
            await gather_tiles(futures, gone, poll_s=0.01)
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
        assert all(f.cancelled() for f in futures) and batcher.waiting_tiles == 0
        fake_runner.gate.set()
        await blocker

    run_with(fake_runner, scenario, max_wait_s=0.001)
    assert not any((tile >= 50).any() for tile in fake_runner.tiles_seen)


def test_admission_refuses_tiles_beyond_the_queue_with_a_retry_estimate(fake_runner: FakeRunner) -> None:
    async def scenario(batcher: Batcher) -> None:
        batcher.seed_throughput(2.0)  # tiles per second
        held = batcher.admit(6)
        with pytest.raises(Overloaded) as refused:
            batcher.admit(4)
        assert refused.value.retry_after_s == 1  # (6 + 4 - 8) tiles at 2 tiles/s
        with pytest.raises(Overloaded) as refused:
            batcher.admit(8)
        assert refused.value.retry_after_s == 3  # (6 + 8 - 8) tiles at 2 tiles/s
        assert str(refused.value) == "too many tiles queued (6); retry in 3 s"
        batcher.release(held)
        batcher.release(held)  # idempotent
        assert batcher.waiting_tiles == 0
        batcher.release(batcher.admit(20))  # bigger than the queue: only into an empty queue

    run_with(fake_runner, scenario, max_queue_tiles=8)


def test_stop_fails_whatever_is_still_queued(fake_runner: FakeRunner) -> None:
    async def main() -> None:
        batcher = Batcher(fake_runner.run, Metrics(), max_batch=1, max_wait_s=0.001, max_queue_tiles=8)
        batcher.start()
        fake_runner.gate.clear()
        futures = batcher.submit(batcher.admit(3), tiles(3, 0))
        await asyncio.to_thread(fake_runner.entered.wait, 5)
        await batcher.stop()
        fake_runner.gate.set()
        assert all(isinstance(f.exception(), ShuttingDown) for f in futures)
        with pytest.raises(ShuttingDown):
            batcher.admit(1)

    asyncio.run(main())


def test_small_tiles_top_up_a_full_batch_to_the_pixels_of_max_batch_tiles(fake_runner: FakeRunner) -> None:
    """max_batch 1 of 8x8 tiles (64 px): four queued 4x4 crops (16 px each) share one model call, a
    fifth starts the next; full-size tiles still go one per call, and a lone crop does not wait."""

    def crops(count: int, value: float) -> list[np.ndarray]:
        return [np.full((3, 4, 4), value + k, np.float32) for k in range(count)]

    async def scenario(batcher: Batcher) -> None:
        small = await request(batcher, crops(5, 0))
        assert [r.output[0, 0, 0] for r in small] == [0.25, 0.75, 1.25, 1.75, 2.25]  # each its own crop
        assert len({r.batch_id for r in small[:4]}) == 1 and small[4].batch_id != small[0].batch_id
        full = await request(batcher, tiles(2, 0))
        assert full[0].batch_id != full[1].batch_id
        started = asyncio.get_running_loop().time()
        await request(batcher, crops(1, 0))
        assert asyncio.get_running_loop().time() - started < 1.0  # not the 5 s max_wait_s

    metrics = run_with(fake_runner, scenario, max_batch=1, max_wait_s=5.0, tile_pixels=T * T)
    samples = {sample.name: sample.value for sample in metrics.batch_size.collect()[0].samples}
    assert (samples["derain_batch_size_count"], samples["derain_batch_size_sum"]) == (5, 4 + 1 + 2 + 1)

"""A bounded open-loop HTTP load generator (asyncio + httpx) for loopback tests.

Requests start at a fixed rate whatever the server does (open loop: a slow server does not slow the
arrivals down, as real clients would not), up to `count` requests, at most `concurrency` at once
(kept below the server's connection limit: this measures the service's own admission, 429, rather
than the connection limit), each with a timeout. Every outcome is recorded: status, latency,
Retry-After, or the transport error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass(frozen=True)
class Outcome:
    started: float  # s since the run began
    seconds: float  # latency: request start to full response
    status: int | None  # None: a transport error (connection refused or reset, timeout)
    retry_after: str | None = None
    error: str | None = None


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    wall_s: float
    offered_rps: float
    rss_mib: list[float] = field(default_factory=list)  # server memory, sampled during the run

    @property
    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    def share(self, status: int) -> float:
        return self.statuses.get(status, 0) / len(self.outcomes)

    def latency_ms(self, percentile: float, status: int | None = None) -> float:
        chosen = [o.seconds for o in self.outcomes if status is None or o.status == status]
        return float(np.percentile(chosen, percentile) * 1000) if chosen else float("nan")

    @property
    def completed_rps(self) -> float:
        return sum(o.status is not None for o in self.outcomes) / self.wall_s

    @property
    def served_rps(self) -> float:
        return self.statuses.get(200, 0) / self.wall_s


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    rate_rps: float,
    count: int,
    concurrency: int,
    timeout_s: float,
    sample_rss: Callable[[], float] | None = None,
) -> LoadReport:
    """POST `body` to `url` `count` times at `rate_rps`, at most `concurrency` in flight."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[Outcome] = []
    rss: list[float] = []
    begin = time.perf_counter()

    async def one(client: httpx.AsyncClient) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                outcome = Outcome(
                    started - begin,
                    time.perf_counter() - started,
                    response.status_code,
                    response.headers.get("retry-after"),
                )
            except httpx.HTTPError as error:
                outcome = Outcome(started - begin, time.perf_counter() - started, None, error=repr(error))
            outcomes.append(outcome)

    async def sampler(done: asyncio.Event) -> None:
        while sample_rss is not None and not done.is_set():
            rss.append(sample_rss())
            await asyncio.sleep(0.05)

    done = asyncio.Event()
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        watcher = asyncio.create_task(sampler(done))
        tasks = []
        for index in range(count):
            delay = begin + index / rate_rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client)))
        await asyncio.gather(*tasks)
        done.set()
        await watcher
    return LoadReport(outcomes, time.perf_counter() - begin, rate_rps, rss)

"""HTTP-level measurements against a real `python -m service` process on loopback.

batching: throughput and latency at several concurrencies, batching on (defaults) and off (MAX_BATCH=1).
overhead: end-to-end HTTP time for a 1 MP and a 12 MP photo vs the engine time for the same tiles.
memory: the service's RSS at idle and its peak while it processes a 24 MP upload.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from service.core.runtime import Runner

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "RealSIRR147" / "rain"
RAIN12 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "Rain12"
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_service(model: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """Start the service on a free loopback port; yields (base URL, pid); always stops it."""
    port = free_port()
    env = {**os.environ, "DERAIN_MODEL_PATH": str(model), "DERAIN_PROVIDERS": "CPUExecutionProvider"}
    env.update({f"DERAIN_{k.upper()}": v for k, v in settings.items()})
    env["DERAIN_LOG_LEVEL"] = "WARNING"
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"service exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("service did not become ready")
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def photo(megapixels: float) -> bytes:
    """A real rainy photo resized to about `megapixels` MP, as a high-quality JPEG."""
    source = max(REAL.glob("*.jpg"), key=lambda p: p.stat().st_size)
    with Image.open(source) as image:
        rgb = image.convert("RGB")
        scale = (megapixels * 1e6 / (rgb.width * rgb.height)) ** 0.5
        resized = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def crop_png(size: int) -> bytes:
    source = max(REAL.glob("*.jpg"), key=lambda p: p.stat().st_size)
    with Image.open(source) as image:
        tile = image.convert("RGB").crop((0, 0, size, size))
    buffer = io.BytesIO()
    tile.save(buffer, "PNG")
    return buffer.getvalue()


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def _load(url: str, body: bytes, concurrency: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(f"{url}/derain", content=body, headers={"Content-Type": "image/png"})
            latencies.append(time.perf_counter() - started)
            statuses.append(response.status_code)

    async with httpx.AsyncClient(timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": requests,
        "ok": statuses.count(200),
        "requests_per_s": round(requests / elapsed, 3),
        "p50_s": round(quantiles[49], 3),
        "p95_s": round(quantiles[94], 3),
    }


def batching(model: Path, quick: bool = False) -> list[dict[str, object]]:
    """One-tile requests (256x256), so only cross-request batching can fill a batch."""
    body = crop_png(256)
    rows: list[dict[str, object]] = []
    # cpu_lanes 0 = min(max_batch, cores) lanes; 1 (the default) = none. max_batch 0 (the default) is
    # 1 on the CPU, so "off" is also what the service does by default there.
    configs = (("on, CPU lanes", "4", "0"), ("on", "4", "1"), ("off (CPU default)", "1", "1"))
    for label, max_batch, lanes in configs:
        with running_service(model, max_batch=max_batch, cpu_lanes=lanes) as (url, _):
            for concurrency in (1, 4) if quick else (1, 4, 16):
                requests = max(8, 4 * concurrency) if not quick else 8
                result = asyncio.run(_load(url, body, concurrency, requests))
                rows.append(
                    {
                        "batching": label,
                        "max_batch": int(max_batch),
                        "cpu_lanes": int(lanes),
                        "concurrency": concurrency,
                        **result,
                    }
                )
    return rows


def _engine_seconds(model: Path, tiles: int, tile: int, batch: int) -> float:
    """The same number of tiles through the service's own runner (same graph file, threads, lanes)."""
    from service.core.runtime import load_from_settings
    from service.settings import Settings

    runner = load_from_settings(Settings(model_path=model, providers=["CPUExecutionProvider"]))
    data = np.random.default_rng(0).random((batch, 3, tile, tile), dtype=np.float32)
    runner.run(data)  # warm-up
    started = time.perf_counter()
    remaining = tiles
    while remaining > 0:
        runner.run(data[: min(batch, remaining)])
        remaining -= batch
    return time.perf_counter() - started


def overhead(model: Path, quick: bool = False) -> list[dict[str, object]]:
    from service.core.runtime import CPU, serving_batch
    from service.settings import Settings

    settings = Settings(model_path=model)
    batch = serving_batch(settings.max_batch, CPU, settings.max_queue_tiles)
    rows: list[dict[str, object]] = []
    # Full size in fixed tiles (scale=1, no whole-image path): the HTTP overhead over the same tiles.
    with (
        running_service(model, request_timeout_s="1800", whole_max_pixels="0") as (url, _),
        httpx.Client() as client,  # keep-alive, as in `scale`
    ):
        for megapixels in (1.0,) if quick else (1.0, 12.0):
            body = photo(megapixels)
            started = time.perf_counter()
            response = client.post(
                f"{url}/derain?scale=1", content=body, headers={"Content-Type": "image/jpeg"}, timeout=600
            )
            http_s = time.perf_counter() - started
            response.raise_for_status()
            tiles = int(response.headers["X-Derain-Tiles"])
            engine_s = _engine_seconds(model, tiles, settings.tile_size, batch)
            rows.append(
                {
                    "megapixels": megapixels,
                    "tiles": tiles,
                    "http_s": round(http_s, 2),
                    "engine_s": round(engine_s, 2),
                    "ratio": round(http_s / engine_s, 3),
                }
            )
    return rows


def _whole_image_batch(runner: Runner, rgb: np.ndarray) -> np.ndarray:
    """The whole image at full size, padded to the model's grid, as the service's runner takes it."""
    multiple = runner.info.pad_multiple
    height, width = rgb.shape[1:]
    padded = np.pad(rgb, ((0, 0), (0, -height % multiple), (0, -width % multiple)), mode="reflect")
    return np.ascontiguousarray(padded[None], np.float32)


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def scale(model: Path, quick: bool = False) -> list[dict[str, object]]:
    """Working scale at the service's defaults: HTTP end-to-end time of Rain12-sized photos against the
    model's time on the same images whole, and a 12 MP photo at the default against scale=1.

    One keep-alive client, as load generators and SDKs use (httpx's module-level functions build a new
    client, with its TLS context, for every call: ~25 ms here). Each image gets one untimed request and
    one untimed model run first (warm-up), then HTTP and model samples alternate, so background load
    hits both alike; the medians per image are summed."""
    from service.core.runtime import load_from_settings
    from service.settings import Settings

    images = sorted((RAIN12 / "rain").glob("*.png"))[: 2 if quick else 12]
    repeats = 1 if quick else 3
    rows: list[dict[str, object]] = []
    runner = load_from_settings(Settings(model_path=model, providers=["CPUExecutionProvider"]))
    with running_service(model, request_timeout_s="1800") as (url, _), httpx.Client(timeout=1800) as client:

        def derain(body: bytes, media: str, choice: str = "auto") -> tuple[float, str]:
            """Seconds for one request, and the factor the service used."""
            started = time.perf_counter()
            response = client.post(
                f"{url}/derain?scale={choice}", content=body, headers={"Content-Type": media}
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed, response.headers["X-Derain-Scale"]

        http, whole = [], []
        factors: set[str] = set()
        for path in images:
            body = path.read_bytes()
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1) / 255
            batch = _whole_image_batch(runner, rgb)
            derain(body, "image/png")
            runner.run(batch)
            samples = [
                (*derain(body, "image/png"), _timed(partial(runner.run, batch))) for _ in range(repeats)
            ]
            http.append(float(np.median([seconds for seconds, _, _ in samples])))
            whole.append(float(np.median([seconds for _, _, seconds in samples])))
            factors.update(factor for _, factor, _ in samples)
        rows.append(
            {
                "case": f"Rain12 {len(images)} images 481x321, default (auto)",
                "scale_used": ",".join(sorted(factors)),
                "http_s": round(sum(http), 2),
                "reference": "model on each whole image",
                "reference_s": round(sum(whole), 2),
                "ratio": round(sum(http) / sum(whole), 3),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)  # a long run shows its first figure early
        if not quick:
            source = REAL / "91.jpg"
            body = source.read_bytes()
            times: dict[str, list[float]] = {"auto": [], "1": []}
            used: dict[str, str] = {}
            for _ in range(2):
                for choice in times:
                    seconds, used[choice] = derain(body, "image/jpeg", choice)
                    times[choice].append(seconds)
            default_s, full_s = float(np.median(times["auto"])), float(np.median(times["1"]))
            rows.append(
                {
                    "case": f"{source.name} 4288x2848 (12 MP), default (auto)",
                    "scale_used": used["auto"],
                    "http_s": round(default_s, 2),
                    "reference": "the same photo at scale=1",
                    "reference_s": round(full_s, 2),
                    "ratio": round(default_s / full_s, 3),
                }
            )
    return rows


def memory(model: Path, quick: bool = False) -> dict[str, object]:
    megapixels = 4.0 if quick else 24.0
    body = photo(megapixels)
    with running_service(model, request_timeout_s="1800") as (url, pid):
        idle_mib = rss_kib(pid, "VmRSS") / 1024
        response = httpx.post(
            f"{url}/derain", content=body, headers={"Content-Type": "image/jpeg"}, timeout=900
        )
        response.raise_for_status()
        peak_mib = rss_kib(pid, "VmHWM") / 1024
    return {
        "upload_megapixels": megapixels,
        "idle_rss_mib": round(idle_mib, 1),
        "peak_rss_mib": round(peak_mib, 1),
    }

"""The ASGI app, built by `create_app` (`service.http.app:app` for an ASGI server of your own); the model
loads in the lifespan, never at import.

Start-up: read and check settings, load and check the model (a bad model stops start-up with a clear
message), start the batcher, then warm up in the background at the serving tile shape; /readyz turns
200 when warm-up has run. Shutdown: readiness turns 503 (from SIGTERM on, with `python -m service`),
in-flight requests drain (uvicorn's graceful timeout), then the batcher stops.

What routes need is built whole by the lifespan (`Serving`: settings, derainer, model description) and
handed to them as lifespan state; what exists from the start (metrics, lifecycle) is `AppState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI

from service.core.batcher import Batcher
from service.core.derainer import Tiling, build_derainer, whole_pixels
from service.core.pipeline import check_tiling
from service.core.runtime import CPU, ModelError, Runner, fell_back, load_from_settings, serving_batch
from service.http.error_table import install_error_handlers
from service.http.lifecycle import Lifecycle
from service.http.middleware import RequestContext
from service.http.openapi import document_api_key
from service.http.routes import AppState, Serving, router
from service.logs import configure_logging
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

RunnerFactory = Callable[[Settings], Runner]
DESCRIPTION = (
    "Removes rain streaks from photos with MSPFN (CVPR 2020) on ONNX Runtime. Large images are cut into "
    "overlapping fixed-size tiles, batched across requests and stitched back seam-free."
)


def create_app(
    settings: Settings | None = None,
    runner_factory: RunnerFactory = load_from_settings,
    configure_logs: bool = False,
) -> FastAPI:
    """Settings None: read from DERAIN_* at start-up. `runner_factory` lets tests serve a fake model."""
    state = AppState(metrics=Metrics(), lifecycle=Lifecycle())
    state.metrics.inflight.set_function(lambda: state.lifecycle.inflight)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Serving]]:
        loaded = settings or Settings()
        document_api_key(app, loaded)
        async with _serve(state, loaded, runner_factory, configure_logs) as serving:
            yield {"serving": serving}

    app = FastAPI(
        title="MSPFN deraining service", version="1.0.0", description=DESCRIPTION, lifespan=lifespan
    )
    app.state.service = state
    install_error_handlers(app, state.metrics)
    app.include_router(router)
    app.add_middleware(RequestContext, metrics=state.metrics)
    return app


@asynccontextmanager
async def _serve(
    state: AppState, settings: Settings, runner_factory: RunnerFactory, configure_logs: bool
) -> AsyncIterator[Serving]:
    if configure_logs:
        configure_logging(settings.log_format, settings.log_level)
    try:
        runner = await asyncio.to_thread(runner_factory, settings)
        _check_tile(settings, runner)
    except ModelError as error:  # an expected refusal: one clear line, then start-up stops
        state.startup_error = str(error)
        log.error("cannot serve the model: %s", error)
        raise
    max_batch = serving_batch(settings.max_batch, runner.active_provider, settings.max_queue_tiles)
    _publish_model(state.metrics, runner)
    tiling = Tiling(
        settings.tile_size,
        settings.tile_overlap,
        runner.info.pad_multiple,
        whole_pixels(runner.active_provider, settings.whole_max_pixels),
        runner.info.train_short_side,
    )
    batcher, derainer = build_derainer(
        runner.run,
        state.metrics,
        tiling,
        max_batch,
        settings.max_wait_ms / 1000,
        settings.max_queue_tiles,
        settings.max_pixels,
        settings.second_pass,
    )
    batcher.start()
    state.lifecycle.on_abandon(batcher.stop)
    warm_up = asyncio.create_task(
        _warm_up(state.lifecycle, runner, batcher, settings.tile_size, max_batch), name="derain-warm-up"
    )
    log.info("serving", extra={"settings": _public(settings), "max_batch": max_batch})
    try:
        yield Serving(settings, derainer, _describe(runner, settings, max_batch))
    finally:
        state.lifecycle.begin_shutdown()
        warm_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm_up
        await batcher.stop()
        log.info("stopped")


def _check_tile(settings: Settings, runner: Runner) -> None:
    try:
        check_tiling(settings.tile_size, settings.tile_overlap, runner.info.pad_multiple)
    except ValueError as error:
        raise ModelError(f"{error} (the model's pad multiple is {runner.info.pad_multiple})") from None


def _publish_model(metrics: Metrics, runner: Runner) -> None:
    info = runner.info
    metrics.set_model(
        preset=info.preset,
        weights_sha256=info.weights_sha256,
        provider=runner.active_provider,
        requested=",".join(runner.requested_providers),
        precision=info.precision,
        fallback=fell_back(runner),
    )


def _describe(runner: Runner, settings: Settings, max_batch: int) -> dict[str, str]:
    """The model as /readyz reports it."""
    return {
        "preset": runner.info.preset,
        "provider": runner.active_provider,
        "precision": runner.info.precision,
        "tile_size": str(settings.tile_size),
        "max_batch": str(max_batch),
    }


async def _warm_up(lifecycle: Lifecycle, runner: Runner, batcher: Batcher, tile: int, max_batch: int) -> None:
    """Run the serving tile shape once per batch size the GPU will see (cuDNN search, arena); on CPU one
    tile, and one full batch when there are lanes (their sessions)."""
    if runner.active_provider == CPU:
        sizes = sorted({1, max_batch}) if runner.lanes > 1 else [1]
    else:
        sizes = list(range(1, max_batch + 1))
    try:
        for size in sizes:
            batch = np.full((size, 3, tile, tile), 0.5, np.float32)
            started = time.perf_counter()
            output = await asyncio.to_thread(runner.run, batch)
            seconds = time.perf_counter() - started
            if output.shape != batch.shape or not np.isfinite(output).all():
                raise ModelError(f"warm-up output has shape {output.shape} or non-finite values")
        batcher.seed_throughput(sizes[-1] / max(seconds, 1e-6))
    except Exception:
        log.exception("warm-up failed; the service stays not ready")
        lifecycle.mark_failed()
        return
    lifecycle.mark_ready()
    log.info("ready", extra={"warm_up_batches": sizes, "tile_size": tile})


def _public(settings: Settings) -> dict[str, object]:
    """Settings for the start-up log line, the API key reduced to whether one is set."""
    values = settings.model_dump(exclude={"api_key"})
    values["api_key_set"] = settings.api_key is not None
    return {key: str(value) for key, value in values.items()}


app = create_app(configure_logs=True)

"""The routes: they only move bytes and status codes; images are handled by `service.core.derainer`.

What a route needs reaches it through typed dependencies: `AppState` (metrics, lifecycle: there from
the start) and `Serving` (settings, derainer, model: built whole by the lifespan, see service.http.app).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service import errors
from service.core.derainer import Derainer
from service.core.pipeline import OutputFormat
from service.core.pipeline.scale import MAX_SCALE, SCALE_PATTERN, format_factor, format_scale, parse_scale
from service.http.lifecycle import LOADING_RETRY_AFTER_S, Lifecycle
from service.http.openapi import DERAIN_BODY, DERAIN_RESPONSES, ERROR
from service.http.page import PAGE
from service.http.upload import read_image
from service.metrics import CONTENT_TYPE, Metrics
from service.settings import Settings

FormatParam = Literal["png", "jpeg", "jpg", "webp"]


@dataclass
class AppState:
    """What every route can reach from the start (`app.state.service`)."""

    metrics: Metrics
    lifecycle: Lifecycle
    startup_error: str = ""  # why the model could not be served, for `python -m service`


@dataclass(frozen=True)
class Serving:
    """What the lifespan built once the model was loaded (lifespan state `serving`)."""

    settings: Settings
    derainer: Derainer
    model: dict[str, str]  # preset, provider, ... for /readyz


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.service
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_serving(request: Request) -> Serving:
    """The lifespan's `Serving`; NotReady where the lifespan has not run (an app served without one)."""
    serving = getattr(request.state, "serving", None)
    if not isinstance(serving, Serving):
        raise errors.NotReady("the model is still loading; retry shortly", LOADING_RETRY_AFTER_S)
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def require_ready(state: StateDep) -> None:
    """NotReady / ShuttingDown before the model is warm and from shutdown on: refused before the
    parameters are even read (the route admits and counts the request itself, `Lifecycle.admitted`)."""
    state.lifecycle.check_ready()


def require_api_key(request: Request, serving: ServingDep) -> None:
    """With DERAIN_API_KEY set: `Authorization: Bearer <key>`, compared in constant time.

    Both sides are hashed first, so the comparison takes the same time whatever the key's length and
    however much of it a guess gets right. Neither the key nor the presented token is ever logged.
    """
    key = serving.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = hashlib.sha256(token.strip().encode()).digest()
    expected = hashlib.sha256(key.get_secret_value().encode()).digest()
    valid = hmac.compare_digest(presented, expected)
    if scheme.lower() != "bearer" or not valid:
        raise errors.Unauthorized("missing or invalid API key; send 'Authorization: Bearer <key>'")


router = APIRouter()


@router.post(
    "/derain",
    summary="Remove rain from an image",
    response_class=Response,
    responses=DERAIN_RESPONSES,
    openapi_extra=DERAIN_BODY,
    dependencies=[Depends(require_api_key), Depends(require_ready)],
)
async def derain(
    request: Request,
    state: StateDep,
    serving: ServingDep,
    fmt: Annotated[
        FormatParam | None,
        Query(alias="format", description="output format; default: the upload's if PNG/JPEG/WebP, else PNG"),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP quality (default 90; WebP 100 = lossless)")
    ] = None,
    scale: Annotated[
        str | None,
        Query(
            description=(
                "working scale: 'auto' (picked per image), or a factor from 1 (full size, the model sees "
                f"every pixel) to {format_scale(MAX_SCALE)}; the model derains the image shrunk by it and "
                "the rain it finds is brought back to full size. Default: DERAIN_DEFAULT_SCALE (auto)"
            ),
            pattern=SCALE_PATTERN,
            examples=["auto", "1", "2", "4"],
        ),
    ] = None,
) -> Response:
    """The image goes through decode, tiling, cross-request batched inference, stitching and encoding."""
    settings = serving.settings
    output: OutputFormat | None = "jpeg" if fmt == "jpg" else fmt
    choice = parse_scale(scale or settings.default_scale)  # ScaleError: 422 from the error table
    data: bytes | None = None
    try:
        with state.lifecycle.admitted():  # NotReady / ShuttingDown, else in flight until answered
            async with asyncio.timeout(settings.request_timeout_s):
                data = await read_image(request, settings.max_upload_bytes)
                result = await serving.derainer.derain(data, output, quality, request.is_disconnected, choice)
    except TimeoutError:
        if data is None:  # still uploading: the client is slow or stalled, not the service
            raise errors.UploadTimeout(
                f"the upload did not arrive within {settings.request_timeout_s:g} s"
            ) from None
        raise errors.RequestTimeout(
            f"request did not finish within {settings.request_timeout_s:g} s; its tiles were dropped"
        ) from None
    headers = {
        "X-Derain-Tiles": str(result.tiles),
        "X-Derain-Inference-Ms": f"{result.inference_ms:.1f}",
        "X-Derain-Scale": format_scale(result.scale),
        "X-Derain-Passes": " ".join(format_factor(factor) for factor in result.passes),
    }
    return Response(result.content, media_type=result.media_type, headers=headers)


@router.get(
    "/healthz",
    summary="Liveness: 200 while the process runs (503 if warm-up failed)",
    responses={503: {**ERROR, "description": "warm-up failed: restart the process"}},
)
def healthz(state: StateDep) -> JSONResponse:
    if state.lifecycle.state == "failed":
        return JSONResponse({"detail": "warm-up failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: 200 after model load and warm-up; 503 before and from the start of shutdown",
    responses={503: {**ERROR, "description": "not ready"}},
)
def readyz(request: Request, state: StateDep) -> JSONResponse:
    try:
        state.lifecycle.check_ready()
        model = get_serving(request).model  # ready: the lifespan has built it
    except errors.NotReady as error:
        return JSONResponse({"detail": str(error)}, status_code=503)
    return JSONResponse({"status": "ready", **model})


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(PAGE)

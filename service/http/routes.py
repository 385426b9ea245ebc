"""HTTP layer: routes, the one error table (domain error -> status), the API key check, OpenAPI docs.

Routes only move bytes and status codes; images are handled by `service.engine.Derainer`.
Every error answers JSON {"detail": "<one line>"}; nothing internal (paths, exception text) leaks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from service import errors
from service.engine import LOADING_RETRY_AFTER_S, Derainer, ServiceState
from service.metrics import CONTENT_TYPE
from service.page import PAGE
from service.pipeline import OutputFormat
from service.upload import read_image

log = logging.getLogger(__name__)

# The error table: each domain error, its status. Subclasses inherit their parent's row.
ERROR_STATUS: dict[type[errors.DerainError], int] = {
    errors.BadImage: 400,
    errors.Unauthorized: 401,
    errors.UploadTimeout: 408,
    errors.TooLarge: 413,
    errors.UnsupportedMedia: 415,
    errors.Overloaded: 429,
    errors.ClientDisconnected: 499,  # nobody reads it; logged and counted as such
    errors.InferenceFailed: 500,
    errors.NotReady: 503,  # ShuttingDown too
    errors.RequestTimeout: 504,
}
FormatParam = Literal["png", "jpeg", "jpg", "webp"]
BEARER = "bearerAuth"  # the OpenAPI security scheme of the API key


class ErrorBody(BaseModel):
    detail: str


def status_of(error: errors.DerainError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]  # type: ignore[index]
    return 500


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_derainer(state: StateDep) -> Derainer:
    """The request pipeline, once the model is loaded and warmed up (NotReady / ShuttingDown before)."""
    state.lifecycle.check_ready()
    if state.derainer is None:
        raise errors.NotReady("the model is still loading; retry shortly", LOADING_RETRY_AFTER_S)
    return state.derainer


def require_api_key(request: Request, state: StateDep) -> None:
    """With DERAIN_API_KEY set: `Authorization: Bearer <key>`, compared in constant time.

    Both sides are hashed first, so the comparison takes the same time whatever the key's length and
    however much of it a guess gets right. Neither the key nor the presented token is ever logged.
    """
    key = state.settings.api_key if state.settings else None
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = hashlib.sha256(token.strip().encode()).digest()
    expected = hashlib.sha256(key.get_secret_value().encode()).digest()
    valid = hmac.compare_digest(presented, expected)
    if scheme.lower() != "bearer" or not valid:
        raise errors.Unauthorized("missing or invalid API key; send 'Authorization: Bearer <key>'")


router = APIRouter()


def _binary(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary"}, "description": description}


DERAIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG, WebP, TIFF or BMP): a multipart field `image`, or the raw "
        "bytes as the body. Animated or multi-page images: the first frame is processed.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": _binary("raw image bytes"),
            "application/octet-stream": _binary("raw image bytes"),
        },
    }
}
_ERROR = {"model": ErrorBody}
DERAIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The derained image, same width and height as the upload (EXIF orientation applied)",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("image/png", "image/jpeg", "image/webp")
        },
        "headers": {
            "X-Derain-Tiles": {"description": "tiles the image was cut into", "schema": {"type": "integer"}},
            "X-Derain-Inference-Ms": {
                "description": "model time (ms) of the batches that carried this image's tiles",
                "schema": {"type": "number"},
            },
            "X-Request-Id": {"description": "request id, also in the logs", "schema": {"type": "string"}},
        },
    },
    400: {**_ERROR, "description": "empty, truncated or undecodable image; malformed multipart"},
    401: {**_ERROR, "description": "API key configured and missing or wrong"},
    408: {**_ERROR, "description": "the upload did not arrive within DERAIN_REQUEST_TIMEOUT_S"},
    413: {**_ERROR, "description": "upload bytes or pixels above the limits"},
    415: {**_ERROR, "description": "content type or image format not accepted (GIF, SVG, PDF, ...)"},
    422: {**_ERROR, "description": "invalid query parameter"},
    429: {
        **_ERROR,
        "description": "queue full; retry after the Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    500: {**_ERROR, "description": "inference failed for this request's batch"},
    503: {
        **_ERROR,
        "description": "model not ready yet, shutting down, or too many open connections; "
        "Retry-After when retrying soon can succeed",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    504: {**_ERROR, "description": "not finished within DERAIN_REQUEST_TIMEOUT_S"},
}


@router.post(
    "/derain",
    summary="Remove rain from an image",
    response_class=Response,
    responses=DERAIN_RESPONSES,
    openapi_extra=DERAIN_BODY,
    dependencies=[Depends(require_api_key)],
)
async def derain(
    request: Request,
    state: StateDep,
    derainer: Annotated[Derainer, Depends(get_derainer)],
    fmt: Annotated[
        FormatParam | None,
        Query(alias="format", description="output format; default: the upload's if PNG/JPEG/WebP, else PNG"),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP quality (default 90; WebP 100 = lossless)")
    ] = None,
) -> Response:
    """The image goes through decode, tiling, cross-request batched inference, stitching and encoding."""
    assert state.settings is not None  # ready implies loaded settings
    settings = state.settings
    output: OutputFormat | None = "jpeg" if fmt == "jpg" else fmt
    data: bytes | None = None
    state.metrics.inflight.inc()
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            data = await read_image(request, settings.max_upload_bytes)
            result = await derainer.derain(data, output, quality, request.is_disconnected)
    except TimeoutError:
        if data is None:  # still uploading: the client is slow or stalled, not the service
            raise errors.UploadTimeout(
                f"the upload did not arrive within {settings.request_timeout_s:g} s"
            ) from None
        raise errors.RequestTimeout(
            f"request did not finish within {settings.request_timeout_s:g} s; its tiles were dropped"
        ) from None
    finally:
        state.metrics.inflight.dec()
    headers = {"X-Derain-Tiles": str(result.tiles), "X-Derain-Inference-Ms": f"{result.inference_ms:.1f}"}
    return Response(result.content, media_type=result.media_type, headers=headers)


@router.get(
    "/healthz",
    summary="Liveness: 200 while the process runs (503 if warm-up failed)",
    responses={503: {**_ERROR, "description": "warm-up failed: restart the process"}},
)
def healthz(state: StateDep) -> JSONResponse:
    if state.lifecycle.state == "failed":
        return JSONResponse({"detail": "warm-up failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: 200 after model load and warm-up; 503 before and from the start of shutdown",
    responses={503: {**_ERROR, "description": "not ready"}},
)
def readyz(state: StateDep) -> JSONResponse:
    try:
        state.lifecycle.check_ready()
    except errors.NotReady as error:
        return JSONResponse({"detail": str(error)}, status_code=503)
    return JSONResponse({"status": "ready", **(state.model or {})})


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


def document_api_key(app: FastAPI, state: ServiceState) -> None:
    """With DERAIN_API_KEY set, the OpenAPI description says that POST /derain needs the bearer key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's own; it caches this very dict on the app
        if state.settings is not None and state.settings.api_key is not None:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[BEARER] = {"type": "http", "scheme": "bearer", "description": "DERAIN_API_KEY"}
            schema["paths"]["/derain"]["post"]["security"] = [{BEARER: []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI, state: ServiceState) -> None:
    """The one error table in action, plus one-line bodies for invalid parameters and unknown failures."""

    async def on_domain_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, errors.DerainError)
        status = status_of(error)
        state.metrics.rejections.labels(reason=error.reason).inc()
        headers: dict[str, str] = {}
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(error.retry_after_s)
        if isinstance(error, errors.Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, errors.UploadTimeout):  # the rest of a stalled upload is not awaited
            headers["Connection"] = "close"
        log.log(
            logging.WARNING if status >= 500 else logging.INFO, "refused: %s", error, extra={"status": status}
        )
        return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)

    async def on_invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        state.metrics.rejections.labels(reason="invalid_request").inc()
        return JSONResponse({"detail": _one_line(error)}, status_code=422)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        state.metrics.rejections.labels(reason="internal").inc()
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_exception_handler(errors.DerainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_unexpected)


def _one_line(error: RequestValidationError) -> str:
    first = error.errors()[0] if error.errors() else {}
    where = first.get("loc", ())
    name = where[-1] if where else "request"
    kind = f"{where[0]} parameter" if len(where) > 1 else "parameter"
    return f"{kind} '{name}': {first.get('msg', 'invalid')}"

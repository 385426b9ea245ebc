"""What the OpenAPI description says beyond FastAPI's own: the image body and responses of POST /derain,
and, with DERAIN_API_KEY set, that it needs the bearer key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service.settings import Settings

BEARER = "bearerAuth"  # the OpenAPI security scheme of the API key


class ErrorBody(BaseModel):
    detail: str


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
ERROR = {"model": ErrorBody}
DERAIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The derained image, same width and height as the upload (EXIF orientation applied)",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("image/png", "image/jpeg", "image/webp")
        },
        "headers": {
            "X-Derain-Tiles": {
                "description": "tiles the working image was cut into (1: it ran whole)",
                "schema": {"type": "integer"},
            },
            "X-Derain-Scale": {
                "description": "working-scale factor used (1 = full size): the client's or auto's pick",
                "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            },
            "X-Derain-Passes": {
                "description": "each pass's factor, space-separated: '4', or with auto's second pass across "
                "the streaks of a photo above the size cap '4 4x2' (height divided by 4, width by 2)",
                "schema": {"type": "string", "pattern": "^[0-9.]+(x[0-9.]+)?( [0-9.]+(x[0-9.]+)?)*$"},
            },
            "X-Derain-Inference-Ms": {
                "description": "model time (ms) of the batches that carried this image's tiles",
                "schema": {"type": "number"},
            },
            "X-Request-Id": {"description": "request id, also in the logs", "schema": {"type": "string"}},
        },
    },
    400: {**ERROR, "description": "empty, truncated or undecodable image; malformed multipart"},
    401: {**ERROR, "description": "API key configured and missing or wrong"},
    408: {**ERROR, "description": "the upload did not arrive within DERAIN_REQUEST_TIMEOUT_S"},
    413: {**ERROR, "description": "upload bytes or pixels above the limits"},
    415: {**ERROR, "description": "content type or image format not accepted (GIF, SVG, PDF, ...)"},
    422: {**ERROR, "description": "invalid query parameter (format, quality, scale)"},
    429: {
        **ERROR,
        "description": "queue full; retry after the Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    500: {**ERROR, "description": "inference failed for this request's batch"},
    503: {
        **ERROR,
        "description": "model not ready yet, shutting down, or too many open connections; "
        "Retry-After when retrying soon can succeed",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
    504: {**ERROR, "description": "not finished within DERAIN_REQUEST_TIMEOUT_S"},
}


def document_api_key(app: FastAPI, settings: Settings) -> None:
    """With an API key in `settings`, the OpenAPI description says that POST /derain needs the bearer key."""
    if settings.api_key is None:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's own; it caches this very dict on the app
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[BEARER] = {"type": "http", "scheme": "bearer", "description": "DERAIN_API_KEY"}
        schema["paths"]["/derain"]["post"]["security"] = [{BEARER: []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

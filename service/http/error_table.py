"""The one error table: each domain error (service.errors) -> its HTTP status, and the handlers that
answer every error as JSON {"detail": "<one line>"}; nothing internal (paths, exception text) leaks."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import errors
from service.metrics import Metrics

log = logging.getLogger(__name__)

# The error table: each domain error, its status. Subclasses inherit their parent's row.
ERROR_STATUS: dict[type[errors.DerainError], int] = {
    errors.BadImage: 400,
    errors.Unauthorized: 401,
    errors.UploadTimeout: 408,
    errors.TooLarge: 413,
    errors.UnsupportedMedia: 415,
    errors.InvalidParameter: 422,
    errors.Overloaded: 429,
    errors.ClientDisconnected: 499,  # nobody reads it; logged and counted as such
    errors.InferenceFailed: 500,
    errors.NotReady: 503,  # ShuttingDown too
    errors.RequestTimeout: 504,
}


def status_of(error: errors.DerainError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]  # type: ignore[index]
    return 500


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """The one error table in action, plus one-line bodies for invalid parameters and unknown failures."""

    async def on_domain_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, errors.DerainError)
        status = status_of(error)
        metrics.rejections.labels(reason=error.reason).inc()
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
        metrics.rejections.labels(reason="invalid_request").inc()
        return JSONResponse({"detail": _one_line(error)}, status_code=422)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        metrics.rejections.labels(reason="internal").inc()
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

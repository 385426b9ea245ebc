"""Domain errors. Their messages are written for clients: one line, nothing internal.

`service.api` maps each class to one HTTP status in its error table; the `reason` names the label used
by the `derain_rejections_total` metric.
"""

from __future__ import annotations


class DerainError(Exception):
    """Base class; str(error) is safe to send to the client."""

    reason = "error"
    retry_after_s: int | None = None  # sent as Retry-After when set: the refusal is temporary


class BadImage(DerainError):
    """The bytes are not a decodable image (empty, truncated, random, wrong multipart field)."""

    reason = "bad_image"


class InvalidParameter(DerainError):
    """A query parameter whose value the service cannot use (checked beyond its declared type)."""

    reason = "invalid_request"


class UnsupportedMedia(DerainError):
    """A content type or image format/mode that the service does not take (GIF, SVG, 32-bit float...)."""

    reason = "unsupported"


class TooLarge(DerainError):
    """Upload bytes or decoded pixels above the configured limits."""

    reason = "too_large"


class Unauthorized(DerainError):
    """An API key is configured and the request did not present it."""

    reason = "unauthorized"


class Overloaded(DerainError):
    """The tile queue cannot take this request now; retry after `retry_after_s` seconds."""

    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(DerainError):
    """The model is not loaded and warmed up yet (Retry-After when it is expected to be soon)."""

    reason = "not_ready"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(NotReady):
    """Shutdown has begun: in-flight requests drain, new ones are refused (another replica can answer)."""

    reason = "shutting_down"

    def __init__(self, message: str, retry_after_s: int | None = 1) -> None:
        super().__init__(message, retry_after_s)


class UploadTimeout(DerainError):
    """The upload itself did not arrive within DERAIN_REQUEST_TIMEOUT_S (a slow or stalled client)."""

    reason = "upload_timeout"


class RequestTimeout(DerainError):
    """The request did not finish within DERAIN_REQUEST_TIMEOUT_S; its queued tiles were dropped."""

    reason = "timeout"


class InferenceFailed(DerainError):
    """The batch carrying this request's tiles failed; details are logged, never sent."""

    reason = "inference_error"


class ClientDisconnected(DerainError):
    """The client went away before its result was ready; its queued tiles were dropped."""

    reason = "disconnected"

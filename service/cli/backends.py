"""Where `derain` (service.cli) sends its images: the service's own core in this process, or a running
service.

Both take encoded bytes and give back the encoded derained image (`derain`), or the decoded original and
the derained pixels (`derain_pixels`, for side-by-side images): RGB float32 (3, H, W) in [0, 1].
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from service.core.derainer import WHOLE_PIXELS, Tiling, build_derainer, whole_pixels
from service.core.pipeline import MEDIA_TYPES, DecodedImage, OutputFormat, check_tiling, decode
from service.core.pipeline.scale import AUTO, ScaleChoice
from service.core.runtime import (
    CPU,
    ModelError,
    Runner,
    cpu_lanes,
    default_batch,
    load_runner,
    serving_batch,
)
from service.metrics import Metrics
from service.settings import Settings

# Local files are the user's own: a limit well above the service's, still short of Pillow's bomb check.
MAX_PIXELS = 100_000_000  # ~3 GB of RAM at the peak
RETRIES = 3  # attempts after a 429 (queue full) or 503 (not ready) before the image counts as failed
MAX_RETRY_WAIT_S = 30.0
DEFAULT_PROVIDERS: tuple[str, ...] = Settings.model_fields["providers"].default  # CUDA, then CPU
QUEUE_TILES = 1 << 30  # one image at a time goes through the local batcher: its queue never refuses
Encoded = tuple[bytes, OutputFormat]  # an encoded image and its format
FORMAT_OF_MEDIA: dict[str, OutputFormat] = {media: fmt for fmt, media in MEDIA_TYPES.items()}


class FileFailed(Exception):
    """This image could not be derained; the others go on."""


class Fatal(Exception):
    """Nothing can be derained (model unusable, server unreachable, API key refused): stop."""


class Backend(Protocol):
    description: str  # for the start-up line: what runs the model

    def derain(self, data: bytes, fmt: OutputFormat | None, quality: int | None) -> Encoded:
        """Encoded image in, encoded derained image and its format out (None: the input's, else PNG)."""
        ...

    def derain_pixels(self, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        """The decoded original, and the derained RGB (3, H, W) float32 in [0, 1] of the same size."""
        ...

    def close(self) -> None:
        """Release what the backend holds (threads, sessions)."""
        ...


class LocalBackend:
    """The service's core in this process: the same Derainer and batcher (decode -> tiles -> model in
    batches -> stitch -> encode), run in an event loop of its own."""

    def __init__(
        self, runner: Runner, tiling: Tiling, batch: int, scale: ScaleChoice = AUTO, second_pass: bool = True
    ) -> None:
        self._runner = runner
        self._batch = batch
        self._scale = scale
        self._loop = asyncio.Runner()
        self._batcher, self._derainer = build_derainer(
            runner.run, Metrics(), tiling, batch, 0.0, QUEUE_TILES, MAX_PIXELS, second_pass
        )
        self._loop.run(self._start())
        self.description = f"model {runner.info.preset} on {runner.active_provider}"

    async def _start(self) -> None:
        self._batcher.start()  # in the loop that runs the derainer

    @classmethod
    def load(
        cls,
        model: Path,
        providers: Sequence[str] | None,
        tile_size: int,
        overlap: int,
        batch: int,
        threads: int,
        scale: ScaleChoice = AUTO,
        whole_max_pixels: int = WHOLE_PIXELS,
        second_pass: bool = True,
    ) -> LocalBackend:
        """providers None: CUDA when this onnxruntime has it, else CPU, without the runtime's warnings.
        batch 0: the provider's default (runtime.default_batch); a batch set on the CPU runs on lanes."""
        quiet = contextlib.nullcontext() if providers else _logs_at(logging.CRITICAL, "service.core.runtime")
        try:
            with quiet:
                lanes = cpu_lanes(0, batch or default_batch(CPU), threads)
                runner = load_runner(model, providers or DEFAULT_PROVIDERS, threads, lanes=lanes)
        except ModelError as error:
            raise Fatal(str(error)) from None
        try:
            check_tiling(tile_size, overlap, runner.info.pad_multiple)
        except ValueError as error:
            raise Fatal(f"--tile-size/--overlap: {error}") from None
        tiling = local_tiling(runner, tile_size, overlap, whole_max_pixels)
        return cls(
            runner, tiling, serving_batch(batch, runner.active_provider, QUEUE_TILES), scale, second_pass
        )

    def derain(self, data: bytes, fmt: OutputFormat | None, quality: int | None) -> Encoded:
        result = self._loop.run(self._derainer.derain(data, fmt, quality, scale=self._scale))
        return result.content, FORMAT_OF_MEDIA[result.media_type]

    def derain_pixels(self, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        original = decode(data, MAX_PIXELS)  # for the left half; the derainer decodes its own copy
        return original, self._loop.run(self._derainer.derain_pixels(data, scale=self._scale)).rgb

    def close(self) -> None:
        self._loop.run(self._batcher.stop())
        self._loop.close()


def local_tiling(
    runner: Runner, tile_size: int, overlap: int, whole_max_pixels: int = WHOLE_PIXELS
) -> Tiling:
    """How a local runner's images are cut: as the service cuts them on the same provider."""
    return Tiling(
        tile_size,
        overlap,
        runner.info.pad_multiple,
        whole_pixels(runner.active_provider, whole_max_pixels),
        runner.info.train_short_side,
    )


class ServerBackend:
    """POST /derain of a running service, the raw image as the body; retries 429 and 503 (Retry-After)."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float, scale: ScaleChoice = AUTO) -> None:
        self._url = url.rstrip("/")
        self._scale = scale
        self._headers = {"Content-Type": "application/octet-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout_s = timeout_s
        self.description = f"service at {self._url}"

    def derain(self, data: bytes, fmt: OutputFormat | None, quality: int | None) -> Encoded:
        return self._post(data, fmt, quality)

    def derain_pixels(self, data: bytes) -> tuple[DecodedImage, np.ndarray]:
        original = decode(data, MAX_PIXELS)  # the service decodes the same way
        content, _ = self._post(data, "png", None)  # lossless, 16-bit kept
        derained = decode(content, MAX_PIXELS).rgb
        if derained.shape != original.rgb.shape:
            sizes = f"{derained.shape[:0:-1]} for {original.rgb.shape[:0:-1]}"  # (W, H)
            raise FileFailed(f"the service answered an image of another size: {sizes}")
        return original, derained

    def close(self) -> None:
        """Nothing to release: each request opens its own connection."""

    def _post(self, data: bytes, fmt: OutputFormat | None, quality: int | None) -> Encoded:
        params = {"format": fmt, "quality": quality, "scale": None if self._scale.auto else str(self._scale)}
        query = urllib.parse.urlencode({name: value for name, value in params.items() if value is not None})
        request = urllib.request.Request(
            f"{self._url}/derain?{query}", data=data, headers=self._headers, method="POST"
        )
        for attempt in range(RETRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    media = response.headers.get_content_type()
                    if media not in FORMAT_OF_MEDIA:
                        raise FileFailed(f"the service answered {media}, not an image")
                    return response.read(), FORMAT_OF_MEDIA[media]
            except urllib.error.HTTPError as error:
                if error.code in (429, 503) and attempt < RETRIES:
                    time.sleep(_retry_after(error.headers.get("Retry-After")))
                    continue
                raise _refusal(error) from None
            except (TimeoutError, http.client.HTTPException) as error:
                raise FileFailed(_no_answer(error, self._timeout_s)) from None
            except (urllib.error.URLError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, TimeoutError):
                    raise FileFailed(_no_answer(reason, self._timeout_s)) from None
                raise Fatal(f"cannot reach the service at {self._url}: {reason}") from None
        raise AssertionError("unreachable")


def _refusal(error: urllib.error.HTTPError) -> Exception:
    """The service's one-line {"detail": ...}; 401 stops the run (every image would get it)."""
    try:
        detail = str(json.loads(error.read())["detail"])
    except Exception:
        detail = error.reason or "no details"
    if error.code == 401:
        return Fatal(f"the service refused the API key (--api-key or DERAIN_API_KEY): {detail}")
    return FileFailed(f"the service answered {error.code}: {detail}")


def _no_answer(error: Exception, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer from the service within {timeout_s:g} s (--timeout)"
    return f"broken answer from the service: {type(error).__name__}"


def _retry_after(header: str | None) -> float:
    seconds = float(header) if header and header.isdigit() else 1.0
    return min(seconds, MAX_RETRY_WAIT_S)


@contextlib.contextmanager
def _logs_at(level: int, name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)

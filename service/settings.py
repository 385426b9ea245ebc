"""Every knob of the service: one pydantic-settings class, environment prefix DERAIN_, checked at start-up.

Example: DERAIN_MODEL_PATH=models/mspfn-lite.onnx DERAIN_PROVIDERS=CPUExecutionProvider python -m service
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.pipeline.scale import parse_scale
from service.core.pipeline.tiling import check_tiling

# Serving tile side in pixels. One constant, so the benchmark that picks it changes one line.
DEFAULT_TILE_SIZE = 256
TILE_MULTIPLE = 8  # the exported network needs H and W multiples of 8 (its `pad_multiple` metadata)
MiB = 1024 * 1024


class Settings(BaseSettings):
    """Validated service configuration; an invalid value stops start-up with the field named."""

    model_config = SettingsConfigDict(env_prefix="DERAIN_", extra="forbid", frozen=True)

    # ONNX file written by model_export; with the CPU provider its NAME.opt.onnx sibling is preferred.
    model_path: Path = Path("models/mspfn-lite.onnx")
    # Comma-separated ONNX Runtime providers, in order of preference; CPU last is the fallback.
    providers: Annotated[tuple[str, ...], NoDecode] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    # px, side of the square tiles the model sees: larger = fewer tiles and seams, more memory per batch.
    tile_size: int = Field(default=DEFAULT_TILE_SIZE, ge=16, le=4096)
    # px shared by neighbouring tiles and feathered together: larger hides seams, costs more tiles.
    tile_overlap: int = Field(default=32, ge=0)
    # tiles per inference call: larger = more GPU throughput, more latency and memory per call.
    # 0 = per provider (`runtime.serving_batch`): 4 on CUDA; 1 on CPU, where a batch runs slower per tile than
    # single tiles (4 x 256 px at once: 0.83-0.93x on 2 cores; README, Performance).
    max_batch: int = Field(default=0, ge=0, le=256)
    # ms a partial batch waits for more tiles: longer = fuller batches, slower lone requests.
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    # tiles allowed to wait for inference; beyond it requests get 429: larger absorbs bursts, waits longer.
    max_queue_tiles: int = Field(default=256, ge=1)
    # s from request start (upload included) to response, else 504: bounds what one request can hold.
    request_timeout_s: float = Field(default=120.0, gt=0)
    # bytes of upload, counted while reading (413 above): bounds memory and bandwidth per request.
    max_upload_bytes: int = Field(default=50 * MiB, ge=1024)
    # decoded width x height, read from the header before decoding (413 above): ~30 bytes of RAM per pixel.
    max_pixels: int = Field(default=40_000_000, ge=1)
    # bytes of request line + headers (431 above, before the app runs): bounds memory per connection.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=MiB)
    # s a client has to send its request line and headers, from connecting or from the head's first
    # byte (408 above): stops clients that hold connection slots by sending headers slowly.
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # HTTP connections open at once, idle keep-alive ones included (503 + Retry-After above): with
    # max_upload_bytes it bounds the memory uploads can take; too low refuses bursts a queue could absorb.
    max_connections: int = Field(default=64, ge=1, le=100_000)
    # when set, POST /derain needs `Authorization: Bearer <key>`; health and metrics stay open.
    api_key: SecretStr | None = None
    # log lines as one JSON object each (for collectors) or plain text (for people).
    log_format: Literal["json", "text"] = "json"
    # logging threshold for the service's own loggers.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # ONNX Runtime intra-op threads; 0 = every core this process may use. Fewer leaves CPU for decoding.
    threads: int = Field(default=0, ge=0, le=1024)
    # CPU provider only: sessions a batch of tiles is split over, run side by side with cores/lanes
    # threads each (a lone tile still uses every core): more throughput under concurrency, but each lane
    # keeps its own memory arena (idle RSS ~3.5x). 1 = no lanes; 0 = min(tiles per call, cores).
    cpu_lanes: int = Field(default=1, ge=0, le=256)
    # working scale when a request names none: auto (picked per image) or a factor from 1 (full size) to 8.
    default_scale: str = "auto"
    # auto only: a photo larger than the size rule's cap (short side over 4 x the training images'),
    # derained at the cap, goes through the model once more, shrunk less across its streaks (thin
    # streaks of large photos; about 2x auto's model time there). false = one pass, as before.
    second_pass: bool = True
    # CPU provider only: a working image whose canvas (padded to 8 px) has at most this many pixels goes
    # through the model whole, in one call (~1.4-1.6 kB of memory per pixel); larger ones in fitted tiles.
    # 0 = fixed square tiles of TILE_SIZE for every image, as on GPUs (static shapes).
    whole_max_pixels: int = Field(default=1 << 20, ge=0, le=64 << 20)
    # s that in-flight requests get to finish after SIGTERM before the process exits anyway.
    drain_timeout_s: float = Field(default=30.0, ge=0)
    # address and TCP port that `python -m service` listens on.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one ONNX Runtime provider, e.g. CPUExecutionProvider")
        bad = [name for name in value if not name.endswith("ExecutionProvider")]
        if bad:
            raise ValueError(f"{bad} are not ONNX Runtime provider names (e.g. CUDAExecutionProvider)")
        return tuple(dict.fromkeys(value))

    @field_validator("default_scale")
    @classmethod
    def _scale(cls, value: str) -> str:
        parse_scale(value)  # ScaleError (a ValueError) names the range
        return value.strip().lower()

    @field_validator("tile_size")
    @classmethod
    def _check_tile_multiple(cls, value: int) -> int:
        check_tiling(value, 0, TILE_MULTIPLE)  # named DERAIN_TILE_SIZE; the overlap is checked below
        return value

    @field_validator("model_path")
    @classmethod
    def _check_model_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(
                f"model file {value} does not exist; export one with "
                f"`python -m model_export --weights W --out {value}` or set DERAIN_MODEL_PATH"
            )
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        check_tiling(self.tile_size, self.tile_overlap, TILE_MULTIPLE)  # tiles start on the 8 px grid
        if self.max_batch and self.max_queue_tiles < self.max_batch:
            raise ValueError(
                f"max queue tiles {self.max_queue_tiles} must be at least max batch {self.max_batch}"
            )
        return self

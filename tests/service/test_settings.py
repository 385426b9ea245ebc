"""Settings: defaults, the environment (DERAIN_*), and every refusal naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.runtime import CPU
from service.settings import DEFAULT_TILE_SIZE, Settings


def test_settings_defaults_and_environment(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERAIN_MODEL_PATH", str(tiny_onnx))
    monkeypatch.setenv("DERAIN_PROVIDERS", " CPUExecutionProvider , CPUExecutionProvider")
    monkeypatch.setenv("DERAIN_API_KEY", "s3cret")
    settings = Settings()
    assert settings.providers == (CPU,)
    assert settings.tile_size == DEFAULT_TILE_SIZE == 256 and settings.tile_overlap == 32
    assert (settings.max_batch, settings.max_wait_ms, settings.max_queue_tiles) == (0, 5.0, 256)
    assert (settings.request_timeout_s, settings.max_pixels, settings.drain_timeout_s) == (
        120,
        40_000_000,
        30,
    )
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.api_key is not None and "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tile_size": 100}, "not a multiple of 8"),
        ({"tile_size": 64, "tile_overlap": 60}, "must be at most the tile size minus 8"),
        ({"model_path": "missing/model.onnx"}, "model file missing/model.onnx does not exist"),
        ({"providers": "cuda"}, "are not ONNX Runtime provider names"),
        ({"providers": " , "}, "name at least one ONNX Runtime provider"),
        ({"max_batch": 8, "max_queue_tiles": 4}, "must be at least max batch"),
        ({"log_format": "xml"}, "json"),
        ({"port": 0}, "greater than or equal to 1"),
    ],
)
def test_settings_refuse_invalid_values(tiny_onnx: Path, overrides: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"model_path": tiny_onnx, **overrides}
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]

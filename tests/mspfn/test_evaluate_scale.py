"""`python -m mspfn.evaluate --scale S` scores exactly what `POST /derain?scale=S` returns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mspfn.evaluate import main
from service.settings import Settings
from tests.mspfn.pairs import write_pairs
from tests.service.svc_helpers import serve


@pytest.mark.parametrize("scale", ["1", "2", "auto"])
def test_service_and_evaluate_agree_pixel_for_pixel(
    tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str], scale: str
) -> None:
    data = write_pairs(tmp_path / "pairs", 2, size=(130, 200))
    saved = tmp_path / "saved"
    args = ["--model", str(tiny_onnx), "--data", str(data), "--threads", "1", "--scale", scale]
    assert main([*args, "--save", str(saved)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scale"] == scale and result["images"] == 2
    settings = Settings(model_path=tiny_onnx, providers="CPUExecutionProvider", threads=1, log_format="text")
    with serve(settings) as client:
        for name in ("0.png", "1.png"):
            response = client.post(
                "/derain", params={"scale": scale}, content=(data / "rain" / name).read_bytes()
            )
            assert response.status_code == 200
            served = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
            scored = np.asarray(Image.open(saved / name))
            assert np.array_equal(served, scored)


def test_evaluate_refuses_a_bad_scale(tmp_path: Path, tiny_onnx: Path) -> None:
    data = write_pairs(tmp_path / "pairs", 1)
    with pytest.raises(SystemExit) as stopped:
        main(["--model", str(tiny_onnx), "--data", str(data), "--scale", "9"])
    assert stopped.value.code == 2


def lined_photo(height: int, width: int, lines: bool = True) -> np.ndarray:
    """A shaded uint8 RGB image with (lines) 2 px vertical streaks every 37 px."""
    yy, xx = np.mgrid[0:height, 0:width]
    gray = 60 + 100 * xx / width + 40 * yy / height + (60 * ((xx % 37) < 2) if lines else 0)
    return np.clip(np.stack([gray, 0.9 * gray, 1.1 * gray], axis=-1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("second_pass", [True, False])
def test_above_the_size_cap_evaluate_scores_the_services_second_pass_or_its_absence(
    tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str], second_pass: bool
) -> None:
    """1300 x 1950 is over 4 x the training size: auto derains at 4 and (by default) again across the
    streaks; `--no-second-pass` scores the service run with DERAIN_SECOND_PASS=false."""
    data = tmp_path / "pairs"
    clean, rainy = lined_photo(1300, 1950, lines=False), lined_photo(1300, 1950)
    for folder, image in (("norain", clean), ("rain", rainy)):
        (data / folder).mkdir(parents=True)
        Image.fromarray(image).save(data / folder / "0.png")
    saved = tmp_path / "saved"
    args = ["--model", str(tiny_onnx), "--data", str(data), "--threads", "1", "--scale", "auto"]
    assert main([*args, "--save", str(saved), *([] if second_pass else ["--no-second-pass"])]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["second_pass"] is second_pass
    settings = Settings(
        model_path=tiny_onnx,
        providers="CPUExecutionProvider",
        threads=1,
        log_format="text",
        second_pass=second_pass,
    )
    with serve(settings) as client:
        body = (data / "rain" / "0.png").read_bytes()
        response = client.post("/derain", content=body)
        other = Settings(**{**settings.model_dump(), "second_pass": not second_pass})
    assert response.headers["x-derain-passes"] == ("4 4x2.5" if second_pass else "4")
    served = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert np.array_equal(served, np.asarray(Image.open(saved / "0.png")))
    with serve(other) as client:
        flipped = np.asarray(
            Image.open(io.BytesIO(client.post("/derain", content=body).content)).convert("RGB")
        )
    assert np.abs(flipped.astype(int) - served).mean() > 0.1  # the second pass changes the answer


def test_no_second_pass_needs_the_service_pipeline(tmp_path: Path, tiny_onnx: Path) -> None:
    data = write_pairs(tmp_path / "pairs", 1)
    with pytest.raises(SystemExit) as stopped:
        main(["--model", str(tiny_onnx), "--data", str(data), "--no-second-pass"])
    assert stopped.value.code == 2

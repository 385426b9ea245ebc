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

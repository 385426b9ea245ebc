"""The evaluate CLI scores checkpoints and ONNX models the same way, on a 2-image fixture folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mspfn.data import load_pairs
from mspfn.evaluate import main
from mspfn.metrics import psnr_y
from tests.mspfn.pairs import write_pairs


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_evaluate_checkpoint_and_onnx_agree(
    tmp_path: Path, tiny_weights: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pairs(tmp_path / "pairs", 2, size=(37, 53))
    save = tmp_path / "out"
    torch_result = run_cli(capsys, "--model", str(tiny_weights), "--data", str(data), "--save", str(save))
    onnx_result = run_cli(capsys, "--model", str(tiny_onnx), "--data", str(data))
    assert torch_result["images"] == onnx_result["images"] == 2
    assert abs(torch_result["psnr"] - onnx_result["psnr"]) < 0.01
    assert abs(torch_result["ssim"] - onnx_result["ssim"]) < 1e-4
    # The saved images are the ones that were scored.
    pairs = load_pairs(data)
    saved = [np.asarray(Image.open(save / f"{p.name[:-4]}.png")) for p in pairs]
    assert saved[0].shape == (37, 53, 3)
    mean = np.mean([psnr_y(s, p.clean) for s, p in zip(saved, pairs, strict=True)])
    assert mean == pytest.approx(torch_result["psnr"])
    # The rainy images' own score comes with it, so a gain can be quoted from one run.
    rainy = np.mean([psnr_y(p.rain, p.clean) for p in pairs])
    assert torch_result["input_psnr"] == onnx_result["input_psnr"] == pytest.approx(rainy)


def test_evaluate_limit_and_bad_model(tmp_path: Path, tiny_weights: Path, capsys) -> None:
    data = write_pairs(tmp_path / "pairs", 2)
    assert run_cli(capsys, "--model", str(tiny_weights), "--data", str(data), "--limit", "1")["images"] == 1
    with pytest.raises(ValueError, match="safetensors"):
        main(["--model", str(tmp_path / "model.pt"), "--data", str(data)])

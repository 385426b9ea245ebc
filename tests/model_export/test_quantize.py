"""int8 static quantization: a QDQ graph with the source metadata, close to the fp32 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from model_export.quantize import quantize
from tests.mspfn.pairs import write_pairs


def test_int8_model_keeps_metadata_and_stays_close(tiny_onnx: Path, tmp_path: Path) -> None:
    calibration = write_pairs(tmp_path / "pairs", 2, size=(136, 144))
    out = tmp_path / "int8.onnx"
    quantize(tiny_onnx, out, calibration, patches=4)
    graph = onnx.load(str(out))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    source = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta == {**source, "precision": "int8"}

    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    fp32 = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"input": image}
    )
    int8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": image})
    mse = float(np.mean((fp32[0] - int8[0]) ** 2))
    assert 0 < mse < 10 ** (-30 / 10)  # quantized (not identical), yet within 30 dB of the fp32 output

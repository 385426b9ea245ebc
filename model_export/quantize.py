"""int8 static quantization of an exported fp32 model for the CPU provider, calibrated on training patches.

    python -m model_export.quantize --model models/mspfn-lite.onnx --out models/mspfn-lite-int8.onnx \
        --calibration ../shared/data/train/RainTrainL

QDQ format, per-channel weights, activations calibrated on random rainy crops (the data the model sees in
service). The metadata of the source model is kept, with `precision` = int8. Whether the result is offered
is decided by quality: `python -m mspfn.evaluate --model OUT` against the fp32 model (README, Performance).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

CALIBRATION_PATCH = 128  # px; a multiple of the pad multiple


class PatchReader:
    """onnxruntime CalibrationDataReader over random rainy crops (fixed seed), one patch per batch."""

    def __init__(self, folder: Path, count: int, seed: int = 0) -> None:
        from mspfn.data import PatchSampler, load_pairs

        sampler = PatchSampler(load_pairs(folder), CALIBRATION_PATCH, seed=seed)
        self._batches: Iterator[np.ndarray] = iter([sampler.sample(1)[0] for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}


def quantize(model: Path, out: Path, calibration: Path, patches: int = 64) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out.parent.mkdir(parents=True, exist_ok=True)
    prepared = out.with_suffix(".prep.onnx")
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(prepared),
            str(out),
            PatchReader(calibration, patches),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    quantized = onnx.load(str(out))
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    onnx.helper.set_model_props(quantized, {**metadata, "precision": "int8"})
    onnx.save(quantized, str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_export.quantize", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, required=True, help="fp32 ONNX model from model_export")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, default=Path("../shared/data/train/RainTrainL"))
    parser.add_argument("--patches", type=int, default=64, help="calibration patches")
    args = parser.parse_args(argv)
    quantize(args.model, args.out, args.calibration, args.patches)
    print(json.dumps({"out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

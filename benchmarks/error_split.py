"""Where a model's remaining error lies: haze (low frequencies, a global tone) or streaks.

    python -m mspfn.evaluate --model models/mspfn-lite.onnx --data data/val/fine --save /tmp/fine
    python -m benchmarks.error_split --data data/val/fine --outputs /tmp/fine

For each pair of the set and the model's saved output (NAME.png), on the Y channel (MSPFN protocol):
the output's PSNR; the share of its squared error in the low frequencies (the error smoothed by a box
mean of side 2r+1, twice); its mean signed error (grey levels: positive = too bright, a veil left in);
the input's mean signed error; and the PSNR a per-image gain and offset alone would reach (a least
squares fit of the output's Y to the clean Y). Prints the means over the set as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mspfn.data import load_pairs
from mspfn.metrics import rgb_to_y
from service.core.pipeline.scale import box_filter


def split(rain: np.ndarray, output: np.ndarray, clean: np.ndarray, radius: int = 8) -> dict[str, float]:
    """The figures of one image (uint8 HWC RGB each)."""
    y_out, y_clean, y_rain = (rgb_to_y(a) for a in (output, clean, rain))
    error = y_out - y_clean
    low = box_filter(box_filter(error[None].astype(np.float32), radius), radius)[0].astype(np.float64)
    mse = float(np.mean(error**2))
    design = np.stack([y_out.ravel(), np.ones(y_out.size)], axis=1)
    fit, *_ = np.linalg.lstsq(design, y_clean.ravel(), rcond=None)
    fitted = float(np.mean((design @ fit - y_clean.ravel()) ** 2))
    return {
        "psnr": 10 * np.log10(255.0**2 / mse),
        "low_share": float(np.mean(low**2)) / mse,
        "bias": float(np.mean(error)),
        "input_bias": float(np.mean(y_rain - y_clean)),
        "gain_offset_psnr": 10 * np.log10(255.0**2 / fitted),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.error_split", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="paired folder")
    parser.add_argument("--outputs", type=Path, required=True, help="the model's NAME.png per pair")
    parser.add_argument("--radius", type=int, default=8, help="box radius of the low-pass, px")
    args = parser.parse_args(argv)
    rows = []
    for pair in load_pairs(args.data):
        with Image.open(args.outputs / f"{Path(pair.name).stem}.png") as image:
            output = np.asarray(image.convert("RGB"))
        rows.append(split(pair.rain, output, pair.clean, args.radius))
    means = {key: round(float(np.mean([r[key] for r in rows])), 3) for key in rows[0]}
    print(json.dumps({"data": str(args.data), "images": len(rows), **means}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""auto's second pass across the streaks: which passes take the rain out of a large real photo.

    python -m benchmarks.second_pass --model models/mspfn-lite.onnx \
        --photo ../shared/data/real/RealSIRR147/rain/91.jpg --variants 4 2 2.5 4+4x2.5 4g+4x2.5 4g 4+4

A real photo has no clean reference, so two measures stand in for a look at 100% (docs/ has the crops):
- *streaks*: what is left of long, near-vertical, thin bright or dark lines: the luma minus its mean over
  a horizontal window (15 px), averaged over a vertical window (61 px), mean squared (x1e-4). Scene
  texture is not coherent over 61 px vertically and mostly averages out; streaks add up. The input's
  figure is the ceiling, 0 a photo without vertical lines;
- *veil*: the mean dark channel (He et al.: the minimum over R, G, B and a 15x15 window). Rain's veil,
  like haze, lifts it; lower is a clearer scene.

Each variant is a chain of passes separated by `+`: `4` derains at a working scale of 4 (as
`scale=4`), `4x2` shrinks the height by 4 and the width by 2, a `g` after a pass brings its rain layer
back with the guided filter auto uses above the cap (scale.ABOVE_CAP_GUIDED) instead of bicubic
(`4g+4x2.5` is auto's two passes), and a later pass derains the previous pass's full-size result
(service.core.pipeline.scale: shrink, model, restore). The model runs on whole
working images (ONNX Runtime, CPU), on a region of the photo (--region), so a variant costs seconds.
Times are printed, but they are not the service's (no tiling, no probe): benchmarks.scale_http is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.scale_study import Model, onnx_model
from service.core.pipeline import scale as sc

DEFAULT_VARIANTS = ("4", "4g", "2.5", "2", "4+4x2.5", "4g+4x2.5", "4g+4x2", "4g+4x3", "4x2", "4+4")
STREAK_ACROSS = 15  # px: the horizontal mean the detail is taken from
STREAK_ALONG = 61  # px: the vertical window the detail is averaged over
VEIL_WINDOW = 15  # px: the dark channel's window


Pass = tuple[sc.Factor, sc.Upsampling]


def parse_variant(text: str) -> list[Pass]:
    """'4g+4x2.5' -> [(4.0, 'guided'), ((4.0, 2.5), 'bicubic')]."""
    passes: list[Pass] = []
    for part in text.split("+"):
        guided = part.endswith("g")
        rows, _, columns = part.removesuffix("g").partition("x")
        factor: sc.Factor = (float(rows), float(columns)) if columns else float(rows)
        passes.append((factor, "guided" if guided else "bicubic"))
    return passes


def _one_axis(plane: np.ndarray, window: int, axis: int) -> np.ndarray:
    """Mean over `window` samples along `axis`, the window shrunk at the borders."""
    moved = np.moveaxis(plane.astype(np.float64), axis, -1)
    total = np.concatenate([np.zeros((*moved.shape[:-1], 1)), np.cumsum(moved, axis=-1)], axis=-1)
    index = np.arange(moved.shape[-1])
    upper = np.minimum(index + window // 2 + 1, moved.shape[-1])
    lower = np.maximum(index - window // 2, 0)
    return np.moveaxis((total[..., upper] - total[..., lower]) / (upper - lower), -1, axis)


def streaks(rgb: np.ndarray) -> float:
    """Long vertical line energy of a (3, H, W) image (x1e-4): see the module's docstring."""
    gray = sc.luma(rgb).astype(np.float64)
    detail = gray - _one_axis(gray, STREAK_ACROSS, axis=1)
    return float(np.mean(_one_axis(detail, STREAK_ALONG, axis=0) ** 2) * 1e4)


def veil(rgb: np.ndarray) -> float:
    """Mean dark channel: min over channels, then over VEIL_WINDOW x VEIL_WINDOW (edges padded)."""
    dark = rgb.min(axis=0)
    pad = VEIL_WINDOW // 2
    for axis in (0, 1):
        padded = np.pad(dark, [(pad, pad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        dark = np.lib.stride_tricks.sliding_window_view(padded, VEIL_WINDOW, axis=axis).min(axis=-1)
    return float(dark.mean())


def derain(model: Model, rgb: np.ndarray, passes: list[Pass]) -> np.ndarray:
    """The chain of passes on a full-size (3, H, W) image."""
    result = rgb
    for factor, upsampling in passes:
        small = sc.shrink(result, factor)
        result = sc.restore(result, small, model(small), factor, upsampling, sc.ABOVE_CAP_GUIDED)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.second_pass", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--photo", type=Path, default=Path("../shared/data/real/RealSIRR147/rain/91.jpg"))
    parser.add_argument(
        "--region",
        type=int,
        nargs=4,
        default=[400, 1000, 2400, 1600],
        metavar=("X", "Y", "W", "H"),
        help="the part of the photo measured (default: 91.jpg's centre, trunk and dark trees)",
    )
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--save", type=Path, help="write each variant's region here as PNG")
    args = parser.parse_args(argv)
    x, y, width, height = args.region
    photo = np.asarray(Image.open(args.photo).convert("RGB"), np.float32) / 255
    rgb = np.ascontiguousarray(photo[y : y + height, x : x + width].transpose(2, 0, 1))
    model = onnx_model(args.model)
    rows = [("input", 0.0, rgb)]
    for variant in args.variants:
        started = time.perf_counter()
        out = derain(model, rgb, parse_variant(variant))
        rows.append((variant, time.perf_counter() - started, out))
    print(f"{args.photo.name}, region {width}x{height} at ({x}, {y}), model {args.model.name}")
    print("| passes | streaks (x1e-4) | veil (dark channel) | model time (s, whole images) |")
    print("|---|---|---|---|")
    for name, seconds, out in rows:
        print(f"| {name} | {streaks(out):.3f} | {veil(out):.3f} | {seconds:.1f} |")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            pixels = np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(pixels).save(args.save / f"{args.photo.stem}-{name.replace('+', '_')}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

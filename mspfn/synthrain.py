"""Synthetic rain streaks on clean images: more training pairs, and rain of a chosen style.

    python -m mspfn.synthrain --clean DIR --out OUT [--count N] [--seed S] [--angle -30 30] ...

writes a paired folder (OUT/rain/NAME.png + OUT/norain/NAME.png) that `python -m mspfn.train --train OUT`
reads like any other (give `--train` twice to mix it with real pairs). The clean images are any folder
of photos, or a paired folder's `norain/`.

The streak layer follows the usual recipe of synthetic rain sets (Rain100L/H and their kin): sparse random
seeds (the drops), smeared along one direction by a line kernel (motion during the exposure), softened
by a Gaussian (drop width and defocus), then screen-blended on the photo so that streaks brighten it
without ever clipping past white. Each image draws its own angle, length, density, blur and
brightness from the ranges of a `RainStyle`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from mspfn.data import IMAGE_SUFFIXES, load_rgb


@dataclass(frozen=True)
class RainStyle:
    """Ranges (low, high) each image's streak parameters are drawn from, uniformly."""

    angle: tuple[float, float] = (-30.0, 30.0)  # degrees from vertical, positive = leaning right
    length: tuple[float, float] = (10.0, 40.0)  # px along the streak
    density: tuple[float, float] = (0.001, 0.008)  # fraction of pixels that seed a streak
    blur: tuple[float, float] = (0.4, 1.2)  # Gaussian sigma across the streak, px
    brightness: tuple[float, float] = (0.3, 0.8)  # peak streak intensity, 0..1

    def __post_init__(self) -> None:
        bounds = {"density": (0.0, 1.0), "brightness": (0.0, 1.0), "length": (1.0, 1e4), "blur": (0.1, 100.0)}
        for f in fields(self):
            low, high = getattr(self, f.name)
            if low > high:
                raise ValueError(f"{f.name}: low {low:g} is above high {high:g}")
            least, most = bounds.get(f.name, (-90.0, 90.0))
            if not least <= low <= high <= most:
                raise ValueError(f"{f.name}: {low:g}..{high:g} is outside {least:g}..{most:g}")

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        return {f.name: float(rng.uniform(*getattr(self, f.name))) for f in fields(self)}


def line_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised (sums to 1) anti-aliased line of `length` px at `angle` degrees from vertical."""
    half = max(1, math.ceil(length / 2))
    size = 2 * half + 1
    kernel = np.zeros((size, size), np.float64)
    theta = math.radians(angle)
    dy, dx = math.cos(theta), math.sin(theta)  # unit step along the streak (rows grow downwards)
    for t in np.linspace(-length / 2, length / 2, max(2, int(4 * length))):
        y, x = half + t * dy, half + t * dx
        y0, x0 = math.floor(y), math.floor(x)
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < size and 0 <= xx < size:
                    kernel[yy, xx] += wy * wx
    return kernel / kernel.sum()


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D 'same' convolution through the FFT, zero padded (no wrap-around)."""
    kh, kw = kernel.shape
    height, width = image.shape
    shape = (height + kh - 1, width + kw - 1)
    full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
    top, left = kh // 2, kw // 2
    return full[top : top + height, left : left + width]


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    axis = np.arange(-radius, radius + 1)
    g = np.exp(-(axis**2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return kernel / kernel.sum()


def streak_layer(
    height: int,
    width: int,
    rng: np.random.Generator,
    angle: float,
    length: float,
    density: float,
    blur: float,
    brightness: float,
) -> np.ndarray:
    """A (height, width) float32 layer of rain streaks in [0, brightness]."""
    seeds = (rng.random((height, width)) < density) * rng.uniform(0.5, 1.0, (height, width))
    if not seeds.any():
        return np.zeros((height, width), np.float32)
    line, soften = line_kernel(length, angle), gaussian_kernel(blur)
    layer = np.clip(_convolve(_convolve(seeds, line), soften), 0.0, None)
    # Scale so that a lone full-strength streak peaks at `brightness` whatever its length and blur.
    lone = np.zeros((4 * math.ceil(length) + 16,) * 2)
    lone[lone.shape[0] // 2, lone.shape[1] // 2] = 1.0
    peak = _convolve(_convolve(lone, line), soften).max()
    return np.clip(layer * (brightness / peak), 0.0, brightness).astype(np.float32)


def add_rain(
    clean: np.ndarray, rng: np.random.Generator, style: RainStyle | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Rain on a uint8 HWC RGB image: returns (rainy uint8 HWC, the parameters drawn).

    Screen blend: rainy = 1 - (1 - clean) * (1 - streak), per channel, so streaks only brighten.
    """
    params = (style or RainStyle()).draw(rng)
    layer = streak_layer(clean.shape[0], clean.shape[1], rng, **params)[..., None]
    image = clean.astype(np.float32) / 255.0
    rainy = 1.0 - (1.0 - image) * (1.0 - layer)
    return np.clip(np.rint(rainy * 255.0), 0, 255).astype(np.uint8), params


def clean_images(folder: Path) -> list[Path]:
    """Image files in `folder` (or in its `norain/` when it is a paired folder), sorted."""
    folder = folder / "norain" if (folder / "norain").is_dir() else folder
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def generate(
    clean: Path, out: Path, count: int | None = None, seed: int = 0, style: RainStyle | None = None
) -> int:
    """Write `count` pairs (default: one per clean image; more cycle over them) to OUT; returns how many."""
    files = clean_images(clean)
    count = len(files) if count is None else count
    rng = np.random.default_rng(seed)
    (out / "rain").mkdir(parents=True, exist_ok=True)
    (out / "norain").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = files[index % len(files)]
        image = load_rgb(source)
        rainy, _ = add_rain(image, rng, style)
        name = f"{source.stem}-{index // len(files)}.png" if count > len(files) else f"{source.stem}.png"
        Image.fromarray(image).save(out / "norain" / name)
        Image.fromarray(rainy).save(out / "rain" / name)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.synthrain", description=__doc__.split("\n")[0])
    parser.add_argument("--clean", type=Path, required=True, help="clean images (or a paired folder)")
    parser.add_argument("--out", type=Path, required=True, help="paired folder to write")
    parser.add_argument("--count", type=int, help="pairs to write (default: one per clean image)")
    parser.add_argument("--seed", type=int, default=0)
    defaults = RainStyle()
    for f in fields(RainStyle):
        low, high = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name}", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(low, high),
            help=f"range drawn per image (default {low:g} {high:g})",
        )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        style = RainStyle(**{f.name: tuple(getattr(args, f.name)) for f in fields(RainStyle)})
    except ValueError as error:
        parser.error(f"--{error}")
    written = generate(args.clean, args.out, args.count, args.seed, style)
    print(f"wrote {written} pairs to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

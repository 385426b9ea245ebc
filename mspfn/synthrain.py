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

A `Recipe` stacks several such layers, the way rain is photographed: far rain that is thin and dense,
near rain that is wide, long, blurred and bright, each layer with a spread of angles around the image's
wind direction; heavy rain also veils the scene like fog (I = J t + A (1 - t): transmission t, airlight
A); then the camera adds sensor noise and JPEG. `RECIPES` names the ones training and validation use
(`light`, `moderate`, `heavy`, and `mixed`, which draws one of the three for each image; `fine`,
real photos' dense curtain of faint thin streaks, and `general`, which adds it to the three):

    python -m mspfn.synthrain --clean ../shared/data/clean --split val --recipe heavy --seed 1 \
        --max-side 481 --out data/val/heavy
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from mspfn.data import IMAGE_SUFFIXES, load_rgb


@dataclass(frozen=True)
class RainStyle:
    """Ranges (low, high) each image's streak parameters are drawn from, uniformly."""

    angle: tuple[float, float] = (-30.0, 30.0)  # degrees from vertical, positive = leaning right
    length: tuple[float, float] = (10.0, 40.0)  # px along the streak
    density: tuple[float, float] = (0.001, 0.008)  # fraction of pixels that seed a streak
    blur: tuple[float, float] = (0.4, 1.2)  # Gaussian sigma across the streak, px
    brightness: tuple[float, float] = (0.3, 0.8)  # peak streak intensity, 0..1
    spread: tuple[float, float] = (0.0, 0.0)  # degrees: streaks of one layer lean within +-spread

    def __post_init__(self) -> None:
        bounds = {
            "density": (0.0, 1.0),
            "brightness": (0.0, 1.0),
            "length": (1.0, 1e4),
            "blur": (0.1, 100.0),
            "spread": (0.0, 45.0),
        }
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


SPREAD_GROUPS = 4  # a layer with an angle spread is drawn as this many sub-layers, each at its own angle


def streak_layer(
    height: int,
    width: int,
    rng: np.random.Generator,
    angle: float,
    length: float,
    density: float,
    blur: float,
    brightness: float,
    spread: float = 0.0,
) -> np.ndarray:
    """A (height, width) float32 layer of rain streaks in [0, brightness].

    Drops are seeded on a canvas larger than the image by half a streak on each side, so streaks enter
    from outside the frame as they do in a photo (and a small patch is not rain-free near its edges).
    """
    margin = math.ceil(length / 2) + math.ceil(3 * blur)
    canvas = (height + 2 * margin, width + 2 * margin)
    seeds = (rng.random(canvas) < density) * rng.uniform(0.5, 1.0, canvas)
    if not seeds.any():
        return np.zeros((height, width), np.float32)
    soften = gaussian_kernel(blur)
    groups = SPREAD_GROUPS if spread > 0 else 1
    angles = angle + rng.uniform(-spread, spread, groups) if spread > 0 else np.array([angle])
    which = rng.integers(groups, size=canvas)
    layer = np.zeros(canvas)
    # Scale so that a lone full-strength streak peaks at `brightness` whatever its length and blur.
    lone = np.zeros((4 * math.ceil(length) + 16,) * 2)
    lone[lone.shape[0] // 2, lone.shape[1] // 2] = 1.0
    peaks = []
    for index, theta in enumerate(angles):
        line = line_kernel(length, float(theta))
        layer += _convolve(_convolve(seeds * (which == index), line), soften)
        peaks.append(_convolve(_convolve(lone, line), soften).max())
    layer = np.clip(layer[margin : margin + height, margin : margin + width], 0.0, None)
    return np.clip(layer * (brightness / float(np.mean(peaks))), 0.0, brightness).astype(np.float32)


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


@dataclass(frozen=True)
class Layer:
    """One streak layer of a recipe: its style (angles relative to the image's wind direction) and
    the chance that an image has it."""

    style: RainStyle
    chance: float = 1.0


@dataclass(frozen=True)
class Recipe:
    """Rain as a camera records it: streak layers over a veiled scene, then sensor noise and JPEG."""

    layers: tuple[Layer, ...]
    wind: tuple[float, float] = (-30.0, 30.0)  # the image's rain direction, degrees from vertical
    veil: tuple[float, float] = (0.0, 0.0)  # 1 - t: how much airlight replaces the scene
    airlight: tuple[float, float] = (0.75, 1.0)  # A, grey level of the veil (0..1)
    noise: tuple[float, float] = (0.0, 0.0)  # sigma of Gaussian sensor noise (0..1 units)
    jpeg: tuple[int, int] = (70, 95)  # quality range, when the image is JPEG-compressed
    jpeg_chance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("wind", "veil", "airlight", "noise", "jpeg"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low:g} is above high {high:g}")
        if not (self.veil[0] >= 0.0 and self.veil[1] < 1.0):
            raise ValueError("veil must lie in [0, 1)")
        if not (self.jpeg[0] >= 1 and self.jpeg[1] <= 100):
            raise ValueError("jpeg quality must lie in 1..100")


def veil(image: np.ndarray, strength: float, airlight: float) -> np.ndarray:
    """Rain accumulation (the atmospheric scattering model): J t + A (1 - t) with t = 1 - strength."""
    return image * (1.0 - strength) + airlight * strength


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 HWC RGB through JPEG at `quality` (4:2:0, as cameras and phones save)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def render(clean: np.ndarray, rng: np.random.Generator, recipe: Recipe) -> tuple[np.ndarray, dict]:
    """Rain of `recipe` on a uint8 HWC RGB image: returns (rainy uint8 HWC, what was drawn)."""
    height, width = clean.shape[:2]
    wind = float(rng.uniform(*recipe.wind))
    strength, airlight = float(rng.uniform(*recipe.veil)), float(rng.uniform(*recipe.airlight))
    image = veil(clean.astype(np.float32) / 255.0, strength, airlight)
    drawn: dict = {"wind": wind, "veil": strength, "airlight": airlight, "layers": []}
    for layer in recipe.layers:
        if rng.random() >= layer.chance:
            continue
        params = layer.style.draw(rng)
        params["angle"] = float(np.clip(wind + params["angle"], -85.0, 85.0))
        streaks = streak_layer(height, width, rng, **params)[..., None]
        image = 1.0 - (1.0 - image) * (1.0 - streaks)
        drawn["layers"].append(params)
    sigma = float(rng.uniform(*recipe.noise))
    if sigma > 0:
        image = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    rainy = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    drawn["noise"] = sigma
    drawn["jpeg"] = None
    if rng.random() < recipe.jpeg_chance:
        drawn["jpeg"] = int(rng.integers(recipe.jpeg[0], recipe.jpeg[1] + 1))
        rainy = jpeg_round_trip(rainy, drawn["jpeg"])
    return rainy, drawn


@dataclass(frozen=True)
class Mixture:
    """Draws one of its recipes for each image, with the given weights."""

    recipes: tuple[tuple[str, float], ...]

    def pick(self, rng: np.random.Generator) -> str:
        names = [name for name, _ in self.recipes]
        weights = np.array([weight for _, weight in self.recipes], np.float64)
        return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _far(density: tuple[float, float], brightness: tuple[float, float]) -> Layer:
    """Distant rain: short, thin, dense."""
    return Layer(RainStyle((-8.0, 8.0), (8.0, 25.0), density, (0.4, 0.9), brightness, (0.0, 8.0)))


RECIPES: dict[str, Recipe | Mixture] = {
    # Rain100L-like: one light layer of thin streaks.
    "light": Recipe(
        layers=(Layer(RainStyle((-5.0, 5.0), (10.0, 40.0), (0.001, 0.005), (0.4, 1.0), (0.3, 0.7))),),
        noise=(0.0, 0.01),
        jpeg_chance=0.3,
    ),
    "moderate": Recipe(
        layers=(
            _far((0.002, 0.008), (0.2, 0.5)),
            Layer(RainStyle((-6.0, 6.0), (20.0, 60.0), (0.0008, 0.003), (0.8, 1.6), (0.4, 0.8), (0.0, 6.0))),
            Layer(RainStyle((-4.0, 4.0), (40.0, 100.0), (0.0001, 0.0004), (1.5, 2.5), (0.4, 0.8)), 0.5),
        ),
        veil=(0.0, 0.15),
        noise=(0.0, 0.015),
        jpeg_chance=0.5,
    ),
    # Rain100H-like downpour: streaks cover most of the image and add 30-80 grey levels on average.
    "heavy": Recipe(
        layers=(
            _far((0.006, 0.02), (0.25, 0.55)),
            Layer(RainStyle((-6.0, 6.0), (25.0, 70.0), (0.002, 0.006), (0.8, 1.8), (0.5, 0.85), (0.0, 8.0))),
            Layer(RainStyle((-4.0, 4.0), (50.0, 140.0), (0.0002, 0.0008), (1.5, 3.5), (0.5, 0.9)), 0.7),
        ),
        veil=(0.03, 0.25),
        noise=(0.0, 0.02),
        jpeg_chance=0.5,
    ),
    "mixed": Mixture((("light", 0.3), ("moderate", 0.35), ("heavy", 0.35))),
    # Rain as the real photos in ../shared/data/real show it and the recipes above do not: a dense
    # curtain of fine, faint, long streaks (thin drops smeared over the exposure), a few wide and
    # soft out-of-focus near drops, haze. Low contrast everywhere rather than bright lines.
    "fine": Recipe(
        layers=(
            Layer(RainStyle((-5.0, 5.0), (8.0, 30.0), (0.02, 0.06), (0.3, 0.6), (0.05, 0.15), (0.0, 6.0))),
            Layer(RainStyle((-4.0, 4.0), (25.0, 80.0), (0.002, 0.006), (0.4, 0.9), (0.1, 0.25), (0.0, 5.0))),
            Layer(RainStyle((-4.0, 4.0), (20.0, 80.0), (0.0002, 0.001), (2.5, 6.0), (0.1, 0.3)), 0.5),
        ),
        veil=(0.05, 0.3),
        noise=(0.0, 0.02),
        jpeg_chance=0.7,
    ),
    # What the general model trains on from its third stage: `mixed` with real photos' fine rain.
    "general": Mixture((("light", 0.2), ("moderate", 0.25), ("heavy", 0.3), ("fine", 0.25))),
}


def recipe_named(name: str, rng: np.random.Generator) -> Recipe:
    """The recipe called `name`; a mixture draws one of its members with `rng`."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    chosen = RECIPES[name]
    while isinstance(chosen, Mixture):
        chosen = RECIPES[chosen.pick(rng)]
    return chosen


def split_clean(files: list[Path], every: int = 10) -> tuple[list[Path], list[Path]]:
    """(train, held out): every `every`-th file of the sorted list is held out of training for
    validation, so the split is fixed by the folder's content alone."""
    ordered = sorted(files)
    held = ordered[every // 2 :: every]
    return [f for f in ordered if f not in held], held


def clean_images(folder: Path) -> list[Path]:
    """Image files under `folder` (or its `norain/` when it is a paired folder), any depth, sorted."""
    folder = folder / "norain" if (folder / "norain").is_dir() else folder
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def fit_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (antialiased) so the longer side is at most `max_side`; smaller images are kept."""
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    height, width = image.shape[:2]
    ratio = max_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def generate(
    clean: Path,
    out: Path,
    count: int | None = None,
    seed: int = 0,
    style: RainStyle | None = None,
    recipe: str | None = None,
    split: str = "all",
    max_side: int | None = None,
) -> int:
    """Write `count` pairs (default: one per clean image; more cycle over them) to OUT; returns how many.

    With `recipe`, each image gets that recipe's rain instead of one `style` layer; `split` picks the
    training part, the held-out part (`val`) or all of the clean images.
    """
    files = clean_images(clean)
    if split != "all":
        files = split_clean(files)[0 if split == "train" else 1]
    count = len(files) if count is None else count
    rng = np.random.default_rng(seed)
    (out / "rain").mkdir(parents=True, exist_ok=True)
    (out / "norain").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = files[index % len(files)]
        image = fit_side(load_rgb(source), max_side)
        if recipe is None:
            rainy, _ = add_rain(image, rng, style)
        else:
            rainy, _ = render(image, rng, recipe_named(recipe, rng))
        # Images of sub-folders (clean/Kodak24/kodim01.jpg) are named after both (Kodak24-kodim01).
        stem = (
            source.stem
            if source.parent in (clean, clean / "norain")
            else f"{source.parent.name}-{source.stem}"
        )
        name = f"{stem}-{index // len(files)}.png" if count > len(files) else f"{stem}.png"
        Image.fromarray(image).save(out / "norain" / name)
        Image.fromarray(rainy).save(out / "rain" / name)
    return count


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop to the aspect of `size` (width, height), then shrink (antialiased) to it."""
    with Image.fromarray(image) as picture:
        return np.asarray(ImageOps.fit(picture, size, Image.Resampling.LANCZOS))


def contact_sheet(
    clean: Path, real: Path | None, out: Path, columns: int = 4, seed: int = 0, max_side: int = 481
) -> None:
    """A grid to judge the recipes by eye: a row per recipe on held-out photos (each shrunk to the
    validation sets' size first, as they are rendered), and a row of real rainy photos at that size."""
    size = (320, 214)
    held = split_clean(clean_images(clean))[1]
    picks = [held[i * len(held) // columns] for i in range(columns)]
    rows, labels = [], []
    rng = np.random.default_rng(seed)
    for name in ("light", "moderate", "heavy", "fine"):
        recipe = recipe_named(name, rng)
        cells = [thumbnail(render(fit_side(load_rgb(f), max_side), rng, recipe)[0], size) for f in picks]
        rows.append(np.concatenate(cells, axis=1))
        labels.append(f"synthetic: {name}")
    if real is not None:
        files = clean_images(real)
        chosen = [files[i * len(files) // columns] for i in range(columns)]
        rows.append(np.concatenate([thumbnail(fit_side(load_rgb(f), max_side), size) for f in chosen], 1))
        labels.append(f"real: {real.name}")
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    draw = ImageDraw.Draw(sheet)
    for index, label in enumerate(labels):
        draw.rectangle((0, index * size[1], 8 + 7 * len(label), index * size[1] + 16), fill=(0, 0, 0))
        draw.text((4, index * size[1] + 3), label, fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.synthrain", description=__doc__.split("\n")[0])
    parser.add_argument("--clean", type=Path, required=True, help="clean images (or a paired folder)")
    parser.add_argument(
        "--out", type=Path, required=True, help="paired folder to write (or, with --sheet, the image)"
    )
    parser.add_argument(
        "--sheet", action="store_true", help="write a contact sheet of every recipe to OUT instead"
    )
    parser.add_argument("--real", type=Path, help="real rainy photos for the sheet's last row")
    parser.add_argument("--count", type=int, help="pairs to write (default: one per clean image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="layered rain of a named recipe")
    parser.add_argument(
        "--split", choices=("all", "train", "val"), default="all", help="which part of the clean images"
    )
    parser.add_argument("--max-side", type=int, help="shrink images whose longer side is above this")
    defaults = RainStyle()
    for f in fields(RainStyle):
        low, high = getattr(defaults, f.name)
        parser.add_argument(
            f"--{f.name}", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(low, high),
            help=f"range drawn per image (default {low:g} {high:g})",
        )  # fmt: skip
    args = parser.parse_args(argv)
    if args.sheet:
        contact_sheet(args.clean, args.real, args.out, seed=args.seed)
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    try:
        style = RainStyle(**{f.name: tuple(getattr(args, f.name)) for f in fields(RainStyle)})
    except ValueError as error:
        parser.error(f"--{error}")
    written = generate(
        args.clean, args.out, args.count, args.seed, style, args.recipe, args.split, args.max_side
    )
    print(f"wrote {written} pairs to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

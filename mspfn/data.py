"""Paired rainy/clean image folders and random training patches.

A paired folder holds `rain/NAME` and `norain/NAME` with the same file names. Images are kept in memory as
uint8 HWC RGB; patches come out as float32 NCHW RGB in [0, 1].

Training draws patches from sources: `PatchSampler` crops real pairs, `SynthSampler` renders rain of a
recipe (mspfn.synthrain) on crops of clean photos, and `MixedSampler` draws each patch of a batch from
one of them by weight. Both crop with scale augmentation: a window of side patch / s, s drawn
log-uniformly from a range such as 0.5-2, resized (antialiased) to the patch, so that the same rain
appears with streaks from half to twice as wide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 HWC RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class Pair:
    name: str
    rain: np.ndarray  # uint8 HWC RGB
    clean: np.ndarray  # uint8 HWC RGB


def load_pairs(root: Path | str, limit: int | None = None) -> list[Pair]:
    """Load every `rain/NAME` + `norain/NAME` pair under root, sorted by name."""
    root = Path(root)
    rain_dir, clean_dir = root / "rain", root / "norain"
    if not rain_dir.is_dir() or not clean_dir.is_dir():
        raise FileNotFoundError(f"{root} must contain rain/ and norain/ folders")
    names = sorted(p.name for p in rain_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = []
    for name in names[:limit]:
        if not (clean_dir / name).is_file():
            raise FileNotFoundError(f"{clean_dir / name} is missing (paired with {rain_dir / name})")
        rain, clean = load_rgb(rain_dir / name), load_rgb(clean_dir / name)
        if rain.shape != clean.shape:
            raise ValueError(f"{name}: rainy {rain.shape} and clean {clean.shape} differ in size")
        pairs.append(Pair(name, rain, clean))
    if not pairs:
        raise FileNotFoundError(f"no images found in {rain_dir}")
    return pairs


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 rotations/flips of an HWC array (k in 0..7)."""
    image = np.rot90(image, k % 4, axes=(0, 1))
    return image[:, ::-1] if k >= 4 else image


def to_nchw(batch_hwc: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return np.ascontiguousarray(batch_hwc.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def draw_window(
    rng: np.random.Generator, height: int, width: int, patch: int, scale: tuple[float, float]
) -> tuple[int, int, int]:
    """(top, left, side) of a square window that becomes a `patch` px patch at a random scale.

    s is drawn log-uniformly from `scale`; the window's side is patch / s, clipped to the image.
    """
    low, high = scale
    s = math.exp(rng.uniform(math.log(low), math.log(high))) if high > low else low
    side = min(max(1, round(patch / s)), height, width)
    return int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1)), side


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 HWC square to side x side, bicubic (antialiased when shrinking, as PIL filters by scale)."""
    if image.shape[0] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))


class PatchSampler:
    """Random crops of pairs, at a random scale, with a random dihedral transform, from a fixed seed."""

    def __init__(
        self, pairs: list[Pair], patch: int, seed: int = 0, scale: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        small = [p.name for p in pairs if min(p.rain.shape[:2]) < patch]
        if small:
            raise ValueError(f"images smaller than the {patch}px patch: {small[:3]}")
        check_scale(scale)
        self.pairs = pairs
        self.patch = patch
        self.scale = scale
        self.rng = np.random.default_rng(seed)

    def one(self) -> tuple[np.ndarray, np.ndarray]:
        """One (rainy, clean) uint8 HWC patch."""
        pair = self.pairs[int(self.rng.integers(len(self.pairs)))]
        height, width = pair.rain.shape[:2]
        top, left, side = draw_window(self.rng, height, width, self.patch, self.scale)
        k = int(self.rng.integers(8))
        window = (slice(top, top + side), slice(left, left + side))
        rain = resize_square(dihedral(pair.rain[window], k), self.patch)
        return rain, resize_square(dihedral(pair.clean[window], k), self.patch)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (rainy, clean), each float32 (batch, 3, patch, patch) in [0, 1]."""
        return stack([self.one() for _ in range(batch)])


def check_scale(scale: tuple[float, float]) -> None:
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale range {scale[0]:g}..{scale[1]:g} must be positive and increasing")


def stack(patches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return to_nchw(np.stack([r for r, _ in patches])), to_nchw(np.stack([c for _, c in patches]))


# (clean uint8 HWC, rng) -> rainy uint8 HWC of the same size
RainMaker = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class SynthSampler:
    """Pairs made on the fly: a window of a clean photo at a random scale, rain rendered on it by
    `make_rain`, both resized to the patch (so the rendered streaks are rescaled with the scene)."""

    def __init__(
        self,
        images: list[np.ndarray],
        patch: int,
        make_rain: RainMaker,
        seed: int = 0,
        scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if not images:
            raise ValueError("no clean images to render rain on")
        small = [i for i, image in enumerate(images) if min(image.shape[:2]) < patch]
        if small:
            raise ValueError(f"clean images smaller than the {patch}px patch: indices {small[:3]}")
        check_scale(scale)
        self.images, self.patch, self.make_rain, self.scale = images, patch, make_rain, scale
        self.rng = np.random.default_rng(seed)

    def one(self) -> tuple[np.ndarray, np.ndarray]:
        image = self.images[int(self.rng.integers(len(self.images)))]
        height, width = image.shape[:2]
        top, left, side = draw_window(self.rng, height, width, self.patch, self.scale)
        clean = dihedral(image[top : top + side, left : left + side], int(self.rng.integers(8)))
        clean = np.ascontiguousarray(clean)
        rain = self.make_rain(clean, self.rng)
        return resize_square(rain, self.patch), resize_square(clean, self.patch)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        return stack([self.one() for _ in range(batch)])


class MixedSampler:
    """Each patch of a batch comes from one of the sources, drawn with the given weights."""

    def __init__(self, sources: list[tuple[PatchSampler | SynthSampler, float]], seed: int = 0) -> None:
        weights = np.array([weight for _, weight in sources], np.float64)
        if not sources or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("need at least one source with a positive weight")
        self.sources = [source for source, _ in sources]
        self.weights = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        picks = self.rng.choice(len(self.sources), size=batch, p=self.weights)
        return stack([self.sources[int(index)].one() for index in picks])

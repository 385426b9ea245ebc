"""Paired rainy/clean image folders and random training patches.

A paired folder holds `rain/NAME` and `norain/NAME` with the same file names. Images are kept in memory as
uint8 HWC RGB; patches come out as float32 NCHW RGB in [0, 1].
"""

from __future__ import annotations

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


class PatchSampler:
    """Random crops with a random dihedral transform per sample, from a fixed seed."""

    def __init__(self, pairs: list[Pair], patch: int, seed: int = 0) -> None:
        small = [p.name for p in pairs if min(p.rain.shape[:2]) < patch]
        if small:
            raise ValueError(f"images smaller than the {patch}px patch: {small[:3]}")
        self.pairs = pairs
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (rainy, clean), each float32 (batch, 3, patch, patch) in [0, 1]."""
        rains, cleans = [], []
        for index in self.rng.integers(len(self.pairs), size=batch):
            pair = self.pairs[index]
            height, width = pair.rain.shape[:2]
            top = int(self.rng.integers(height - self.patch + 1))
            left = int(self.rng.integers(width - self.patch + 1))
            k = int(self.rng.integers(8))
            window = (slice(top, top + self.patch), slice(left, left + self.patch))
            rains.append(dihedral(pair.rain[window], k))
            cleans.append(dihedral(pair.clean[window], k))
        return to_nchw(np.stack(rains)), to_nchw(np.stack(cleans))

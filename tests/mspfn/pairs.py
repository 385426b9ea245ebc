"""Small paired folders (rain/ + norain/) for the training, evaluation and quantization tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_pairs(root: Path, count: int, size: tuple[int, int] = (40, 48)) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("rain", "norain"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        clean = rng.integers(0, 200, (*size, 3), dtype=np.uint8)
        rain = np.clip(clean.astype(int) + (rng.random(size) > 0.95)[..., None] * 55, 0, 255)
        Image.fromarray(clean).save(root / "norain" / f"{index}.png")
        Image.fromarray(rain.astype(np.uint8)).save(root / "rain" / f"{index}.png")
    return root

"""Small paired folders (rain/ + norain/) and striped pairs for the training, data, evaluation and
quantization tests."""

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


def striped_pair(side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(rain, clean) uint8 HWC: flat grey 60 with one-pixel vertical streaks of 250 every 16 px."""
    clean = np.full((side, side, 3), 60, np.uint8)
    rain = clean.copy()
    rain[:, ::16] = 250
    return rain, clean


def streak_width(rainy: np.ndarray) -> float:
    """Mean width in px of the lit streaks of NCHW patches in [0, 1] (channel 0 over 0.5): across the
    streaks, whichever way a dihedral transform turned them, the runs of lit pixels are shortest."""

    def run_length(lit: np.ndarray, axis: int) -> float:
        starts = np.count_nonzero(np.diff(lit.astype(np.int8), axis=axis, prepend=0) == 1)
        return float(lit.sum() / max(1, starts))

    return float(np.mean([min(run_length(lit, 0), run_length(lit, 1)) for lit in rainy[:, 0] > 0.5]))

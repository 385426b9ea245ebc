"""Synthetic rain and a stand-in model for the working-scale tests (pipeline and HTTP)."""

from __future__ import annotations

import math

import numpy as np

from service.core.pipeline import scale as sc


def streaks(
    width_px: float, height: int = 640, width: int = 960, angle: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Bright Gaussian-profile streaks `width_px` wide (full width at half maximum), 40 widths long,
    leaning `angle` degrees from vertical, on a smoothly shaded gray background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 0.3 + 0.2 * np.sin(xx / 97.0) * np.cos(yy / 71.0)
    rain = np.zeros((height, width), np.float32)
    lean = math.tan(math.radians(angle))
    sigma = width_px / 2.355
    length = int(40 * width_px)
    for _ in range(int(800 / width_px)):
        x0, y0 = rng.uniform(0, width), rng.uniform(-length, height)
        rows = slice(int(max(0, y0)), int(min(height, y0 + length)))
        centre = x0 + (yy[rows] - y0) * lean
        rain[rows] = np.maximum(rain[rows], 0.5 * np.exp(-0.5 * ((xx[rows] - centre) / sigma) ** 2))
    gray = np.clip(background + rain, 0.0, 1.0)
    return np.stack([gray, gray, gray]).astype(np.float32)


def thin_line_remover(batch: np.ndarray) -> np.ndarray:
    """A stand-in for a model trained on thin streaks: it takes out what rises above the mean of its
    3x3 neighbourhood, which thin (1-2 px) streaks do fully and wide ones barely at all."""
    out = np.empty_like(batch)
    for index, image in enumerate(batch):
        out[index] = image - np.maximum(image - sc.box_filter(image, 1), 0.0)
    return out

"""PSNR and SSIM with the MSPFN protocol.

Both images are uint8 RGB (HWC). Scores use the Y channel of BT.601 studio-swing YCbCr (MATLAB / skimage
`rgb2ycbcr`, Y in [16, 235]) over the whole image, no border crop. SSIM follows Wang et al. / MATLAB: an
11x11 Gaussian window with sigma 1.5, 'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255.
"""

from __future__ import annotations

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float64 Y in [16, 235]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    return 16.0 + image.astype(np.float64) @ _Y_WEIGHTS


def psnr_y(output: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((rgb_to_y(output) - rgb_to_y(target)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    axis = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(axis**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with a symmetric 1-D kernel."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim_y(output: np.ndarray, target: np.ndarray) -> float:
    x, y = rgb_to_y(output), rgb_to_y(target)
    if min(x.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {x.shape}")
    kernel = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    var_x = _filter_valid(x * x, kernel) - mu_x**2
    var_y = _filter_valid(y * y, kernel) - mu_y**2
    cov = _filter_valid(x * y, kernel) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] HWC -> uint8, clipped and rounded (the protocol's quantisation)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

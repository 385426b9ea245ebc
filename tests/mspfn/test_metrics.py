"""The MSPFN protocol's PSNR/SSIM on the Y channel, against hand-computed values and skimage."""

from __future__ import annotations

import numpy as np
import pytest

from mspfn.metrics import psnr_y, rgb_to_y, ssim_y, to_uint8


def test_y_channel_is_bt601_studio_swing() -> None:
    black = np.zeros((1, 1, 3), np.uint8)
    white = np.full((1, 1, 3), 255, np.uint8)
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(red)[0, 0] == pytest.approx(16.0 + 65.481)


def test_psnr_hand_computed() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255  # one pixel's Y differs by 219 (white vs black): MSE = 219^2 / 16
    expected = 10 * np.log10(255.0**2 / (219.0**2 / 16))
    assert psnr_y(a, b) == pytest.approx(expected)
    assert psnr_y(a, a) == float("inf")


def test_ssim_of_identical_images_is_one_and_drops_with_noise() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noisy = np.clip(image.astype(int) + rng.integers(-30, 31, image.shape), 0, 255).astype(np.uint8)
    assert ssim_y(image, image) == pytest.approx(1.0)
    assert 0.5 < ssim_y(image, noisy) < 0.99


@pytest.mark.slow  # imports scikit-image
def test_ssim_matches_skimage_gaussian_protocol() -> None:
    import skimage.color as skimage_color  # scikit-image: a dev dependency, always there for the tests
    import skimage.metrics as skimage_metrics

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ya, yb = skimage_color.rgb2ycbcr(a)[..., 0], skimage_color.rgb2ycbcr(b)[..., 0]
    expected = skimage_metrics.structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim_y(a, b) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(a, b) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9
    )


def test_to_uint8_clips_and_rounds() -> None:
    values = np.array([-0.5, 0.0, 0.5 / 255, 1.6 / 255, 1.0, 2.0])
    assert to_uint8(values).tolist() == [0, 0, 0, 2, 255, 255]


def test_rgb_to_y_refuses_floats() -> None:
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_y(np.zeros((2, 2, 3)))

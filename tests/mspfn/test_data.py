"""Training patches: scale augmentation, synthetic pairs made on the fly, and mixing sources."""

from __future__ import annotations

import numpy as np
import pytest

from mspfn.data import MixedSampler, Pair, PatchSampler, SynthSampler, draw_window
from tests.mspfn.pairs import streak_width, striped_pair


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_windows_are_patch_over_scale_and_clipped_to_the_image() -> None:
    rng = np.random.default_rng(0)
    sides = {draw_window(rng, 400, 300, 64, (2.0, 2.0))[2] for _ in range(20)}
    assert sides == {32}  # s = 2 enlarges a 32 px window to the 64 px patch
    assert {draw_window(rng, 400, 300, 64, (0.5, 0.5))[2] for _ in range(5)} == {128}
    assert draw_window(rng, 100, 90, 64, (0.25, 0.25))[2] == 90  # no larger than the image
    drawn = [draw_window(rng, 1000, 1000, 64, (0.5, 2.0))[2] for _ in range(400)]
    assert min(drawn) >= 32 and max(drawn) <= 128
    assert np.mean(np.array(drawn) < 64) == pytest.approx(0.5, abs=0.1)  # log-uniform: half below 1x
    for _ in range(50):
        top, left, side = draw_window(rng, 120, 80, 64, (0.5, 2.0))
        assert 0 <= top <= 120 - side and 0 <= left <= 80 - side


def test_scale_augmentation_widens_the_streaks_of_real_pairs() -> None:
    pair = Pair("p", *striped_pair())  # one-pixel vertical streaks on grey 60

    def width_at(scale: float) -> float:
        sampler = PatchSampler([pair], 64, seed=0, scale=(scale, scale))
        rainy, target = sampler.sample(4)
        assert np.allclose(target, 60 / 255, atol=1 / 255)  # the clean side is rescaled alike
        return streak_width(rainy)

    assert width_at(1.0) == pytest.approx(1.0)
    assert width_at(2.0) >= 1.8
    with pytest.raises(ValueError, match="scale range"):
        PatchSampler([pair], 64, scale=(2.0, 1.0))


def test_synthetic_pairs_are_made_from_the_clean_photos() -> None:
    photos = [smooth_image(120, 160, seed) for seed in range(2)]

    def brighten(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(clean.astype(int) + 40, 255).astype(np.uint8)

    sampler = SynthSampler(photos, 48, brighten, seed=3)
    rainy, clean = sampler.sample(3)
    assert rainy.shape == clean.shape == (3, 3, 48, 48)
    assert np.allclose(rainy, np.minimum(clean + 40 / 255, 1.0), atol=1e-6)
    again = SynthSampler(photos, 48, brighten, seed=3).sample(3)
    assert np.array_equal(again[1], clean)  # the same seed, the same patches
    with pytest.raises(ValueError, match="smaller than the 200px patch"):
        SynthSampler(photos, 200, brighten)


def test_mixed_batches_draw_each_source_by_its_weight() -> None:
    dark = Pair("dark", np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
    light = Pair("light", np.full((64, 64, 3), 255, np.uint8), np.full((64, 64, 3), 255, np.uint8))
    mixed = MixedSampler([(PatchSampler([dark], 32), 0.25), (PatchSampler([light], 32), 0.75)], seed=0)
    rainy, _ = mixed.sample(400)
    share_light = float((rainy.reshape(400, -1).mean(axis=1) > 0.5).mean())
    assert share_light == pytest.approx(0.75, abs=0.06)
    only_dark = MixedSampler([(PatchSampler([dark], 32), 1.0), (PatchSampler([light], 32), 0.0)])
    assert only_dark.sample(20)[0].max() == 0.0
    with pytest.raises(ValueError, match="positive weight"):
        MixedSampler([(PatchSampler([dark], 32), 0.0)])

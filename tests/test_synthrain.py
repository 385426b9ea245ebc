"""The synthetic-rain generator: streak geometry, blending, determinism and the paired-folder CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mspfn.data import load_pairs
from mspfn.synthrain import RainStyle, add_rain, line_kernel, main, streak_layer


def fixed(value: float) -> tuple[float, float]:
    return (value, value)


def test_line_kernel_is_normalised_and_points_along_its_angle() -> None:
    vertical = line_kernel(9, 0.0)
    assert vertical.sum() == pytest.approx(1.0)
    centre = vertical.shape[1] // 2
    assert vertical[:, centre].sum() == pytest.approx(1.0)  # all of it in the middle column
    horizontal = line_kernel(9, 90.0)
    assert horizontal[horizontal.shape[0] // 2].sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_streaks_are_smooth_along_their_direction_and_sharp_across(angle: float) -> None:
    layer = streak_layer(128, 128, np.random.default_rng(0), angle, 30.0, 0.005, 0.5, 0.8)
    down = np.abs(np.diff(layer, axis=0)).mean()
    across = np.abs(np.diff(layer, axis=1)).mean()
    along, sideways = (down, across) if angle == 0.0 else (across, down)
    assert sideways > 3 * along
    assert layer.min() >= 0.0 and layer.max() <= 0.8 + 1e-6 and layer.max() > 0.4


def test_screen_blend_only_brightens_and_zero_density_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    none = RainStyle(density=fixed(0.0))
    rainy, params = add_rain(clean, rng, none)
    assert np.array_equal(rainy, clean) and params["density"] == 0.0
    rainy, params = add_rain(clean, np.random.default_rng(2), RainStyle(density=fixed(0.02)))
    assert (rainy.astype(int) >= clean.astype(int) - 1).all()  # never darker (rounding aside)
    assert (rainy.astype(int) - clean).mean() > 2  # and visibly brighter
    white = np.full((16, 16, 3), 255, np.uint8)
    assert np.array_equal(add_rain(white, np.random.default_rng(3))[0], white)  # nothing past white


def test_same_seed_same_rain_and_parameters_drawn_within_ranges() -> None:
    clean = np.zeros((40, 40, 3), np.uint8)
    style = RainStyle(angle=(-10.0, 10.0), length=(5.0, 8.0))
    first, params = add_rain(clean, np.random.default_rng(7), style)
    second, _ = add_rain(clean, np.random.default_rng(7), style)
    assert np.array_equal(first, second)
    assert -10.0 <= params["angle"] <= 10.0 and 5.0 <= params["length"] <= 8.0
    with pytest.raises(ValueError, match="density"):
        RainStyle(density=(0.5, 1.5))
    with pytest.raises(ValueError, match="low 3 is above high 1"):
        RainStyle(blur=(3.0, 1.0))


def test_cli_writes_a_paired_folder_training_can_read(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 200, (40, 56, 3), dtype=np.uint8)).save(clean / f"{name}.png")
    out = tmp_path / "synth"
    assert main(["--clean", str(clean), "--out", str(out), "--count", "3", "--density", "0.01", "0.01"]) == 0
    pairs = load_pairs(out)
    assert [p.name for p in pairs] == ["a-0.png", "a-1.png", "b-0.png"]
    original = np.asarray(Image.open(clean / "a.png"))
    for pair in pairs:
        assert pair.rain.shape == pair.clean.shape == (40, 56, 3)
        assert (pair.rain.astype(int) - pair.clean).mean() > 1  # rain was added
    assert np.array_equal(pairs[0].clean, original)  # the clean side is the photo itself
    assert not np.array_equal(pairs[0].rain, pairs[1].rain)  # each copy gets its own rain
    with pytest.raises(SystemExit):
        main(["--clean", str(clean), "--out", str(out), "--blur", "2", "1"])

"""The synthetic-rain generator: streak geometry, blending, determinism and the paired-folder CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mspfn.data import load_pairs
from mspfn.synthrain import (
    RECIPES,
    Layer,
    Mixture,
    RainStyle,
    Recipe,
    add_rain,
    jpeg_round_trip,
    line_kernel,
    main,
    recipe_named,
    render,
    split_clean,
    streak_layer,
)


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


def streak_width(layer: np.ndarray) -> float:
    """Mean width (px) across vertical streaks: lit pixels per row-run of lit pixels."""
    lit = layer > 0.5 * layer.max()
    runs = np.count_nonzero(np.diff(lit.astype(np.int8), axis=1) == 1)
    return float(lit.sum() / max(1, runs))


@pytest.mark.slow  # renders full-size rain more than once
def test_near_rain_is_wider_longer_and_brighter_than_far_rain() -> None:
    near = RainStyle(fixed(0.0), fixed(100.0), fixed(0.0005), fixed(3.0), fixed(0.9))
    far = RainStyle(fixed(0.0), fixed(12.0), fixed(0.02), fixed(0.5), fixed(0.3))
    near_layer = streak_layer(256, 256, np.random.default_rng(0), **near.draw(np.random.default_rng(0)))
    far_layer = streak_layer(256, 256, np.random.default_rng(0), **far.draw(np.random.default_rng(0)))
    assert streak_width(near_layer) > 3 * streak_width(far_layer)
    assert near_layer.max() == pytest.approx(0.9, abs=0.01) and far_layer.max() <= 0.3 + 1e-6

    # far rain is dense: many more distinct streaks per row than near rain
    def per_row(layer: np.ndarray) -> float:
        lit = layer > 0.5 * layer.max()
        return float(np.count_nonzero(np.diff(lit.astype(np.int8), axis=1) == 1) / layer.shape[0])

    assert per_row(far_layer) > 5 * per_row(near_layer)


def test_an_angle_spread_tilts_streaks_of_one_layer_differently() -> None:
    def anisotropy(spread: float) -> float:
        layer = streak_layer(192, 192, np.random.default_rng(4), 0.0, 40.0, 0.004, 0.6, 0.8, spread)
        return float(np.abs(np.diff(layer, axis=1)).mean() / np.abs(np.diff(layer, axis=0)).mean())

    straight, spread = anisotropy(0.0), anisotropy(30.0)
    assert straight > 5.0  # all vertical: sharp across, smooth along
    assert spread < 0.7 * straight  # tilted streaks change along the columns too


def test_streaks_reach_the_border_of_the_frame() -> None:
    layer = streak_layer(64, 64, np.random.default_rng(2), 0.0, 60.0, 0.01, 0.6, 0.8)
    assert layer[:4].mean() > 0.3 * layer[28:36].mean()  # seeds outside the frame streak into it


def test_veil_is_the_scattering_model_exactly() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    foggy = Recipe(layers=(), veil=fixed(0.3), airlight=fixed(0.9))
    rainy, drawn = render(clean, np.random.default_rng(1), foggy)
    expected = clean / 255.0 * 0.7 + 0.9 * 0.3
    assert drawn["veil"] == pytest.approx(0.3) and drawn["layers"] == []
    assert np.abs(rainy / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    # contrast shrinks by t = 0.7
    assert rainy.astype(float).std() == pytest.approx(0.7 * clean.astype(float).std(), rel=0.02)


def test_jpeg_and_noise_options_do_what_they_say() -> None:
    rng = np.random.default_rng(0)
    clean = np.asarray(
        np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255), dtype=np.uint8
    )  # busy texture that JPEG must change
    plain = Recipe(layers=())
    assert np.array_equal(render(clean, np.random.default_rng(1), plain)[0], clean)
    jpeg = Recipe(layers=(), jpeg=(80, 80), jpeg_chance=1.0)
    compressed, drawn = render(clean, np.random.default_rng(1), jpeg)
    assert drawn["jpeg"] == 80
    assert np.array_equal(compressed, jpeg_round_trip(clean, 80))
    assert np.abs(compressed.astype(int) - clean).mean() > 2
    noisy, drawn = render(
        np.full((128, 128, 3), 128, np.uint8), np.random.default_rng(1), Recipe((), noise=fixed(0.02))
    )
    assert drawn["noise"] == pytest.approx(0.02)
    assert (noisy.astype(float) - 128).std() == pytest.approx(0.02 * 255, rel=0.05)


def test_layers_appear_with_their_chance_and_follow_the_wind() -> None:
    style = RainStyle(fixed(5.0), fixed(20.0), fixed(0.01), fixed(0.5), fixed(0.5))
    recipe = Recipe(layers=(Layer(style), Layer(style, chance=0.0)), wind=fixed(20.0))
    clean = np.zeros((48, 48, 3), np.uint8)
    rainy, drawn = render(clean, np.random.default_rng(3), recipe)
    assert len(drawn["layers"]) == 1 and drawn["layers"][0]["angle"] == pytest.approx(25.0)
    assert rainy.mean() > 5


@pytest.mark.slow  # renders full-size rain more than once
def test_recipes_span_drizzle_to_downpour_and_seeds_repeat() -> None:
    rng = np.random.default_rng(0)
    clean = np.asarray(np.clip(rng.normal(100, 30, (160, 240, 3)), 0, 255), np.uint8)

    def added(name: str) -> float:
        levels = []
        for seed in range(4):
            local = np.random.default_rng(seed)
            rainy, _ = render(clean, local, recipe_named(name, local))
            levels.append(np.abs(rainy.astype(float) - clean).mean())
        return float(np.mean(levels))

    light, heavy = added("light"), added("heavy")
    assert 2 < light < 20 and 30 < heavy < 90 and heavy > 3 * light
    first = render(clean, np.random.default_rng(9), recipe_named("mixed", np.random.default_rng(9)))[0]
    again = render(clean, np.random.default_rng(9), recipe_named("mixed", np.random.default_rng(9)))[0]
    assert np.array_equal(first, again)
    picks = {recipe_named("mixed", np.random.default_rng(seed)) for seed in range(40)}
    assert picks == {RECIPES["light"], RECIPES["moderate"], RECIPES["heavy"]}
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_named("drizzle", rng)


def test_fine_rain_is_a_dense_curtain_of_faint_streaks() -> None:
    """`fine` (real photos' rain) covers nearly every pixel yet stays faint; `heavy` is bright lines.
    Measured on black, without veil, noise or JPEG, so only the streak layers count."""
    import dataclasses

    black = np.zeros((160, 240, 3), np.uint8)

    def streaks_only(name: str, seed: int) -> np.ndarray:
        named = RECIPES[name]
        assert isinstance(named, Recipe)
        recipe = dataclasses.replace(named, veil=(0.0, 0.0), noise=(0.0, 0.0), jpeg_chance=0.0)
        return render(black, np.random.default_rng(seed), recipe)[0].mean(axis=2)

    for seed in range(3):
        fine, heavy = streaks_only("fine", seed), streaks_only("heavy", seed)
        assert np.mean(fine > 3) > 0.8  # streaks nearly everywhere
        assert np.percentile(fine, 99) < 130 < 200 < np.percentile(heavy, 99)  # but none of them bright
    mixed = RECIPES["mixed"]
    assert isinstance(mixed, Mixture) and "fine" not in {name for name, _ in mixed.recipes}
    picks = {recipe_named("general", np.random.default_rng(seed)) for seed in range(60)}
    assert picks == {RECIPES[name] for name in ("light", "moderate", "heavy", "fine")}


def test_split_holds_out_every_tenth_image_the_same_way_every_time() -> None:
    files = [Path(f"set/{index:03d}.jpg") for index in range(95)]
    train, held = split_clean(list(reversed(files)))
    assert len(held) == 9 and len(train) == 86 and not set(train) & set(held)  # 5, 15, ..., 85
    assert held[:2] == [Path("set/005.jpg"), Path("set/015.jpg")]
    assert split_clean(files) == (train, held)


@pytest.mark.slow  # renders full-size rain more than once
def test_cli_renders_a_recipe_on_the_held_out_images_only(tmp_path: Path) -> None:
    clean = tmp_path / "clean" / "photos"
    clean.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(20):
        Image.fromarray(rng.integers(0, 200, (60, 90, 3), dtype=np.uint8)).save(clean / f"{index:02d}.png")
    out = tmp_path / "heavy"
    argv = ["--clean", str(tmp_path / "clean"), "--out", str(out), "--recipe", "heavy", "--split", "val"]
    assert main([*argv, "--max-side", "45"]) == 0
    pairs = load_pairs(out)
    assert [p.name for p in pairs] == ["photos-05.png", "photos-15.png"]
    assert all(p.rain.shape == (30, 45, 3) for p in pairs)  # shrunk to the longer side asked for
    assert all(np.abs(p.rain.astype(int) - p.clean).mean() > 20 for p in pairs)
    again = tmp_path / "again"
    assert main([*argv[:3], str(again), *argv[4:], "--max-side", "45"]) == 0
    assert all(np.array_equal(a.rain, b.rain) for a, b in zip(pairs, load_pairs(again), strict=True))


@pytest.mark.slow  # renders full-size rain more than once
def test_contact_sheet_has_a_row_per_recipe_and_one_of_real_photos(tmp_path: Path) -> None:
    from mspfn.synthrain import contact_sheet

    clean, real = tmp_path / "clean", tmp_path / "real"
    clean.mkdir()
    real.mkdir()
    rng = np.random.default_rng(0)
    for index in range(12):
        Image.fromarray(rng.integers(0, 120, (240, 330, 3), dtype=np.uint8)).save(clean / f"{index:02d}.png")
    Image.fromarray(np.full((300, 400, 3), 7, np.uint8)).save(real / "r.png")
    out = tmp_path / "sheet.jpg"
    contact_sheet(clean, real, out, columns=2)
    sheet = np.asarray(Image.open(out).convert("L")).astype(float)
    assert sheet.shape == (5 * 214, 2 * 320)  # light, moderate, heavy, fine, real
    rows = [sheet[i * 214 + 20 : (i + 1) * 214, :].mean() for i in range(5)]
    assert rows[4] < 12  # the real row is the dark photo itself
    assert rows[0] < rows[2]  # heavy rain brightens more than light rain

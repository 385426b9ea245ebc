"""split/stitch: exact identity round trips, constant images, no seams, tiled == whole-image inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.pipeline import TileGrid, check_tiling, feather_ramp, plan_grid, split, stitch
from service.core.pipeline.tiling import tile_starts
from service.core.runtime import load_runner
from tests.paths import REAL, SHIPPED_WEIGHTS

# The real rainy photos of ../shared/data (see its README); a checkout without them skips these tests.
needs_photos = pytest.mark.skipif(not REAL.is_dir(), reason=f"real rainy photos not found at {REAL}")
SIZES = [(1, 1), (37, 53), (64, 64), (65, 64), (100, 150), (300, 257), (64, 500)]


def cut(image: np.ndarray, tile_size: int, overlap: int, align: int = 8) -> tuple[list[np.ndarray], TileGrid]:
    """Plan the grid once for the image's size, then split along it, as the derainer does."""
    grid = plan_grid(image.shape[1], image.shape[2], tile_size, overlap, align)
    return split(image, grid), grid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("length", [1, 8, 63, 64, 65, 100, 257, 1000, 4288])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 0), (64, 56), (256, 32)])
def test_tile_starts_cover_the_canvas_with_aligned_overlapping_tiles(
    length: int, tile: int, overlap: int
) -> None:
    starts = tile_starts(length, tile, overlap, align=8)
    canvas = max(tile, -(-length // 8) * 8)
    assert starts[0] == 0
    assert starts[-1] + tile == canvas  # the last tile ends exactly at the canvas edge
    assert all(start % 8 == 0 for start in starts)
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(tile - gaps >= overlap)  # neighbours overlap at least `overlap`
    if len(starts) > 1:  # the fewest tiles: one less could not keep the overlap
        assert (len(starts) - 2) * ((tile - overlap) // 8 * 8) + tile < canvas


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_split_then_stitch_of_an_identity_is_exact(height: int, width: int) -> None:
    image = np.random.default_rng(height * width).random((3, height, width), dtype=np.float32)
    tiles, grid = cut(image, 64, 16, align=8)
    assert all(tile.shape == (3, 64, 64) for tile in tiles)
    assert len(tiles) == grid.count == len(grid.tops) * len(grid.lefts)
    assert np.array_equal(stitch(tiles, grid), image)


def test_small_images_are_reflect_padded_to_one_full_tile() -> None:
    image = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    (tile,), grid = cut(image, 16, 8, align=8)
    assert (grid.canvas_height, grid.canvas_width) == (16, 16)
    assert np.array_equal(tile[:, :5, :7], image)
    assert np.array_equal(tile[:, 5, :7], image[:, 3])  # reflection: row 5 mirrors row 3
    assert np.array_equal(tile[:, :5, 7], image[:, :, 5])


def test_a_constant_image_stays_constant_across_tile_borders() -> None:
    image = np.full((3, 150, 230), 0.37, np.float32)
    tiles, grid = cut(image, 64, 16, align=8)
    assert grid.count > 4
    assert np.array_equal(stitch(tiles, grid), image)


def test_feathering_leaves_no_seam_between_disagreeing_tiles() -> None:
    """Tiles that disagree by 1.0 (the worst case of edge effects) blend smoothly, without a step."""
    grid = plan_grid(150, 230, 64, 32, align=8)
    tiles = [np.full((1, 64, 64), float(k % 2), np.float32) for k in range(grid.count)]
    stitched = stitch(tiles, grid)
    largest_step = max(np.abs(np.diff(stitched, axis=1)).max(), np.abs(np.diff(stitched, axis=2)).max())
    hard_cut = 1.0
    assert largest_step < 0.25 * hard_cut  # a 16 px raised-cosine fade: at most pi/32 per px
    assert stitched.min() >= 0.0 and stitched.max() <= 1.0


def test_feather_ramp_fades_in_over_the_middle_half() -> None:
    ramp = feather_ramp(32)
    assert np.all(ramp[:8] == 0) and np.all(ramp[24:] == 1)
    assert np.all(np.diff(ramp) >= 0)
    assert np.allclose(ramp + ramp[::-1], 1.0)


def test_stitch_rejects_tiles_that_do_not_fit_the_grid() -> None:
    tiles, grid = cut(np.zeros((3, 100, 100), np.float32), 64, 16, align=8)
    with pytest.raises(ValueError, match="tiles"):
        stitch(tiles[:-1], grid)


def test_split_refuses_an_image_the_grid_was_not_planned_for() -> None:
    grid = plan_grid(100, 100, 64, 16, 8)
    with pytest.raises(ValueError, match="100x100"):
        split(np.zeros((3, 100, 108), np.float32), grid)


@pytest.mark.parametrize(
    ("tile", "overlap", "multiple", "message"),
    [
        (100, 16, 8, "tile size 100 px is not a multiple of 8"),
        (64, 60, 8, "tile overlap 60 px must be at most the tile size minus 8 \\(56 px\\)"),
        (64, -1, 8, "tile overlap -1 px"),
        (48, 40, 16, "tile overlap 40 px must be at most the tile size minus 16 \\(32 px\\)"),
    ],
)
def test_the_tiling_rule_names_what_is_wrong(tile: int, overlap: int, multiple: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_tiling(tile, overlap, multiple)
    with pytest.raises(ValueError, match=message):  # plan_grid asks the same rule
        plan_grid(10, 10, tile, overlap, multiple)
    check_tiling(tile // multiple * multiple, 0, multiple)  # a fitting tile and overlap pass


@needs_photos
def test_tiled_inference_matches_whole_image_inference(tiny_onnx: Path) -> None:
    """The tiny network on a real rainy photo, tile 64 / overlap 16 against one whole-image pass."""
    runner = load_runner(tiny_onnx, ["CPUExecutionProvider"], threads=1)
    photo = Image.open(sorted((REAL / "rain").iterdir())[0]).convert("RGB")
    photo.thumbnail((200, 200))
    image = np.asarray(photo, np.float32).transpose(2, 0, 1) / 255
    image = np.ascontiguousarray(image[:, : image.shape[1] // 8 * 8, : image.shape[2] // 8 * 8])
    whole = runner.run(image[np.newaxis])[0]
    tiles, grid = cut(image, 64, 16, align=8)
    tiled = stitch([runner.run(tile[np.newaxis])[0] for tile in tiles], grid)
    assert grid.count >= 9
    assert psnr(whole, image) < 60  # the model really changes the image...
    assert psnr(tiled, whole) >= 60  # ...and tiling does not


@pytest.mark.slow
@needs_photos
@pytest.mark.parametrize(
    "weights",
    [SHIPPED_WEIGHTS]
    + [SHIPPED_WEIGHTS.with_name(f"mspfn-lite-{name}.safetensors") for name in ("general", "raintrainl")],
)
def test_tiled_output_matches_whole_image_with_the_shipped_weights(tmp_path: Path, weights: Path) -> None:
    """Issue 4's criterion: PSNR >= 40 dB between tiled (default tile/overlap) and whole-image output,
    for the default model (a pair) and each of its members (not for the opt-in mspfn-lite-fine, which
    fails it: README)."""
    from model_export import export_onnx
    from service.settings import DEFAULT_TILE_SIZE

    model = tmp_path / "lite.onnx"
    export_onnx(weights, model)
    runner = load_runner(model, ["CPUExecutionProvider"])
    photo = Image.open(REAL / "rain" / "94.jpg").convert("RGB")  # 500x751, heavy real rain
    image = np.asarray(photo, np.float32).transpose(2, 0, 1) / 255
    height, width = image.shape[1] // 8 * 8, image.shape[2] // 8 * 8  # whole-image run needs multiples of 8
    image = np.ascontiguousarray(image[:, :height, :width])
    whole = runner.run(image[np.newaxis])[0]
    tiles, grid = cut(image, DEFAULT_TILE_SIZE, 32, align=8)
    tiled = stitch([runner.run(tile[np.newaxis])[0] for tile in tiles], grid)
    assert psnr(tiled, whole) >= 40

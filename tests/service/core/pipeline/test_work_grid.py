"""plan_work: the whole image when it fits the budget, else the fewest pieces that fit it or fitted
tiles (whichever gives the model fewer pixels); fixed tiles at 0."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.pipeline import plan_grid, plan_work, split, stitch
from service.core.pipeline.tiling import (
    PIECE_SHARE,
    TileGrid,
    budget_pieces,
    fitted_side,
    side_for_count,
    tile_starts,
)

BUDGET = 1 << 20
PIECE = int(BUDGET * PIECE_SHARE)  # a piece's pixels at most: a quarter of the whole-image budget


@pytest.mark.parametrize(("height", "width"), [(321, 481), (1, 1), (37, 53), (712, 1072), (1024, 1024)])
def test_an_image_within_the_budget_is_one_input_padded_to_the_grid_only(height: int, width: int) -> None:
    grid = plan_work(height, width, 256, 32, 8, BUDGET)
    assert grid.count == 1
    assert (grid.tile_height, grid.tile_width) == (-(-height // 8) * 8, -(-width // 8) * 8)


def _overlaps_kept(grid: TileGrid, overlap: int = 32, align: int = 8) -> bool:
    for starts, side in ((grid.tops, grid.tile_height), (grid.lefts, grid.tile_width)):
        if any(start % align for start in starts) or side % align:
            return False
        if any(b - a > side - overlap for a, b in zip(starts, starts[1:], strict=False)):
            return False
    return True


@pytest.mark.parametrize(
    ("height", "width"), [(1284, 1924), (1424, 2144), (2848, 4288), (1030, 1500), (712, 1715)]
)
def test_a_larger_image_goes_in_the_pieces_within_the_budget_that_cost_fewest_pixels(
    height: int, width: int
) -> None:
    grid = plan_work(height, width, 256, 32, 8, BUDGET)
    fitted = fitted_side(height, 256, 32, 8), fitted_side(width, 256, 32, 8)
    assert PIECE_SHARE == 0.25
    assert grid.count > 1 and grid.tile_height * grid.tile_width <= PIECE
    assert _overlaps_kept(grid)
    assert grid.canvas_height >= height and grid.canvas_width >= width
    assert grid.pixels < plan_grid(height, width, 256, 32, 8).count * fitted[0] * fitted[1]  # < fitted tiles
    assert grid.pixels / (height * width) < 1.14
    # no other grid of pieces within the budget gives the model fewer pixels
    for rows in range(1, 12):
        for columns in range(1, 12):
            tile_height, tile_width = (
                side_for_count(height, rows, 32, 8),
                side_for_count(width, columns, 32, 8),
            )
            if tile_height * tile_width <= PIECE:
                assert rows * columns * tile_height * tile_width >= grid.pixels


def test_pieces_waste_less_than_fitted_tiles_on_the_second_pass_of_a_12_mp_photo() -> None:
    """The working image of auto's second pass over 91.jpg (4288x2848 shrunk 4 x 2.5): six pieces of
    376x600 (1.11x its pixels) instead of 32 fitted tiles of 208x248 (1.35x)."""
    grid = plan_work(712, 1715, 256, 32, 8, BUDGET)
    assert (grid.count, grid.tile_height, grid.tile_width) == (6, 376, 600)
    assert grid.tops == (0, 336) and grid.lefts == (0, 560, 1120)
    assert grid.pixels / (712 * 1715) == pytest.approx(1.109, abs=0.001)
    tiled = plan_work(712, 1715, 256, 32, 8, 1)  # no piece fits a budget of 1 px: fitted tiles
    assert (tiled.count, tiled.tile_height, tiled.tile_width) == (32, 208, 248)
    assert tiled.pixels / (712 * 1715) == pytest.approx(1.35, abs=0.01)


def test_a_12_mp_photo_at_full_size_goes_in_56_pieces() -> None:
    grid = plan_work(2848, 4288, 256, 32, 8, BUDGET)
    assert (grid.count, grid.tile_height, grid.tile_width) == (56, 384, 640)
    assert grid.pixels / (2848 * 4288) == pytest.approx(1.127, abs=0.001)
    assert plan_grid(2848, 4288, 256, 32, 8).pixels / (2848 * 4288) == pytest.approx(1.33, abs=0.01)


def test_the_budget_itself_still_runs_whole() -> None:
    """A quarter of the budget is for pieces only: a 1 MP working image still goes in one call."""
    assert plan_work(1024, 1024, 256, 32, 8, BUDGET).count == 1
    just_over = plan_work(1024, 1032, 256, 32, 8, BUDGET)  # pieces of at most 1/4 MP
    assert (just_over.count, just_over.tile_height, just_over.tile_width) == (6, 528, 368)


def test_no_piece_fits_a_budget_below_the_narrowest_one() -> None:
    assert budget_pieces(1030, 1500, 16, 8, 1) is None
    assert budget_pieces(1030, 1500, 16, 8, 24 * 24) is not None


def test_budget_zero_is_the_fixed_square_grid() -> None:
    assert plan_work(321, 481, 256, 32, 8, 0) == plan_grid(321, 481, 256, 32, 8)


@pytest.mark.parametrize(("height", "width"), [(1030, 1500), (300, 700)])
def test_rectangular_tiles_split_and_stitch_back_exactly(height: int, width: int) -> None:
    image = np.random.default_rng(0).random((3, height, width), dtype=np.float32)
    grid = plan_work(height, width, 128, 16, 8, 1)  # a budget of 1 px: always tiled
    assert grid.count > 1 and grid.tile_height <= 128 and grid.tile_width <= 128
    assert np.array_equal(stitch([tile.copy() for tile in split(image, grid)], grid), image)


def test_fitted_side_is_the_smallest_that_keeps_the_count() -> None:
    assert fitted_side(481, 256, 32, 8) == 184  # 256 px tiles would need 3 (488 canvas): 3 of 184 do
    assert fitted_side(1500, 256, 32, 8) == 248
    assert fitted_side(100, 256, 32, 8) == 104  # one tile: the side padded to the grid


def test_side_for_count_is_the_smallest_side_that_covers_with_that_many() -> None:
    assert side_for_count(1715, 2, 32, 8) == 880  # 2 x 880 - 32 >= 1720 (the canvas)
    assert side_for_count(1715, 1, 32, 8) == 1720
    assert side_for_count(712, 4, 32, 8) == 208
    for length, count in ((1715, 2), (712, 4), (4288, 7), (100, 3)):
        side = side_for_count(length, count, 32, 8)
        assert len(tile_starts(length, side, 32, 8)) <= count < len(tile_starts(length, side - 8, 32, 8))

"""plan_work: the whole image when it fits the budget, else the fewest fitted tiles; fixed tiles at 0."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.pipeline import plan_grid, plan_work, split, stitch
from service.core.pipeline.tiling import fitted_side

BUDGET = 1 << 20


@pytest.mark.parametrize(("height", "width"), [(321, 481), (1, 1), (37, 53), (712, 1072), (1024, 1024)])
def test_an_image_within_the_budget_is_one_input_padded_to_the_grid_only(height: int, width: int) -> None:
    grid = plan_work(height, width, 256, 32, 8, BUDGET)
    assert grid.count == 1
    assert (grid.tile_height, grid.tile_width) == (-(-height // 8) * 8, -(-width // 8) * 8)


@pytest.mark.parametrize(("height", "width"), [(1284, 1924), (1424, 2144), (2848, 4288), (1030, 1500)])
def test_a_larger_image_gets_as_many_tiles_as_fixed_ones_but_no_more_pixels(height: int, width: int) -> None:
    fitted, fixed = plan_work(height, width, 256, 32, 8, BUDGET), plan_grid(height, width, 256, 32, 8)
    assert fitted.count == fixed.count
    assert fitted.pixels <= fixed.pixels
    assert fitted.tile_height % 8 == 0 and fitted.tile_width % 8 == 0
    for starts, side in ((fitted.tops, fitted.tile_height), (fitted.lefts, fitted.tile_width)):
        assert all(start % 8 == 0 for start in starts)
        assert all(b - a <= side - 32 for a, b in zip(starts, starts[1:], strict=False))  # overlap kept


def test_fitted_tiles_waste_less_on_a_working_image_of_12_mp_shrunk_by_2() -> None:
    grid = plan_work(1424, 2144, 256, 32, 8, BUDGET)
    assert (grid.count, grid.tile_height, grid.tile_width) == (70, 232, 248)
    assert grid.pixels / (1424 * 2144) == pytest.approx(1.32, abs=0.01)
    assert plan_grid(1424, 2144, 256, 32, 8).pixels / (1424 * 2144) == pytest.approx(1.50, abs=0.01)


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

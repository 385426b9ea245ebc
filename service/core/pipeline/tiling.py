"""Cut an image into fixed-size overlapping tiles and stitch the model's tiles back, seam-free.

Two pure functions, `split` and `stitch`, joined by a `TileGrid` that says where every tile sits
(`plan_grid` or `plan_work` plans it once, from the image's size: before decoding, in the service).

Two plans:
- `plan_grid`: square tiles of one fixed size, the same for every image (static shapes, for CUDA);
- `plan_work` with a pixel budget (the CPU, where shapes are free and batching brings nothing): an
  image whose padded canvas fits the budget is one tile, the whole image; a larger one gets whichever
  of two rectangular grids gives the model fewer pixels: pieces that each fit a quarter of the budget
  (PIECE_SHARE), as few pixels as will do (a 1424x2144 image: 15 of 496x456, 1.11x its pixels), or
  as many tiles as the fixed size would need, each shrunk to the smallest multiple of `align` that
  still covers the image with that count (`fitted_grid`: it wins only with a budget under a few
  tiles).

Layout: CHW float32 (channels first, one image); tiles are (C, T, T) where T = tile size.
Every tile has the exact serving shape, so tiles of different requests can share a batch and the
runtime sees one static shape (one cuDNN search, CUDA graphs / TensorRT friendly):
- the image is reflect-padded at the bottom/right into a "canvas": up to the next multiple of `align`
  (the network's `pad_multiple`, as whole-image inference pads), or up to one tile when a side is
  shorter than a tile. Small images therefore cost one full tile: the price of one static shape;
- tiles start at multiples of `align`, spread evenly from 0 to `canvas - T`, using the fewest tiles
  whose neighbours overlap by at least `overlap` px. Aligned starts matter: the network pools by 2, 4
  and 8, so a tile cut at a multiple of 8 sees the same pooling grid as the whole image does, and its
  output matches whole-image inference away from the tile's edges.

Blending: where tiles overlap, the later tile is faded in with a raised-cosine ramp over the middle
half of the overlap. The outer quarter next to each tile's edge (where the network saw zero padding
instead of real neighbours) gets no weight at all (the chaiNNer approach), and the fade itself is smooth,
so no seam shows. Stitching is a chain of linear interpolations `old + w * (new - old)`, which returns
identical inputs bit for bit: split -> stitch of an identity, or of a constant image, is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image sit, in canvas pixels (canvas = image, padded up to one tile if smaller).

    Tile k (row-major) has its top-left corner at canvas pixel (tops[k // columns], lefts[k % columns]).
    """

    image_height: int
    image_width: int
    tile_height: int
    tile_width: int
    tops: tuple[int, ...]  # canvas row of the top edge of each row of tiles
    lefts: tuple[int, ...]  # canvas column of the left edge of each column of tiles

    @property
    def canvas_height(self) -> int:
        return self.tops[-1] + self.tile_height

    @property
    def canvas_width(self) -> int:
        return self.lefts[-1] + self.tile_width

    @property
    def pixels(self) -> int:
        """Pixels the model sees for this image (overlaps and padding counted)."""
        return self.count * self.tile_height * self.tile_width

    @property
    def count(self) -> int:
        return len(self.tops) * len(self.lefts)

    def tile_corners(self) -> list[tuple[int, int]]:
        """(top, left) canvas pixel of each tile's top-left corner, in tile order."""
        return [(top, left) for top in self.tops for left in self.lefts]


def tile_starts(length: int, tile_size: int, overlap: int, align: int = 1) -> tuple[int, ...]:
    """Start of each tile along a side of `length` px: multiples of `align`, evenly spread over the
    canvas (`length` rounded up to `align`), neighbours overlapping by at least `overlap` px."""
    if length <= tile_size:
        return (0,)
    canvas = -(-length // align) * align
    units = (canvas - tile_size) // align  # room to spread the tiles over, in steps of `align`
    step = (tile_size - overlap) // align  # largest gap between neighbours that keeps the overlap
    gaps = -(-units // step)
    return tuple(align * ((i * units + gaps // 2) // gaps) for i in range(gaps + 1))


def check_tiling(tile_size: int, overlap: int, multiple: int) -> None:
    """The one tiling rule: tiles are a multiple of the network's pad multiple (they start on its grid),
    and neighbours overlap by 0 to tile - multiple px (so each tile still moves the grid on). ValueError
    with a one-line reason otherwise; settings, start-up, the CLI and `plan_grid` all ask here."""
    if tile_size % multiple:
        raise ValueError(f"tile size {tile_size} px is not a multiple of {multiple}")
    if not 0 <= overlap <= tile_size - multiple:
        raise ValueError(
            f"tile overlap {overlap} px must be at most the tile size minus {multiple} "
            f"({tile_size - multiple} px)"
        )


def _check_plan(height: int, width: int, tile_size: int, overlap: int, align: int) -> None:
    check_tiling(tile_size, overlap, align)
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} has an empty side")


def _grid(height: int, width: int, tile_height: int, tile_width: int, overlap: int, align: int) -> TileGrid:
    """Tiles of one shape laid over the image, neighbours overlapping by at least `overlap` px."""
    return TileGrid(
        image_height=height,
        image_width=width,
        tile_height=tile_height,
        tile_width=tile_width,
        tops=tile_starts(height, tile_height, overlap, align),
        lefts=tile_starts(width, tile_width, overlap, align),
    )


def plan_grid(height: int, width: int, tile_size: int, overlap: int, align: int = 1) -> TileGrid:
    """Where the tiles of a `height` x `width` image go; `align` is the network's pad multiple."""
    _check_plan(height, width, tile_size, overlap, align)
    return _grid(height, width, tile_size, tile_size, overlap, align)


def _round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def fitted_side(length: int, tile_size: int, overlap: int, align: int) -> int:
    """The smallest tile side (a multiple of `align`, at most `tile_size`) that covers `length` px with
    as few tiles as `tile_size` would, neighbours still overlapping by at least `overlap` px."""
    return min(
        side_for_count(length, len(tile_starts(length, tile_size, overlap, align)), overlap, align), tile_size
    )


def side_for_count(length: int, count: int, overlap: int, align: int) -> int:
    """The smallest tile side (a multiple of `align`) that covers `length` px with at most `count`
    tiles, neighbours overlapping by at least `overlap` px."""
    canvas = _round_up(length, align)
    if count <= 1:
        return canvas
    side = max(overlap + align, _round_up(-(-(canvas + (count - 1) * overlap) // count), align))
    while len(tile_starts(length, side, overlap, align)) > count:
        side += align
    return side


def budget_pieces(height: int, width: int, overlap: int, align: int, budget: int) -> TileGrid | None:
    """The grid whose pieces each have at most `budget` pixels that gives the model the fewest pixels
    (ties: fewer pieces): for each count of rows, the fewest columns that fit. None when no piece fits."""
    best: TileGrid | None = None
    narrowest = overlap + align  # the smallest side a piece can have
    rows = 0
    while True:
        rows += 1
        tile_height = side_for_count(height, rows, overlap, align)
        if tile_height * narrowest <= budget:
            columns = 1
            while tile_height * (tile_width := side_for_count(width, columns, overlap, align)) > budget:
                columns += 1
            grid = _grid(height, width, tile_height, tile_width, overlap, align)
            if best is None or (grid.pixels, grid.count) < (best.pixels, best.count):
                best = grid
            if columns == 1:  # more rows only add overlap from here
                return best
        if tile_height <= narrowest:  # no more rows to add
            return best


# A working image cut into pieces comes from a large photo, whose full-size copies (decoded, restored,
# resampled) come on top of ONNX Runtime's arena for the largest call: its pieces get this share of the
# whole-image budget. A 24 MP upload peaked at 3,434 MiB with pieces of the whole budget, 3,065 with
# half, 2,180 with a quarter (the 2.5 GB target: 2,384 MiB; README, Tiling).
PIECE_SHARE = 0.25


def fitted_grid(height: int, width: int, tile_size: int, overlap: int, align: int) -> TileGrid:
    """As many tiles as `tile_size` ones would need, each side shrunk as far as that count allows."""
    tile_height = fitted_side(height, tile_size, overlap, align)
    tile_width = fitted_side(width, tile_size, overlap, align)
    return _grid(height, width, tile_height, tile_width, overlap, align)


def plan_work(
    height: int, width: int, tile_size: int, overlap: int, align: int, whole_pixels: int
) -> TileGrid:
    """Where the model's inputs for a `height` x `width` image go. whole_pixels 0: `plan_grid`'s fixed
    square tiles. Otherwise the whole image as one input when its canvas (the image padded to `align`)
    has at most `whole_pixels` pixels, else pieces of at most PIECE_SHARE of it each (`budget_pieces`) or
    as many tiles as the fixed size needs, fitted (`fitted_side`): whichever gives the model fewer
    pixels."""
    if whole_pixels <= 0:
        return plan_grid(height, width, tile_size, overlap, align)
    _check_plan(height, width, tile_size, overlap, align)
    canvas_height, canvas_width = _round_up(height, align), _round_up(width, align)
    if canvas_height * canvas_width <= whole_pixels:
        return TileGrid(height, width, canvas_height, canvas_width, (0,), (0,))
    fitted = fitted_grid(height, width, tile_size, overlap, align)
    pieces = budget_pieces(height, width, overlap, align, int(whole_pixels * PIECE_SHARE))
    if pieces is not None and (pieces.pixels, pieces.count) < (fitted.pixels, fitted.count):
        return pieces
    return fitted


def split(image: np.ndarray, grid: TileGrid) -> list[np.ndarray]:
    """CHW image -> (C, T, T) tiles in row-major order, where `grid` (planned for this image's size by
    `plan_grid`) puts them: views of the padded canvas, not copies."""
    if image.ndim != 3 or image.shape[1:] != (grid.image_height, grid.image_width):
        raise ValueError(
            f"expected a CHW image of {grid.image_height}x{grid.image_width}, got shape {image.shape}"
        )
    pad_bottom, pad_right = grid.canvas_height - grid.image_height, grid.canvas_width - grid.image_width
    canvas = image
    if pad_bottom or pad_right:
        canvas = np.pad(image, ((0, 0), (0, pad_bottom), (0, pad_right)), mode="reflect")
    rows, columns = grid.tile_height, grid.tile_width
    return [canvas[:, top : top + rows, left : left + columns] for top, left in grid.tile_corners()]


def stitch(tiles: Sequence[np.ndarray], grid: TileGrid) -> np.ndarray:
    """(C, T, T) tiles in `split`'s order -> the CHW float32 image of the grid's size, overlaps feathered."""
    if len(tiles) != grid.count:
        raise ValueError(f"grid has {grid.count} tiles, got {len(tiles)}")
    rows, columns = grid.tile_height, grid.tile_width
    channels = tiles[0].shape[0]
    if any(tile.shape != (channels, rows, columns) for tile in tiles):
        raise ValueError(f"every tile must have shape ({channels}, {rows}, {columns})")
    columns = len(grid.lefts)
    canvas = np.empty((channels, grid.canvas_height, grid.canvas_width), np.float32)
    canvas_filled = 0  # canvas rows written so far
    for row, top in enumerate(grid.tops):
        band = np.empty((channels, rows, grid.canvas_width), np.float32)  # one row of tiles
        band_filled = 0
        for column, left in enumerate(grid.lefts):
            band_filled = _blend_into(band, tiles[row * columns + column], left, band_filled, axis=2)
        canvas_filled = _blend_into(canvas, band, top, canvas_filled, axis=1)
    return canvas[:, : grid.image_height, : grid.image_width]


def feather_ramp(length: int) -> np.ndarray:
    """Weight of the incoming tile across an overlap of `length` px: 0 on the first quarter, a raised
    cosine over the middle half, 1 on the last quarter. Sampled at pixel centres; ramp[i] + ramp[-1-i] = 1."""
    centres = np.arange(length, dtype=np.float64) + 0.5
    position = np.clip((centres - length / 4) / (length / 2), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * position)).astype(np.float32)


def _along(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    index = [slice(None)] * (axis + 1)
    index[axis] = slice(start, stop)
    return tuple(index)


def _blend_into(target: np.ndarray, part: np.ndarray, start: int, filled: int, axis: int) -> int:
    """Write `part` into `target` at `start` along `axis`, fading it over what is already there
    (target is written up to `filled`). Returns the new written extent."""
    length = part.shape[axis]
    overlap = max(0, min(filled - start, length))
    if overlap:
        shape = [1] * target.ndim
        shape[axis] = overlap
        weight = feather_ramp(overlap).reshape(shape)
        old = target[_along(axis, start, start + overlap)]
        old += weight * (part[_along(axis, 0, overlap)] - old)  # exact where old == new
    target[_along(axis, start + overlap, start + length)] = part[_along(axis, overlap, length)]
    return max(filled, start + length)

"""The CPU's grids above the whole-image budget: pieces within the budget against fitted tiles.

    python -m benchmarks.grids --model models/mspfn-lite.onnx --sizes 712x1715 1424x2144 --repeats 2

A working image whose canvas is over DERAIN_WHOLE_MAX_PIXELS (1 MP) is cut by `plan_work` into
pieces of at most a quarter of it (PIECE_SHARE), as few model pixels as will do (`budget_pieces`),
unless fitted tiles (as many as 256 px tiles need, each shrunk as far as that count allows: the
previous rule) give fewer.
This times both grids on the same random image through one ONNX Runtime session (the service's own,
`load_runner`), alternating, each grid's first tile run once untimed; every model call gets one tile,
as the CPU provider's default batch of 1 does. Sizes: the second pass's working image of a 12 MP photo
(712x1715, 4288x2848 shrunk 4 x 2.5) and that photo shrunk by 2 (1424x2144).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from service.core.derainer import WHOLE_PIXELS
from service.core.pipeline import split
from service.core.pipeline.tiling import TileGrid, fitted_grid, plan_work
from service.core.runtime import load_runner

TILE, OVERLAP = 256, 32  # the service's defaults (DERAIN_TILE_SIZE, DERAIN_TILE_OVERLAP)


def parse_size(text: str) -> tuple[int, int]:
    """'712x1715' -> (712, 1715): height x width."""
    height, _, width = text.partition("x")
    return int(height), int(width)


def grids(height: int, width: int, align: int, budget: int = WHOLE_PIXELS) -> dict[str, TileGrid]:
    return {
        "pieces (plan_work)": plan_work(height, width, TILE, OVERLAP, align, budget),
        "fitted tiles": fitted_grid(height, width, TILE, OVERLAP, align),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grids", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(712, 1715), (1424, 2144)])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    runner = load_runner(args.model, ["CPUExecutionProvider"], args.threads)
    rng = np.random.default_rng(0)
    print("| image | grid | model inputs | input size | model px / image px | runs (s) | median (s) |")
    print("|---|---|---|---|---|---|---|")
    for height, width in args.sizes:
        image = rng.random((3, height, width), dtype=np.float32)
        plans = grids(height, width, runner.info.pad_multiple)
        for grid in plans.values():  # the arena grows to this shape once, untimed
            runner.run(np.ascontiguousarray(split(image, grid)[0][None]))
        runs: dict[str, list[float]] = {name: [] for name in plans}
        for _ in range(args.repeats):
            for name, grid in plans.items():
                started = time.perf_counter()
                for tile in split(image, grid):
                    runner.run(np.ascontiguousarray(tile[None]))
                runs[name].append(time.perf_counter() - started)
        for name, grid in plans.items():
            shown = ", ".join(f"{seconds:.2f}" for seconds in runs[name])
            print(
                f"| {height}x{width} | {name} | {grid.count} | {grid.tile_height}x{grid.tile_width} "
                f"| {grid.pixels / (height * width):.3f} | {shown} | {float(np.median(runs[name])):.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Enlarged copies of a paired folder: rainy and clean images alike resized by a factor with bicubic.

    python -m benchmarks.enlarge --data ../shared/data/val/Rain12 --factor 2 3 4 --out data/val

writes data/val/Rain12-x2, -x3, -x4 (rain/ and norain/, PNG, same names). The same scenes with streaks
2, 3 and 4 times as wide as the model was trained on: what a photo taken at a higher resolution looks
like. `make rain12-enlarged` runs it; the folders are generated data (git-ignored), not committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from mspfn.data import IMAGE_SUFFIXES


def enlarge_folder(source: Path, target: Path, factor: int) -> int:
    """Write `target`/{rain,norain}/NAME.png enlarged `factor` times; returns the number of pairs."""
    count = 0
    for part in ("rain", "norain"):
        (target / part).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / part).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                size = (rgb.width * factor, rgb.height * factor)
                rgb.resize(size, Image.Resampling.BICUBIC).save(target / part / (path.stem + ".png"))
            count += part == "rain"
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enlarge", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/val/Rain12"), help="paired folder")
    parser.add_argument("--factor", type=int, nargs="+", default=[2, 3, 4], help="integer factors")
    parser.add_argument("--out", type=Path, default=Path("data/val"), help="parent of NAME-xF folders")
    args = parser.parse_args(argv)
    for factor in args.factor:
        if factor < 1:
            parser.error(f"--factor {factor}: factors are integers >= 1")
        target = args.out / f"{args.data.name}-x{factor}"
        pairs = enlarge_folder(args.data, target, factor)
        print(f"{target}: {pairs} pairs enlarged x{factor}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

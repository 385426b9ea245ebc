"""Enlarged copies of a paired folder: rainy and clean images alike resized by a factor with bicubic.

    python -m benchmarks.enlarge --data ../shared/data/val/Rain12 --factor 2 3 4 --out data/val

writes data/val/Rain12-x2, -x3, -x4 (rain/ and norain/, PNG, same names). The same scenes with streaks
2, 3 and 4 times as wide as the model was trained on: what a photo taken at a higher resolution looks
like. `--crop` also writes NAME-xF-crop: the centre of each enlarged pair at the original size (wide
streaks in a small image: a crop of a large photo, where the image's size says nothing about its rain).
`make rain12-enlarged` runs it; the folders are generated data (git-ignored), not committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from mspfn.data import IMAGE_SUFFIXES


def enlarge_folder(source: Path, target: Path, factor: int, crop: bool = False) -> int:
    """Write `target`/{rain,norain}/NAME.png enlarged `factor` times (with crop: the centre of the
    enlarged image, at the original size); returns the number of pairs."""
    count = 0
    for part in ("rain", "norain"):
        (target / part).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / part).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                big = rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.BICUBIC)
                if crop:
                    left, top = (big.width - rgb.width) // 2, (big.height - rgb.height) // 2
                    big = big.crop((left, top, left + rgb.width, top + rgb.height))
                big.save(target / part / (path.stem + ".png"))
            count += part == "rain"
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enlarge", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/val/Rain12"), help="paired folder")
    parser.add_argument("--factor", type=int, nargs="+", default=[2, 3, 4], help="integer factors")
    parser.add_argument("--out", type=Path, default=Path("data/val"), help="parent of NAME-xF folders")
    parser.add_argument("--crop", action="store_true", help="also NAME-xF-crop: centres, original size")
    args = parser.parse_args(argv)
    for factor in args.factor:
        if factor < 1:
            parser.error(f"--factor {factor}: factors are integers >= 1")
        target = args.out / f"{args.data.name}-x{factor}"
        pairs = enlarge_folder(args.data, target, factor)
        print(f"{target}: {pairs} pairs enlarged x{factor}", file=sys.stderr)
        if args.crop and factor > 1:
            cropped = target.with_name(target.name + "-crop")
            enlarge_folder(args.data, cropped, factor, crop=True)
            print(f"{cropped}: the centres of those pairs at the original size", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Before/after crops at 100% zoom of real rainy photos, derained as the service does by default.

    .venv/bin/python docs/make_real_grid.py --model models/mspfn-lite.onnx --out docs/real-grid.jpg
    .venv/bin/python docs/make_real_grid.py --photos 91@600,1900 91@2200,1500 --crop 600 400 \
        --out docs/large-photo-crop.jpg
    .venv/bin/python docs/make_real_grid.py --photos 91@2200,1500 --crop 400 300 --scales auto 3 2 \
        --out docs/large-photo-scales.jpg

Each photo goes through the `derain` CLI's local backend (the service's own Derainer, default settings:
scale=auto, default tiling); each row is a crop of the original beside the same crop of the result,
pixel for pixel (no resizing), with the photo's name and size. A photo named NAME@X,Y is cropped with
its top-left corner at (X, Y) instead of its centre; one photo may appear in several rows. With
`--scales`, each row holds the original and one result per working scale named (`auto` or a factor,
as `derain --scale` takes them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real" / "RealSIRR147" / "rain"
PHOTOS = ("1", "13", "42", "91", "95", "128")  # crowds, children, meadow, 12 MP woods, street, stadium
CROP = (400, 260)  # width, height of each side, at 100%


def crop(image: np.ndarray, size: tuple[int, int], corner: tuple[int, int] | None = None) -> np.ndarray:
    """A size[0] x size[1] cell of the image: its centre, or from `corner` (x, y); black where it ends."""
    height, width = image.shape[:2]
    w, h = min(size[0], width), min(size[1], height)
    left, top = corner if corner is not None else ((width - w) // 2, (height - h) // 2)
    part = image[top : top + h, left : left + w]
    cell = np.zeros((size[1], size[0], 3), np.uint8)
    cell[: part.shape[0], : part.shape[1]] = part
    return cell


def parse_spot(text: str) -> tuple[str, tuple[int, int] | None]:
    """NAME or NAME@X,Y."""
    name, _, at = text.partition("@")
    if not at:
        return name, None
    x, y = (int(v) for v in at.split(","))
    return name, (x, y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--out", type=Path, default=Path("docs/real-grid.jpg"))
    parser.add_argument(
        "--photos", nargs="+", default=list(PHOTOS), help="NAME or NAME@X,Y in RealSIRR147/rain"
    )
    parser.add_argument("--crop", type=int, nargs=2, default=list(CROP), metavar=("W", "H"), help="each side")
    parser.add_argument(
        "--scales", nargs="+", default=["auto"], help="one result column per working scale (auto or 1-8)"
    )
    args = parser.parse_args(argv)
    spots = [parse_spot(text) for text in args.photos]
    size = (args.crop[0], args.crop[1])
    derain = Path(sys.executable).with_name("derain")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sources = [REAL / f"{name}.jpg" for name in dict.fromkeys(name for name, _ in spots)]
        for scale in args.scales:
            command = [str(derain), *map(str, sources), "-o", str(Path(folder) / scale)]
            command += ["--format", "png", "--model", str(args.model), "--scale", scale]
            subprocess.run(command, check=True)
        for name, corner in spots:
            source = REAL / f"{name}.jpg"
            before = np.asarray(Image.open(source).convert("RGB"))
            cells = [crop(before, size, corner)]
            for scale in args.scales:
                after = np.asarray(Image.open(Path(folder) / scale / f"{source.stem}.png").convert("RGB"))
                cells.append(crop(after, size, corner))
            row = np.concatenate(cells, axis=1)
            picture = Image.fromarray(row)
            where = f", at {corner[0]},{corner[1]}" if corner is not None else ""
            afters = (
                " | ".join(f"scale={scale}" for scale in args.scales) if args.scales != ["auto"] else "after"
            )
            label = f"{source.name} ({before.shape[1]}x{before.shape[0]}{where}): before | {afters}"
            draw = ImageDraw.Draw(picture)
            draw.rectangle((0, 0, 8 + 6 * len(label), 15), fill=(0, 0, 0))
            draw.text((4, 2), label, fill=(255, 255, 255))
            rows.append(np.asarray(picture))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, quality=92)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Before/after crops at 100% zoom of real rainy photos, derained as the service does by default.

    .venv/bin/python docs/make_real_grid.py --model models/mspfn-lite.onnx --out docs/real-grid.jpg

Each photo goes through the `derain` CLI's local backend (the service's own Derainer, default settings:
scale=auto, default tiling); each row is a crop of the original beside the same crop of the result,
pixel for pixel (no resizing), with the photo's name and size.
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


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    w, h = min(size[0], width), min(size[1], height)
    top, left = (height - h) // 2, (width - w) // 2
    cell = np.zeros((size[1], size[0], 3), np.uint8)
    cell[:h, :w] = image[top : top + h, left : left + w]
    return cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--out", type=Path, default=Path("docs/real-grid.jpg"))
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="names in RealSIRR147/rain")
    args = parser.parse_args(argv)
    derain = Path(sys.executable).with_name("derain")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sources = [REAL / f"{name}.jpg" for name in args.photos]
        command = [
            str(derain),
            *map(str, sources),
            "-o",
            folder,
            "--format",
            "png",
            "--model",
            str(args.model),
        ]
        subprocess.run(command, check=True)
        for source in sources:
            before = np.asarray(Image.open(source).convert("RGB"))
            after = np.asarray(Image.open(Path(folder) / f"{source.stem}.png").convert("RGB"))
            row = np.concatenate([centre_crop(before, CROP), centre_crop(after, CROP)], axis=1)
            picture = Image.fromarray(row)
            label = f"{source.name} ({before.shape[1]}x{before.shape[0]}): before | after"
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

"""Render docs/page.png for the README: the page after deraining a real rainy photo, in headless Chromium.

    .venv/bin/python -m tests.e2e.make_screenshot --model models/mspfn-lite.onnx

Starts `python -m service` with the model, uploads the photo through the page, waits for the result and
saves a palette PNG (256 colours) small enough to commit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

from tests.e2e.e2e_harness import REPO, chromium, find_chromium, running_service

MAX_BYTES = 300 * 1024
PHOTO = REPO.parent / "shared" / "data" / "real" / "RealSIRR147" / "rain" / "130.jpg"  # 600x337


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "mspfn-lite.onnx")
    parser.add_argument("--photo", type=Path, default=PHOTO, help="a rainy photo to upload")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "page.png")
    parser.add_argument("--width", type=int, default=960, help="browser viewport width, px")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None or not args.photo.is_file() or not args.model.is_file():
        parser.error("needs a Chromium on PATH, a --photo and an exported --model")
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "page.png"
        with (
            running_service(args.model, Path(scratch) / "service.log") as url,
            chromium(executable, Path(scratch) / "profile", width=args.width, height=700) as context,
        ):
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(url)
            page.set_input_files("#file", args.photo)
            page.wait_for_function("document.getElementById('after').naturalWidth > 0", timeout=120_000)
            page.screenshot(path=shot, full_page=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(args.out, optimize=True)
    size = args.out.stat().st_size
    print(f"{args.out}: {size // 1024} KB")
    return 0 if size <= MAX_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())

"""Working scale through HTTP, as users get it: quality on Rain12 x1..x4, speed on a large real photo.

    python -m benchmarks.scale_http --url http://127.0.0.1:8000 --sets ../shared/data/val/Rain12 \\
        data/val/Rain12-x2 data/val/Rain12-x3 data/val/Rain12-x4 --scales auto 1
    python -m benchmarks.scale_http --url http://127.0.0.1:8000 \\
        --photo ../shared/data/real/RealSIRR147/rain/91.jpg --scales auto 1

Quality: every rainy image of every set is POSTed (PNG, raw body) at each --scales value; the answer
is scored against the clean image (Y-PSNR, MSPFN protocol) and the gain over the input is compared with
the native set's gain at auto (the first --sets entry). Speed: the photo is POSTed at each scale in
turn, --repeats times, alternating, so the ratio of medians is taken under the same machine load.
Prints one JSON object per line and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from mspfn.data import load_pairs
from mspfn.metrics import psnr_y


def post(url: str, data: bytes, scale: str, media: str = "image/png") -> tuple[bytes, dict[str, str], float]:
    query = "" if scale == "auto" else f"?scale={scale}"
    request = urllib.request.Request(
        f"{url.rstrip('/')}/derain{query}", data=data, headers={"Content-Type": media}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as response:
        body = response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
    return body, headers, time.perf_counter() - started


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def quality(url: str, sets: list[str], scales: list[str]) -> list[dict]:
    rows = []
    for folder in sets:
        pairs = load_pairs(folder)
        for scale in scales:
            psnrs, inputs, factors, seconds = [], [], [], []
            for pair in pairs:
                body, headers, took = post(url, png_bytes(pair.rain), scale)
                output = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
                psnrs.append(psnr_y(output, pair.clean))
                inputs.append(psnr_y(pair.rain, pair.clean))
                factors.append(float(headers["x-derain-scale"]))
                seconds.append(took)
            row = {
                "set": Path(folder).name,
                "scale": scale,
                "images": len(pairs),
                "input_psnr": float(np.mean(inputs)),
                "psnr": float(np.mean(psnrs)),
                "gain": float(np.mean(psnrs) - np.mean(inputs)),
                "factors_used": sorted(set(factors)),
                "seconds": round(float(np.sum(seconds)), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def speed(url: str, photo: Path, scales: list[str], repeats: int, save: Path | None = None) -> list[dict]:
    data = photo.read_bytes()
    media = "image/jpeg" if photo.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    times: dict[str, list[float]] = {scale: [] for scale in scales}
    used: dict[str, str] = {}
    for _ in range(repeats):
        for scale in scales:  # alternating: both see the same background load
            body, headers, took = post(url, data, scale, media)
            times[scale].append(took)
            used[scale] = headers["x-derain-scale"]
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{photo.stem}-scale-{scale}{photo.suffix}").write_bytes(body)
    rows = []
    reference = statistics.median(times[scales[-1]])
    for scale in scales:
        median = statistics.median(times[scale])
        row = {
            "photo": photo.name,
            "scale": scale,
            "factor_used": used[scale],
            "median_s": round(median, 2),
            "runs_s": [round(t, 2) for t in times[scale]],
            f"speedup_vs_scale_{scales[-1]}": round(reference / median, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    if "photo" in rows[0]:
        keys = list(rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
        return "\n".join(lines)
    native = next((r["gain"] for r in rows if r["scale"] == "auto"), rows[0]["gain"])
    lines = ["| set | scale | input dB | output dB | gain dB | share of native gain | factors used |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        factors = ", ".join(f"{f:g}" for f in r["factors_used"])
        lines.append(
            f"| {r['set']} | {r['scale']} | {r['input_psnr']:.2f} | {r['psnr']:.2f} | {r['gain']:+.2f} "
            f"| {100 * r['gain'] / native:.0f}% | {factors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_http", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--sets", nargs="*", default=[])
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--scales", nargs="+", default=["auto", "1"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write the photo's answers here (NAME-scale-S.ext)")
    args = parser.parse_args(argv)
    if args.sets:
        print(table(quality(args.url, args.sets, args.scales)))
    if args.photo:
        print(table(speed(args.url, args.photo, args.scales, args.repeats, args.save)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which working scale, which upsampling, which auto rule: measured on Rain12 x1..x4 with the ONNX model.

    python -m benchmarks.scale_study --model models/mspfn-lite.opt.onnx \
        --out benchmarks/results/scale_study.jsonl
    python -m benchmarks.scale_study --report benchmarks/results/scale_study.jsonl

The first form calls the model directly (ONNX Runtime, CPU): for every image of every set and every
factor of --factors it derains at that working scale (service.core.pipeline.scale: shrink, model,
restore), with bicubic and with guided upsampling of the rain layer (a few radius/eps settings),
plus coarse-to-fine runs, and writes one JSON line per image with each variant's Y-PSNR against the
clean image (MSPFN protocol, output rounded to uint8), what streak_width reads from the image, and the
predicted rain energy at each factor. The second form turns those lines into the tables of the README:
gain over the input per method and set, and the gain each auto rule gets.

Sets: Rain12 and the enlarged copies `make rain12-enlarged` writes (data/val/Rain12-x2, -x3, -x4).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mspfn.data import load_pairs
from mspfn.metrics import psnr_y, to_uint8
from service.core.pipeline import scale as sc

Model = Callable[[np.ndarray], np.ndarray]  # (3, h, w) -> (3, h, w), any size
DEFAULT_SETS = ("../shared/data/val/Rain12", "data/val/Rain12-x2", "data/val/Rain12-x3", "data/val/Rain12-x4")
DEFAULT_FACTORS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
GUIDED_VARIANTS = ((1, 1e-4), (1, 1e-3), (1, 1e-2), (2, 1e-3), (4, 1e-3))
WHOLE_PIXELS = 1_300_000  # above this, the study tiles the working image (512 px tiles, 32 px overlap)


def onnx_model(path: Path) -> Model:
    import onnxruntime as ort

    from service.core.pipeline import plan_grid, split, stitch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    multiple = int(meta.get("pad_multiple", "8"))

    def whole(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[1:]
        pad = ((0, 0), (0, -height % multiple), (0, -width % multiple))
        padded = np.pad(image, pad, mode="symmetric" if min(height, width) < multiple else "reflect")
        (output,) = session.run(["output"], {"input": np.ascontiguousarray(padded[None], np.float32)})
        return output[0, :, :height, :width]

    def run(image: np.ndarray) -> np.ndarray:
        if image.shape[1] * image.shape[2] <= WHOLE_PIXELS:
            return whole(image)
        grid = plan_grid(image.shape[1], image.shape[2], 512, 32, multiple)
        return stitch([whole(np.ascontiguousarray(tile)) for tile in split(image, grid)], grid)

    return run


def score(output: np.ndarray, clean: np.ndarray) -> float:
    return psnr_y(to_uint8(output.transpose(1, 2, 0)), clean)


def study_image(model: Model, rain: np.ndarray, clean: np.ndarray, factors: tuple[float, ...]) -> dict:
    rgb = np.ascontiguousarray(rain.transpose(2, 0, 1), np.float32) / 255.0
    row: dict = {"input": psnr_y(rain, clean), "streak_width": sc.streak_width(rgb), "factors": {}}
    stages: dict[float, np.ndarray] = {}
    for factor in factors:
        small = sc.shrink(rgb, factor)
        started = time.perf_counter()
        derained = model(small)
        seconds = time.perf_counter() - started
        rain_layer = small - derained
        entry = {
            "model_s": round(seconds, 3),
            "rain_energy": float(np.mean(rain_layer**2)),
            "rain_mean": float(np.mean(rain_layer)),
            "bicubic": score(sc.restore(rgb, small, derained, factor, "bicubic"), clean),
        }
        if factor != 1:
            for radius, eps in GUIDED_VARIANTS:
                full = np.clip(rgb - sc.guided_upsample(rain_layer, small, rgb, radius, eps), 0, 1)
                entry[f"guided_r{radius}_e{eps:g}"] = score(full, clean)
        stages[factor] = sc.restore(rgb, small, derained, factor, "guided")
        row["factors"][str(factor)] = entry
    # coarse-to-fine: derain at 2f, then the result again at f (for f in the set's own factor's family)
    coarse: dict[str, float] = {}
    for fine in factors:
        top = 2 * fine
        if top in stages:
            first = stages[top]
            small = sc.shrink(first, fine)
            second = sc.restore(first, small, model(small), fine, "guided")
            coarse[f"{top:g}>{fine:g}"] = score(second, clean)
    row["coarse_to_fine"] = coarse
    return row


def run_study(
    model_path: Path, sets: list[str], factors: tuple[float, ...], out: Path, limit: int | None
) -> None:
    model = onnx_model(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()  # (set, image) already in `out`: a rerun resumes
    if out.exists():
        done = {(r["set"], r["image"]) for r in map(json.loads, out.read_text().splitlines()) if r}
    with out.open("a") as sink:
        for folder in sets:
            for pair in load_pairs(folder, limit):
                if (Path(folder).name, pair.name) in done:
                    continue
                started = time.perf_counter()
                row = study_image(model, pair.rain, pair.clean, factors)
                row.update(set=Path(folder).name, image=pair.name, size=list(pair.rain.shape[:2]))
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(f"{folder} {pair.name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _best_fixed(rows: list[dict], key: str) -> tuple[str, float]:
    means = {f: np.mean([r["factors"][f][key] - r["input"] for r in rows]) for f in rows[0]["factors"]}
    best = max(means, key=lambda f: means[f])
    return best, float(means[best])


def gain_at(row: dict, factor: float, key: str = "bicubic") -> float:
    """A row's gain (dB) at the measured factor nearest to `factor`, with upsampling `key`."""
    factors = list(row["factors"])
    nearest = factors[int(np.argmin([abs(float(f) - factor) for f in factors]))]
    entry = row["factors"][nearest]
    return float((entry["bicubic"] if nearest == "1.0" else entry[key]) - row["input"])


def energy_argmax(row: dict) -> float:
    """The factor at which the model predicted the most rain (mean squared rain layer, working px)."""
    factors = list(row["factors"])
    return float(factors[int(np.argmax([row["factors"][f]["rain_energy"] for f in factors]))])


def rule_cell(group: list[dict], pick: Callable[[dict], float]) -> str:
    """Mean gain of a rule's pick per image, bicubic / guided r1 e1e-3."""
    return "/".join(
        f"{np.mean([gain_at(r, pick(r), key) for r in group]):+.2f}"
        for key in ("bicubic", "guided_r1_e0.001")
    )


def report(path: Path, reference_width: float) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_set: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_set[row["set"]].append(row)
    methods = ["bicubic", *(f"guided_r{r}_e{e:g}" for r, e in GUIDED_VARIANTS)]
    lines = []
    for name, group in by_set.items():
        factors = list(group[0]["factors"])
        base = np.mean([r["input"] for r in group])
        lines.append(f"{name}: {len(group)} images, input {base:.2f} dB; gain over the input (dB)")
        lines.append("")
        lines.append("| method | " + " | ".join(f"s={float(f):g}" for f in factors) + " |")
        lines.append("|---" * (1 + len(factors)) + "|")
        for method in methods:
            cells = []
            for factor in factors:
                key = "bicubic" if factor == "1.0" else method
                cells.append(f"{np.mean([r['factors'][factor][key] - r['input'] for r in group]):+.2f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        energy = [np.mean([r["factors"][f]["rain_energy"] for r in group]) for f in factors]
        lines.append("| rain energy x1e4 | " + " | ".join(f"{1e4 * e:.2f}" for e in energy) + " |")
        width = np.median([r["streak_width"] for r in group])
        lines.append("")
        lines.append(f"median streak_width {width:.2f} px")
        lines.append("")
    lines.append(
        "Auto rules, gain (dB) with bicubic / guided r1 e1e-3 at the factor each picks (nearest measured):"
    )
    lines.append("")
    lines.append(
        "| set | best fixed | oracle per image | size rule | streak rule | energy argmax | coarse-to-fine |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for name, group in by_set.items():
        factors = list(group[0]["factors"])
        values = [float(f) for f in factors]
        fixed = {v: np.mean([gain_at(r, v) for r in group]) for v in values}
        best = max(fixed, key=lambda v: fixed[v])
        oracle = np.mean([max(gain_at(r, v) for v in values) for r in group])
        size = rule_cell(group, lambda r: sc.auto_candidates(*r["size"])[0])  # auto before its probe
        streak = rule_cell(group, lambda r: max(1.0, r["streak_width"] / reference_width))
        energy = rule_cell(group, energy_argmax)
        c2f = {
            k: np.mean([r["coarse_to_fine"][k] - r["input"] for r in group])
            for k in group[0]["coarse_to_fine"]
        }
        c2f_text = ", ".join(f"{k}: {v:+.2f}" for k, v in c2f.items())
        lines.append(
            f"| {name} | s={best:g} {fixed[best]:+.2f} | {oracle:+.2f} | {size} | {streak} | {energy}"
            f" | {c2f_text} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_study", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.opt.onnx"))
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    parser.add_argument("--factors", type=float, nargs="+", default=list(DEFAULT_FACTORS))
    parser.add_argument("--limit", type=int, help="first N images of each set")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_study.jsonl"))
    parser.add_argument("--report", type=Path, help="print the tables of a finished study instead")
    parser.add_argument("--reference-width", type=float, default=sc.REFERENCE_STREAK_WIDTH)
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report, args.reference_width))
        return 0
    if any(not math.isfinite(f) or f < 1 for f in args.factors):
        parser.error("--factors are numbers >= 1")
    run_study(args.model, args.sets, tuple(args.factors), args.out, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

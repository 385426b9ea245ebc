"""Publish a run's best checkpoint as shipped weights with a model card.

    python -m mspfn.publish --run runs/lite --name mspfn-lite

Copies RUN/best.safetensors to weights/NAME.safetensors, scores it with `python -m mspfn.evaluate` on the
validation set, and writes weights/NAME.json: preset, hyper-parameters, parameters, MACs/pixel, data,
steps, wall time, hardware, and the measured PSNR/SSIM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from mspfn.checkpoint import file_sha256, load_model, read_metadata
from mspfn.complexity import macs_per_pixel
from mspfn.model import count_parameters


def hardware() -> str:
    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, no GPU"


def evaluate(weights: Path, data: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "mspfn.evaluate", "--model", str(weights), "--data", str(data)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    result["command"] = f"python -m mspfn.evaluate --model {weights} --data {data}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.publish", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run folder")
    parser.add_argument("--name", required=True, help="weights/NAME.safetensors + weights/NAME.json")
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    parser.add_argument("--train-data", default="../shared/data/train/RainTrainL")
    parser.add_argument("--val", type=Path, default=Path("../shared/data/val/Rain12"))
    parser.add_argument("--hardware", default=None, help="where it was trained (default: this machine)")
    args = parser.parse_args(argv)

    target = args.weights_dir / f"{args.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "best.safetensors", target)
    model, metadata = load_model(target)
    training = json.loads(metadata.get("training", "{}"))
    last = json.loads(read_metadata(args.run / "last.safetensors")["training"])
    card = {
        "name": args.name,
        "file": target.name,
        "sha256": file_sha256(target),
        "preset": metadata["preset"],
        "config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "macs_per_pixel": round(macs_per_pixel(model)),  # at a 256x256 tile
        "train_data": f"{args.train_data} (200 pairs, Rain100L training split)",
        "recipe": "random 64x64 crops, 8 dihedral transforms per sample, batch 8, Adam, L2 warm-up "
        "then Charbonnier + 0.05 x Laplacian-edge Charbonnier, linear warm-up + cosine decay; "
        "see runs/lite/log.jsonl",
        "steps": training.get("step"),
        "steps_run_so_far": last["step"],
        "wall_time_s": training.get("seconds"),
        "hardware": args.hardware or hardware(),
        "validation": evaluate(target, args.val),
        "published": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    card_path = target.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["validation"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

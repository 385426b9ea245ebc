"""Publish a run's best checkpoint as shipped weights with a model card.

    python -m mspfn.publish --run runs/lite --name mspfn-lite

Copies RUN/best.safetensors to weights/NAME.safetensors, scores it with `python -m mspfn.evaluate` on the
validation set, and writes weights/NAME.json: preset, hyper-parameters, parameters, MACs/pixel, data,
steps, wall time, hardware, and the measured PSNR/SSIM.

A run that started from earlier weights (`train --init`) is one stage of a longer training: with
`--init-card CARD` (the card of those weights; read before it is overwritten) the new card lists every
stage, and `steps` and `wall_time_s` are the totals over the stages.

`--run` given more than once publishes a model soup (Wortsman et al. 2022): the uniform average of the
runs' best checkpoints, which must be fine-tunes of one model. The soup is one stage; its steps and wall
time are the runs' sums (the compute they took), and its recipe describes each run.

    python -m mspfn.publish --run runs/wide-50 --run runs/wide-35 --name mspfn-lite --init-card card.json
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

from mspfn.checkpoint import average_weights, file_sha256, load_model, read_metadata, save_model
from mspfn.complexity import macs_per_pixel
from mspfn.model import Network, count_parameters

DEFAULT_VAL = Path("../shared/data/val/Rain12")  # what a card is scored on when no --val is given


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


def describe(run_args: dict[str, object], run: Path) -> str:
    """The recipe in words, from a run's recorded command line."""
    if not run_args:
        return f"see {run}/log.jsonl"
    init = run_args.get("init") or []
    inits = [init] if isinstance(init, str) else [str(path) for path in init]  # type: ignore[attr-defined]
    if len(inits) > 1:
        start = f"from the average of {' and '.join(inits)} (a model soup)"
    else:
        start = f"from {inits[0]}" if inits else "from scratch"
    grown_from = _preset_of(inits[0]) if inits else None
    if grown_from is not None and grown_from != run_args.get("preset"):
        grown = f"a {grown_from} checkpoint grown into {run_args['preset']}"
        start += f" ({grown}: the extra RCABs start as identities)"
    scale = run_args.get("scale") or [1.0, 1.0]
    rescaled = f", rescaled {scale[0]}-{scale[1]}x (log-uniform)" if scale[0] != scale[1] else ""  # type: ignore[index]
    parts = [
        f"{start}: random {run_args['patch']}x{run_args['patch']} crops{rescaled} with one of 8 dihedral "
        "transforms",
        f"batch {run_args['batch']}, Adam, peak lr {run_args['lr']} with {run_args['warmup']} warm-up steps "
        f"and cosine decay to {run_args['lr_min']} at step {run_args['steps']}",
    ]
    if int(str(run_args.get("attention_window", 0))) > 0:
        parts.append(f"channel attention over a {run_args['attention_window']} px window of the input")
    if run_args.get("synth"):
        share = run_args["synth_weight"] if run_args.get("train") else 1.0
        parts.append(
            f"{share} of the patches synthetic: recipe '{run_args['recipe']}' (mspfn.synthrain) rendered on "
            "the fly on the training part of the clean photos"
        )
    if int(str(run_args.get("l2_warmup", 0))) > 0:
        parts.append(f"L2 loss for the first {run_args['l2_warmup']} steps")
    parts.append("then Charbonnier + 0.05 x Laplacian-edge Charbonnier")
    if float(str(run_args.get("ema", 0))) > 0:
        parts.append(f"weights averaged (EMA {run_args['ema']}), the average validated and kept")
    return "; ".join(parts) + f"; curve in {run}/log.jsonl"


def _preset_of(path: str) -> str | None:
    """The preset a checkpoint records, or None when it is not on this machine."""
    return read_metadata(path).get("preset") if Path(path).is_file() else None


def previous_stages(card: dict[str, object]) -> list[dict[str, object]]:
    """The stages of an earlier card (a card from before stages were recorded counts as one)."""
    stages = card.get("stages")
    if isinstance(stages, list):
        return stages
    return [
        {
            "run": card.get("run"),
            "init": None,
            "recipe": card.get("recipe"),
            "steps": card.get("steps"),
            "steps_run": card.get("steps_run_so_far"),
            "wall_time_s": card.get("wall_time_s"),
            "hardware": card.get("hardware"),
        }
    ]


def train_data(run_args: dict[str, object]) -> str:
    """The data a run trained on, in words, from its recorded command line."""
    paired = [f"{folder} (pairs)" for folder in run_args.get("train") or []]  # type: ignore[attr-defined]
    synth = [
        f"{folder} (training part, 9 of 10 photos; rain rendered on the fly)"
        for folder in run_args.get("synth") or []  # type: ignore[attr-defined]
    ]
    return " + ".join(paired + synth)


def evaluate(weights: Path, data: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "mspfn.evaluate", "--model", str(weights), "--data", str(data)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    result["command"] = f"python -m mspfn.evaluate --model {weights} --data {data}"
    return result


def file_entries(name: str, target: Path, model: Network, preset: str) -> dict[str, object]:
    """What a card says first: its name, the weights file and its hash, the network and its cost."""
    return {
        "name": name,
        "file": target.name,
        "sha256": file_sha256(target),
        "preset": preset,
        "config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "macs_per_pixel": round(macs_per_pixel(model)),  # at a 256x256 tile
    }


def score_entries(target: Path, val_sets: list[Path]) -> dict[str, object]:
    """What a card says last: the file's scores by the evaluate CLI on each set (the first is the card's
    `validation`), and when it was published."""
    scores = {folder.name: evaluate(target, folder) for folder in val_sets}
    return {
        "validation": scores[val_sets[0].name],
        "validation_sets": scores,
        "published": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def last_step(run: Path) -> int:
    """How far the run went: its `last` checkpoint's step, or, where only `best` and the log were kept
    (a finished run's training state need not be), the log's last validated step."""
    last = run / "last.safetensors"
    if last.exists():
        return int(json.loads(read_metadata(last)["training"])["step"])
    lines = (run / "log.jsonl").read_text().splitlines()
    return max(int(json.loads(line)["step"]) for line in lines if line.strip())


def write_soup(runs: list[Path], target: Path) -> None:
    """Average the runs' best checkpoints into TARGET, recording each run's training position and
    arguments (the first run's arguments stand for the soup's data)."""
    loaded = [load_model(run / "best.safetensors") for run in runs]
    configs = {json.dumps(model.config.to_dict(), sort_keys=True) for model, _ in loaded}
    presets = {metadata["preset"] for _, metadata in loaded}
    if len(configs) > 1 or len(presets) > 1:
        raise SystemExit("a soup needs runs of one architecture: " + ", ".join(map(str, runs)))
    model = loaded[0][0]
    model.load_state_dict(average_weights([m.state_dict() for m, _ in loaded]))
    trainings = [json.loads(metadata.get("training", "{}")) for _, metadata in loaded]
    training = {
        "step": sum(int(t.get("step") or 0) for t in trainings),
        "seconds": round(sum(float(t.get("seconds") or 0) for t in trainings), 1),
        "soup": [
            {
                "run": str(run),
                "step": t.get("step"),
                "seconds": t.get("seconds"),
                "args": json.loads(m.get("args", "{}")),
            }
            for run, t, (_, m) in zip(runs, trainings, loaded, strict=True)
        ],
    }
    extra = {"training": json.dumps(training), "args": loaded[0][1].get("args", "{}")}
    save_model(target, model, presets.pop(), extra=extra)


def describe_soup(training: dict[str, object]) -> str:
    members = training["soup"]
    assert isinstance(members, list)
    parts = [
        f"{member['run']} at step {member['step']} ({describe(member['args'], Path(member['run']))})"
        for member in members
    ]
    return f"the uniform average (a model soup) of the best checkpoints of {len(parts)} runs: " + "; ".join(
        f"[{index + 1}] {part}" for index, part in enumerate(parts)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.publish", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        required=True,
        help="training run folder (repeat it to publish the average of several runs' bests)",
    )
    parser.add_argument("--name", required=True, help="weights/NAME.safetensors + weights/NAME.json")
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    parser.add_argument(
        "--train-data", help="what it trained on, in words (default: from the run's arguments)"
    )
    parser.add_argument(
        "--val",
        type=Path,
        action="append",
        help="paired folder to score it on (repeatable; the first is the card's `validation`; "
        "default ../shared/data/val/Rain12)",
    )
    parser.add_argument("--hardware", default=None, help="where it was trained (default: this machine)")
    parser.add_argument("--init-card", type=Path, help="card of the weights the run started from")
    parser.add_argument("--recipe", help="how the run trained (default: from the run's recorded arguments)")
    args = parser.parse_args(argv)
    earlier = json.loads(args.init_card.read_text()) if args.init_card else None

    target = args.weights_dir / f"{args.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(args.run) > 1:
        write_soup(args.run, target)
    else:
        shutil.copyfile(args.run[0] / "best.safetensors", target)
    model, metadata = load_model(target)
    training = json.loads(metadata.get("training", "{}"))
    steps_run = sum(last_step(run) for run in args.run)
    run_args = json.loads(metadata.get("args", "{}"))
    if args.recipe:
        recipe = args.recipe
    elif "soup" in training:
        recipe = describe_soup(training)
    else:
        recipe = describe(run_args, args.run[0])
    stage = {
        "run": " + ".join(map(str, args.run)),
        "init": str(earlier["file"]) if earlier else None,
        "recipe": recipe,
        "steps": training.get("step"),
        "steps_run": steps_run,
        "wall_time_s": training.get("seconds"),
        "hardware": args.hardware or hardware(),
    }
    stages = [*previous_stages(earlier), stage] if earlier else [stage]
    card = {
        **file_entries(args.name, target, model, metadata["preset"]),
        "train_data": args.train_data or train_data(run_args),
        "recipe": recipe,
        "steps": sum(int(s["steps"] or 0) for s in stages),
        "wall_time_s": round(sum(float(s["wall_time_s"] or 0) for s in stages), 1),
        "hardware": stage["hardware"],
        "stages": stages,
        **score_entries(target, args.val or [DEFAULT_VAL]),
    }
    card_path = target.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["validation"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

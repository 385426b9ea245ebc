"""Train MSPFN on paired folders; resumes from OUT/last.safetensors when it exists.

    python -m mspfn.train --preset lite --train ../shared/data/train/RainTrainL \
        --val ../shared/data/val/Rain12 --out runs/lite --steps 16000

Mixed training: `--synth CLEAN_DIR` adds pairs rendered on the fly (rain of `--recipe` on the training
part of those clean photos; the held-out part is for validation, see mspfn.synthrain.split_clean),
drawn for a `--synth-weight` share of the patches; `--scale 0.5 2` rescales every crop at random.
`--val` may be given once per validation set: each is scored and logged, and `best` is the checkpoint
with the best mean PSNR over the sets.

OUT gets `last.safetensors` (weights + Adam state + position, written at every validation and on exit),
`best.safetensors` (best validation PSNR so far), and `log.jsonl` (one line per validation).
With `--ema D` (default 0.999) an exponential moving average of the weights is kept beside the raw ones;
it is what validation scores and what `best` holds (the usual practice of image-restoration training:
the average is smoother than any single step's weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from mspfn.checkpoint import average_weights, load_model, load_tensors, read_metadata, save_model
from mspfn.data import MixedSampler, PatchSampler, RainMaker, SynthSampler, load_pairs, load_rgb
from mspfn.evaluate import model_predictor, score
from mspfn.losses import l2_loss, mspfn_loss
from mspfn.model import MSPFN, grow_state, preset
from mspfn.synthrain import clean_images, recipe_named, render, split_clean


@dataclass
class Schedule:
    """Linear warm-up, then cosine decay from `peak` to `floor` at step `total` (constant after)."""

    peak: float
    floor: float
    warmup: int
    total: int

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + 0.5 * (self.peak - self.floor) * (1 + math.cos(math.pi * progress))


def train_step(
    model: MSPFN,
    optimizer: torch.optim.Optimizer,
    rain: torch.Tensor,
    clean: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mspfn_loss,
) -> float:
    """One optimisation step on a batch (NCHW, [0, 1]); bf16 autocast on CUDA. Returns the loss."""
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if rain.is_cuda else nullcontext()
    with autocast:
        output = model(rain)
    loss = loss_fn(output.float(), clean)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def ema_of(model: MSPFN, decay: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights (buffers copied, not averaged)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def save_training_state(
    path: Path,
    model: MSPFN,
    optimizer: torch.optim.Optimizer,
    preset_name: str,
    position: dict,
    ema: AveragedModel | None = None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    if ema is not None:
        for key, value in ema.module.state_dict().items():
            tensors[f"ema.{key}"] = value.detach().cpu().contiguous()
        tensors["ema_n_averaged"] = ema.n_averaged.detach().cpu().reshape(1).float()
    for index, param in enumerate(model.parameters()):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"optimizer.{index}.{key}"] = state[key].detach().cpu().contiguous()
        if "step" in state:
            tensors[f"optimizer.{index}.step"] = torch.as_tensor(state["step"]).reshape(1).float().cpu()
    save_model(path, model, preset_name, {"training": json.dumps(position)}, tensors)


def load_training_state(
    path: Path, model: MSPFN, optimizer: torch.optim.Optimizer, ema: AveragedModel | None = None
) -> dict:
    """Restore weights, Adam state (and the EMA) in place; returns the saved position (step, best, ...).

    A checkpoint written without an EMA starts the average from the restored weights.
    """
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_tensors(path, "model.").items()})
    if ema is not None:
        averaged = load_tensors(path, "ema.")
        if averaged:
            ema.module.load_state_dict({k: v.to(device) for k, v in averaged.items()})
            count = load_tensors(path, "ema_n_averaged")[""]
            ema.n_averaged.fill_(int(count.item()))
        else:
            ema.module.load_state_dict(model.state_dict())
            ema.n_averaged.fill_(1)
    saved = load_tensors(path, "optimizer.")
    for index, param in enumerate(model.parameters()):
        if f"{index}.exp_avg" in saved:
            optimizer.state[param] = {
                "step": saved[f"{index}.step"].reshape(()),
                "exp_avg": saved[f"{index}.exp_avg"].to(device),
                "exp_avg_sq": saved[f"{index}.exp_avg_sq"].to(device),
            }
    return json.loads(read_metadata(path)["training"])


def validate(model: MSPFN, pairs: list) -> dict[str, float | int]:
    return score(model_predictor(model), pairs, progress=False)


def rain_maker(recipe: str) -> RainMaker:
    """Rain of a named recipe (a mixture draws its member per patch) for SynthSampler."""

    def make(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return render(clean, rng, recipe_named(recipe, rng))[0]

    return make


def build_sampler(args: argparse.Namespace, seed: int) -> PatchSampler | MixedSampler:
    """Patches from the paired folders, mixed with synthetic pairs when `--synth` is given."""
    scale = (float(args.scale[0]), float(args.scale[1]))
    low, high = args.pair_scale or args.scale
    pair_scale = (float(low), float(high))
    pairs = [pair for folder in args.train or [] for pair in load_pairs(folder)]
    real = PatchSampler(pairs, args.patch, seed=seed, scale=pair_scale) if pairs else None
    if not args.synth:
        if real is None:
            raise SystemExit("nothing to train on: give --train and/or --synth")
        return real
    files = [f for folder in args.synth for f in split_clean(clean_images(folder))[0]]
    images = [image for image in map(load_rgb, files) if min(image.shape[:2]) >= args.patch]
    synth = SynthSampler(images, args.patch, rain_maker(args.recipe), seed=seed + 1, scale=scale)
    sources: list = [(synth, args.synth_weight)]
    if real is not None:
        sources.append((real, 1.0 - args.synth_weight))
    return MixedSampler(sources, seed=seed + 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mspfn.train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset",
        default="lite",
        help="network preset: lite, lite-133 (an --init of lite grows into it), paper, paper-133",
    )
    parser.add_argument(
        "--attention-window", type=int, default=0, metavar="PX",
        help="channel attention over a PX-wide window of the input instead of the whole image (0: "
        "global, the paper's); a window makes tiled and whole-image output agree",
    )  # fmt: skip
    parser.add_argument("--train", type=Path, action="append", help="paired folder (repeatable)")
    parser.add_argument(
        "--synth", type=Path, action="append", help="clean photos to render rain on (repeatable)"
    )
    parser.add_argument("--recipe", default="mixed", help="synthetic rain recipe (mspfn.synthrain.RECIPES)")
    parser.add_argument(
        "--synth-weight", type=float, default=0.7, help="share of patches that are synthetic (with --train)"
    )
    parser.add_argument(
        "--scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
        help="crops rescaled by a factor drawn log-uniformly from this range (e.g. 0.5 2)",
    )  # fmt: skip
    parser.add_argument(
        "--pair-scale", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="the same range for the --train pairs only (default: --scale); 1 1 keeps them at the "
        "scale their rain was rendered at",
    )  # fmt: skip
    parser.add_argument(
        "--val", type=Path, action="append", required=True, help="paired validation folder (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    parser.add_argument("--steps", type=int, default=16000, help="total steps (end of the cosine decay)")
    parser.add_argument("--batch", type=int, default=8, help="patches per step")
    parser.add_argument("--patch", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (Adam)")
    parser.add_argument("--lr-min", type=float, default=1e-6, help="learning rate at the end of the decay")
    parser.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    parser.add_argument(
        "--l2-warmup",
        type=int,
        default=1500,
        help="steps trained with L2 before MSPFN's Charbonnier loss (from scratch, an L1-like loss "
        "collapses to the identity: the median of a sparse rain residual is zero)",
    )
    parser.add_argument("--val-every", type=int, default=500, help="validate and checkpoint every K steps")
    parser.add_argument("--val-limit", type=int, help="validate on the first N pairs only")
    parser.add_argument(
        "--ema",
        type=float,
        default=0.999,
        help="decay of the weight average that is validated and kept as `best` (0: no average)",
    )
    parser.add_argument(
        "--init", type=Path, action="append",
        help="start a fresh run from these weights (.safetensors); given twice or more, from their "
        "average (a model soup: fine-tunes of one model average well)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which background shells ignore) stop training after saving `last`.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _train(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = dataclasses.replace(preset(args.preset), attention_window=args.attention_window)
    model = MSPFN(config).to(device)
    if args.init:  # weights only: the pooling has none, so a global-attention model starts a windowed one;
        # a lite checkpoint starts a lite-133 network (grow_state: its extra RCABs begin as identities)
        starts = [load_model(path)[0] for path in args.init]
        if not all(isinstance(start, MSPFN) for start in starts):
            raise SystemExit("--init takes single networks; a pair (mspfn.pair) is not trained")
        states = [start.state_dict() for start in starts]
        model.load_state_dict(grow_state(model, average_weights(states)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    ema = ema_of(model, args.ema) if args.ema > 0 else None
    schedule = Schedule(args.lr, args.lr_min, args.warmup, args.steps)
    last, best_path = args.out / "last.safetensors", args.out / "best.safetensors"
    position = {"step": 0, "best_psnr": -1.0, "seconds": 0.0}
    if last.exists():
        position = load_training_state(last, model, optimizer, ema)
        print(f"resumed from {last} at step {position['step']}", file=sys.stderr)
    val_sets = {folder.name: load_pairs(folder, args.val_limit) for folder in args.val}
    sampler = build_sampler(args, seed=args.seed + position["step"])
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("a")
    started, base_seconds = time.perf_counter(), position["seconds"]
    bar = tqdm(
        total=args.steps,
        initial=position["step"],
        file=sys.stderr,
        disable=args.no_progress,
        dynamic_ncols=True,
        unit="step",
    )

    # The command line, recorded in every checkpoint (model cards describe the recipe from it).
    recorded_args = json.dumps(vars(args), default=str)  # paths as strings

    def checkpoint(step: int) -> None:
        nonlocal position
        scored = cast(MSPFN, ema.module) if ema is not None else model
        scores = {name: validate(scored, pairs) for name, pairs in val_sets.items()}
        metrics = {key: float(sum(s[key] for s in scores.values()) / len(scores)) for key in ("psnr", "ssim")}
        seconds = base_seconds + time.perf_counter() - started
        record: dict[str, object] = {
            "step": step,
            "lr": schedule.lr(step),
            "loss": running,
            "seconds": round(seconds, 1),
        }
        record.update({"val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"]})
        if len(scores) > 1:
            record["val"] = {name: {"psnr": s["psnr"], "ssim": s["ssim"]} for name, s in scores.items()}
        if metrics["psnr"] > position["best_psnr"]:
            record["best"] = True
            extra = {"training": json.dumps(record), "args": recorded_args}
            save_model(best_path, scored, args.preset, extra)
        best = max(metrics["psnr"], position["best_psnr"])
        position = {"step": step, "best_psnr": best, "seconds": seconds}
        save_training_state(last, model, optimizer, args.preset, position, ema)
        log.write(json.dumps(record) + "\n")
        log.flush()
        bar.write(json.dumps(record), file=sys.stderr)

    running = float("nan")
    step = int(position["step"])
    try:
        while step < args.steps:
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(step)
            rain, clean = (torch.from_numpy(a).to(device) for a in sampler.sample(args.batch))
            loss_fn = l2_loss if step < args.l2_warmup else mspfn_loss
            loss = train_step(model, optimizer, rain, clean, loss_fn)
            if ema is not None:
                ema.update_parameters(model)
            running = loss if math.isnan(running) else 0.98 * running + 0.02 * loss
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{schedule.lr(step):.2e}")
            if step % args.val_every == 0 or step == args.steps:
                checkpoint(step)
    except KeyboardInterrupt:
        print(f"interrupted at step {step}; saving {last}", file=sys.stderr)
        position["seconds"] = base_seconds + time.perf_counter() - started
        save_training_state(last, model, optimizer, args.preset, {**position, "step": step}, ema)
    bar.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

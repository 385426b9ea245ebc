"""Which factor `scale=auto`'s probe picks, per set and margin: the probe alone, no full derain.

    python -m benchmarks.probe_study --model models/mspfn-lite.onnx \
        --sets ../shared/data/val/Rain12 data/val/Rain12-x2 data/val/Rain12-x4-crop --margins 3 5 10

For every rainy image of each set it cuts the service's probe crops (scale.auto_candidates,
probe_spots, probe_crops), runs them through the model as one batch (ONNX Runtime, CPU), and counts
which factor scale.probe_pick takes at each margin, with streak energy (the default) or the whole rain
layer's energy (`--energy whole`, the first release's measure). Prints one line per set and margin:
the size rule's factor and how many images went to each factor. Sets: `make rain12-enlarged`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mspfn.data import load_pairs
from service.core.pipeline import scale as sc

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


def whole_energy(crops: np.ndarray, derained: np.ndarray, border: int = 8) -> np.ndarray:
    """The first release's measure: the mean squared rain layer, away from the crop border."""
    rain = (crops - derained)[:, :, border:-border, border:-border].astype(np.float64)
    return np.asarray(np.mean(rain**2, axis=(1, 2, 3)))


def picks(
    session: InferenceSession, folder: Path, margins: list[float], measure: sc.Energy
) -> tuple[Counter, list[Counter]]:
    """How many images of the folder have each size-rule factor, and per margin each picked factor."""
    name = session.get_inputs()[0].name
    priors: Counter = Counter()
    chosen: list[Counter] = [Counter() for _ in margins]
    for pair in load_pairs(folder):
        rgb = np.ascontiguousarray(pair.rain.transpose(2, 0, 1), dtype=np.float32) / 255.0
        height, width = rgb.shape[1:]
        prior, factors = sc.auto_candidates(height, width)
        crops = sc.probe_crops(rgb, factors, sc.probe_spots(height, width))
        derained = session.run(None, {name: crops})[0]
        priors[prior] += 1
        for counts, margin in zip(chosen, margins, strict=True):
            counts[sc.probe_pick(prior, factors, crops, derained, margin, measure)] += 1
    return priors, chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_study", description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/mspfn-lite.onnx"))
    parser.add_argument("--sets", type=Path, nargs="+", required=True)
    parser.add_argument("--margins", type=float, nargs="+", default=[sc.PROBE_MARGIN])
    parser.add_argument("--energy", choices=("streak", "whole"), default="streak")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: ONNX Runtime's default)")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    measure = sc.streak_energy if args.energy == "streak" else whole_energy
    for folder in args.sets:
        priors, chosen = picks(session, folder, args.margins, measure)
        rule = ", ".join(f"{sc.format_scale(f)}: {n}" for f, n in sorted(priors.items()))
        for margin, counts in zip(args.margins, chosen, strict=True):
            taken = ", ".join(f"{sc.format_scale(f)}: {n}" for f, n in sorted(counts.items()))
            print(f"{folder.name}  size rule {{{rule}}}  margin {margin:g} ({args.energy}) -> {{{taken}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

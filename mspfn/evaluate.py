"""Score a checkpoint (.safetensors) or an exported model (.onnx) on a paired folder.

    python -m mspfn.evaluate --model weights/mspfn-lite.safetensors --data ../shared/data/val/Rain12

Progress goes to stderr; the last line of stdout is one JSON object with psnr, ssim, images, seconds.

With `--scale auto|1|2|...` (an .onnx model) each image goes through the service's own pipeline
instead (service.core: working scale, tiling or whole image as on the CPU provider, stitching, the rain
layer brought back to full size), so the figures are those of exactly what `POST /derain?scale=...`
and `derain --scale` return for that model on the CPU. Without it the network sees each whole image at
full size (the model card's protocol).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from mspfn.data import Pair, load_pairs
from mspfn.metrics import psnr_y, ssim_y, to_uint8

if TYPE_CHECKING:  # torch stays unimported when only an ONNX model is scored
    from mspfn.model import Network

# HWC float32 RGB [0, 1] -> HWC float32 RGB [0, 1] (any size)
Predictor = Callable[[np.ndarray], np.ndarray]


def model_predictor(model: Network) -> Predictor:
    """Predictor for an in-memory network, on whatever device its weights are (eval mode)."""
    import torch

    from mspfn.model import derain

    device = next(model.parameters()).device
    model.eval()

    def predict(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
            return derain(model, batch)[0].float().cpu().numpy().transpose(1, 2, 0)

    return predict


def torch_predictor(path: Path, threads: int | None = None) -> Predictor:
    import torch

    from mspfn.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    return model_predictor(load_model(path)[0])


def onnx_predictor(path: Path, threads: int | None = None) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    multiple = int(meta.get("pad_multiple", "8"))

    def predict(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        pad = ((0, -height % multiple), (0, -width % multiple), (0, 0))
        padded = np.pad(image, pad, mode="symmetric" if min(height, width) < multiple else "reflect")
        batch = np.ascontiguousarray(padded.transpose(2, 0, 1))[None].astype(np.float32)
        (output,) = session.run(["output"], {"input": batch})
        return output[0].transpose(1, 2, 0)[:height, :width]

    return predict


def service_predictor(
    path: Path, scale: str, threads: int | None = None, second_pass: bool = True
) -> tuple[Predictor, Callable[[], None]]:
    """What the service returns for `scale` (CPU provider, default tiling), as a Predictor: the image is
    handed over as PNG bytes (lossless: the service decodes the very pixels) and derained by the
    service's Derainer, run in this process as `derain` runs it. Returns it and the function that
    releases the pipeline's threads and event loop."""
    import io

    from service.cli.backends import LocalBackend
    from service.core.pipeline.scale import parse_scale
    from service.settings import Settings

    if path.suffix != ".onnx":
        raise ValueError(f"{path}: --scale runs the service pipeline, which takes an .onnx model")
    fields = Settings.model_fields
    backend = LocalBackend.load(
        path,
        ["CPUExecutionProvider"],
        tile_size=fields["tile_size"].default,
        overlap=fields["tile_overlap"].default,
        batch=0,
        threads=threads or 0,
        scale=parse_scale(scale),
        second_pass=second_pass,
    )

    def predict(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
        _, derained = backend.derain_pixels(buffer.getvalue())
        return derained.transpose(1, 2, 0)

    return predict, backend.close


def predictor_for(path: Path, threads: int | None = None) -> Predictor:
    if path.suffix == ".onnx":
        return onnx_predictor(path, threads)
    if path.suffix == ".safetensors":
        return torch_predictor(path, threads)
    raise ValueError(f"{path}: expected a .safetensors checkpoint or an .onnx model")


def score(
    predict: Predictor, pairs: list[Pair], save: Path | None = None, progress: bool = True
) -> dict[str, float | int]:
    """Mean Y-PSNR / Y-SSIM of predict(rainy) against clean, output clipped and rounded to uint8 first."""
    started = time.perf_counter()
    psnrs, ssims, inputs = [], [], []
    for pair in tqdm(pairs, desc="evaluate", file=sys.stderr, disable=not progress):
        output = to_uint8(predict(pair.rain.astype(np.float32) / 255.0))
        psnrs.append(psnr_y(output, pair.clean))
        ssims.append(ssim_y(output, pair.clean))
        inputs.append(psnr_y(pair.rain, pair.clean))
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            Image.fromarray(output).save(save / (Path(pair.name).stem + ".png"))
    return {
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "input_psnr": float(np.mean(inputs)),  # the rainy images themselves: the gain is psnr - this
        "images": len(pairs),
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help=".safetensors checkpoint or .onnx model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/val/Rain12"), help="paired folder")
    parser.add_argument("--save", type=Path, help="write each derained image here as NAME.png")
    parser.add_argument("--limit", type=int, help="score only the first N pairs (sorted by name)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--scale",
        help="score what the service returns at this working scale (auto, or 1 to 8; an .onnx model)",
    )
    parser.add_argument(
        "--no-second-pass",
        dest="second_pass",
        action="store_false",
        help="with --scale auto: as the service with DERAIN_SECOND_PASS=false (one pass above the size cap)",
    )
    args = parser.parse_args(argv)
    if not args.second_pass and args.scale is None:
        parser.error("--no-second-pass needs --scale (it describes the service's pipeline)")
    if args.scale is not None:
        from service.core.pipeline.scale import ScaleError, parse_scale

        try:
            parse_scale(args.scale)
        except ScaleError as error:
            parser.error(f"--scale: {error}")
        predict, close = service_predictor(args.model, args.scale, args.threads, args.second_pass)
    else:
        predict, close = predictor_for(args.model, args.threads), lambda: None
    try:
        scores = score(predict, load_pairs(args.data, args.limit), args.save)
    finally:
        close()
    result = {**scores, "model": str(args.model), "data": str(args.data)}
    if args.scale is not None:
        result["scale"] = args.scale
        result["second_pass"] = args.second_pass
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

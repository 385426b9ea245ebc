"""Export an MSPFN checkpoint to ONNX, refusing to write a file that differs from PyTorch.

The graph: input `input`, output `output`, both (N, 3, H, W) float32 RGB in [0, 1], dynamic N, H and W
(H and W multiples of the `pad_multiple` metadata entry). Metadata (`metadata_props`) carries what the
service checks at start-up; see METADATA_KEYS.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from model_export.rewrite import rewrite_for_cpu
from mspfn.checkpoint import file_sha256, load_model
from mspfn.complexity import macs_per_pixel
from mspfn.model import Network, pad_to_multiple

EXPORTER_VERSION = "1"
DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4  # max |onnx - torch| on [0, 1] images
FP16_MIN_PSNR = 45.0  # dB between the fp16 graph's output and PyTorch's
PARITY_SIZES = ((37, 53), (61, 45))  # odd sizes, padded to the multiple as a caller would
PARITY_BATCH = 2
TRAINING_OPS = {"Dropout", "BatchNormalization", "Gradient", "SoftmaxCrossEntropyLoss"}
METADATA_KEYS = (
    "preset",
    "config",
    "pad_multiple",
    "value_range",
    "layout",
    "weights_sha256",
    "macs_per_pixel",
    "exporter_version",
    "opset",
    "precision",
    "train_short_side",
)
# px, the short side of the images the model learnt rain from (RainTrainL: 481 x 321). The service
# derains at a working scale relative to it (service.core.pipeline.scale); a checkpoint whose metadata
# has its own `train_short_side` passes it on.
DEFAULT_TRAIN_SHORT_SIDE = 321

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The exported graph failed a check; nothing was written."""


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    psnr_db: float

    def to_dict(self) -> dict[str, float]:
        return {"max_abs_diff": self.max_abs_diff, "psnr_db": self.psnr_db}


def _trace(model: Network, path: Path, opset: int) -> None:
    dummy = torch.rand(1, 3, 4 * model.pad_multiple, 4 * model.pad_multiple)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def _to_fp16(graph: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations with fp32 I/O; attention pooling and sigmoid gates stay fp32."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(
        graph,
        keep_io_types=True,
        op_block_list=["GlobalAveragePool", "AveragePool", "ReduceMean", "Sigmoid"],
    )


def parity(model: Network, graph_path: Path, seed: int = 0) -> ParityReport:
    """Compare ONNX Runtime (CPU) with PyTorch on random padded images of odd sizes, batch 2."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst, squared, count = 0.0, 0.0, 0
    for height, width in PARITY_SIZES:
        image = torch.rand(PARITY_BATCH, 3, height, width, generator=generator)
        padded, _ = pad_to_multiple(image, model.pad_multiple)
        with torch.no_grad():
            expected = model(padded).numpy()
        (actual,) = session.run(["output"], {"input": padded.numpy()})
        diff = actual.astype(np.float64) - expected
        worst = max(worst, float(np.abs(diff).max()))
        squared += float((diff**2).sum())
        count += diff.size
    mse = squared / count
    return ParityReport(worst, float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)))


def check_graph(graph: onnx.ModelProto) -> None:
    onnx.checker.check_model(graph)
    onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    found = {node.op_type for node in graph.graph.node} & TRAINING_OPS
    if found:
        raise ExportError(f"graph contains training-only ops: {sorted(found)}")
    names = ([i.name for i in graph.graph.input], [o.name for o in graph.graph.output])
    if names != (["input"], ["output"]):
        raise ExportError(f"graph inputs/outputs are {names}, expected ['input'] / ['output']")


def _metadata(
    model: Network, checkpoint_meta: dict[str, str], weights: Path, opset: int, fp16: bool
) -> dict[str, str]:
    train_short_side = int(checkpoint_meta.get("train_short_side", DEFAULT_TRAIN_SHORT_SIDE))
    if train_short_side < 8:
        raise ExportError(f"checkpoint train_short_side {train_short_side} px is not a training image size")
    preset = checkpoint_meta["preset"]
    return {
        "preset": preset,
        "config": json.dumps(model.config.to_dict()),
        "pad_multiple": str(model.pad_multiple),
        "value_range": "0,1",
        "layout": "NCHW,RGB",
        "weights_sha256": file_sha256(weights),
        "macs_per_pixel": str(round(macs_per_pixel(model))),  # at a 256x256 tile
        "exporter_version": EXPORTER_VERSION,
        "opset": str(opset),
        "precision": "fp16" if fp16 else "fp32",
        "train_short_side": str(train_short_side),
    }


def export_onnx(
    weights: Path | str,
    out: Path | str,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    optimize: bool = False,
) -> ParityReport:
    """Export, check and write `out` (and `out`'s `.opt.onnx` sibling with optimize). Raises ExportError."""
    weights, out = Path(weights), Path(out)
    model, checkpoint_meta = load_model(weights)
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch) / "model.onnx"
        _trace(model, traced, opset)
        graph = onnx.load(str(traced))
        if fp16:
            graph = _to_fp16(graph)
        onnx.helper.set_model_props(graph, _metadata(model, checkpoint_meta, weights, opset, fp16))
        check_graph(graph)
        onnx.save(graph, str(traced))
        report = parity(model, traced)
        if fp16 and report.psnr_db < FP16_MIN_PSNR:
            raise ExportError(
                f"fp16 parity failed: PSNR {report.psnr_db:.2f} dB < {FP16_MIN_PSNR} dB "
                f"(max abs diff {report.max_abs_diff:.3g}); nothing written"
            )
        if not fp16 and report.max_abs_diff > FP32_TOLERANCE:
            raise ExportError(
                f"parity failed: max abs diff {report.max_abs_diff:.3g} > {FP32_TOLERANCE} "
                f"(PSNR {report.psnr_db:.1f} dB); nothing written"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(graph, str(out))
    if optimize:
        write_optimized(out, optimized_path(out))
        optimized = parity(model, optimized_path(out))
        if optimized.max_abs_diff > max(FP32_TOLERANCE, 2 * report.max_abs_diff):
            optimized_path(out).unlink()
            raise ExportError(
                f"optimized graph parity failed: max abs diff {optimized.max_abs_diff:.3g}; "
                f"{optimized_path(out).name} not written"
            )
    return report


def optimized_path(model_path: Path) -> Path:
    """Where the ORT-optimized CPU graph of a model lives: NAME.onnx -> NAME.opt.onnx."""
    return model_path.with_suffix(".opt.onnx")


def write_optimized(source: Path, target: Path) -> None:
    """Save the CPU graph: exact rewrites (see model_export.rewrite), then ONNX Runtime's optimizations.

    Extended level, so the file stays portable across CPUs (the layout transform for the machine's vector
    width happens when the service loads it). The portable NAME.onnx, which GPUs use, is left as traced.
    """
    import onnxruntime as ort

    graph = onnx.load(str(source))
    log.info("exact CPU rewrites: %s", rewrite_for_cpu(graph))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(target))
    onnx.helper.set_model_props(optimized, {p.key: p.value for p in graph.metadata_props})
    onnx.save(optimized, str(target))

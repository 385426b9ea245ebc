"""GPU variants on the fixed serving tile shape, run whenever ONNX Runtime sees a CUDA device.

Each variant reports megapixels/s at each batch size, or the error that stopped it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TILE = 256


def _mp_per_s(run: Callable[[], object], batch: int, repeats: int) -> float:
    run()
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return batch * TILE * TILE * repeats / (time.perf_counter() - started) / 1e6


def _session(model: Path, providers: list[object]):  # -> ort.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), options, providers=providers)


def _cuda(
    search: str = "EXHAUSTIVE", graphs: bool = False, nhwc: bool = False
) -> tuple[str, dict[str, object]]:
    options: dict[str, object] = {"cudnn_conv_algo_search": search, "do_copy_in_default_stream": True}
    if graphs:
        options["enable_cuda_graph"] = True
    if nhwc:  # cuDNN's channels-last kernels (ORT builds with NHWC support; else the variant reports it)
        options["prefer_nhwc"] = True
    return ("CUDAExecutionProvider", options)


def roofline(mp_s: float, macs_per_pixel: float, peak_tflops: float | None) -> dict[str, float]:
    """Achieved TFLOP/s (2 x MACs x pixels/s) and its fraction of the measured fp16 GEMM peak."""
    achieved = 2 * macs_per_pixel * mp_s * 1e6 / 1e12
    row = {"tflops": round(achieved, 3)}
    if peak_tflops:
        row["fraction_of_fp16_peak"] = round(achieved / peak_tflops, 3)
    return row


def _variant(session, batch: int, repeats: int, io_binding: bool) -> float:  # noqa: ANN001
    import onnxruntime as ort

    data = np.random.default_rng(batch).random((batch, 3, TILE, TILE), dtype=np.float32)
    if not io_binding:
        return _mp_per_s(lambda: session.run(["output"], {"input": data}), batch, repeats)
    device_in = ort.OrtValue.ortvalue_from_numpy(data, "cuda", 0)
    device_out = ort.OrtValue.ortvalue_from_shape_and_type(data.shape, np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("input", device_in)
    binding.bind_ortvalue_output("output", device_out)
    return _mp_per_s(lambda: session.run_with_iobinding(binding), batch, repeats)


def gemm_fp16_tflops() -> float | None:
    try:
        import torch
    except ImportError:
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (time.perf_counter() - started) / 1e12


def run(model: Path, quick: bool = False) -> dict[str, object]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"available": False, "reason": "no CUDAExecutionProvider in this onnxruntime build"}
    fp16 = model.with_name(model.stem + "-fp16.onnx")
    batches = [1, 8] if quick else [1, 4, 8, 16, 32]
    repeats = 10 if quick else 50
    cache = tempfile.mkdtemp(prefix="trt-cache-")
    variants: dict[str, tuple[Path, list[object], bool]] = {
        "cuda_fp32": (model, [_cuda()], False),
        "cuda_fp32_heuristic": (model, [_cuda("HEURISTIC")], False),
        "cuda_fp32_iobinding": (model, [_cuda()], True),
        "cuda_fp32_graphs": (model, [_cuda(graphs=True)], True),
        "cuda_fp32_nhwc": (model, [_cuda(nhwc=True)], True),
        "cuda_fp16": (fp16, [_cuda()], True),
        "tensorrt_fp16": (
            model,
            [
                (
                    "TensorrtExecutionProvider",
                    {
                        "trt_fp16_enable": True,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": cache,
                    },
                ),
                _cuda(),
            ],
            True,
        ),
    }
    import onnx

    macs = float({p.key: p.value for p in onnx.load(str(model)).metadata_props}["macs_per_pixel"])
    peak = gemm_fp16_tflops()
    rows: list[dict[str, object]] = []
    for name, (path, providers, binding) in variants.items():
        for batch in batches:
            row: dict[str, object] = {"variant": name, "batch": batch}
            try:
                if not path.exists():
                    raise FileNotFoundError(f"{path} (export it with --fp16)")
                mp_s = _variant(_session(path, providers), batch, repeats, binding)
                row.update({"mp_s": round(mp_s, 2), **roofline(mp_s, macs, peak)})
            except Exception as error:  # noqa: BLE001 - one failing variant must not stop the others
                row["error"] = str(error).splitlines()[0][:160]
            rows.append(row)
    return {
        "available": True,
        "device": ort.get_device(),
        "fp16_gemm_tflops": peak,
        "rows": rows,
    }

"""Engine-level measurements: ONNX Runtime vs PyTorch eager, GEMM peak, roofline, tile sweep."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_ENGINE_PIXELS = 1024 * 1024


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Single-precision GEMM throughput (numpy/BLAS, all cores): the machine's practical peak."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    seconds = median_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def service_graph(onnx_path: Path) -> Path:
    """The file the service runs on the CPU: NAME.opt.onnx when it was exported, else NAME.onnx."""
    from model_export.export import optimized_path

    return optimized_path(onnx_path) if optimized_path(onnx_path).exists() else onnx_path


def ort_session(model: Path, threads: int):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def engine_comparison(
    onnx_path: Path, weights: Path, sizes: list[int], batches: list[int], repeats: int
) -> list[dict[str, float | int]]:
    """Median latency and megapixels/s of ORT and PyTorch eager on the same weights and inputs."""
    import torch

    from mspfn.checkpoint import load_model

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, _ = load_model(weights)
    session = ort_session(service_graph(onnx_path), threads)
    rows = []
    for size in sizes:
        # At most one megapixel per call: PyTorch eager at 4 x 1024^2 needs over 17 GB here.
        for batch in (b for b in batches if b * size * size <= MAX_ENGINE_PIXELS):
            image = np.random.default_rng(size).random((batch, 3, size, size), dtype=np.float32)
            tensor = torch.from_numpy(image)
            reps = max(1, repeats if size * size * batch <= 512 * 512 * 4 else 1)

            def run_ort(image: np.ndarray = image) -> object:
                return session.run(["output"], {"input": image})

            def run_torch(tensor: torch.Tensor = tensor) -> object:
                with torch.inference_mode():
                    return model(tensor)

            ort_s = median_seconds(run_ort, reps)
            torch_s = median_seconds(run_torch, reps)
            megapixels = batch * size * size / 1e6
            rows.append(
                {
                    "size": size,
                    "batch": batch,
                    "ort_ms": round(ort_s * 1e3, 1),
                    "torch_ms": round(torch_s * 1e3, 1),
                    "ort_mp_s": round(megapixels / ort_s, 4),
                    "torch_mp_s": round(megapixels / torch_s, 4),
                    "speedup": round(torch_s / ort_s, 3),
                }
            )
    return rows


def roofline(macs_per_pixel: float, megapixels_per_second: float, peak_gflops: float) -> dict[str, float]:
    achieved = 2 * macs_per_pixel * megapixels_per_second * 1e6 / 1e9
    return {
        "macs_per_pixel": macs_per_pixel,
        "achieved_gflops": round(achieved, 2),
        "gemm_peak_gflops": round(peak_gflops, 2),
        "fraction_of_peak": round(achieved / peak_gflops, 3),
    }


def conv_stack(width: int, depth: int = 4) -> bytes:
    """An ONNX graph of `depth` 3x3 convolutions (bias + ReLU, which ORT fuses), `width` channels wide.

    The lite model's dominant layer shape with nothing else around it: its throughput is what ONNX Runtime's
    convolution kernels reach at that width on this machine, the practical ceiling for the model.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(width)
    nodes, initializers, name = [], [], "x"
    for layer in range(depth):
        weight = (rng.standard_normal((width, width, 3, 3)) * 0.05).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{layer}"),
            numpy_helper.from_array(np.zeros(width, np.float32), f"b{layer}"),
        ]
        nodes += [
            helper.make_node("Conv", [name, f"w{layer}", f"b{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{layer}"], [f"r{layer}"]),
        ]
        name = f"r{layer}"
    shape: list[str | int] = ["batch", width, "height", "width"]
    graph = helper.make_graph(
        nodes,
        f"conv{width}x{depth}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def conv_ceiling(
    widths: list[int], peak_gflops: float, size: int = 256, batch: int = 4, repeats: int = 5
) -> list[dict[str, float | int]]:
    """GFLOP/s of plain 3x3 conv stacks by channel width, at the serving shape, vs the GEMM peak."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    rows = []
    for width in widths:
        depth = 4
        session = ort.InferenceSession(conv_stack(width, depth), options, providers=["CPUExecutionProvider"])
        image = np.random.default_rng(0).random((batch, width, size, size), dtype=np.float32)
        seconds = median_seconds(lambda s=session, x=image: s.run(None, {"x": x}), repeats)
        gflops = 2 * depth * width * width * 9 * batch * size * size / seconds / 1e9
        rows.append(
            {
                "width": width,
                "achieved_gflops": round(gflops, 2),
                "fraction_of_peak": round(gflops / peak_gflops, 3),
            }
        )
    return rows


def op_profile(onnx_path: Path, tile: int = 256, batch: int = 4, runs: int = 3) -> list[dict[str, object]]:
    """Where ONNX Runtime's time goes at the serving shape: share of kernel time per operator type.

    Uses ORT's own profiler (one JSON trace, removed afterwards) on a session configured like the service.
    """
    import json
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    image = np.random.default_rng(0).random((batch, 3, tile, tile), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(
            str(service_graph(onnx_path)), options, providers=["CPUExecutionProvider"]
        )
        for _ in range(runs + 1):
            session.run(["output"], {"input": image})
        events = json.loads(Path(session.end_profiling()).read_text())
    # The first run (warm-up: arena growth, first-touch) is left out.
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    events = [e for e in events if e.get("ts", 0) >= first["ts"] + first["dur"]]
    micros: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            micros[op] += event["dur"]
            calls[op] += 1
    total = sum(micros.values()) or 1
    return [
        {
            "op": op,
            "share": round(us / total, 3),
            "nodes": calls[op] // runs,
            "ms_per_run": round(us / runs / 1e3, 1),
        }
        for op, us in micros.most_common()
        if us / total >= 0.005
    ]


def tile_inflation(width: int, height: int, tile: int, overlap: int) -> float:
    """Pixels computed / pixels in the image, for the service's own tile grid (8-aligned starts)."""
    from service.core.pipeline import plan_grid

    grid = plan_grid(height, width, tile, overlap, align=8)
    return grid.count * tile * tile / (width * height)


def tile_sweep(
    onnx_path: Path, tiles: list[int], overlap: int, batch: int, repeats: int
) -> list[dict[str, float | int]]:
    """Engine megapixels/s per tile size at the serving batch, and what overlap costs for a 12 MP photo."""
    session = ort_session(service_graph(onnx_path), os.cpu_count() or 1)
    rows = []
    for tile in tiles:
        image = np.random.default_rng(tile).random((batch, 3, tile, tile), dtype=np.float32)
        seconds = median_seconds(lambda image=image: session.run(["output"], {"input": image}), repeats)
        engine = batch * tile * tile / 1e6 / seconds
        inflation = tile_inflation(4288, 2848, tile, overlap)
        rows.append(
            {
                "tile": tile,
                "overlap": overlap,
                "engine_mp_s": round(engine, 4),
                "inflation_12mp": round(inflation, 3),
                "effective_mp_s": round(engine / inflation, 4),
            }
        )
    return rows


def static_shapes(onnx_path: Path, batch: int, tile: int) -> bytes:
    """The graph with its input and output fixed to (batch, 3, tile, tile), shapes inferred throughout."""
    import onnx
    from onnx.tools import update_model_dims

    shape = [batch, 3, tile, tile]
    graph = update_model_dims.update_inputs_outputs_dims(
        onnx.load(str(onnx_path)), {"input": shape}, {"output": shape}
    )
    return onnx.shape_inference.infer_shapes(graph).SerializeToString()


def rewritten(onnx_path: Path, transposed: bool = True, prelu: bool = True) -> bytes:
    """The exported graph with a subset of the CPU graph's exact rewrites (model_export.rewrite)."""
    import onnx

    from model_export.rewrite import rewrite_for_cpu

    graph = onnx.load(str(onnx_path))
    rewrite_for_cpu(graph, transposed=transposed, prelu=prelu)
    return graph.SerializeToString()


def session_options_sweep(onnx_path: Path, tile: int, batch: int, repeats: int) -> list[dict[str, object]]:
    """Which ONNX Runtime CPU settings pay, at the serving tile shape (relative to the service's own)."""
    import onnxruntime as ort

    cores = os.cpu_count() or 1
    level = ort.GraphOptimizationLevel

    def configure(
        opt: ort.GraphOptimizationLevel = level.ORT_ENABLE_ALL,
        threads: int = cores,
        mem_pattern: bool = True,
        arena: bool = True,
        spinning: bool = True,
    ) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = opt
        options.intra_op_num_threads = threads
        options.enable_mem_pattern = mem_pattern
        options.enable_cpu_mem_arena = arena
        # Idle intra-op threads busy-wait for the next op by default; off, they sleep (frees the CPU).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        return options

    service = service_graph(onnx_path)  # exact rewrites and ORT-optimized, when exported so
    variants: dict[str, tuple[Path | bytes, ort.SessionOptions]] = {
        "service (CPU graph, all optimizations incl. NCHWc layout, all cores)": (service, configure()),
        "portable graph (as exported: no rewrites)": (onnx_path, configure()),
        "rewrite: PReLU only": (rewritten(onnx_path, transposed=False), configure()),
        "rewrite: transposed convolutions only": (rewritten(onnx_path, prelu=False), configure()),
        f"static shapes ({batch}x3x{tile}x{tile})": (static_shapes(service, batch, tile), configure()),
        "extended optimizations only (no NCHWc layout)": (service, configure(level.ORT_ENABLE_EXTENDED)),
        "basic optimizations only": (service, configure(level.ORT_ENABLE_BASIC)),
        "1 thread": (service, configure(threads=1)),
        "no memory pattern": (service, configure(mem_pattern=False)),
        "no CPU arena": (service, configure(arena=False)),
        "no thread spinning": (service, configure(spinning=False)),
    }
    int8 = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
    if int8.exists():
        variants["int8 static quantization (QDQ)"] = (int8, configure())
    image = np.random.default_rng(0).random((batch, 3, tile, tile), dtype=np.float32)
    rows: list[dict[str, object]] = []
    for name, (path, options) in variants.items():
        source = path if isinstance(path, bytes) else str(path)
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        seconds = median_seconds(lambda session=session: session.run(["output"], {"input": image}), repeats)
        rows.append(
            {
                "variant": name,
                "ms": round(seconds * 1e3, 1),
                "mp_s": round(batch * tile * tile / 1e6 / seconds, 4),
            }
        )
    base = float(rows[0]["mp_s"])  # type: ignore[arg-type]
    for row in rows:
        row["vs_service"] = round(float(row["mp_s"]) / base, 3)  # type: ignore[arg-type]
    return rows

"""The ONNX Runtime session: the only module that imports onnxruntime.

`load_runner` builds the session with an explicit provider list, checks the model's metadata and its
input/output contract (refusing anything else with a message that says what is wrong), and reports the
provider really active. `OnnxRunner.run(batch) -> batch` takes and returns (N, 3, H, W) float32 RGB in
[0, 1], H and W multiples of `ModelInfo.pad_multiple`.

CPU lanes (like Triton's CPU instance groups): on the CPU provider a batch of at least `lanes` tiles is
split over `lanes` extra sessions of cores/lanes threads each, run side by side; a lone tile still gets
every core, for latency. Lanes pay where one tile cannot keep every core busy (many cores, or kernels
that do not scale with threads: before the CPU graph's rewrites ONNX Runtime's ConvTranspose ran a
single-threaded col2im and lanes gave 1.21x on 2 cores). With the rewritten graph two threads run one
tile 2x faster than one, lanes give 1.04x over a batch on one session and one tile per call (the CPU
default) beats both, so lanes are opt-in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from service.core.pipeline.scale import DEFAULT_TRAIN_SHORT_SIDE
from service.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_BATCH = 4  # tiles per inference call on CUDA unless told otherwise
SUPPORTED_EXPORTERS = {"1"}
REQUIRED_METADATA = ("preset", "pad_multiple", "value_range", "layout", "weights_sha256", "exporter_version")
# Tiles have one fixed shape, so the exhaustive cuDNN search runs once per batch size (at warm-up) and
# pays off for every later call; growing the arena by exactly what is asked avoids power-of-two waste.
CUDA_OPTIONS = {
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "cudnn_conv_use_max_workspace": "1",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
}


class ModelError(RuntimeError):
    """The model file cannot be served; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What the exporter wrote into the model's metadata."""

    path: Path  # the file really loaded (NAME.opt.onnx on CPU when present)
    preset: str
    weights_sha256: str
    precision: str  # fp32 | fp16
    pad_multiple: int  # H and W given to `run` must be multiples of this
    exporter_version: str
    # px, short side of the training images (metadata `train_short_side`; older exports: 321): the unit
    # of the working scale (service.core.pipeline.scale)
    train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE


class Runner(Protocol):
    """What the service needs from a model: tests substitute fakes with the same shape."""

    info: ModelInfo
    active_provider: str
    requested_providers: tuple[str, ...]

    @property
    def lanes(self) -> int: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxRunner:
    def __init__(
        self,
        session: ort.InferenceSession,
        info: ModelInfo,
        requested: Sequence[str],
        lanes: Sequence[ort.InferenceSession] = (),
    ) -> None:
        self._session = session
        self._lanes = tuple(lanes)
        self._pool = ThreadPoolExecutor(len(lanes), thread_name_prefix="derain-lane") if lanes else None
        self.info = info
        self.requested_providers = tuple(requested)
        self.active_provider = session.get_providers()[0]

    @property
    def lanes(self) -> int:
        """Sessions a batch is split over (1: the whole batch runs on one session)."""
        return max(1, len(self._lanes))

    @property
    def fallback(self) -> bool:
        return fell_back(self)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 RGB in [0, 1] -> the derained batch, same shape and layout."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {batch.shape}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._pool is None or len(batch) < len(self._lanes):
            (output,) = self._session.run(["output"], {"input": batch})
            return np.asarray(output, dtype=np.float32)
        parts = np.array_split(batch, len(self._lanes))
        futures = [
            self._pool.submit(lane.run, ["output"], {"input": part})
            for lane, part in zip(self._lanes, parts, strict=True)
        ]
        return np.concatenate([np.asarray(f.result()[0], dtype=np.float32) for f in futures])


def load_runner(model_path: Path, providers: Sequence[str], threads: int = 0, lanes: int = 1) -> OnnxRunner:
    """Build and check the session (plus `lanes` CPU lane sessions when the CPU provider is active and
    lanes > 1). Raises ModelError for a missing, corrupt or non-conforming model."""
    available = ort.get_available_providers()
    usable = [name for name in providers if name in available]
    missing = [name for name in providers if name not in available]
    if missing:
        log.warning(
            "providers not available in this onnxruntime build: %s", missing, extra={"available": available}
        )
    if not usable:
        raise ModelError(f"none of the providers {list(providers)} is available; this build has {available}")
    path = _pick_file(Path(model_path), usable)
    try:
        session = ort.InferenceSession(
            str(path),
            _session_options(threads),
            providers=[(name, _provider_options(name)) for name in usable],
        )
    except Exception as error:
        raise ModelError(f"cannot load model {path}: {str(error).splitlines()[0]}") from error
    info = check_model(session, path)
    lane_sessions = []
    if session.get_providers()[0] == CPU and lanes > 1:
        per_lane = max(1, session_threads(threads) // lanes)
        lane_sessions = [
            ort.InferenceSession(str(path), _session_options(per_lane), providers=[CPU]) for _ in range(lanes)
        ]
    runner = OnnxRunner(session, info, providers, lane_sessions)
    _report(runner)
    return runner


def fell_back(runner: Runner) -> bool:
    """CUDA was asked for, yet the session runs on something else."""
    return CUDA in runner.requested_providers and runner.active_provider != CUDA


def serving_batch(max_batch: int, provider: str, max_queue_tiles: int) -> int:
    """Tiles per inference call: `max_batch`, or (0) the provider's default (`default_batch`), never more
    than the queue holds."""
    return max_batch or min(default_batch(provider), max_queue_tiles)


def cpu_lanes(lanes: int, cpu_batch: int, threads: int) -> int:
    """CPU lane sessions for a `lanes` setting: itself, or (0) one per tile of a CPU batch, at most one
    per core. `cpu_batch` is the tiles per call the CPU provider would get."""
    return lanes or min(cpu_batch, session_threads(threads))


def load_from_settings(settings: Settings) -> OnnxRunner:
    """The service's runner: the model, providers, threads and CPU lanes its settings name."""
    cpu_batch = serving_batch(settings.max_batch, CPU, settings.max_queue_tiles)
    lanes = cpu_lanes(settings.cpu_lanes, cpu_batch, settings.threads)
    return load_runner(settings.model_path, settings.providers, settings.threads, lanes)


def default_batch(provider: str) -> int:
    """Tiles per inference call unless told otherwise: GPU_BATCH on CUDA, 1 elsewhere. On the CPU, ONNX
    Runtime runs a batch of tiles slower per tile than the same tiles one by one (4 x 256 px: 0.83-0.93x
    on 2 cores; README, Performance), and one tile already keeps every core busy."""
    return GPU_BATCH if provider == CUDA else 1


def session_threads(threads: int) -> int:
    """Intra-op threads for a `threads` setting: itself, or (0) every core this process may use
    (container CPU sets included)."""
    return threads or len(os.sched_getaffinity(0))


def _pick_file(path: Path, usable: Sequence[str]) -> Path:
    """On CPU prefer ORT's pre-optimized graph NAME.opt.onnx (model_export --optimize) when present."""
    optimized = path.with_suffix(".opt.onnx")
    if usable[0] == CPU and optimized.is_file() and not path.name.endswith(".opt.onnx"):
        return optimized
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    return path


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Every core this process may use unless told; one inference (or one set of lanes) runs at a time.
    options.intra_op_num_threads = session_threads(threads)
    options.inter_op_num_threads = 1
    return options


def _provider_options(name: str) -> dict[str, str]:
    return dict(CUDA_OPTIONS) if name == CUDA else {}


def check_model(session: ort.InferenceSession, path: Path) -> ModelInfo:
    """Refuse a model whose metadata or input/output contract is not what model_export writes."""
    meta = session.get_modelmeta().custom_metadata_map
    absent = [key for key in REQUIRED_METADATA if not meta.get(key)]
    if absent:
        raise ModelError(f"model {path} lacks metadata {absent}; export it with `python -m model_export`")
    expected = {"value_range": "0,1", "layout": "NCHW,RGB"}
    for key, value in expected.items():
        if meta[key] != value:
            raise ModelError(f"model {path} has {key}={meta[key]!r}; the service needs {value!r}")
    if meta["exporter_version"] not in SUPPORTED_EXPORTERS:
        raise ModelError(
            f"model {path} comes from exporter version {meta['exporter_version']!r}; "
            f"this service reads {sorted(SUPPORTED_EXPORTERS)}"
        )
    if not meta["pad_multiple"].isdigit() or int(meta["pad_multiple"]) < 1:
        raise ModelError(
            f"model {path} has pad_multiple={meta['pad_multiple']!r}; expected a positive integer"
        )
    _check_io(session, path)
    return ModelInfo(
        path=path,
        preset=meta["preset"],
        weights_sha256=meta["weights_sha256"],
        precision=meta.get("precision", "fp32"),
        pad_multiple=int(meta["pad_multiple"]),
        exporter_version=meta["exporter_version"],
        train_short_side=_train_short_side(meta.get("train_short_side"), path),
    )


def _train_short_side(value: str | None, path: Path) -> int:
    if value is None:
        return DEFAULT_TRAIN_SHORT_SIDE
    if not value.isdigit() or int(value) < 8:
        raise ModelError(f"model {path} has train_short_side={value!r}; expected a size in px (>= 8)")
    return int(value)


def _check_io(session: ort.InferenceSession, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != (["input"], ["output"]):
        raise ModelError(f"model {path} has inputs/outputs {names}; expected ['input'] / ['output']")
    for tensor in (inputs[0], outputs[0]):
        shape = tensor.shape
        if tensor.type != "tensor(float)" or len(shape) != 4 or shape[1] != 3:
            raise ModelError(
                f"model {path}: {tensor.name} is {tensor.type} {shape}; expected float32 (N, 3, H, W)"
            )


def _report(runner: OnnxRunner) -> None:
    info = runner.info
    fields = {
        "provider": runner.active_provider,
        "model": str(info.path),
        "preset": info.preset,
        "cpu_lanes": runner.lanes,
    }
    if runner.fallback:
        log.error(
            "CUDA was requested but the model runs on %s: check the GPU, the driver and onnxruntime-gpu",
            runner.active_provider,
            extra=fields,
        )
    else:
        log.info("model loaded on %s", runner.active_provider, extra=fields)

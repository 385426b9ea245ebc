"""The ONNX Runtime wrapper: model checks, provider report, run, CPU lanes, tiles per call."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.core.runtime import CPU, CUDA, ModelError, load_runner, serving_batch
from service.settings import Settings


def test_loads_the_tiny_model_and_reads_its_metadata(tiny_onnx: Path) -> None:
    runner = load_runner(tiny_onnx, [CPU], threads=1)
    assert runner.info.preset == "tiny" and runner.info.pad_multiple == 8 and runner.info.precision == "fp32"
    assert len(runner.info.weights_sha256) == 64
    assert runner.active_provider == CPU and not runner.fallback


def test_run_derains_a_batch_consistently(tiny_onnx: Path) -> None:
    runner = load_runner(tiny_onnx, [CPU], threads=1)
    batch = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    output = runner.run(batch)
    assert output.shape == batch.shape and output.dtype == np.float32
    assert np.abs(output - batch).mean() > 1e-3  # the tiny model is not the identity
    assert np.allclose(output[1], runner.run(batch[1:])[0], atol=1e-5)  # batching changes nothing
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        runner.run(batch[:, :1])


def test_cpu_lanes_split_a_batch_and_give_the_same_pixels(tiny_onnx: Path) -> None:
    plain = load_runner(tiny_onnx, [CPU], threads=2)
    laned = load_runner(tiny_onnx, [CPU], threads=2, lanes=2)
    assert (plain.lanes, laned.lanes) == (1, 2)
    rng = np.random.default_rng(1)
    for size in (1, 2, 3, 5):  # under the lane count, even, uneven split, more than 2 per lane
        batch = rng.random((size, 3, 24, 40), dtype=np.float32)
        expected = plain.run(batch)
        actual = laned.run(batch)
        assert actual.shape == batch.shape and actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, atol=1e-5)  # each tile where it belongs
        assert np.abs(actual - batch).mean() > 1e-3


def test_cpu_lanes_run_side_by_side(tiny_onnx: Path) -> None:
    """Each lane waits at a barrier that opens only when both lanes are inside `run` at once."""
    runner = load_runner(tiny_onnx, [CPU], threads=2, lanes=2)
    barrier = threading.Barrier(2, timeout=10)

    class Lane:
        def __init__(self, value: float) -> None:
            self.value = value

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            barrier.wait()  # raises BrokenBarrierError if the other lane never comes
            return [np.full_like(feeds["input"], self.value)]

    runner._lanes = (Lane(0.25), Lane(0.75))  # type: ignore[assignment]
    output = runner.run(np.zeros((4, 3, 8, 8), np.float32))
    assert output[:2].tolist() == np.full((2, 3, 8, 8), 0.25).tolist()  # first half from lane 1
    assert output[2:].tolist() == np.full((2, 3, 8, 8), 0.75).tolist()


def test_lanes_with_one_thread_each(tiny_onnx: Path) -> None:
    runner = load_runner(tiny_onnx, [CPU], threads=1, lanes=3)  # 3 lanes of max(1, 1 // 3) = 1 thread
    assert runner.lanes == 3
    batch = np.random.default_rng(2).random((3, 3, 16, 16), dtype=np.float32)
    expected = load_runner(tiny_onnx, [CPU], threads=1).run(batch)
    np.testing.assert_allclose(runner.run(batch), expected, atol=1e-5)


def test_cpu_prefers_the_optimized_sibling(tiny_onnx: Path, tmp_path: Path) -> None:
    plain = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, plain)
    shutil.copy(tiny_onnx, tmp_path / "m.opt.onnx")
    assert load_runner(plain, [CPU], threads=1).info.path.name == "m.opt.onnx"


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime build has CUDA")
def test_cuda_requested_without_cuda_falls_back_to_cpu_loudly(
    tiny_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="service.core.runtime")
    runner = load_runner(tiny_onnx, [CUDA, CPU], threads=1)
    assert runner.active_provider == CPU and runner.fallback
    assert any("CUDA was requested" in record.getMessage() for record in caplog.records)


def test_refuses_when_no_requested_provider_exists(tiny_onnx: Path) -> None:
    with pytest.raises(ModelError, match="none of the providers"):
        load_runner(tiny_onnx, ["NoSuchExecutionProvider"])


def _variant(source: Path, target: Path, metadata: dict[str, str | None], input_name: str = "input") -> Path:
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: v for k, v in metadata.items() if v is not None})
    for key in [k for k, v in metadata.items() if v is None]:
        props.pop(key)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    if input_name != "input":
        for node in model.graph.node:
            node.input[:] = [input_name if name == "input" else name for name in node.input]
        model.graph.input[0].name = input_name
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value_range": "-1,1"}, "value_range='-1,1'; the service needs '0,1'"),
        ({"layout": "NCHW,BGR"}, "layout='NCHW,BGR'; the service needs 'NCHW,RGB'"),
        ({"pad_multiple": None}, r"lacks metadata \['pad_multiple'\]"),
        ({"exporter_version": "99"}, "exporter version '99'"),
        ({"pad_multiple": "eight"}, "pad_multiple='eight'"),
    ],
)
def test_refuses_models_with_wrong_metadata(
    tiny_onnx: Path, tmp_path: Path, change: dict[str, str | None], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        load_runner(_variant(tiny_onnx, tmp_path / "bad.onnx", change), [CPU])


def test_refuses_wrong_input_names_and_corrupt_files(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"inputs/outputs \(\['image'\], \['output'\]\)"):
        load_runner(_variant(tiny_onnx, tmp_path / "renamed.onnx", {}, input_name="image"), [CPU])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(ModelError, match="cannot load model"):
        load_runner(corrupt, [CPU])


@pytest.mark.parametrize(
    ("overrides", "provider", "batch"),
    [
        ({}, CPU, 1),  # auto: one tile per call on the CPU
        ({}, CUDA, 4),  # auto: GPU_BATCH on CUDA
        ({"max_queue_tiles": 2}, CUDA, 2),  # never more than the queue holds
        ({"max_batch": 8}, CPU, 8),  # an explicit value wins everywhere
        ({"max_batch": 3}, CUDA, 3),
    ],
)
def test_serving_batch_is_per_provider_unless_set(
    tiny_onnx: Path, overrides: dict[str, object], provider: str, batch: int
) -> None:
    settings = Settings(model_path=tiny_onnx, **overrides)  # type: ignore[arg-type]
    assert serving_batch(settings.max_batch, provider, settings.max_queue_tiles) == batch

"""The exporter: parity with PyTorch, metadata, checks, and refusing bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import model_export.export as export_module
from model_export import ExportError, export_onnx
from model_export.__main__ import main
from mspfn.checkpoint import file_sha256, load_model
from mspfn.model import pad_to_multiple


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def attribute(node: onnx.NodeProto, name: str) -> object:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def test_metadata_is_present_and_correct(tiny_onnx: Path, tiny_weights: Path) -> None:
    meta = metadata(tiny_onnx)
    assert meta["preset"] == "tiny"
    assert meta["pad_multiple"] == "8"
    assert meta["value_range"] == "0,1"
    assert meta["layout"] == "NCHW,RGB"
    assert meta["weights_sha256"] == file_sha256(tiny_weights)
    assert meta["exporter_version"] == export_module.EXPORTER_VERSION
    assert meta["opset"] == "17" and meta["precision"] == "fp32"
    assert int(meta["macs_per_pixel"]) > 0
    assert meta["train_short_side"] == "321"  # RainTrainL; the working scale (service) counts from it
    assert json.loads(meta["config"])["width"] == 8
    graph = onnx.load(str(tiny_onnx))
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {17}


def test_dynamic_batch_and_size_match_pytorch(tiny_onnx: Path, tiny_weights: Path) -> None:
    model, _ = load_model(tiny_weights)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    image, _ = pad_to_multiple(torch.rand(3, 3, 29, 70), 8)
    (actual,) = session.run(["output"], {"input": image.numpy()})
    with torch.no_grad():
        expected = model(image).numpy()
    assert actual.shape == (3, 3, 32, 72)
    assert np.abs(actual - expected).max() <= 1e-4
    assert np.abs(actual - image.numpy()).max() > 1e-3  # it is not an identity


def test_cli_writes_the_optimized_graph(tmp_path: Path, tiny_weights: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["--weights", str(tiny_weights), "--out", str(out), "--optimize"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_abs_diff"] <= 1e-4
    optimized = tmp_path / "m.opt.onnx"
    assert metadata(optimized) == metadata(out)
    session = ort.InferenceSession(str(optimized), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    reference = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"input": image})[0], reference.run(None, {"input": image})[0], atol=1e-5
    )
    ops = {node.op_type for node in onnx.load(str(optimized)).graph.node}
    # The CPU graph has the fast forms (model_export.rewrite); the portable one is left as traced.
    assert not {"PRelu", "ConvTranspose"} & ops and "Max" in ops
    assert {"PRelu", "ConvTranspose"} <= {node.op_type for node in onnx.load(str(out)).graph.node}


def test_parity_failure_writes_nothing(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real_trace = export_module._trace

    def corrupt_trace(model, path: Path, opset: int) -> None:
        with torch.no_grad():
            model.reconstruct.rain.weight.add_(0.5)  # the graph no longer matches the checkpoint
        real_trace(model, path, opset)
        with torch.no_grad():
            model.reconstruct.rain.weight.sub_(0.5)

    monkeypatch.setattr(export_module, "_trace", corrupt_trace)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="parity failed: max abs diff"):
        export_onnx(tiny_weights, out)
    assert not out.exists()
    assert main(["--weights", str(tiny_weights), "--out", str(out)]) == 1
    assert "parity failed" in capsys.readouterr().err
    assert not out.exists()


def test_not_a_checkpoint_is_refused(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"w": torch.zeros(1)}, str(bogus))
    assert main(["--weights", str(bogus), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "not an MSPFN checkpoint" in capsys.readouterr().err


def test_training_only_ops_are_refused(tiny_onnx: Path) -> None:
    graph = onnx.load(str(tiny_onnx))
    graph.graph.node.append(onnx.helper.make_node("Dropout", ["output"], ["dropped"]))
    with pytest.raises(ExportError, match="training-only"):
        export_module.check_graph(graph)


def test_fp16_export_keeps_fp32_io_and_passes_its_psnr_contract(tmp_path: Path, tiny_weights: Path) -> None:
    out = tmp_path / "fp16.onnx"
    report = export_onnx(tiny_weights, out, fp16=True)
    assert export_module.FP16_MIN_PSNR <= report.psnr_db < float("inf")
    assert metadata(out)["precision"] == "fp16"
    graph = onnx.load(str(out))
    float_type = onnx.TensorProto.FLOAT
    assert graph.graph.input[0].type.tensor_type.elem_type == float_type
    assert graph.graph.output[0].type.tensor_type.elem_type == float_type
    fp16_weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 10


@pytest.mark.slow  # exports a network
@pytest.mark.parametrize("fp16", [False, True])
def test_windowed_attention_exports_as_average_pools(tmp_path: Path, fp16: bool) -> None:
    """A model with attention_window: AveragePool (clipped at the borders) instead of a global pool, with
    parity at every size the exporter checks, the CPU rewrites and fp16 (where the pools stay fp32)."""
    from mspfn.checkpoint import save_model
    from tests.conftest import make_tiny_model

    model = make_tiny_model(attention_window=64)
    weights = tmp_path / "windowed.safetensors"
    save_model(weights, model, "tiny")
    out = tmp_path / "windowed.onnx"
    report = export_onnx(weights, out, fp16=fp16, optimize=not fp16)
    assert json.loads(metadata(out)["config"])["attention_window"] == 64
    nodes = onnx.load(str(out)).graph.node
    pools = [node for node in nodes if node.op_type == "AveragePool" and attribute(node, "strides") == [1, 1]]
    assert len(pools) == 2 * 3 and not [node for node in nodes if node.op_type == "GlobalAveragePool"]
    assert all(attribute(pool, "count_include_pad") == 0 for pool in pools)  # a mean over the image only
    if fp16:
        assert report.psnr_db >= export_module.FP16_MIN_PSNR
    else:
        assert report.max_abs_diff <= export_module.FP32_TOLERANCE
        cpu_graph = str(tmp_path / "windowed.opt.onnx")
        optimized = ort.InferenceSession(cpu_graph, providers=["CPUExecutionProvider"])
        image, _ = pad_to_multiple(torch.rand(1, 3, 40, 200), 8)
        with torch.no_grad():
            expected = model(image).numpy()
        assert np.abs(optimized.run(None, {"input": image.numpy()})[0] - expected).max() <= 1e-4

"""The benchmark harness runs end to end on a tiny model (figures themselves are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import engine, report
from benchmarks.__main__ import main


def test_tile_inflation_counts_the_service_grid() -> None:
    # 512x512 with 256 tiles and 32 overlap: 3 x 3 tiles of 256^2 cover 512^2 -> 9 * 65536 / 262144.
    assert engine.tile_inflation(512, 512, 256, 32) == pytest.approx(9 * 256**2 / 512**2)
    assert engine.tile_inflation(256, 256, 256, 32) == pytest.approx(1.0)


def test_roofline_arithmetic() -> None:
    row = engine.roofline(macs_per_pixel=250_000, megapixels_per_second=0.2, peak_gflops=200.0)
    assert row["achieved_gflops"] == pytest.approx(100.0)
    assert row["fraction_of_peak"] == pytest.approx(0.5)


def test_conv_stack_computes_relu_convolutions() -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    graph = engine.conv_stack(width=4, depth=2)
    weights = {
        t.name: torch.from_numpy(numpy_helper.to_array(t))
        for t in onnx.load_from_string(graph).graph.initializer
    }
    image = np.random.default_rng(0).random((1, 4, 9, 11), dtype=np.float32)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": image})
    expected = torch.from_numpy(image)
    for layer in range(2):
        expected = torch.relu(torch.conv2d(expected, weights[f"w{layer}"], weights[f"b{layer}"], padding=1))
    np.testing.assert_allclose(output, expected.numpy(), atol=1e-5)


def test_harness_writes_json_and_markdown(tiny_onnx: Path, tiny_weights: Path, tmp_path: Path) -> None:
    argv = ["--model", str(tiny_onnx), "--weights", str(tiny_weights), "--quick", "--out", str(tmp_path)]
    assert main([*argv, "--sections", "engine,roofline,profile,options,tiling"]) == 0
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert {row["size"] for row in data["engine"]} == {256}
    assert all(row["speedup"] > 0 and row["ort_mp_s"] > 0 for row in data["engine"])
    assert data["roofline"]["fraction_of_peak"] > 0
    assert [row["width"] for row in data["conv_ceiling"]] == [16, 32]
    assert all(row["fraction_of_peak"] > 0 for row in data["conv_ceiling"])
    shares = {row["op"]: row["share"] for row in data["profile"]}
    assert "Conv" in shares and 0.9 < sum(shares.values()) <= 1.0 + 1e-6  # ops under 0.5% left out
    assert all(row["nodes"] >= 1 for row in data["profile"])
    assert [row["tile"] for row in data["tiling"]] == [128, 256]
    assert data["machine"]["serving_batch"] == 1  # max_batch auto: one tile per call on the CPU
    assert data["options"][0]["vs_service"] == 1.0 and len(data["options"]) >= 10
    variants = [row["variant"] for row in data["options"]]
    assert "static shapes (1x3x256x256)" in variants and "rewrite: PReLU only" in variants
    markdown = result.with_suffix(".md").read_text()
    assert "| size | batch | ort_ms |" in markdown and "serving shape (1 x 256x256)" in markdown
    assert report.table([]) == ""


def test_results_are_named_by_cpu_so_machines_do_not_overwrite_each_other() -> None:
    from benchmarks.__main__ import cpu_slug

    assert cpu_slug("Intel(R) Xeon(R) Platinum 8488C") == "intel-xeon"
    assert cpu_slug("AMD EPYC 9R14 96-Core Processor") == "amd-epyc"
    assert cpu_slug("") == "unknown"


def test_gpu_roofline_against_the_fp16_gemm_peak() -> None:
    from benchmarks import gpu

    # 250k MACs/pixel at 100 MP/s = 50 TFLOP/s; against a 200 TFLOP/s fp16 GEMM: 25%.
    assert gpu.roofline(100.0, 250_000, 200.0) == {"tflops": 50.0, "fraction_of_fp16_peak": 0.25}
    assert gpu.roofline(100.0, 250_000, None) == {"tflops": 50.0}  # no torch: no peak to compare


def test_gpu_section_renders_every_column_even_when_the_first_variant_failed() -> None:
    rows = [
        {"variant": "tensorrt_fp16", "batch": 1, "error": "no TensorRT"},
        {"variant": "cuda_fp32", "batch": 1, "mp_s": 9.5, "tflops": 4.6},
    ]
    results = {
        "machine": {"cpu": "x", "cores": 1, "date": "d", "commit": "c"},
        "gpu": {"available": True, "device": "GPU", "fp16_gemm_tflops": 700.0, "rows": rows},
    }
    markdown = report.markdown(results)
    assert "### GPU (available True, device GPU, fp16_gemm_tflops 700.0)" in markdown
    assert "| variant | batch | error | mp_s | tflops |" in markdown
    assert "| cuda_fp32 | 1 |  | 9.5 | 4.6 |" in markdown


def test_probe_study_counts_what_the_service_probe_picks(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    from benchmarks import probe_study
    from mspfn.data import load_pairs
    from service.core.pipeline import scale as sc
    from tests.mspfn.pairs import write_pairs

    folder = write_pairs(tmp_path / "set", 3, size=(330, 490))
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    expected: dict[float, int] = {}
    for pair in load_pairs(folder):
        rgb = np.ascontiguousarray(pair.rain.transpose(2, 0, 1), dtype=np.float32) / 255.0
        prior, factors = sc.auto_candidates(*rgb.shape[1:])
        crops = sc.probe_crops(rgb, factors, sc.probe_spots(*rgb.shape[1:]))
        pick = sc.probe_pick(prior, factors, crops, session.run(None, {"input": crops})[0])
        expected[pick] = expected.get(pick, 0) + 1
    assert probe_study.main(["--model", str(tiny_onnx), "--sets", str(folder), "--margins", "5", "1e9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    taken = ", ".join(f"{sc.format_scale(f)}: {n}" for f, n in sorted(expected.items()))
    assert lines == [
        f"set  size rule {{1: 3}}  margin 5 (streak) -> {{{taken}}}",
        "set  size rule {1: 3}  margin 1e+09 (streak) -> {1: 3}",  # no factor wins by 1e9x: the size rule
    ]


def test_error_split_tells_a_veil_left_in_from_streaks_left_in() -> None:
    from benchmarks.error_split import split

    rng = np.random.default_rng(0)
    clean = rng.integers(40, 200, (64, 96, 3), dtype=np.uint8)
    rain = np.clip(clean.astype(int) + 30, 0, 255).astype(np.uint8)
    veiled = (clean.astype(int) + 10).astype(np.uint8)  # a uniform haze of 10 levels left in
    haze = split(rain, veiled, clean)
    to_y = 219 / 255  # an RGB level is 219/255 of a Y level (BT.601, Y in 16..235)
    assert haze["bias"] == pytest.approx(10 * to_y) and haze["input_bias"] == pytest.approx(30 * to_y)
    assert haze["low_share"] > 0.95 and haze["gain_offset_psnr"] > 60  # an offset fixes it all
    streaks = clean.astype(int)
    streaks[:, ::4] += 40  # thin bright columns left in
    lines = split(rain, np.clip(streaks, 0, 255).astype(np.uint8), clean)
    assert lines["low_share"] < 0.3 and lines["gain_offset_psnr"] < lines["psnr"] + 3  # tone fix: little


def test_second_pass_measures_tell_streaks_and_a_veil_apart() -> None:
    from benchmarks import second_pass

    assert second_pass.parse_variant("4+4x2.5") == [(4.0, "bicubic"), ((4.0, 2.5), "bicubic")]
    assert second_pass.parse_variant("4g+4x2.5g") == [(4.0, "guided"), ((4.0, 2.5), "guided")]
    assert second_pass.parse_variant("2") == [(2.0, "bicubic")]
    yy, xx = np.mgrid[0:200, 0:200]
    scene = 0.4 + 0.1 * np.sin(xx / 31.0) * np.cos(yy / 23.0)
    lines = scene + 0.3 * (xx % 17 == 0)  # long vertical 1 px lines
    rungs = scene + 0.3 * (yy % 17 == 0)  # the same lines, horizontal
    as_rgb = [np.stack([image] * 3).astype(np.float32) for image in (scene, lines, rungs)]
    clean, rainy, across = (second_pass.streaks(image) for image in as_rgb)
    assert rainy > 50 * max(clean, across)  # vertical lines count, scene and horizontal lines barely
    flat = np.full((3, 50, 50), 0.6, np.float32)
    flat[2, 20, 20] = 0.1  # one dark pixel darkens its 15x15 window's dark channel
    assert second_pass.veil(flat) == pytest.approx((0.6 * (2500 - 225) + 0.1 * 225) / 2500)
    assert second_pass.veil(as_rgb[0] * 0.5 + 0.5) > second_pass.veil(as_rgb[0]) + 0.2  # a veil lifts it


def test_second_pass_chains_passes_on_the_previous_result(tiny_onnx: Path, tmp_path: Path) -> None:
    from benchmarks import second_pass
    from service.core.pipeline import scale as sc

    def model(image: np.ndarray) -> np.ndarray:
        return 0.5 * image + 0.25

    rng = np.random.default_rng(0)
    rgb = np.clip(0.5 + 0.1 * rng.standard_normal((3, 96, 128)), 0, 1).astype(np.float32)
    small = sc.shrink(rgb, 4.0)
    first = sc.restore(rgb, small, model(small), 4.0, "guided", sc.ABOVE_CAP_GUIDED)
    again = sc.shrink(first, (4.0, 2.0))
    expected = sc.restore(first, again, model(again), (4.0, 2.0))
    chained = second_pass.derain(model, rgb, second_pass.parse_variant("4g+4x2"))
    np.testing.assert_allclose(chained, expected, atol=1e-6)
    plain = sc.restore(rgb, small, model(small), 4.0)
    assert np.abs(first - plain).max() > 0.01  # `g` changed the first pass's restore
    photo = tmp_path / "photo.png"
    Image.fromarray((rgb.transpose(1, 2, 0) * 255).astype(np.uint8)).save(photo)
    argv = ["--model", str(tiny_onnx), "--photo", str(photo), "--region", "0", "0", "128", "96"]
    assert second_pass.main([*argv, "--variants", "4", "4g+4x2", "--save", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "photo-4.png",
        "photo-4g_4x2.png",
        "photo-input.png",
    ]


def test_grids_times_the_pieces_and_the_fitted_tiles_it_names(
    tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import grids

    assert grids.parse_size("712x1715") == (712, 1715)
    plans = grids.grids(712, 1715, 8)
    assert [(grid.count, grid.tile_height, grid.tile_width) for grid in plans.values()] == [
        (6, 376, 600),
        (32, 208, 248),
    ]
    assert (
        grids.main(["--model", str(tiny_onnx), "--sizes", "40x1100", "--repeats", "1", "--threads", "1"]) == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 40x1100")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[2:4] == ["1", "40x1104"]  # 44k px fits the budget: one piece
    assert rows[1].split(" | ")[2] == "5"  # fitted tiles: 40 px rows, five of them across

"""`derain` (service.cli): local mode on the tiny exported model; server mode against a real uvicorn."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main
from service.core.runtime import CPU, load_runner
from tests.mspfn.test_evaluate_scale import lined_photo
from tests.paths import REPO
from tests.service.cli.cli_helpers import API_KEY, TILE


def noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def local_args(model: Path) -> list[str]:
    """Local mode with the service test tiles (64 px, 16 overlap, no whole images), CPU, one thread."""
    tiles = ["--tile-size", str(TILE["tile_size"]), "--overlap", str(TILE["tile_overlap"])]
    tiles += ["--whole-max-pixels", str(TILE["whole_max_pixels"])]
    return ["--model", str(model), "--providers", CPU, "--threads", "1", *tiles]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """a.png 50x70, b.JPG 40x90, notes.txt, a hidden file, and sub/c.png 30x30."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(noise(50, 70, seed=1)).save(folder / "a.png")
    Image.fromarray(noise(40, 90, seed=2)).save(folder / "b.JPG", quality=95)
    Image.fromarray(noise(30, 30, seed=3)).save(folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".thumbs.png").write_bytes(b"hidden, never read")
    return folder


def test_local_mode_derains_a_folder_keeping_names_and_skipping_non_images(
    photos: Path, tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(photos), "-o", str(out), *local_args(tiny_onnx)]) == 0
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == [Path("a.png"), Path("b.JPG")]
    for name in ("a.png", "b.JPG"):
        source, result = pixels(photos / name), pixels(out / name)
        assert result.shape == source.shape
        assert 0.1 < np.abs(result - source).mean() < 40  # derained: changed, not destroyed
    assert Image.open(out / "b.JPG").format == "JPEG"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"warning: skipping {photos / 'notes.txt'}: not an image" in captured.err
    assert "thumbs" not in captured.err
    assert "the subfolders of" in captured.err and "-r derains them too" in captured.err
    assert "2/2" in captured.err  # the progress bar
    assert "2 written" in captured.err


def test_local_output_is_the_models_output(tmp_path: Path, tiny_onnx: Path) -> None:
    """One 64x64 tile: the file written is the model's output, quantized to 8 bits."""
    image = noise(64, 64, seed=4)
    Image.fromarray(image).save(tmp_path / "one.png")
    assert main([str(tmp_path / "one.png"), "-o", str(tmp_path / "out"), "-q", *local_args(tiny_onnx)]) == 0
    runner = load_runner(tiny_onnx, [CPU], threads=1)
    batch = (image.transpose(2, 0, 1)[np.newaxis] / np.float32(255)).astype(np.float32)
    expected = np.rint(np.clip(runner.run(batch)[0], 0, 1) * 255).transpose(1, 2, 0)
    assert np.abs(pixels(tmp_path / "out" / "one.png") - expected).max() <= 1


def test_recursive_keeps_the_layout_and_the_format_sets_the_extension(
    photos: Path, tmp_path: Path, tiny_onnx: Path
) -> None:
    out = tmp_path / "out"
    argv = [str(photos), "-r", "-o", str(out), "--format", "webp", "--quality", "80", "-q"]
    assert main([*argv, *local_args(tiny_onnx)]) == 0
    written = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    assert written == [Path("a.webp"), Path("b.webp"), Path("sub/c.webp")]
    for source, result in [("a.png", "a.webp"), ("b.JPG", "b.webp"), ("sub/c.png", "sub/c.webp")]:
        image = Image.open(out / result)
        assert (image.format, image.size) == ("WEBP", Image.open(photos / source).size)


def test_a_failed_image_gives_exit_status_1_and_the_others_are_written(
    photos: Path, tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "broken.png").write_text("a text file named like a PNG")
    out = tmp_path / "out"
    assert main([str(photos), "-o", str(out), "-q", *local_args(tiny_onnx)]) == 1
    assert sorted(path.name for path in out.iterdir()) == ["a.png", "b.JPG"]
    assert f"error: {photos / 'broken.png'}: not a decodable image" in capsys.readouterr().err


def test_an_input_is_never_overwritten(
    photos: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (photos / "a.png").read_bytes()
    assert main([str(photos / "a.png"), "-o", str(photos), "-q", *local_args(tiny_onnx)]) == 1
    assert (photos / "a.png").read_bytes() == before
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert sorted(path.name for path in photos.iterdir() if path.name.startswith(".")) == [".thumbs.png"]


def test_compare_writes_original_and_derained_side_by_side(
    photos: Path, tmp_path: Path, tiny_onnx: Path
) -> None:
    source = photos / "a.png"
    assert main([str(source), "-o", str(tmp_path / "plain"), "-q", *local_args(tiny_onnx)]) == 0
    assert main([str(source), "--compare", "-o", str(tmp_path / "cmp"), "-q", *local_args(tiny_onnx)]) == 0
    side_by_side = pixels(tmp_path / "cmp" / "a.png")
    assert side_by_side.shape == (50, 140, 3)
    np.testing.assert_array_equal(side_by_side[:, :70], pixels(source))
    np.testing.assert_array_equal(side_by_side[:, 70:], pixels(tmp_path / "plain" / "a.png"))


def test_server_mode_sends_the_api_key_and_gives_what_local_mode_gives(
    photos: Path, tmp_path: Path, tiny_onnx: Path, server_url: str
) -> None:
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main([str(photos), "-o", str(remote), "--url", server_url, "--api-key", API_KEY, "-q"]) == 0
    assert main([str(photos), "-o", str(local), "-q", *local_args(tiny_onnx)]) == 0
    assert sorted(path.name for path in remote.iterdir()) == ["a.png", "b.JPG"]
    assert Image.open(remote / "b.JPG").size == Image.open(photos / "b.JPG").size
    assert np.abs(pixels(remote / "a.png") - pixels(local / "a.png")).max() <= 1


def test_local_mode_runs_the_services_own_pipeline_to_the_byte(
    photos: Path, tmp_path: Path, tiny_onnx: Path, server_url: str
) -> None:
    """Same model, tiles, threads and tiles per call: the local backend runs the service's Derainer, so
    a lossless output is the same file either way."""
    remote, local = tmp_path / "remote", tmp_path / "local"
    source = photos / "a.png"
    assert main([str(source), "-o", str(remote), "--url", server_url, "--api-key", API_KEY, "-q"]) == 0
    assert main([str(source), "-o", str(local), "-q", *local_args(tiny_onnx)]) == 0
    assert (remote / "a.png").read_bytes() == (local / "a.png").read_bytes()
    assert (local / "a.png").read_bytes() != source.read_bytes()


def test_server_mode_reads_the_key_from_the_environment_and_compares(
    photos: Path, tmp_path: Path, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERAIN_API_KEY", API_KEY)
    out = tmp_path / "cmp"
    argv = [str(photos / "b.JPG"), "--compare", "--format", "png", "-o", str(out), "--url", server_url, "-q"]
    assert main(argv) == 0
    assert Image.open(out / "b.png").size == (180, 40)


def test_server_mode_reports_refusals(
    photos: Path, tmp_path: Path, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "broken.png").write_text("a text file named like a PNG")
    out = tmp_path / "out"
    assert main([str(photos / "broken.png"), "-o", str(out), "--url", server_url, "--api-key", API_KEY]) == 1
    assert "the service answered 400: not a decodable image" in capsys.readouterr().err
    assert main([str(photos), "-o", str(out), "--url", server_url, "--api-key", "wrong", "-q"]) == 2
    assert "the service refused the API key" in capsys.readouterr().err
    assert main([str(photos), "-o", str(out), "--url", "http://127.0.0.1:9", "-q"]) == 2
    assert "cannot reach the service at http://127.0.0.1:9" in capsys.readouterr().err
    assert not list(out.glob("*.JPG")) and not list(out.glob("a.*"))


@pytest.mark.parametrize("option", [["--model", "MODEL"], ["--no-second-pass"]])
def test_local_options_are_refused_with_url(tiny_onnx: Path, tmp_path: Path, option: list[str]) -> None:
    option = [str(tiny_onnx) if part == "MODEL" else part for part in option]
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "-o", str(tmp_path / "out"), "--url", "http://x", *option])
    assert stop.value.code == 2


def test_no_second_pass_reaches_the_local_derainer(tmp_path: Path, tiny_onnx: Path) -> None:
    """A photo above the size cap: the local backend derains it twice by default, once with the flag."""
    from service.cli import command

    Image.fromarray(lined_photo(1300, 1950)).save(tmp_path / "big.png")
    outputs = []
    for flags in ([], ["--no-second-pass"]):
        args = command.parse_args(
            [str(tmp_path / "big.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_onnx), *flags]
        )
        backend = command.make_backend(args)
        try:
            outputs.append(backend.derain_pixels((tmp_path / "big.png").read_bytes())[1])
        finally:
            backend.close()
    assert np.abs(outputs[0] - outputs[1]).mean() > 1e-4  # the second pass changed the answer


@pytest.mark.slow  # a fresh interpreter
def test_the_console_script_is_this_main_and_needs_no_torch() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["derain"] == "service.cli:main"
    check = "import sys, service.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", check], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize(("batch", "expected", "lanes"), [(0, 1, 1), (3, 3, 2)])
def test_local_batch_defaults_to_one_tile_per_call_on_the_cpu(
    tiny_onnx: Path, batch: int, expected: int, lanes: int
) -> None:
    from service.cli.backends import LocalBackend

    backend = LocalBackend.load(tiny_onnx, [CPU], tile_size=64, overlap=16, batch=batch, threads=2)
    try:
        assert backend._batch == expected  # 0: the provider's default (runtime.default_batch)
        assert backend._runner.lanes == lanes  # a batch set on the CPU is split over lanes, one per core
    finally:
        backend.close()  # its batcher's task and event loop

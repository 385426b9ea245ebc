"""POST /derain?scale=...: the working scale through the real app, its header, metric and refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.core.pipeline import scale as sc
from tests.service.scale_helpers import streaks, thin_line_remover
from tests.service.svc_helpers import FakeRunner, SettingsFactory, metric, noise, png_bytes, serve

PNG = {"Content-Type": "image/png"}


class NoRain(FakeRunner):
    """A model that finds no rain: it returns its input."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        super().run(batch)
        return batch.copy()


def smooth(height: int, width: int) -> np.ndarray:
    """A photo-like uint8 RGB image (noise would alias when shrunk, a photo does not much)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(xx / 13.0) * np.cos(yy / 9.0)
    return np.clip(np.stack([base, 0.8 * base + 20, 1.1 * base - 10], axis=-1), 0, 255).astype(np.uint8)


def pixels_of(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


@pytest.mark.parametrize(
    ("query", "factor"),
    [
        ("", "1"),
        ("?scale=auto", "1"),
        ("?scale=1", "1"),
        ("?scale=2", "2"),
        ("?scale=2.5", "2.5"),
        ("?scale=8", "8"),
    ],
)
def test_a_model_that_sees_no_rain_round_trips_the_image_at_any_scale(
    make_settings: SettingsFactory, query: str, factor: str
) -> None:
    image = smooth(120, 200)
    with serve(make_settings(), NoRain()) as client:
        response = client.post("/derain" + query, content=png_bytes(image), headers=PNG)
    assert response.status_code == 200
    assert response.headers["x-derain-scale"] == factor
    out = pixels_of(response.content)
    assert out.shape == image.shape
    assert np.abs(out.astype(int) - image).max() <= 1  # 1/255: only the uint8 rounding


def test_the_model_sees_the_working_image_and_only_its_rain_comes_back(
    make_settings: SettingsFactory,
) -> None:
    """The fake model (0.5 x + 0.25) at scale 4: it sees a 32 x 48 working image (one 64 px tile),
    and the full-size answer is the input minus the model's rain layer brought back up."""
    runner = FakeRunner()
    image = smooth(128, 192)
    with serve(make_settings(), runner) as client:
        warm_up = len(runner.tiles_seen)
        response = client.post("/derain?scale=4", content=png_bytes(image), headers=PNG)
    assert response.headers["x-derain-tiles"] == "1"
    assert [tile.shape for tile in runner.tiles_seen[warm_up:]] == [(3, 64, 64)]  # 32 x 48 in one tile
    rgb = image.transpose(2, 0, 1).astype(np.float32) / 255
    small = sc.shrink(rgb, 4)
    expected = sc.restore(rgb, small, 0.5 * small + 0.25, 4)
    expected_pixels = np.rint(expected * 255).astype(int).transpose(1, 2, 0)
    assert np.abs(pixels_of(response.content).astype(int) - expected_pixels).max() <= 1


def test_on_the_cpu_an_ordinary_image_goes_through_whole(make_settings: SettingsFactory) -> None:
    runner = NoRain()
    with serve(make_settings(whole_max_pixels=1 << 20), runner) as client:
        warm_up = len(runner.tiles_seen)
        response = client.post("/derain?scale=1", content=png_bytes(noise(100, 150)), headers=PNG)
    assert response.headers["x-derain-tiles"] == "1"
    assert [tile.shape for tile in runner.tiles_seen[warm_up:]] == [(3, 104, 152)]  # padded to 8 px only
    assert runner.batch_sizes[warm_up:] == [1]


def test_auto_probes_a_large_image_and_keeps_the_size_rule_when_the_model_agrees(
    make_settings: SettingsFactory,
) -> None:
    """963 x 1443 (three times the training size, so the size rule says 3): the probe crops
    (64 px) go through the model first, then the working image at 3; a model that finds no rain
    anywhere does not move auto off it."""
    runner = NoRain()
    image = smooth(963, 1443)
    with serve(make_settings(), runner) as client:
        warm_up = len(runner.tiles_seen)
        response = client.post("/derain", content=png_bytes(image), headers=PNG)
    assert response.status_code == 200 and response.headers["x-derain-scale"] == "3"
    seen = runner.tiles_seen[warm_up:]
    prior, factors = sc.auto_candidates(963, 1443)
    probes = len(factors) * sc.probe_spots(963, 1443)
    assert prior == 3.0 and probes == len([1.0, 1.5, 3.0, 6.0, 8.0]) * 3
    assert all(tile.shape == (3, 64, 64) for tile in seen[:probes])
    assert int(response.headers["x-derain-tiles"]) == len(seen) - probes


class ThinStreakModel(FakeRunner):
    """A stand-in for a model trained on thin streaks (test_scale.thin_line_remover)."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        super().run(batch)
        return thin_line_remover(batch)


@pytest.mark.parametrize(("streak_px", "factor"), [(1.5, "1"), (6.0, "4")])
def test_auto_takes_the_factor_where_the_model_finds_the_streaks(
    make_settings: SettingsFactory, streak_px: float, factor: str
) -> None:
    """A 321 x 481 photo, so the size rule says 1: with thin streaks auto keeps it; with streaks four
    times as wide (a crop of a large photo) the probe finds them at 4, and the answer is derained there."""
    image = np.rint(streaks(streak_px, 321, 481) * 255).astype(np.uint8).transpose(1, 2, 0)
    runner = ThinStreakModel()
    with serve(make_settings(), runner) as client:
        response = client.post("/derain", content=png_bytes(image), headers=PNG)
        used = metric(client, "derain_work_scale_sum")
    assert response.status_code == 200 and response.headers["x-derain-scale"] == factor
    assert used == float(factor)
    out, bright = pixels_of(response.content).astype(int), image.astype(int)
    assert np.mean(np.maximum(bright - out, 0)) > 1.0  # streak light was taken out, at that scale


def test_the_work_scale_histogram_counts_each_image_at_its_factor(make_settings: SettingsFactory) -> None:
    with serve(make_settings(), NoRain()) as client:
        for query in ("?scale=2", "?scale=3", ""):
            assert (
                client.post("/derain" + query, content=png_bytes(smooth(64, 96)), headers=PNG).status_code
                == 200
            )
        assert metric(client, "derain_work_scale_count") == 3
        assert metric(client, "derain_work_scale_sum") == 6  # 2 + 3 + auto's 1
        assert metric(client, "derain_work_scale_bucket", le="2.0") == 2
        assert metric(client, "derain_work_scale_bucket", le="1.0") == 1


@pytest.mark.parametrize("value", ["0", "0.99", "-1", "8.5", "8.01", "9", "100", "nan", "inf", "1e3"])
def test_out_of_range_scales_get_422_from_the_error_table(make_settings: SettingsFactory, value: str) -> None:
    runner = NoRain()
    with serve(make_settings(), runner) as client:
        response = client.post(f"/derain?scale={value}", content=png_bytes(smooth(32, 32)), headers=PNG)
        rejected = metric(client, "derain_rejections_total", reason="invalid_request")
    assert response.status_code == 422
    assert list(response.json()) == ["detail"] and "scale" in response.json()["detail"]
    assert rejected == 1 and len(runner.tiles_seen) == 1  # the warm-up tile only: refused before any work


@pytest.mark.parametrize("value", ["abc", "2x", "", " 2", "AUTO", "2.0001"])
def test_malformed_scales_get_422_naming_the_parameter(make_settings: SettingsFactory, value: str) -> None:
    with serve(make_settings(), NoRain()) as client:
        response = client.post(
            "/derain", params={"scale": value}, content=png_bytes(smooth(32, 32)), headers=PNG
        )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("query parameter 'scale'")


def test_the_default_scale_is_a_setting(make_settings: SettingsFactory) -> None:
    with serve(make_settings(default_scale="2"), NoRain()) as client:
        response = client.post("/derain", content=png_bytes(smooth(64, 96)), headers=PNG)
    assert response.headers["x-derain-scale"] == "2"
    with pytest.raises(ValueError, match="scale must be"):
        make_settings(default_scale="0.5")


def test_the_page_offers_the_scale_and_defaults_to_auto(make_settings: SettingsFactory) -> None:
    with serve(make_settings(), NoRain()) as client:
        page = client.get("/").text  # the script and styles are inlined
    assert '<select id="scale"' in page and '<option value="auto" selected>' in page
    assert 'query.set("scale", scale.value)' in page


def test_every_factor_the_page_offers_is_served_as_that_factor(make_settings: SettingsFactory) -> None:
    import re

    with serve(make_settings(), NoRain()) as client:
        page = client.get("/").text
        start = page.index('<select id="scale"')
        select = page[start : page.index("</select>", start)]
        offered = re.findall(r'<option value="([^"]+)"', select)
        assert offered[0] == "auto" and "2.5" in offered  # a non-integer factor, as the README advises
        for value in offered[1:]:
            response = client.post(
                "/derain", params={"scale": value}, content=png_bytes(smooth(64, 96)), headers=PNG
            )
            assert response.status_code == 200, (value, response.text)
            assert float(response.headers["x-derain-scale"]) == float(value)


def test_the_model_metadata_gives_the_training_scale(tmp_path: Path, tiny_onnx: Path) -> None:
    """A model trained on images twice as large: auto halves its factors, no code changed."""
    import onnx

    from service.core.runtime import load_runner

    graph = onnx.load(str(tiny_onnx))
    for prop in graph.metadata_props:
        if prop.key == "train_short_side":
            prop.value = "642"
    larger = tmp_path / "larger.onnx"
    onnx.save(graph, str(larger))
    assert load_runner(tiny_onnx, ["CPUExecutionProvider"], threads=1).info.train_short_side == 321
    assert load_runner(larger, ["CPUExecutionProvider"], threads=1).info.train_short_side == 642


def rainy_photo(height: int, width: int, transpose: bool = False) -> np.ndarray:
    """uint8 RGB: thin bright streaks (2 px) on shading, upright or (transpose) across the frame."""
    if transpose:
        return rainy_photo(width, height).transpose(1, 0, 2).copy()
    return np.rint(streaks(2.0, height, width) * 255).astype(np.uint8).transpose(1, 2, 0)


@pytest.mark.parametrize(("transpose", "second"), [(False, (4.0, 2.5)), (True, (2.5, 4.0))])
def test_auto_derains_a_photo_above_the_cap_again_across_its_streaks(
    make_settings: SettingsFactory, transpose: bool, second: tuple[float, float]
) -> None:
    """1300 x 1950 (4.05 x the training images): auto derains at the cap (4), then the first result
    again, shrunk by 4 along the streaks and 2.5 across them; the answer is the first result minus the
    second pass's rain layer. The fake model is 0.5 x + 0.25 (FakeRunner)."""
    image = rainy_photo(1300, 1950, transpose)
    runner = FakeRunner()
    with serve(make_settings(whole_max_pixels=1 << 20), runner) as client:
        warm_up = len(runner.tiles_seen)
        response = client.post("/derain", content=png_bytes(image), headers=PNG)
        passes = metric(client, "derain_second_passes_total")
        reserved = metric(client, "derain_queue_tiles")
    assert response.status_code == 200
    assert reserved == 0  # the second pass's room, reserved at admission, was all given back
    assert response.headers["x-derain-scale"] == "4"
    assert response.headers["x-derain-passes"] == f"4 {sc.format_factor(second)}"
    assert passes == 1
    rgb = image.transpose(2, 0, 1).astype(np.float32) / 255
    small = sc.shrink(rgb, 4.0)
    first = sc.restore(rgb, small, 0.5 * small + 0.25, 4.0, "guided", sc.ABOVE_CAP_GUIDED)
    again = sc.shrink(first, second)
    expected = sc.restore(first, again, 0.5 * again + 0.25, second)
    seen = runner.tiles_seen[warm_up:]
    height, width = again.shape[1:]
    assert seen[-1].shape == (3, -(-height // 8) * 8, -(-width // 8) * 8)  # the second pass, whole
    assert response.headers["x-derain-tiles"] == "2"  # one whole working image per pass
    expected_pixels = np.rint(expected * 255).astype(int).transpose(1, 2, 0)
    out = pixels_of(response.content).astype(int)
    assert np.abs(out - expected_pixels).max() <= 1
    single = np.rint(first * 255).astype(int).transpose(1, 2, 0)
    assert np.abs(out - single).mean() > 1.0  # the second pass changed the answer
    plain = sc.restore(rgb, small, 0.5 * small + 0.25, 4.0)
    plain_again = sc.shrink(plain, second)
    bicubic = sc.restore(plain, plain_again, 0.5 * plain_again + 0.25, second)
    assert np.abs(out - np.rint(bicubic * 255).astype(int).transpose(1, 2, 0)).mean() > 1.0  # guided first


def test_the_second_pass_is_a_setting_and_never_runs_for_a_fixed_scale(
    make_settings: SettingsFactory,
) -> None:
    image = png_bytes(rainy_photo(1300, 1950))
    with serve(make_settings(second_pass=False, whole_max_pixels=1 << 20), NoRain()) as client:
        off = client.post("/derain", content=image, headers=PNG)
        assert metric(client, "derain_second_passes_total") == 0
    with serve(make_settings(whole_max_pixels=1 << 20), NoRain()) as client:
        fixed = client.post("/derain?scale=4", content=image, headers=PNG)
        assert metric(client, "derain_second_passes_total") == 0
    for response in (off, fixed):
        assert response.status_code == 200
        assert response.headers["x-derain-scale"] == response.headers["x-derain-passes"] == "4"
        assert response.headers["x-derain-tiles"] == "1"

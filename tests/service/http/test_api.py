"""POST /derain through the real app and the tiny exported model: bodies, formats, headers, values."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from service.core.pipeline import plan_grid
from service.core.runtime import load_runner
from tests.service.svc_helpers import SettingsFactory, encoded, noise, png_bytes, serve


def open_image(content: bytes) -> Image.Image:
    return Image.open(io.BytesIO(content))


def test_raw_body_gives_the_derained_image_of_the_same_size(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    pixels = noise(100, 150)
    with serve(settings) as client:
        response = client.post(
            "/derain",
            content=png_bytes(pixels),
            headers={"Content-Type": "image/png", "X-Request-Id": "abc-1"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-request-id"] == "abc-1"
    assert int(response.headers["x-derain-tiles"]) == plan_grid(100, 150, 64, 16, 8).count == 6
    assert float(response.headers["x-derain-inference-ms"]) > 0
    out = np.asarray(open_image(response.content))
    assert out.shape == pixels.shape
    assert 0.1 < np.abs(out.astype(float) - pixels).mean() < 40  # derained: changed, not destroyed


def test_output_equals_the_model_run_directly_on_a_one_tile_image(make_settings: SettingsFactory) -> None:
    """One 64x64 tile: the service's answer is exactly the model's output, quantized."""
    settings = make_settings()
    pixels = noise(64, 64, seed=3)
    runner = load_runner(settings.model_path, settings.providers, threads=1)
    expected = runner.run((pixels.transpose(2, 0, 1)[np.newaxis] / np.float32(255)).astype(np.float32))[0]
    expected_pixels = np.rint(np.clip(expected, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    with serve(settings) as client:
        response = client.post("/derain", content=png_bytes(pixels), headers={"Content-Type": "image/png"})
    got = np.asarray(open_image(response.content)).astype(int)
    assert np.abs(got - expected_pixels).max() <= 1  # thread-count rounding at most


def test_multipart_field_image(make_settings: SettingsFactory) -> None:
    with serve(make_settings()) as client:
        response = client.post(
            "/derain",
            files={"image": ("rainy.jpg", encoded(Image.fromarray(noise(40, 70)), "JPEG"), "image/jpeg")},
            data={"note": "ignored"},
        )
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert open_image(response.content).size == (70, 40)


@pytest.mark.parametrize(
    ("query", "media", "pillow"),
    [
        ("", "image/png", "PNG"),
        ("?format=jpeg", "image/jpeg", "JPEG"),
        ("?format=jpg", "image/jpeg", "JPEG"),
        ("?format=webp&quality=60", "image/webp", "WEBP"),
        ("?format=png", "image/png", "PNG"),
    ],
)
def test_each_output_format(make_settings: SettingsFactory, query: str, media: str, pillow: str) -> None:
    with serve(make_settings()) as client:
        response = client.post(
            "/derain" + query, content=png_bytes(noise(30, 20)), headers={"Content-Type": "image/png"}
        )
    assert response.status_code == 200 and response.headers["content-type"] == media
    image = open_image(response.content)
    assert image.format == pillow and image.size == (20, 30)


@pytest.mark.parametrize(
    ("upload", "media"),
    [("WEBP", "image/webp"), ("JPEG", "image/jpeg"), ("TIFF", "image/png"), ("BMP", "image/png")],
)
def test_default_format_follows_the_upload(make_settings: SettingsFactory, upload: str, media: str) -> None:
    with serve(make_settings()) as client:
        response = client.post(
            "/derain",
            content=encoded(Image.fromarray(noise(16, 24)), upload),
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code == 200 and response.headers["content-type"] == media


def test_jpeg_quality_is_applied(make_settings: SettingsFactory) -> None:
    data = png_bytes(noise(64, 64))
    with serve(make_settings()) as client:
        sizes = [len(client.post(f"/derain?format=jpeg&quality={q}", content=data).content) for q in (5, 95)]
    assert sizes[0] < sizes[1] / 2


def test_alpha_grayscale_16bit_and_orientation_survive_the_service(make_settings: SettingsFactory) -> None:
    rgba = noise(50, 70, 4)
    gray = noise(50, 70, 1)
    deep = np.random.default_rng(1).integers(0, 65536, (50, 70, 3), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = encoded(Image.fromarray(noise(50, 70)), "JPEG", exif=exif.tobytes())
    with serve(make_settings()) as client:
        alpha_out = open_image(client.post("/derain", content=png_bytes(rgba)).content)
        gray_out = open_image(client.post("/derain", content=png_bytes(gray)).content)
        deep_out = client.post("/derain", content=bytes(imagecodecs.png_encode(deep))).content
        rotated_out = open_image(client.post("/derain", content=rotated).content)
    assert alpha_out.mode == "RGBA" and np.array_equal(np.asarray(alpha_out)[..., 3], rgba[..., 3])
    assert gray_out.mode == "L" and gray_out.size == (70, 50)
    deep_pixels = imagecodecs.png_decode(deep_out)
    assert deep_pixels.dtype == np.uint16 and deep_pixels.shape == (50, 70, 3)
    assert np.any(deep_pixels % 257 != 0)  # real 16-bit values, not 8-bit ones scaled up
    assert rotated_out.size == (50, 70)  # upright: width and height swapped

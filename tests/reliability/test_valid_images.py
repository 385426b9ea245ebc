"""Odd but valid images, over real sockets, come back right: same size, upright, same mode, alpha kept,
and the pixel values the model computed (the FakeRunner computes 0.5 x + 0.25, so every output pixel
is known exactly). Most are lossless out (PNG, or lossless WebP) so values can be compared to +-1."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.reliability.reliability_helpers import FakeService
from tests.service.svc_helpers import encoded, noise, png_bytes


def model(samples: np.ndarray, top: int = 255) -> np.ndarray:
    """What the service returns for `samples` (uint8 or uint16) with the FakeRunner: 0.5 x + 0.25."""
    return np.rint(np.clip(0.5 * samples.astype(np.float64) / top + 0.25, 0, 1) * top)


def post(service: FakeService, data: bytes, query: str = "") -> Image.Image:
    response = service.http.post(f"/derain{query}", content=data, headers={"Content-Type": "image/*"})
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert response.headers["content-type"] == Image.MIME[str(image.format)]
    return image


def assert_pixels(image: Image.Image, expected: np.ndarray) -> None:
    got = np.asarray(image).astype(np.int64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(("height", "width"), [(1, 1), (53, 37), (8, 300), (130, 7)])
def test_odd_sizes_keep_their_size(fake_service: FakeService, height: int, width: int) -> None:
    pixels = noise(height, width, seed=height + width)
    out = post(fake_service, png_bytes(pixels))
    assert out.size == (width, height) and out.mode == "RGB"
    assert_pixels(out, model(pixels))


def test_grayscale_stays_grayscale(fake_service: FakeService) -> None:
    gray = noise(45, 31, 1)
    out = post(fake_service, png_bytes(gray))
    assert out.mode == "L"
    assert_pixels(out, model(gray))
    jpeg_out = post(fake_service, encoded(Image.fromarray(gray), "JPEG"))
    assert jpeg_out.format == "JPEG" and jpeg_out.mode == "L" and jpeg_out.size == (31, 45)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_png_comes_back_16_bit(fake_service: FakeService, channels: int) -> None:
    shape = (29, 41) if channels == 1 else (29, 41, channels)
    deep = np.random.default_rng(channels).integers(0, 65536, shape, dtype=np.uint16)
    response = fake_service.http.post("/derain", content=bytes(imagecodecs.png_encode(deep)))
    assert response.status_code == 200
    out = imagecodecs.png_decode(response.content)
    assert out.dtype == np.uint16 and out.shape == deep.shape
    color = deep[..., :3] if channels == 4 else deep
    got = out[..., :3] if channels == 4 else out
    assert np.abs(got.astype(np.int64) - model(color, 65535)).max() <= 1
    if channels == 4:
        assert np.array_equal(out[..., 3], deep[..., 3])  # alpha untouched, at 16 bits


@pytest.mark.parametrize(("mode", "channels"), [("RGBA", 4), ("LA", 2)])
def test_alpha_is_kept_exactly(fake_service: FakeService, mode: str, channels: int) -> None:
    pixels = noise(33, 47, channels, seed=5)
    for query in ("", "?format=webp&quality=100"):  # PNG and lossless WebP both carry alpha
        out = post(fake_service, png_bytes(pixels), query)
        samples = np.asarray(out)
        assert out.mode == (mode if not query else "RGBA")  # WebP has no gray mode
        assert np.array_equal(samples[..., -1], pixels[..., -1])
        expected = model(pixels[..., :-1])  # RGB, or the gray value (broadcast over WebP's three channels)
        assert np.abs(samples[..., :-1].astype(np.int64) - expected).max() <= 1


def test_palette_images_become_rgb_or_rgba(fake_service: FakeService) -> None:
    rgb = Image.fromarray(noise(24, 36, seed=9)).quantize(16)
    out = post(fake_service, encoded(rgb, "PNG"))
    assert out.mode == "RGB"
    assert_pixels(out, model(np.asarray(rgb.convert("RGB"))))
    transparent = rgb.copy()
    transparent.info["transparency"] = 0  # palette entry 0 is see-through
    out = post(fake_service, encoded(transparent, "PNG", transparency=0))
    assert out.mode == "RGBA"
    expected_alpha = np.where(np.asarray(rgb) == 0, 0, 255)
    assert np.array_equal(np.asarray(out)[..., 3], expected_alpha)


def test_cmyk_jpeg_comes_back_rgb(fake_service: FakeService) -> None:
    cmyk = Image.fromarray(noise(40, 30, 4, seed=2), mode="CMYK")
    data = encoded(cmyk, "JPEG", quality=95)
    out = post(fake_service, data)
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (30, 40)
    as_png = post(fake_service, data, "?format=png")
    assert_pixels(as_png, model(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(fake_service: FakeService, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(Image.fromarray(noise(20, 50, seed=orientation)), "JPEG", quality=95, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    out = post(fake_service, data, "?format=png")
    assert out.size == upright.size == ((20, 50) if orientation >= 5 else (50, 20))
    assert_pixels(out, model(np.asarray(upright)))


def test_progressive_jpeg(fake_service: FakeService) -> None:
    data = encoded(Image.fromarray(noise(70, 90, seed=4)), "JPEG", progressive=True, quality=90)
    assert Image.open(io.BytesIO(data)).info.get("progressive") == 1
    out = post(fake_service, data)
    assert out.format == "JPEG" and out.size == (90, 70)
    assert_pixels(post(fake_service, data, "?format=png"), model(np.asarray(Image.open(io.BytesIO(data)))))


@pytest.mark.parametrize(("fmt", "save", "back"), [
    ("WEBP", {"lossless": True}, "WEBP"),
    ("TIFF", {}, "PNG"),
    ("TIFF", {"compression": "tiff_lzw"}, "PNG"),
    ("BMP", {}, "PNG"),
])  # fmt: skip
def test_webp_tiff_and_bmp(fake_service: FakeService, fmt: str, save: dict[str, object], back: str) -> None:
    pixels = noise(27, 61, seed=len(fmt))
    query = "?quality=100" if back == "WEBP" else ""  # lossless WebP out, so values can be compared
    out = post(fake_service, encoded(Image.fromarray(pixels), fmt, **save), query)
    assert out.format == back and out.size == (61, 27)
    assert_pixels(out.convert("RGB"), model(pixels))


def test_16_bit_tiff(fake_service: FakeService) -> None:
    deep = np.random.default_rng(3).integers(0, 65536, (19, 23, 3), dtype=np.uint16)
    response = fake_service.http.post("/derain", content=bytes(imagecodecs.tiff_encode(deep)))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    out = imagecodecs.png_decode(response.content)
    assert out.dtype == np.uint16 and np.abs(out.astype(np.int64) - model(deep, 65535)).max() <= 1

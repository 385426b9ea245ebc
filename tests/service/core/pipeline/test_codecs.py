"""decode/encode: formats, limits before decoding, orientation, alpha, grayscale, 16-bit, ICC, CMYK."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from service.core.pipeline import decode, encode, output_format, probe
from service.errors import BadImage, TooLarge, UnsupportedMedia
from tests.service.svc_helpers import encoded, noise, png_bytes

LIMIT = 10_000_000
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny IDAT (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def roundtrip(data: bytes, fmt: str = "png", quality: int | None = None) -> Image.Image:
    decoded = decode(data, LIMIT)
    return Image.open(io.BytesIO(encode(decoded.rgb, decoded.info, fmt, quality)))  # type: ignore[arg-type]


def test_png_rgb_decodes_to_chw_float_and_encodes_back_losslessly() -> None:
    pixels = noise(37, 53)
    decoded = decode(png_bytes(pixels), LIMIT)
    assert decoded.rgb.shape == (3, 37, 53) and decoded.rgb.dtype == np.float32
    assert np.array_equal(decoded.rgb, pixels.transpose(2, 0, 1) / np.float32(255))
    assert decoded.info.source_format == "png" and decoded.info.bit_depth == 8
    assert np.array_equal(np.asarray(roundtrip(png_bytes(pixels))), pixels)


@pytest.mark.parametrize(
    ("fmt", "name"), [("JPEG", "jpeg"), ("WEBP", "webp"), ("TIFF", "tiff"), ("BMP", "bmp")]
)
def test_every_input_format_decodes(fmt: str, name: str) -> None:
    ramp = np.linspace(0, 255, 30, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (40, 1)), np.full((40, 30), 128), np.tile(ramp[::-1], (40, 1))], -1)
    pixels = pixels.astype(np.uint8)  # smooth, so lossy formats stay close
    decoded = decode(encoded(Image.fromarray(pixels), fmt), LIMIT)
    assert decoded.info.source_format == name
    assert decoded.rgb.shape == (3, 40, 30)
    assert np.abs(decoded.rgb * 255 - pixels.transpose(2, 0, 1)).mean() < 3


def test_output_format_defaults_to_the_uploads_when_writable_else_png() -> None:
    def fmt_of(image_format: str) -> str:
        return output_format(decode(encoded(Image.fromarray(noise(8, 8)), image_format), LIMIT).info, None)

    assert [fmt_of(f) for f in ("PNG", "JPEG", "WEBP", "TIFF", "BMP")] == [
        "png",
        "jpeg",
        "webp",
        "png",
        "png",
    ]
    assert output_format(decode(png_bytes(noise(8, 8)), LIMIT).info, "webp") == "webp"


def test_jpeg_quality_trades_size() -> None:
    data = png_bytes(noise(64, 64))
    small, large = roundtrip(data, "jpeg", 10), roundtrip(data, "jpeg", 95)
    assert small.format == large.format == "JPEG"
    assert len(encoded(small, "PNG")) != len(encoded(large, "PNG"))
    decoded = decode(data, LIMIT)
    assert (
        len(encode(decoded.rgb, decoded.info, "jpeg", 10))
        < len(encode(decoded.rgb, decoded.info, "jpeg", 95)) / 2
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(orientation: int) -> None:
    image = Image.fromarray(noise(20, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(image, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    decoded = decode(data, LIMIT)
    assert np.array_equal(np.rint(decoded.rgb * 255).astype(np.uint8).transpose(1, 2, 0), expected)
    assert probe(data, LIMIT) == expected.shape[:2]


def test_rgba_alpha_is_reattached_unchanged_and_dropped_only_for_jpeg() -> None:
    pixels = noise(30, 20, 4)
    data = png_bytes(pixels)
    out = roundtrip(data)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], pixels[..., 3])
    assert roundtrip(data, "webp").mode == "RGBA"
    assert roundtrip(data, "jpeg").mode == "RGB"


def test_palette_with_transparency_keeps_its_alpha() -> None:
    indices = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(indices, "P")
    image.putpalette(noise(1, 256).tobytes())
    out = np.asarray(roundtrip(encoded(image, "PNG", transparency=7)))
    assert out.shape == (16, 16, 4)
    assert out[0, 7, 3] == 0 and np.count_nonzero(out[..., 3] == 255) == 255


def test_grayscale_in_gives_grayscale_out() -> None:
    gray = noise(24, 24, 1)
    decoded = decode(png_bytes(gray), LIMIT)
    assert decoded.info.grayscale and np.array_equal(decoded.rgb[0], decoded.rgb[2])
    out = roundtrip(png_bytes(gray))
    assert out.mode == "L" and np.array_equal(np.asarray(out), gray)
    assert roundtrip(png_bytes(gray), "jpeg").mode == "L"
    with_alpha = roundtrip(encoded(Image.fromarray(noise(24, 24, 2), "LA"), "PNG"))
    assert with_alpha.mode == "LA"


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_keeps_full_precision_and_comes_back_16bit(channels: int) -> None:
    shape = (9, 11) if channels == 1 else (9, 11, channels)
    samples = np.random.default_rng(channels).integers(0, 65536, shape, dtype=np.uint16)
    data = bytes(imagecodecs.png_encode(samples))
    decoded = decode(data, LIMIT)
    assert decoded.info.bit_depth == 16
    color = samples if channels == 1 else samples[..., 0] if channels == 2 else samples[..., :3]
    expected = color.astype(np.float32) / np.float32(65535)
    got = decoded.rgb[0] if channels <= 2 else decoded.rgb.transpose(1, 2, 0)
    assert np.array_equal(got, expected)  # not truncated to 8 bits
    back = imagecodecs.png_decode(encode(decoded.rgb, decoded.info, "png"))
    assert back.dtype == np.uint16 and np.array_equal(back, samples)
    assert Image.open(io.BytesIO(encode(decoded.rgb, decoded.info, "jpeg"))).mode in ("L", "RGB")


def test_16bit_tiff_keeps_full_precision() -> None:
    samples = np.random.default_rng(5).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    decoded = decode(bytes(imagecodecs.tiff_encode(samples)), LIMIT)
    assert decoded.info.bit_depth == 16
    assert np.array_equal(decoded.rgb, samples.transpose(2, 0, 1).astype(np.float32) / np.float32(65535))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_icc_profile_is_carried_over(fmt: str) -> None:
    data = png_bytes(noise(16, 16), icc_profile=SRGB)
    assert roundtrip(data, fmt).info.get("icc_profile") == SRGB


def test_icc_profile_is_carried_into_16bit_png() -> None:
    samples = np.random.default_rng(2).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    decoded = decode(bytes(imagecodecs.png_encode(samples)), LIMIT)
    info = type(decoded.info)(**{**vars(decoded.info), "icc_profile": SRGB})
    out = encode(decoded.rgb, info, "png")
    assert Image.open(io.BytesIO(out)).info.get("icc_profile") == SRGB
    assert np.array_equal(imagecodecs.png_decode(out), samples)


def test_cmyk_jpeg_is_converted_to_rgb_without_its_profile() -> None:
    cmyk = Image.fromarray(noise(16, 16, 4), "CMYK")
    decoded = decode(encoded(cmyk, "JPEG"), LIMIT)
    assert (
        decoded.rgb.shape == (3, 16, 16) and decoded.info.icc_profile is None and decoded.info.alpha is None
    )


def test_animated_input_gives_its_first_frame() -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (10, 200)]
    data = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    decoded = decode(data, LIMIT)
    assert decoded.info.frames == 2
    assert np.allclose(decoded.rgb, 10 / 255)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    bomb = png_header_only(60000, 60000)  # 3.6 gigapixels if it were decoded
    with pytest.raises(TooLarge, match="limit of 10.0 megapixels"):
        decode(bomb, LIMIT)
    with pytest.raises(TooLarge):
        probe(bomb, LIMIT)
    with pytest.raises(TooLarge, match="image is 8x8 = 0.0 megapixels; the limit is 0.0 megapixels"):
        decode(png_bytes(noise(8, 8)), 10)
    with pytest.raises(TooLarge, match="4000x3000 = 12.0 megapixels; the limit is 10.0"):
        probe(png_header_only(4000, 3000), LIMIT)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", BadImage, "empty upload"),
        (b"\x00\x01garbage" * 10, BadImage, "not a decodable image"),
        (png_bytes(noise(64, 64))[:200], BadImage, "truncated or corrupt"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", UnsupportedMedia, "GIF images are not supported"),
        (b"%PDF-1.7\n", UnsupportedMedia, "PDF images are not supported"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedMedia, "SVG images are not supported"),
        (b"<!DOCTYPE html><html></html>", UnsupportedMedia, "HTML images are not supported"),
    ],
)
def test_bad_inputs_raise_one_line_reasons(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        decode(data, LIMIT)
    assert "\n" not in str(raised.value)


def test_32bit_float_tiff_is_unsupported() -> None:
    data = encoded(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "TIFF")
    with pytest.raises(UnsupportedMedia, match="32-bit"):
        decode(data, LIMIT)

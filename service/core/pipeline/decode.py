"""Encoded upload -> RGB float32 CHW in [0, 1] plus what the encoder needs to give the image back as it came.

- Formats: JPEG (and camera MPO), PNG, WebP, TIFF, BMP. Anything else: UnsupportedMedia (415); bytes no
  decoder accepts: BadImage (400).
- Pixel limit: width x height is read from the header and checked before any pixel is decoded, so a
  decompression bomb never reaches memory (TooLarge, 413).
- Animated or multi-page input (APNG, animated WebP, multi-page TIFF, MPO): the first frame is processed
  and returned as a still image; `ImageInfo.frames` tells how many there were.
- EXIF orientation is applied (the output is upright; EXIF itself is not copied to the output).
- Alpha is kept as uploaded and re-attached unchanged; grayscale in -> grayscale out (the network sees
  the gray value on all three channels); the ICC profile is carried over, except for CMYK/YCbCr/LAB/HSV
  input, which is converted to sRGB (through its ICC profile when it has one).
- 16-bit PNG and TIFF are decoded at full precision (imagecodecs; Pillow would truncate 16-bit colour).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image, ImageCms

from service.errors import BadImage, TooLarge, UnsupportedMedia

log = logging.getLogger(__name__)

# Pillow format -> our name for it.
INPUT_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}
OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "BMP"]  # Pillow decoders tried (MPO comes from JPEG's)
ACCEPTED = "JPEG, PNG, WebP, TIFF or BMP"
# Common formats we refuse, recognised by their first bytes so the client hears 415, not 400.
_MAGIC = (
    (b"GIF8", "GIF"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
)
# Pillow mode -> (mode to convert to, whether the ICC profile still describes the pixels).
_MODES: dict[str, tuple[str, bool]] = {
    "1": ("L", True),
    "L": ("L", True),
    "LA": ("LA", True),
    "La": ("LA", True),
    "P": ("RGB", True),  # RGBA when the palette has transparency, see _convert_8bit
    "PA": ("RGBA", True),
    "RGB": ("RGB", True),
    "RGBX": ("RGB", True),
    "RGBA": ("RGBA", True),
    "RGBa": ("RGBA", True),
    "YCbCr": ("RGB", False),
    "HSV": ("RGB", False),
    "LAB": ("RGB", False),
}
# Pillow's (8-bit) view of 16-bit files whose samples imagecodecs reads; it shows 16-bit gray+alpha as RGBA.
_MODES_16BIT = {"I;16", "I;16B", "I;16L", "I;16N", "L", "LA", "RGB", "RGBA"}


@dataclass(frozen=True, eq=False)
class ImageInfo:
    """Everything besides the colour samples that the output must restore."""

    height: int  # px, after EXIF orientation
    width: int  # px, after EXIF orientation
    source_format: str  # jpeg | png | webp | tiff | bmp
    bit_depth: int  # bits per sample of the upload: 8 or 16
    grayscale: bool  # gray (with or without alpha) in -> gray out
    alpha: np.ndarray | None  # (H, W) uint8 or uint16 alpha as uploaded (oriented), re-attached unchanged
    icc_profile: bytes | None  # carried over to the output
    frames: int  # >1 for animated or multi-page input; only the first frame is processed

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


@dataclass(frozen=True, eq=False)
class DecodedImage:
    rgb: np.ndarray  # (3, H, W) float32 RGB in [0, 1]: what the network sees
    info: ImageInfo


def probe(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header alone; raises like `decode`.

    Cheap enough to run before admission, so an overloaded service refuses work before decoding it.
    """
    image = _open_checked(data, max_pixels)
    width, height = image.size
    return (width, height) if _orientation(image) in (5, 6, 7, 8) else (height, width)


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode one upload; raises BadImage, UnsupportedMedia or TooLarge with a one-line reason."""
    image = _open_checked(data, max_pixels)
    samples, bits, icc_valid = _read_samples(image, data)
    samples = orient(samples, _orientation(image))
    icc = image.info.get("icc_profile") if icc_valid else None
    return _to_decoded(samples, bits, INPUT_FORMATS[str(image.format)], icc, getattr(image, "n_frames", 1))


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open the header and enforce the size limits before any pixel is decoded."""
    if not data:
        raise BadImage("empty upload: send the image bytes")
    image = _open(data, max_pixels)
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImage(f"image has an empty side ({width}x{height})")
    if width * height > max_pixels:
        raise TooLarge(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
            f"the limit is {max_pixels / 1e6:.1f} megapixels"
        )
    return image


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only (no pixels): format, size, mode, metadata."""
    try:
        image = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own header check (> 179 MP) fired first
        raise TooLarge(f"image is larger than the limit of {max_pixels / 1e6:.1f} megapixels") from None
    except Exception:
        kind = sniff_unsupported(data)
        if kind:
            raise UnsupportedMedia(f"{kind} images are not supported; send {ACCEPTED}") from None
        raise BadImage(f"not a decodable image; send {ACCEPTED}") from None
    if image.format not in INPUT_FORMATS:  # defensive: `formats=` already restricts the decoders tried
        raise UnsupportedMedia(f"{image.format} images are not supported; send {ACCEPTED}")
    return image


def sniff_unsupported(data: bytes) -> str | None:
    """Name of a well-known format we refuse, from its first bytes; None if unrecognised."""
    head = data[:64]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    return None


def _read_samples(image: Image.Image, data: bytes) -> tuple[np.ndarray, int, bool]:
    """(H, W) or (H, W, C) samples in C = gray / gray+alpha / RGB / RGBA order, bits, ICC still valid."""
    bits = _bits_per_sample(image, data)
    if bits > 8:
        if bits != 16:
            raise UnsupportedMedia(f"{bits}-bit samples are not supported; send 8- or 16-bit images")
        return _read_16bit(image, data), 16, True
    try:
        image.load()
    except Exception:
        raise BadImage("image data is truncated or corrupt") from None
    converted, icc_valid = _convert_8bit(image)
    return np.asarray(converted), 8, icc_valid


def _bits_per_sample(image: Image.Image, data: bytes) -> int:
    if image.format == "PNG":
        return data[24] if len(data) > 24 else 8  # IHDR bit depth (the signature and IHDR come first)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, 8)  # type: ignore[attr-defined]  # TIFF BitsPerSample
        return int(max(bits) if isinstance(bits, tuple) else bits)
    return 16 if image.mode.startswith("I;16") else 8


def _read_16bit(image: Image.Image, data: bytes) -> np.ndarray:
    if image.mode not in _MODES_16BIT:
        raise UnsupportedMedia(f"16-bit {image.mode} images are not supported; send gray, RGB or RGBA")
    try:
        if image.format == "PNG":
            samples = imagecodecs.png_decode(data)
        else:
            samples = imagecodecs.tiff_decode(data, index=0)
    except Exception:
        raise BadImage("image data is truncated or corrupt") from None
    width, height = image.size
    if samples.ndim == 3 and samples.shape[1:] == (height, width):  # planar TIFF: CHW -> HWC
        samples = np.moveaxis(samples, 0, -1)
    if samples.ndim == 3 and samples.shape[-1] == 1:
        samples = samples[..., 0]
    channels_ok = samples.ndim == 2 or (samples.ndim == 3 and samples.shape[-1] in (2, 3, 4))
    if samples.shape[:2] != (height, width) or not channels_ok or samples.dtype != np.uint16:
        raise UnsupportedMedia(f"16-bit image layout {samples.shape} {samples.dtype} is not supported")
    return samples


def _convert_8bit(image: Image.Image) -> tuple[Image.Image, bool]:
    mode = image.mode
    if mode == "CMYK":
        return _cmyk_to_rgb(image), False
    if mode not in _MODES:
        raise UnsupportedMedia(f"{mode} images are not supported; send 8- or 16-bit gray, RGB or RGBA")
    target, icc_valid = _MODES[mode]
    if mode == "P" and "transparency" in image.info:
        target = "RGBA"
    try:
        return (image if mode == target else image.convert(target)), icc_valid
    except Exception:
        raise UnsupportedMedia(f"{mode} images cannot be converted to RGB; send RGB") from None


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Through the embedded ICC profile when there is one (what print software does), else naively."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except Exception:
            log.info("CMYK ICC profile unusable; converting without it")
    return image.convert("RGB")


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)  # EXIF Orientation
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to HW or HWC samples, as Pillow's ImageOps.exif_transpose does."""
    if orientation == 2:
        return samples[:, ::-1]
    if orientation == 3:
        return samples[::-1, ::-1]
    if orientation == 4:
        return samples[::-1]
    if orientation == 5:
        return samples.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(samples, -1)
    if orientation == 7:
        return samples[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(samples, 1)
    return samples


def _to_decoded(samples: np.ndarray, bits: int, fmt: str, icc: bytes | None, frames: int) -> DecodedImage:
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    grayscale = channels <= 2
    alpha = np.ascontiguousarray(samples[..., -1]) if channels in (2, 4) else None
    color = samples if channels == 1 else samples[..., 0] if grayscale else samples[..., :3]
    top = np.float32(65535 if bits == 16 else 255)  # sample / top: correctly rounded, exact round trips
    if grayscale:
        gray = color.astype(np.float32) / top
        rgb = np.repeat(gray[np.newaxis], 3, axis=0)
    else:
        rgb = np.ascontiguousarray(np.moveaxis(color, -1, 0), dtype=np.float32)
        rgb /= top
    height, width = samples.shape[:2]
    info = ImageInfo(height, width, fmt, bits, grayscale, alpha, icc or None, max(1, int(frames)))
    return DecodedImage(rgb, info)

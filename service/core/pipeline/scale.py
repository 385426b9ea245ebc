"""Derain at a working scale: the model sees the image shrunk by s, only its rain layer comes back up.

The network learnt rain from images whose short side is `train_short_side` px (321 for the shipped
models; the ONNX metadata says so), where a streak is 1-3 px wide. In a 12 MP photo a streak is 5-15 px
wide and the network does not see it as rain. So:

1. `shrink`: the image, antialiased (Pillow's bicubic, whose support widens with the reduction), to
   round(H / s) x round(W / s): the working image, whose streaks look like the ones the model learnt;
2. the model derains the working image (tiled or whole: the caller's business);
3. `restore`: the working rain layer (working input - working output) is brought back to full size and
   subtracted from the untouched full-size input, then clipped to [0, 1]. Only the rain layer is
   resampled, so detail the model never saw is kept. Upsampling is plain `bicubic` (the default) or
   `guided` (a fast guided filter, He & Sun 2015, with the full-size input as guide);
   benchmarks/scale_study.py measured both and bicubic scored higher at the factor auto picks.

At s = 1 nothing is resampled: `shrink` returns its input and `restore` the clipped model output, which
is what the service returned before working scales existed.

`scale=auto` starts from the image's size relative to the training images (`size_scale`, times
AUTO_SIZE_RATIO) and lets the model overrule it: `auto_candidates` names the factors to try,
`probe_crops` cuts one small crop per factor (one batch for the model), `probe_pick` keeps the size
rule's factor unless the model took PROBE_MARGIN times as much streak energy out at another factor
(a crop of a large photo, or a photo shrunk before upload). Streak energy is the fine detail of the
predicted rain layer (`streak_energy`): what a model trained on veiled rain takes out of a flat,
bright crop (haze, the low frequencies) would otherwise outvote the streaks. `streak_width` (a
model-free reading of the image) was measured too and lost; see the README for the figures.

A photo larger than the cap allows (`second_pass`: its size rule is above AUTO_PRIOR_MAX), derained at
the cap, goes through the model once more (auto only): its first result shrunk by the cap along the
streaks and by AUTO_ACROSS_SHARE of it across them (`across_factor`, the orientation read from the first
pass's rain layer by `rain_orientation`), and that pass's rain layer is taken out of the first result.
Real photos' streaks grow longer with resolution but not as much wider.

Pure numpy + Pillow: no FastAPI, no onnxruntime (tests/service/test_layers.py checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from service.errors import InvalidParameter

DEFAULT_TRAIN_SHORT_SIDE = 321  # px: Rain100L/RainTrainL/Rain12 images are 481 x 321
MAX_SCALE = 8.0  # the largest factor a client may ask for (a 40 MP photo's short side is ~5,200 px)
# What the HTTP API accepts (its OpenAPI pattern): auto, or 1 to 8 with up to three decimals.
SCALE_PATTERN = r"^(auto|[1-7](\.[0-9]{1,3})?|8(\.0{1,3})?)$"
SCALE_STEP = 0.25  # auto rounds its factor to this step (the header and the metric report it)
Upsampling = Literal["guided", "bicubic"]
UPSAMPLING: tuple[Upsampling, ...] = ("guided", "bicubic")
# Guided upsampling: box radius in working-scale px, and the regulariser (in [0, 1] intensity squared).
GUIDED_RADIUS = 1
GUIDED_EPS = 1e-3
# streak_width: the analysis runs on at most this many pixels (an integer box reduction before it).
ANALYSIS_PIXELS = 1_500_000
# What streak_width measures on the model's training-scale images (RainTrainL, every 2nd of 200, median;
# benchmarks/scale_study.py prints it): the auto rule's unit.
REFERENCE_STREAK_WIDTH = 7.33


class ScaleError(InvalidParameter, ValueError):
    """A scale value a client sent that is not `auto` or a number from 1 to MAX_SCALE (422)."""


@dataclass(frozen=True)
class ScaleChoice:
    """What a client asked for: a fixed factor, or None for auto."""

    factor: float | None

    @property
    def auto(self) -> bool:
        return self.factor is None

    def __str__(self) -> str:
        return "auto" if self.factor is None else format_scale(self.factor)


AUTO = ScaleChoice(None)


def parse_scale(text: str | None, maximum: float = MAX_SCALE) -> ScaleChoice:
    """`auto` (or nothing) -> auto; a number 1 <= s <= maximum -> that factor; else ScaleError."""
    if text is None or text.strip().lower() in ("", "auto"):
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise ScaleError(f"scale must be 'auto' or a number from 1 to {format_scale(maximum)}") from None
    if not math.isfinite(value) or not 1.0 <= value <= maximum:
        raise ScaleError(f"scale must be 'auto' or a number from 1 to {format_scale(maximum)}, got {text}")
    return ScaleChoice(value)


def format_scale(factor: float) -> str:
    """2 -> '2', 2.5 -> '2.5', 2.333 -> '2.33' (what X-Derain-Scale carries)."""
    return f"{factor:.2f}".rstrip("0").rstrip(".")


Factor = float | tuple[float, float]  # one factor for both sides, or (rows, columns): auto's second pass


def axes(factor: Factor) -> tuple[float, float]:
    """(rows, columns) of a factor."""
    return factor if isinstance(factor, tuple) else (factor, factor)


def format_factor(factor: Factor) -> str:
    """4 -> '4'; (4, 2) -> '4x2' (the height divided by 4, the width by 2: what X-Derain-Passes carries)."""
    rows, columns = axes(factor)
    return format_scale(rows) if rows == columns else f"{format_scale(rows)}x{format_scale(columns)}"


def working_size(height: int, width: int, factor: Factor) -> tuple[int, int]:
    """The working image's (height, width) for a factor: each side divided by its factor, rounded, >= 1."""
    rows, columns = axes(factor)
    if rows == columns == 1:
        return height, width
    return max(1, round(height / rows)), max(1, round(width / columns))


def resize(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, H, W) float32 -> (C, height, width) float32, Pillow bicubic per plane (antialiased when
    reducing: the filter's support grows with the reduction). Values may overshoot [0, 1] slightly."""
    if planes.shape[1:] == (height, width):
        return planes.astype(np.float32, copy=True)
    out = np.empty((planes.shape[0], height, width), np.float32)
    for index, plane in enumerate(planes):
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
        out[index] = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out


def shrink(rgb: np.ndarray, factor: Factor) -> np.ndarray:
    """The working image: (3, H, W) in [0, 1] reduced by `factor` (antialiased; a (rows, columns) pair
    reduces each side by its own), clipped to [0, 1]. At factor 1 the input itself (no copy)."""
    if axes(factor) == (1, 1):
        return rgb
    height, width = working_size(rgb.shape[1], rgb.shape[2], factor)
    small = resize(rgb, height, width)
    return np.clip(small, 0.0, 1.0, out=small)


def box_filter(planes: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window of each (.., H, W) plane, the window shrunk at the borders
    (He's O(1) box filter, with cumulative sums)."""
    out = planes.astype(np.float64)
    for axis in (-2, -1):
        length = out.shape[axis]
        total = np.cumsum(out, axis=axis)
        zero_shape = list(total.shape)
        zero_shape[axis] = 1
        total = np.concatenate([np.zeros(zero_shape), total], axis=axis)
        index = np.arange(length)
        upper = np.minimum(index + radius + 1, length)
        lower = np.maximum(index - radius, 0)
        out = (np.take(total, upper, axis=axis) - np.take(total, lower, axis=axis)) / (upper - lower).reshape(
            [-1 if a == (axis % out.ndim) else 1 for a in range(out.ndim)]
        )
    return out.astype(np.float32)


def guided_upsample(
    rain: np.ndarray,
    guide_small: np.ndarray,
    guide: np.ndarray,
    radius: int = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
) -> np.ndarray:
    """Fast guided filter upsampling (He & Sun 2015): fit rain ~ a * guide + b locally at working scale
    (per channel, each guided by its own channel of the input), bring a and b up bicubically and apply
    them to the full-size guide. (C, h, w) rain and guide_small, (C, H, W) guide -> (C, H, W) rain.
    One channel at a time at full size: two full-size planes beside the result."""
    mean_i = box_filter(guide_small, radius)
    mean_p = box_filter(rain, radius)
    cov = box_filter(guide_small * rain, radius) - mean_i * mean_p
    var = box_filter(guide_small * guide_small, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    height, width = guide.shape[1:]
    mean_a, mean_b = box_filter(a, radius), box_filter(b, radius)
    out = np.empty(guide.shape, np.float32)
    for channel in range(guide.shape[0]):
        np.multiply(resize(mean_a[channel : channel + 1], height, width)[0], guide[channel], out=out[channel])
        out[channel] += resize(mean_b[channel : channel + 1], height, width)[0]
    return out


def restore(
    rgb: np.ndarray,
    small: np.ndarray,
    derained_small: np.ndarray,
    factor: Factor,
    upsampling: Upsampling = "bicubic",
    guided: tuple[int, float] = (GUIDED_RADIUS, GUIDED_EPS),
) -> np.ndarray:
    """The full-size result: `rgb` minus the working rain layer (small - derained_small) brought back
    to rgb's size (bicubic, or a guided filter of `guided` = (radius, eps) with `rgb` as the guide),
    clipped to [0, 1]. At factor 1 the model's output, clipped."""
    if axes(factor) == (1, 1) or small.shape == rgb.shape:
        return np.clip(derained_small, 0.0, 1.0)
    rain = small - derained_small
    height, width = rgb.shape[1:]
    if upsampling == "guided":
        full = guided_upsample(rain, small, rgb, *guided)
    elif upsampling == "bicubic":
        full = resize(rain, height, width)
    else:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
    np.subtract(rgb, full, out=full)
    return np.clip(full, 0.0, 1.0, out=full)


# --- how wide are the streaks? ------------------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (H, W) BT.601 luma, float32."""
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float32)


def _reduce(gray: np.ndarray, factor: int) -> np.ndarray:
    """Integer box reduction (mean of factor x factor blocks; a ragged edge is dropped)."""
    if factor == 1:
        return gray
    height, width = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    return gray[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def streak_orientation(detail: np.ndarray) -> float:
    """Dominant orientation of line structures in a high-passed gray image, degrees from vertical
    (positive = clockwise lean of the top), from the structure tensor of its gradients: the streaks'
    gradients point across them."""
    gy, gx = np.gradient(detail.astype(np.float64))
    jxx, jyy, jxy = float(np.mean(gx * gx)), float(np.mean(gy * gy)), float(np.mean(gx * gy))
    gradient_angle = 0.5 * math.atan2(2 * jxy, jxx - jyy)  # radians from the x axis
    return math.degrees(gradient_angle)


def _rotate(gray: np.ndarray, degrees: float) -> np.ndarray:
    if abs(degrees) < 0.5:
        return gray
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
    return np.asarray(image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=False))


def _along_mean(upright: np.ndarray, along: int) -> np.ndarray:
    """Mean over `along` rows of each column (a vertical box filter, valid part only)."""
    rows = min(along, upright.shape[0])
    sums = np.cumsum(np.vstack([np.zeros((1, upright.shape[1])), upright]), axis=0)
    return (sums[rows:] - sums[:-rows]) / rows


def streak_width(rgb: np.ndarray, along: int = 15) -> float:
    """Typical width (px, at the image's own size) of its rain streaks, read from the image itself.

    On a gray copy (box-reduced by an integer k first when it has more than ANALYSIS_PIXELS pixels):
    keep what is brighter than its surroundings (rain adds light), turn the dominant line orientation
    upright (the structure tensor's estimate, refined to the angle whose along-streak average keeps the
    most energy), average along it over `along` px (streaks are long, texture is not: this keeps the
    streaks and averages the rest away), then take the autocorrelation across it. The width is twice
    the lag at which it falls to one half, times k.
    """
    gray = luma(rgb)
    k = max(1, math.ceil(math.sqrt(gray.size / ANALYSIS_PIXELS)))
    gray = _reduce(gray, k)
    height, width = gray.shape
    if min(height, width) < 32:
        return 0.0
    local = box_filter(gray[None], max(4, min(height, width) // 16))[0]
    detail = gray - local
    margin = max(1, min(height, width) // 8)  # drop the rotation's empty corners

    def upright_mean(degrees: float) -> np.ndarray:
        return _along_mean(_rotate(detail, degrees)[margin:-margin, margin:-margin], along)

    first = streak_orientation(detail)
    candidates = [first + delta for delta in (-10.0, -5.0, 0.0, 5.0, 10.0)]
    smooth = max((upright_mean(angle) for angle in candidates), key=lambda kept: float(np.var(kept)))
    smooth = smooth - smooth.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(smooth, n=2 * smooth.shape[1], axis=1)
    correlation = np.fft.irfft(np.abs(spectrum) ** 2, axis=1).sum(axis=0)[: smooth.shape[1] // 2]
    if correlation[0] <= 0:
        return 0.0
    correlation = correlation / correlation[0]
    below = np.flatnonzero(correlation < 0.5)
    if below.size == 0:
        return float(2 * k * len(correlation))
    lag = int(below[0])
    before, after = correlation[lag - 1], correlation[lag]
    half_lag = lag - 1 + (before - 0.5) / (before - after)
    return float(2 * k * half_lag)


def size_scale(height: int, width: int, train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE) -> float:
    """The image's short side relative to the model's training images (at least 1)."""
    return max(1.0, min(height, width) / train_short_side)


def quantize_scale(factor: float, maximum: float = MAX_SCALE) -> float:
    """Round to SCALE_STEP, within [1, maximum]."""
    return min(maximum, max(1.0, round(factor / SCALE_STEP) * SCALE_STEP))


def streak_scale(
    rgb: np.ndarray,
    train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE,
    reference_width: float = REFERENCE_STREAK_WIDTH,
) -> float:
    """Factor that brings the image's streaks to the width the model learnt (reference_width at a
    short side of DEFAULT_TRAIN_SHORT_SIDE, proportionally wider for a model trained larger)."""
    reference = reference_width * train_short_side / DEFAULT_TRAIN_SHORT_SIDE
    return max(1.0, streak_width(rgb) / reference)


PROBE_SIDE = 64  # px, the working-scale side of each probe crop
PROBE_MARGIN = 5.0  # another factor overrules the size rule only with this many times its streak energy
PROBE_DETAIL_RADIUS = 2  # working px: streak energy is the rain layer minus its (2r+1)^2 box mean
AUTO_SIZE_RATIO = 1.0  # the size rule's factor is this share of the size ratio (README: measured)
AUTO_PRIOR_MAX = 4.0  # and is capped here (real photos' streaks grow slower than their size)
PROBE_SPOTS = 3  # crops per factor in images at least twice the training size (1 in smaller ones)


def auto_candidates(
    height: int, width: int, train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE, maximum: float = MAX_SCALE
) -> tuple[float, list[float]]:
    """(prior, candidates) for `scale=auto`: the size rule's factor (AUTO_SIZE_RATIO times the size
    ratio, at most AUTO_PRIOR_MAX), and the factors the model is probed at: a quarter, half, the same,
    twice and four times the prior, within [1, maximum] (a factor at which a probe crop no longer fits
    in the image is left out). The ratio is the model's to decide (README: measured per model): the
    default model (windowed attention, stage 3) keeps 91-92% of its native gain on Rain12 enlarged
    x2-x4 at the full ratio and 78-83% at 3/4 of it, and on real photos the two look alike."""
    size = AUTO_SIZE_RATIO * size_scale(height, width, train_short_side)
    prior = quantize_scale(min(size, AUTO_PRIOR_MAX), maximum)
    short = min(height, width)
    candidates = sorted({quantize_scale(prior * m, maximum) for m in (0.25, 0.5, 1.0, 2.0, 4.0)})
    return prior, [f for f in candidates if short / f >= PROBE_SIDE or f == prior]


def probe_spots(height: int, width: int, train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE) -> int:
    """Crops per factor: one in an image near the training size (the probe is then a visible share
    of the work), PROBE_SPOTS in larger ones (where it costs little and one crop may miss the rain)."""
    return PROBE_SPOTS if min(height, width) >= 2 * train_short_side else 1


def probe_crops(rgb: np.ndarray, factors: list[float], spots: int = 1, side: int = PROBE_SIDE) -> np.ndarray:
    """(len(factors) * spots, 3, side, side), factor-major: for each factor, `spots` crops of the image
    at that working scale (full-size squares of side * factor px, or of the short side if smaller,
    shrunk to side x side), centred on evenly spaced points of the long axis through the image's
    centre. One batch for the model."""
    height, width = rgb.shape[1:]
    crops = np.empty((len(factors) * spots, 3, side, side), np.float32)
    for index, factor in enumerate(factors):
        extent = min(round(side * factor), height, width)
        for spot in range(spots):
            along = (spot + 0.5) / spots
            if width >= height:
                top, left = (height - extent) // 2, round(along * (width - extent))
            else:
                top, left = round(along * (height - extent)), (width - extent) // 2
            region = rgb[:, top : top + extent, left : left + extent]
            crops[index * spots + spot] = np.clip(resize(region, side, side), 0.0, 1.0)
    return crops


def streak_energy(
    crops: np.ndarray, derained: np.ndarray, border: int = 8, radius: int = PROBE_DETAIL_RADIUS
) -> np.ndarray:
    """Mean squared fine detail of each crop's rain layer (crop - model output), away from its border:
    the layer minus its box mean over (2 * radius + 1)^2 px. Streaks a model sees as rain are 1-3 px
    wide at its working scale and stay; a veil or a brightness change the model takes out does not."""
    rain = (crops - derained).astype(np.float32)
    detail = (rain - box_filter(rain, radius))[:, :, border:-border, border:-border].astype(np.float64)
    return np.asarray(np.mean(detail**2, axis=(1, 2, 3)))


# --- auto's second pass, across the streaks -----------------------------------------------------------
#
# Real photos' streaks grow longer with resolution but not as much wider: on the 12 MP photo of the README
# they are 2-4 px wide and 100-300 px long. At the cap (4) they come out 0.5-1 px wide and the model leaves
# many; at 2 it takes most out, but costs 4x the pixels. So a photo above the cap, derained at the cap,
# goes through the model once more: its first result shrunk by the cap along the streaks and by
# AUTO_ACROSS_SHARE of it across them, and that pass's rain layer is taken out of the first result. Across
# 2 took out a few more streaks than 2.5 but left auto only 5.0x faster than scale=1 there; 3 left
# visibly more (README: measured).

AUTO_ACROSS_SHARE = 0.625  # the second pass shrinks across the streaks by this share of its factor: 4 -> 2.5
# Above the cap the first pass's rain layer comes back with a guided filter (radius in working px, eps),
# the full-size photo as its guide: the photo's streaks are thinner than a working pixel there, and
# bicubic spreads each over several px, leaving a thin line with dark flanks; the guide puts the rain
# back on the streak itself. eps 1e-4 between 3e-5 (fewer streaks, more veil on 91) and 3e-4 (more
# streaks); radius 2 did a little better on 91 and 95 but took more off Rain12-x5 (README: measured).
ABOVE_CAP_GUIDED = (1, 1e-4)


def second_pass(
    height: int, width: int, factor: float, train_short_side: int = DEFAULT_TRAIN_SHORT_SIDE
) -> bool:
    """Whether auto runs the second pass: the image is larger than the cap allows (its size rule factor
    is above AUTO_PRIOR_MAX) and it was derained at the cap (the probe did not move it)."""
    size = AUTO_SIZE_RATIO * size_scale(height, width, train_short_side)
    return factor == AUTO_PRIOR_MAX and size > AUTO_PRIOR_MAX


ORIENTATION_BAND = (2, 8)  # box radii (working px) of rain_orientation's band-pass


def rain_orientation(small: np.ndarray, derained_small: np.ndarray) -> float:
    """The dominant orientation (degrees from vertical) of a pass's rain layer (small - derained_small),
    read from a band of it: its 5x5 box mean minus its 17x17 one (the veil does not count, and the
    gradients of 1 px streaks, which lean towards the pixel diagonals, are smoothed first: streaks
    leaning 20 degrees read 23 this way, 36-43 from the unsmoothed detail)."""
    rain = luma(small - derained_small)[None]
    fine, coarse = ORIENTATION_BAND
    return streak_orientation((box_filter(rain, fine) - box_filter(rain, coarse))[0])


def across_factor(factor: float, orientation: float) -> tuple[float, float]:
    """(rows, columns) of the second pass: `factor` along the streaks, AUTO_ACROSS_SHARE of it across
    (quantised, at least 1). Streaks within 45 degrees of vertical are shrunk most along the height."""
    across = quantize_scale(factor * AUTO_ACROSS_SHARE)
    return (factor, across) if abs(orientation) <= 45 else (across, factor)


Energy = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (crops, model outputs) -> one value per crop


def probe_pick(
    prior: float,
    factors: list[float],
    crops: np.ndarray,
    derained: np.ndarray,
    margin: float = PROBE_MARGIN,
    measure: Energy = streak_energy,
) -> float:
    """The size rule's factor, unless the model took at least `margin` times as much streak energy
    (or what `measure` reads) out of the probe crops (their mean, per factor) at another factor: then
    that one."""
    energy = measure(crops, derained).reshape(len(factors), -1).mean(axis=1)
    best = int(np.argmax(energy))
    if prior not in factors:
        return factors[best]
    return factors[best] if energy[best] > margin * energy[factors.index(prior)] else prior

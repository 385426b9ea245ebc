"""Working-scale deraining: the resampling round trip, the rain layer's way back, scale values, auto."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.pipeline import scale as sc
from tests.service.scale_helpers import streaks, thin_line_remover


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(3, H, W) in [0, 1] with smooth shading, edges and fine texture (noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.45 + 0.25 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    base += 0.15 * (xx > width / 2)  # an edge
    rgb = np.stack([base, 0.9 * base, 1.1 * base]) + 0.05 * rng.standard_normal((3, height, width))
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("upsampling", sc.UPSAMPLING)
@pytest.mark.parametrize("factor", [1.0, 1.5, 2.0, 3.0, 4.0, 8.0])
@pytest.mark.parametrize("size", [(321, 481), (97, 130), (7, 9)])
def test_a_model_that_sees_no_rain_gives_the_input_back(
    upsampling: sc.Upsampling, factor: float, size: tuple[int, int]
) -> None:
    rgb = photo_like(*size)
    small = sc.shrink(rgb, factor)
    out = sc.restore(rgb, small, small.copy(), factor, upsampling)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert float(np.abs(out - rgb).max()) <= 1 / 255


def test_working_size_and_shrink() -> None:
    assert sc.working_size(321, 481, 1) == (321, 481)
    assert sc.working_size(642, 962, 2) == (321, 481)
    assert sc.working_size(2848, 4288, 4) == (712, 1072)
    assert sc.working_size(5, 3, 8) == (1, 1)
    rgb = photo_like(60, 90)
    assert sc.shrink(rgb, 1) is rgb  # scale 1: nothing resampled, not even copied
    small = sc.shrink(rgb, 3)
    assert small.shape == (3, 20, 30) and small.min() >= 0 and small.max() <= 1
    # antialiased: a 1-px checkerboard shrunk by 2 is flat gray, not aliased into a pattern
    checker = np.broadcast_to((np.indices((64, 64)).sum(0) % 2).astype(np.float32), (3, 64, 64))
    assert float(np.ptp(sc.shrink(np.ascontiguousarray(checker), 2)[:, 4:-4, 4:-4])) < 0.02


@pytest.mark.parametrize("upsampling", sc.UPSAMPLING)
def test_the_rain_layer_comes_back_and_is_subtracted_from_the_full_size_input(
    upsampling: sc.Upsampling,
) -> None:
    rgb = photo_like(240, 360) * 0.8
    small = sc.shrink(rgb, 4)
    out = sc.restore(rgb, small, small - 0.1, 4, upsampling)  # the model says: 0.1 of rain everywhere
    expected = np.clip(rgb - 0.1, 0.0, 1.0)
    np.testing.assert_allclose(out[:, 8:-8, 8:-8], expected[:, 8:-8, 8:-8], atol=2e-3)
    # only the rain layer was resampled: the input's fine texture (noise) is still there, pixel for pixel
    assert np.corrcoef((out - rgb).ravel(), rgb.ravel())[0, 1] < 0.2


def test_the_result_is_clipped_to_the_unit_range() -> None:
    rgb = np.full((3, 64, 64), 0.05, np.float32)
    small = sc.shrink(rgb, 2)
    assert sc.restore(rgb, small, small - 0.5, 2, "bicubic").min() == 0.0
    assert sc.restore(rgb, small, small + 0.5, 2, "bicubic").max() <= 1.0
    assert sc.restore(rgb, rgb, rgb + 2.0, 1).max() == 1.0  # scale 1: the model output, clipped


def test_guided_upsampling_puts_the_rain_where_the_full_size_streak_is() -> None:
    """A 1-px streak at full size: bicubic smears the working rain layer over ~4 px, the guide keeps it
    on the streak's own column."""
    rgb = np.full((3, 64, 64), 0.3, np.float32)
    rgb[:, :, 33] = 0.9
    small = sc.shrink(rgb, 4)
    clean_small = np.full_like(small, 0.3)
    guided = rgb - sc.restore(rgb, small, clean_small, 4, "guided")
    bicubic = rgb - sc.restore(rgb, small, clean_small, 4, "bicubic")
    assert guided[:, 10:-10, 33].mean() > 2 * bicubic[:, 10:-10, 33].mean()
    assert guided[:, 10:-10, 36].mean() < bicubic[:, 10:-10, 36].mean()


@pytest.mark.parametrize("size", [(1300, 1950), (97, 130)])
def test_above_the_cap_guided_restore_gives_the_input_back_without_rain(size: tuple[int, int]) -> None:
    rgb = photo_like(*size)
    small = sc.shrink(rgb, 4.0)
    out = sc.restore(rgb, small, small.copy(), 4.0, "guided", sc.ABOVE_CAP_GUIDED)
    assert out.shape == rgb.shape and float(np.abs(out - rgb).max()) <= 1 / 255


def test_above_the_cap_guided_restore_takes_thin_streaks_out_without_dark_flanks() -> None:
    """2 px streaks (as in a 12 MP photo) on shading, derained at 4 by a model that knows the
    background: bicubic spreads each streak's rain over ~6 px, leaving a bright core and dark flanks
    (worse than the input, on average); the guided filter (scale.ABOVE_CAP_GUIDED) puts it back on the
    streak."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    shading = 0.35 + 0.15 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    clean = np.stack([shading, 0.9 * shading, 1.1 * shading])
    rgb = clean.copy()
    rgb[:, :, 40::24] += 0.3
    rgb[:, :, 41::24] += 0.3
    small = sc.shrink(rgb, 4.0)
    background = sc.shrink(clean, 4.0)
    errors = {}
    for upsampling in sc.UPSAMPLING:
        out = sc.restore(rgb, small, background, 4.0, upsampling, sc.ABOVE_CAP_GUIDED)
        errors[upsampling] = out[:, 16:-16, 16:-16] - clean[:, 16:-16, 16:-16]
    before = float(np.abs(rgb - clean).mean())
    guided, bicubic = (float(np.abs(errors[name]).mean()) for name in ("guided", "bicubic"))
    assert guided < 0.3 * before and guided < 0.3 * bicubic
    assert float(errors["bicubic"].min()) < -0.1 < -0.03 < float(errors["guided"].min())  # the dark flanks


def test_unknown_upsampling_is_refused() -> None:
    rgb = photo_like(32, 32)
    with pytest.raises(ValueError, match="upsampling"):
        sc.restore(rgb, sc.shrink(rgb, 2), sc.shrink(rgb, 2), 2, "nearest")  # type: ignore[arg-type]


def test_box_filter_matches_a_direct_window_mean() -> None:
    planes = np.random.default_rng(1).random((2, 9, 11)).astype(np.float32)
    radius = 2
    expected = np.empty_like(planes)
    for row in range(9):
        for column in range(11):
            window = planes[
                :, max(0, row - radius) : row + radius + 1, max(0, column - radius) : column + radius + 1
            ]
            expected[:, row, column] = window.mean(axis=(1, 2))
    np.testing.assert_allclose(sc.box_filter(planes, radius), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "factor"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        ("AUTO", None),
        ("1", 1.0),
        ("2", 2.0),
        ("2.5", 2.5),
        ("8", 8.0),
    ],
)
def test_scale_values(text: str | None, factor: float | None) -> None:
    assert sc.parse_scale(text).factor == factor


@pytest.mark.parametrize("text", ["0", "0.5", "-2", "9", "8.01", "nan", "inf", "two", "1e9", "2x"])
def test_bad_scale_values_are_refused_with_the_range(text: str) -> None:
    with pytest.raises(sc.ScaleError, match="'auto' or a number from 1 to 8"):
        sc.parse_scale(text)


def test_scale_formatting() -> None:
    assert [sc.format_scale(f) for f in (1, 2.0, 2.5, 2.25, 7 / 3)] == ["1", "2", "2.5", "2.25", "2.33"]
    assert str(sc.AUTO) == "auto" and str(sc.ScaleChoice(3.0)) == "3"


def auto_factor(rgb: np.ndarray, train_short_side: int = sc.DEFAULT_TRAIN_SHORT_SIDE) -> float:
    prior, factors = sc.auto_candidates(*rgb.shape[1:], train_short_side)
    crops = sc.probe_crops(rgb, factors)
    return sc.probe_pick(prior, factors, crops, thin_line_remover(crops))


@pytest.mark.parametrize(("streak_px", "expected"), [(1.5, 1.0), (6.0, 4.0)])
@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_auto_reads_the_streak_width_of_a_small_image(
    streak_px: float, expected: float, angle: float
) -> None:
    """A 321 x 481 image (the training size, so the size rule alone says 1): thin streaks keep 1,
    streaks four times as wide as the model's make the probe take 4."""
    assert auto_factor(streaks(streak_px, 321, 481, angle)) == expected


@pytest.mark.parametrize(("size", "expected"), [((642, 962), 2.0), ((963, 1443), 3.0), ((1284, 1924), 4.0)])
def test_auto_follows_the_image_size_when_the_streaks_agree(size: tuple[int, int], expected: float) -> None:
    """Streaks that widen with the image, as in an enlarged photo: the size rule's factor (the size
    ratio) stands."""
    factor = size[0] / 321
    assert auto_factor(streaks(1.5 * factor, *size)) == expected


def test_auto_for_a_model_trained_larger_starts_from_its_own_scale() -> None:
    prior, factors = sc.auto_candidates(1284, 1924, train_short_side=642)
    assert prior == 2.0 and factors == [1.0, 2.0, 4.0, 8.0]  # twice its size; a quarter and half clamp to 1
    assert sc.auto_candidates(1284, 1924) == (4.0, [1.0, 2.0, 4.0, 8.0])  # 4x; 16 clamps to 8
    assert sc.auto_candidates(321, 481) == (1.0, [1.0, 2.0, 4.0])
    assert sc.auto_candidates(2848, 4288) == (4.0, [1.0, 2.0, 4.0, 8.0])  # 8.9: capped at 4
    assert sc.auto_candidates(100, 100) == (1.0, [1.0])  # no probe crop fits at 2


def test_the_probe_keeps_the_size_rule_unless_another_factor_clearly_wins() -> None:
    crops = np.full((3, 3, 32, 32), 0.5, np.float32)
    stripes = np.where(np.arange(32) % 2 == 0, 1.0, -1.0).astype(np.float32)  # 1 px wide: all fine detail
    amplitude = np.array([0.02, 0.0346, 0.01], np.float32)[:, None, None, None]  # energies 1 : 3 : 0.25
    assert sc.probe_pick(1.0, [1.0, 2.0, 4.0], crops, crops - amplitude * stripes) == 1.0  # size rule
    amplitude[1] = 0.02 * 4.8**0.5  # 4.8x: still under the margin of 5
    assert sc.probe_pick(1.0, [1.0, 2.0, 4.0], crops, crops - amplitude * stripes) == 1.0
    amplitude[1] = 0.02 * 5.3**0.5  # 5.3x
    assert sc.probe_pick(1.0, [1.0, 2.0, 4.0], crops, crops - amplitude * stripes) == 2.0


def test_the_probe_counts_streaks_not_a_veil_taken_out() -> None:
    """A model trained on veiled rain darkens a flat, bright crop: a large but smooth rain layer. It
    must not outvote thin streaks found at the size rule's factor."""
    crops = np.full((2, 3, 32, 32), 0.8, np.float32)
    stripes = np.where(np.arange(32) % 4 == 0, 0.05, 0.0).astype(np.float32)  # thin streaks at factor 1
    ramp = np.linspace(0.1, 0.3, 32, dtype=np.float32)[:, None]  # a smooth haze layer at factor 2
    derained = np.stack([crops[0] - stripes, crops[1] - ramp])
    assert float(np.mean((crops[1] - derained[1]) ** 2)) > 20 * float(np.mean((crops[0] - derained[0]) ** 2))
    assert sc.probe_pick(1.0, [1.0, 2.0], crops, derained) == 1.0
    energy = sc.streak_energy(crops, derained)
    assert energy[0] > 1e-4 and energy[1] < 1e-7  # the ramp is linear: its box mean is itself


def test_streak_width_grows_with_the_streaks() -> None:
    widths = [sc.streak_width(streaks(w)) for w in (2.0, 4.0, 8.0)]
    assert widths[0] < widths[1] < widths[2]
    assert 1.5 < widths[1] / widths[0] < 2.5 and 1.4 < widths[2] / widths[1] < 2.5


# --- auto's second pass, across the streaks ----------------------------------------------------------


def test_a_factor_can_differ_per_axis() -> None:
    assert sc.working_size(2848, 4288, (4.0, 2.0)) == (712, 2144)
    assert sc.working_size(2848, 4288, (2.0, 4.0)) == (1424, 1072)
    assert sc.format_factor(4.0) == "4" and sc.format_factor((4.0, 4.0)) == "4"
    assert sc.format_factor((4.0, 2.0)) == "4x2" and sc.format_factor((2.25, 4.0)) == "2.25x4"
    rgb = photo_like(97, 130)
    small = sc.shrink(rgb, (4.0, 2.0))
    assert small.shape == (3, 24, 65)
    out = sc.restore(rgb, small, small.copy(), (4.0, 2.0))
    assert float(np.abs(out - rgb).max()) <= 1 / 255  # no rain found: the input back
    assert sc.shrink(rgb, (1.0, 1.0)) is rgb


@pytest.mark.parametrize(
    ("size", "factor", "train_short_side", "expected"),
    [
        ((2848, 4288), 4.0, 321, True),  # 12 MP: the size rule says 8.9, auto derains at the cap
        ((1440, 1920), 4.0, 321, True),  # 4.49 x the training images
        ((1284, 1924), 4.0, 321, False),  # exactly 4 x: the size rule is the cap, streaks grew with it
        ((963, 1443), 3.0, 321, False),  # below the cap
        ((2848, 4288), 2.0, 321, False),  # the probe moved it off the cap: its factor stands
        ((2848, 4288), 4.0, 642, True),  # a model trained at 642 px: 4.4 x its images
        ((2400, 3600), 4.0, 642, False),  # 3.7 x its images
    ],
)
def test_the_second_pass_is_for_photos_above_the_cap_derained_at_it(
    size: tuple[int, int], factor: float, train_short_side: int, expected: bool
) -> None:
    assert sc.second_pass(*size, factor, train_short_side) is expected


def test_the_second_pass_shrinks_less_across_the_streaks() -> None:
    assert sc.across_factor(4.0, 0.0) == (4.0, 2.5)  # vertical streaks: the width shrinks less
    assert sc.across_factor(4.0, -30.0) == (4.0, 2.5)
    assert sc.across_factor(4.0, 80.0) == (2.5, 4.0)  # streaks across the frame: the height does
    assert sc.across_factor(4.0, -90.0) == (2.5, 4.0)
    assert sc.across_factor(1.5, 0.0) == (1.5, 1.0)  # never below 1


@pytest.mark.parametrize("width", [1.0, 2.0])
@pytest.mark.parametrize("angle", [0.0, 20.0, -20.0, 35.0])
def test_the_rain_layer_gives_the_streaks_orientation(angle: float, width: float) -> None:
    rgb = streaks(width, 320, 320, angle=angle)
    derained = thin_line_remover(rgb[None])[0]
    upright = sc.rain_orientation(rgb, derained)
    across = sc.rain_orientation(rgb.transpose(0, 2, 1), derained.transpose(0, 2, 1))
    assert abs(abs(upright) - abs(angle)) < 5  # the lean (streaks() and the tensor count it oppositely)
    assert abs(across) > 45 and sc.across_factor(4.0, across) == (2.5, 4.0)
    assert sc.across_factor(4.0, upright) == (4.0, 2.5)

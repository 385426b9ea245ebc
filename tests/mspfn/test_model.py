"""The network: parameter counts of the presets, shapes for odd sizes, padding round-trip."""

from __future__ import annotations

import pytest
import torch

from mspfn.complexity import macs_per_pixel
from mspfn.model import (
    MSPFN,
    PAD_MULTIPLE,
    PRESETS,
    MSPFNConfig,
    count_parameters,
    derain,
    grow_state,
    pad_to_multiple,
    preset,
)
from tests.conftest import TINY, make_tiny_model


@pytest.mark.slow  # builds or runs a network in torch
@pytest.mark.parametrize(("name", "expected"), [("paper", 12_597_376), ("paper-133", 17_769_728)])
def test_paper_presets_have_the_spec_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(MSPFN(preset(name))) == expected


@pytest.mark.slow  # builds or runs a network in torch
def test_paper_macs_match_the_spec() -> None:
    # Spec section 6: 525.2 GMAC at 512x512 for M17N1 with live gates only = 2.0036 M MAC/pixel.
    model = MSPFN(preset("paper"))
    assert macs_per_pixel(model, 64, 64) == pytest.approx(525.2e9 / 512**2, rel=1e-3)


@pytest.mark.slow  # builds or runs a network in torch
def test_lite_fits_the_cpu_budget() -> None:
    lite = MSPFN(preset("lite"))
    assert macs_per_pixel(lite, 64, 64) <= 250_000
    assert count_parameters(lite) == 1_528_592


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_presets_round_trip_through_dicts() -> None:
    for config in PRESETS.values():
        assert type(config).from_dict(config.to_dict()) == config


def test_the_pad_multiple_is_fixed_yet_recorded_as_checkpoints_always_had_it() -> None:
    recorded = preset("lite").to_dict()
    assert list(recorded)[-1] == "pad_multiple" and recorded["pad_multiple"] == PAD_MULTIPLE == 8
    assert MSPFNConfig.from_dict({key: v for key, v in recorded.items() if key != "pad_multiple"}) == preset(
        "lite"
    )
    with pytest.raises(ValueError, match="pad_multiple 4: this network's is fixed at 8"):
        MSPFNConfig.from_dict({**recorded, "pad_multiple": 4})
    assert MSPFN(preset("lite")).pad_multiple == 8


def test_convlstm_gates_start_with_the_spec_std() -> None:
    """MSPFN_SPEC.md: the ConvLSTM convolution starts as a truncated normal with sigma 1e-3."""
    torch.manual_seed(0)
    coarse = MSPFN(preset("lite")).coarse
    for lstm in (coarse.lstm4, coarse.lstm2, coarse.lstm1):
        weight = lstm.gates.weight.detach()
        assert weight.numel() >= 6_000
        assert 0.9e-3 < float(weight.std()) < 1.1e-3 and float(weight.mean().abs()) < 1e-4
        assert not lstm.gates.bias.detach().any()


@pytest.mark.slow  # builds or runs a network in torch
@pytest.mark.parametrize("size", [(1, 1), (37, 53), (8, 8), (3, 17)])
def test_derain_accepts_any_size(size: tuple[int, int]) -> None:
    model = make_tiny_model()
    image = torch.rand(2, 3, *size)
    with torch.no_grad():
        output = derain(model, image)
    assert output.shape == image.shape
    assert torch.isfinite(output).all()
    assert not torch.allclose(output, image)  # the tiny model really changes the picture


@pytest.mark.parametrize("size", [(1, 1), (2, 9), (37, 53), (64, 64)])
def test_padding_is_a_multiple_and_crops_back_exactly(size: tuple[int, int]) -> None:
    image = torch.rand(1, 3, *size)
    padded, original = pad_to_multiple(image, 8)
    assert original == size
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert torch.equal(padded[..., : size[0], : size[1]], image)


def test_reflect_padding_mirrors_the_border() -> None:
    image = torch.arange(5.0).reshape(1, 1, 1, 5).expand(1, 1, 5, 5).contiguous()
    padded, _ = pad_to_multiple(image, 8)
    # Columns 5, 6, 7 reflect columns 3, 2, 1 (the edge column itself is not repeated).
    assert padded[0, 0, 0, 5:].tolist() == [3.0, 2.0, 1.0]


@pytest.mark.slow  # builds or runs a network in torch
def test_untrained_network_is_the_identity() -> None:
    model = MSPFN(preset("lite")).eval()
    image = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(model(image), image)


def test_live_gate_lstm_equals_a_full_cell_from_zero_state() -> None:
    """The spec's full cell, computed here on its own: gates = Conv3x3(concat[x, h0]) split i, j, f, o,
    forget bias +1, from h0 = c0 = 0. The live-gate cell gets that kernel's i, j and o blocks (x rows)."""
    from mspfn.model import LiveGateConvLSTM

    torch.manual_seed(0)
    cin, hidden = 4, 6
    kernel = torch.randn(4 * hidden, cin + hidden, 3, 3)  # output blocks i, j, f, o; input rows x, then h
    bias = torch.randn(4 * hidden)
    x = torch.randn(1, cin, 8, 8)
    h0 = c0 = torch.zeros(1, hidden, 8, 8)
    gates = torch.nn.functional.conv2d(torch.cat([x, h0], dim=1), kernel, bias, padding=1)
    i, j, f, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    expected = torch.tanh(torch.sigmoid(f + 1) * c0 + torch.sigmoid(i) * torch.tanh(j)) * torch.sigmoid(o)
    cell = LiveGateConvLSTM(cin, hidden)
    live = (0, 1, 3)  # i, j, o
    with torch.no_grad():
        cell.gates.weight.copy_(torch.cat([kernel[k * hidden : (k + 1) * hidden, :cin] for k in live]))
        cell.gates.bias.copy_(torch.cat([bias[k * hidden : (k + 1) * hidden] for k in live]))
        assert torch.allclose(cell(x), expected, atol=1e-6)


def test_box_mean_is_the_mean_over_the_window_clipped_at_the_borders() -> None:
    from mspfn.model import BoxMean

    x = torch.rand(2, 3, 7, 11, generator=torch.Generator().manual_seed(0))
    expected = torch.empty_like(x)
    for i in range(7):
        for j in range(11):
            expected[..., i, j] = x[..., max(0, i - 2) : i + 3, max(0, j - 2) : j + 3].mean(dim=(-2, -1))
    assert torch.allclose(BoxMean(5)(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        BoxMean(4)


def test_the_attention_window_is_given_in_input_pixels_at_every_scale() -> None:
    from mspfn.model import BoxMean, FineFusionStage

    stage = FineFusionStage(MSPFNConfig(width=8, attention_window=128))
    sizes = [block.rcabs[0].attention[0].size for block in (stage.block4, stage.block2, stage.block1)]
    assert sizes == [17, 33, 65]  # 128 px at 1/8, 1/4 and 1/2 of the input, made odd
    assert all(isinstance(block.rcabs[0].attention[0], BoxMean) for block in (stage.block4, stage.block1))
    global_stage = FineFusionStage(MSPFNConfig(width=8))
    assert isinstance(global_stage.block1.rcabs[0].attention[0], torch.nn.AdaptiveAvgPool2d)
    with pytest.raises(ValueError, match="attention_window -1"):
        MSPFNConfig(attention_window=-1)
    old = {key: value for key, value in preset("lite").to_dict().items() if key != "attention_window"}
    assert MSPFNConfig.from_dict(old).attention_window == 0  # checkpoints from before the field: global


@pytest.mark.slow  # runs a network in torch
def test_windowed_attention_keeps_the_output_local() -> None:
    """Inverting the left 32 px of an image moves the output 160 px away with global attention (every
    pixel's attention averages the whole image), and leaves it alone with a 32 px window."""
    import dataclasses

    image = torch.rand(1, 3, 64, 256, generator=torch.Generator().manual_seed(1))
    changed = image.clone()
    changed[..., :32] = 1 - changed[..., :32]
    base = make_tiny_model()
    with torch.no_grad():  # attention that reacts (random small weights leave every gate near 0.5)
        for name, parameter in base.named_parameters():
            if ".attention." in name and name.endswith("weight"):
                parameter.normal_(0.0, 2.0)
        base.reconstruct.rain.weight.normal_(0.0, 1.0)
    moved = {}
    for window in (0, 32):
        model = MSPFN(dataclasses.replace(base.config, attention_window=window))
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            moved[window] = float((model(image) - model(changed))[..., 192:].abs().max())
    assert moved[0] > 1e-4
    assert moved[32] == 0.0


def test_a_checkpoint_grows_into_a_network_with_more_rcabs_that_computes_the_same() -> None:
    """lite -> lite-133: the extra RCABs start as identities, so the grown network's output is the
    checkpoint's, and their zeroed last convolution still gets a gradient (it learns from step one)."""
    small = make_tiny_model(seed=3)
    grown = MSPFN(MSPFNConfig.from_dict({**TINY, "rcabs": (1, 3, 3)})).eval()
    state = grow_state(grown, small.state_dict())
    grown.load_state_dict(state)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = small(image)
        assert (expected - image).abs().max() > 1e-3  # the checkpoint really changes the image
        assert torch.allclose(grown(image), expected, atol=1e-6)
    extra = [key for key in state if key not in small.state_dict()]
    assert len(extra) == 4 * len([k for k in small.state_dict() if ".block1.rcabs.0." in k])  # 2 + 2 RCABs
    for block in ("block2", "block1"):
        for index in (1, 2):
            prefix = f"stages.0.{block}.rcabs.{index}."
            assert not state[prefix + "body.2.weight"].any() and not state[prefix + "body.2.bias"].any()
            assert state[prefix + "body.0.weight"].abs().sum() > 0  # the rest keeps its fresh init
    grown.train()
    (grown(image) - 0.5 * image).abs().mean().backward()
    last = grown.stages[0].block1.rcabs[2].body[2].weight
    assert last.grad is not None and last.grad.abs().sum() > 0


def test_growing_refuses_any_other_difference() -> None:
    small = make_tiny_model()
    grown = MSPFN(MSPFNConfig.from_dict({**TINY, "rcabs": (1, 3, 3)}))
    with pytest.raises(ValueError, match="tensors this network lacks"):  # shrinking drops trained blocks
        grow_state(small, grown.state_dict())
    with pytest.raises(ValueError, match=r"in the checkpoint, .* here"):
        grow_state(MSPFN(MSPFNConfig.from_dict({**TINY, "width": 12})), small.state_dict())
    with pytest.raises(ValueError, match="the checkpoint lacks stages.1"):
        grow_state(MSPFN(MSPFNConfig.from_dict({**TINY, "stages": 2})), small.state_dict())


def test_lite_133_is_the_capacity_step_up_within_the_budget() -> None:
    """The issue allows up to about 0.5 M MAC/px; lite-133 is lite with N = (1, 3, 3)."""
    lite, bigger = preset("lite"), preset("lite-133")
    assert bigger.rcabs == (1, 3, 3) and {**bigger.to_dict(), "rcabs": lite.rcabs} == lite.to_dict()
    macs = macs_per_pixel(MSPFN(bigger), 64, 64)
    assert macs_per_pixel(MSPFN(lite), 64, 64) < macs <= 500_000

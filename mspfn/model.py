"""MSPFN (Jiang et al., CVPR 2020) in PyTorch, following shared/MSPFN_SPEC.md.

Layout everywhere: RGB, float32 in [0, 1], NCHW. The network predicts the rain layer R and returns I - R.
H and W given to `MSPFN.forward` must be multiples of `PAD_MULTIPLE` (8); `derain` pads any size.
Scale triples run coarse to fine everywhere, as the paper writes N: (1/4, 1/2, 1) in the config, and
(x4, x2, x1) between the modules.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# H and W must be multiples of this: the network halves them three times (the 1/4-scale U-block's Down).
# Fixed by the architecture, so not a free hyper-parameter; checkpoints and model cards still record it.
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class MSPFNConfig:
    """Every hyper-parameter of the network; a preset is a name for one of these."""

    width: int = 64  # C: feature channels at every scale
    stages: int = 17  # M: fine-fusion stages
    rcabs: tuple[int, int, int] = (1, 1, 1)  # N: RCABs per U-block at scales (1/4, 1/2, 1)
    lstm_in: int = 32  # channels fed to each ConvLSTM
    lstm_hidden: tuple[int, int, int] = (64, 128, 256)  # ConvLSTM hidden size at scales (1/4, 1/2, 1)
    recon_width: int = 32  # channels of the last hidden layer of the reconstruction module
    reduction: int = 4  # channel-attention squeeze ratio inside each RCAB
    # What each RCAB's channel attention averages over: 0 = the whole feature map (the paper's global
    # pooling), else a window this many *input* pixels wide centred on each pixel (a box mean, clipped at
    # the borders). Global pooling makes every output pixel depend on the whole image, so tiled and
    # whole-image output differ; a window makes the network local, so overlapping tiles agree.
    attention_window: int = 0
    pad_multiple: ClassVar[int] = PAD_MULTIPLE  # not a field: fixed by the architecture

    def __post_init__(self) -> None:
        if self.attention_window < 0:
            raise ValueError(f"attention_window {self.attention_window}: 0 (global) or a width in px")

    def to_dict(self) -> dict[str, object]:
        """The fields, then pad_multiple (as every checkpoint, card and ONNX file has recorded it)."""
        return {**asdict(self), "pad_multiple": PAD_MULTIPLE}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MSPFNConfig:
        fields = dict(data)
        recorded = fields.pop("pad_multiple", PAD_MULTIPLE)
        if recorded != PAD_MULTIPLE:
            raise ValueError(f"pad_multiple {recorded}: this network's is fixed at {PAD_MULTIPLE}")
        for key in ("rcabs", "lstm_hidden"):
            if key in fields:
                fields[key] = tuple(fields[key])  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


PRESETS: dict[str, MSPFNConfig] = {
    # The released M17N1 model (12,597,376 parameters with live ConvLSTM gates only).
    "paper": MSPFNConfig(),
    # The training script's configuration: N = (1, 3, 3).
    "paper-133": MSPFNConfig(rcabs=(1, 3, 3)),
    # CPU serving: same graph, narrower and shallower (see mspfn.complexity for its MACs/pixel).
    "lite": MSPFNConfig(
        width=32, stages=8, rcabs=(1, 1, 1), lstm_in=16, lstm_hidden=(16, 16, 32), recon_width=16
    ),
    # lite with the training script's N = (1, 3, 3): the capacity step up (0.33 M MAC/px); grows from a
    # lite checkpoint (`grow_state`), its extra RCABs starting as identities.
    "lite-133": MSPFNConfig(
        width=32, stages=8, rcabs=(1, 3, 3), lstm_in=16, lstm_hidden=(16, 16, 32), recon_width=16
    ),
}


def preset(name: str) -> MSPFNConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def conv3(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class ConvPReLU(nn.Sequential):
    """P(Conv3(x)): 3x3 conv without bias, then per-channel PReLU (slope initialised to 0)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.PReLU(cout, init=0.0),
        )


class UpPReLU(nn.Sequential):
    """P(Up(x)): 3x3 transposed conv, stride 2, exactly doubling H and W, then PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.PReLU(cout, init=0.0),
        )


class BoxMean(nn.Module):
    """Mean over a size x size window centred on each pixel, clipped at the borders (size odd).

    Separable (a row mean, then a column mean): exact, because a clipped window is still a rectangle.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"box size {size} must be odd and positive")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        k, p = self.size, self.size // 2
        rows = F.avg_pool2d(x, (1, k), stride=1, padding=(0, p), count_include_pad=False)
        return F.avg_pool2d(rows, (k, 1), stride=1, padding=(p, 0), count_include_pad=False)


def attention_pool(window: int, stride: int) -> nn.Module:
    """The RCAB's pooling at a feature map `stride` times coarser than the input (see attention_window)."""
    if window == 0:
        return nn.AdaptiveAvgPool2d(1)
    return BoxMean(2 * (window // stride // 2) + 1)


class RCAB(nn.Module):
    """Residual channel-attention block (the paper's CAU): x + f(x) * s(pool(f(x))); `pool` is
    `attention_pool`'s (global, the paper's, or a window)."""

    def __init__(self, channels: int, reduction: int, pool: nn.Module) -> None:
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.body = nn.Sequential(
            conv3(channels, channels, bias=True),
            nn.PReLU(channels, init=0.0),
            conv3(channels, channels, bias=True),
        )
        self.attention = nn.Sequential(
            pool,
            nn.Conv2d(channels, squeezed, 1),
            nn.PReLU(squeezed, init=0.0),
            nn.Conv2d(squeezed, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        f = self.body(x)
        return x + f * self.attention(f)


class UBlock(nn.Module):
    """U-shaped residual attention block: down, N RCABs, up over concat[down, rcabs].

    `stride` is how much coarser than the input the RCABs run (the block's scale, then its Down).
    """

    def __init__(self, channels: int, rcabs: int, reduction: int, window: int = 0, stride: int = 2) -> None:
        super().__init__()
        self.down = ConvPReLU(channels, channels, stride=2)
        self.rcabs = nn.Sequential(
            *(RCAB(channels, reduction, attention_pool(window, stride)) for _ in range(rcabs))
        )
        self.up = UpPReLU(2 * channels, channels)

    def forward(self, e: Tensor) -> Tensor:
        d = self.down(e)
        return self.up(torch.cat([d, self.rcabs(d)], dim=1))


class LiveGateConvLSTM(nn.Module):
    """One ConvLSTM step from zero state, computing only the live gates i, j, o.

    With h0 = c0 = 0 the cell reduces to h = tanh(sigmoid(i) * tanh(j)) * sigmoid(o): the h-input weights and
    the forget gate never affect the output, so they are not built (44% of the full cell's cost).
    """

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = conv3(cin, 3 * hidden, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        i, j, o = torch.split(self.gates(x), self.hidden, dim=1)
        return torch.tanh(torch.sigmoid(i) * torch.tanh(j)) * torch.sigmoid(o)


class CoarseFusion(nn.Module):
    """CFM: one gated ConvLSTM unit per scale, coarse to fine, guided by upsampled coarser features."""

    def __init__(self, cfg: MSPFNConfig) -> None:
        super().__init__()
        c, li = cfg.width, cfg.lstm_in
        h4, h2, h1 = cfg.lstm_hidden
        self.squeeze4, self.squeeze2, self.squeeze1 = (ConvPReLU(c, li) for _ in range(3))
        self.lstm4, self.lstm2, self.lstm1 = (LiveGateConvLSTM(li, h) for h in (h4, h2, h1))
        self.expand4, self.expand2, self.expand1 = (ConvPReLU(h, c) for h in (h4, h2, h1))
        self.up42, self.up41, self.up21 = (UpPReLU(c, c) for _ in range(3))

    def forward(self, f4: Tensor, f2: Tensor, f1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r4 = self.expand4(self.lstm4(self.squeeze4(f4))) + f4
        u42 = self.up42(r4)
        r2 = self.expand2(self.lstm2(self.squeeze2(f2 + u42))) + f2
        u41 = self.up41(u42)  # the spec upsamples U42 again, not R2
        u21 = self.up21(r2)
        r1 = self.expand1(self.lstm1(self.squeeze1(f1 + u21 + u41))) + f1
        return r4, r2, r1


class FineFusionStage(nn.Module):
    """One FFM stage: a U-block per scale, coarse scales feeding the finer ones."""

    def __init__(self, cfg: MSPFNConfig) -> None:
        super().__init__()
        c = cfg.width
        n4, n2, n1 = cfg.rcabs
        w = cfg.attention_window
        self.block4 = UBlock(c, n4, cfg.reduction, w, stride=8)
        self.block2 = UBlock(c, n2, cfg.reduction, w, stride=4)
        self.block1 = UBlock(c, n1, cfg.reduction, w, stride=2)
        self.up_v, self.up_w4, self.up_w2 = (UpPReLU(c, c) for _ in range(3))

    def forward(self, x4: Tensor, x2: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x4 = x4 + self.block4(x4)
        v = self.up_v(x4)
        x2 = x2 + self.block2(x2 + v)  # the residual adds to X2, not to X2 + V
        w4 = self.up_w4(v)
        w2 = self.up_w2(x2)
        x1 = x1 + self.block1(x1 + w4 + w2)
        return x4, x2, x1


class Reconstruction(nn.Module):
    """RM: fuse FFM and CFM features across scales and predict the 3-channel rain layer."""

    def __init__(self, cfg: MSPFNConfig) -> None:
        super().__init__()
        c = cfg.width
        self.fuse4, self.fuse2, self.fuse1 = (ConvPReLU(2 * c, c) for _ in range(3))
        self.up_z2 = UpPReLU(c, c)
        self.up_z1 = UpPReLU(2 * c, c)
        self.merge = ConvPReLU(2 * c, cfg.recon_width)
        self.rain = conv3(cfg.recon_width, 3)  # linear, no bias

    def forward(self, x: tuple[Tensor, Tensor, Tensor], r: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        (x4, x2, x1), (r4, r2, r1) = x, r
        y4 = self.fuse4(torch.cat([x4, r4], dim=1))
        y2 = self.fuse2(torch.cat([x2, r2], dim=1))
        y1 = self.fuse1(torch.cat([x1, r1], dim=1))
        z2 = self.up_z2(y4)
        z1 = self.up_z1(torch.cat([z2, y2], dim=1))
        return self.rain(self.merge(torch.cat([y1, z1], dim=1)))


class MSPFN(nn.Module):
    """Multi-scale progressive fusion network. (N, 3, H, W) RGB [0, 1] -> derained (N, 3, H, W)."""

    def __init__(self, config: MSPFNConfig | None = None) -> None:
        super().__init__()
        self.config = config or MSPFNConfig()
        self.pad_multiple = PAD_MULTIPLE
        c = self.config.width
        self.head1, self.head2, self.head4 = (ConvPReLU(3, c) for _ in range(3))
        self.coarse = CoarseFusion(self.config)
        self.stages = nn.ModuleList(FineFusionStage(self.config) for _ in range(self.config.stages))
        self.reconstruct = Reconstruction(self.config)
        self._init_weights()

    def _init_weights(self) -> None:
        # Glorot-uniform convs and zero biases as in the original; the ConvLSTM gates' weights a
        # truncated normal with std 1e-3, as MSPFN_SPEC.md gives TF's initialiser.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for lstm in (self.coarse.lstm1, self.coarse.lstm2, self.coarse.lstm4):
            nn.init.trunc_normal_(lstm.gates.weight, std=1e-3)
        # A zero rain head makes the untrained network the identity (output = input), a far better
        # starting point than a random rain layer; its gradient is not zero, so it learns at once.
        nn.init.zeros_(self.reconstruct.rain.weight)

    def forward(self, image: Tensor) -> Tensor:
        f1 = self.head1(image)
        f2 = self.head2(F.avg_pool2d(image, 2))
        f4 = self.head4(F.avg_pool2d(image, 4))
        r = self.coarse(f4, f2, f1)
        x = r
        for stage in self.stages:
            x = stage(*x)
        return image - self.reconstruct(x, r)


@dataclass(frozen=True)
class GateConfig:
    """How an AgreementPair blends its two networks (see there). Disagreement is the mean over channels
    and over a window x window box of |general - light|, in [0, 1] units."""

    weight: float = 0.5  # the light-rain network's share where the two agree
    # The defaults were chosen on a tuning set rendered from the *training* part of clean/ (mixed and
    # fine recipes, seeds 11 and 12) plus 11 RainTrainL pairs, not on the validation sets (README).
    low: float = 0.015  # disagreement at or below which that share applies in full
    high: float = 0.03  # disagreement at or above which the general network's output stands alone
    window: int = 63  # px, odd: the box the disagreement is averaged over

    def __post_init__(self) -> None:
        if (
            not 0 <= self.weight <= 1
            or not 0 <= self.low < self.high
            or self.window < 1
            or self.window % 2 == 0
        ):
            raise ValueError(f"bad gate {self}: need 0 <= weight <= 1, 0 <= low < high, an odd window")


@dataclass(frozen=True)
class PairConfig:
    """An AgreementPair's two network configs and its gate (a checkpoint's `config` metadata)."""

    general: MSPFNConfig
    light: MSPFNConfig
    gate: GateConfig
    pad_multiple: ClassVar[int] = PAD_MULTIPLE

    def to_dict(self) -> dict[str, object]:
        return {
            "general": self.general.to_dict(),
            "light": self.light.to_dict(),
            "gate": asdict(self.gate),
            "pad_multiple": PAD_MULTIPLE,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PairConfig:
        if data.get("pad_multiple", PAD_MULTIPLE) != PAD_MULTIPLE:
            raise ValueError(
                f"pad_multiple {data['pad_multiple']}: this network's is fixed at {PAD_MULTIPLE}"
            )
        general, light, gate = data["general"], data["light"], data["gate"]
        assert isinstance(general, dict) and isinstance(light, dict) and isinstance(gate, dict)
        return cls(MSPFNConfig.from_dict(general), MSPFNConfig.from_dict(light), GateConfig(**gate))


class AgreementPair(nn.Module):
    """A general network and a light-rain specialist run side by side, blended pixel by pixel by how
    much they agree. Where both predict nearly the same rain layer (light rain, which both know), the
    output is their weighted average, which scores above either alone (an ensemble). Where they
    disagree (heavy, dense or wide rain, which the specialist never saw and leaves in place), the
    general network's output stands alone. Between `low` and `high` the weight falls linearly.

    The disagreement map is a box mean over `window` px, so the network stays local: overlapping tiles
    agree away from the image border, as with a single MSPFN whose attention has a window.
    """

    def __init__(self, general: MSPFN, light: MSPFN, gate: GateConfig | None = None) -> None:
        super().__init__()
        self.general, self.light = general, light
        self.gate = gate or GateConfig()
        self.box = BoxMean(self.gate.window)
        self.pad_multiple = PAD_MULTIPLE

    @property
    def config(self) -> PairConfig:
        return PairConfig(self.general.config, self.light.config, self.gate)

    @classmethod
    def from_config(cls, config: PairConfig) -> AgreementPair:
        return cls(MSPFN(config.general), MSPFN(config.light), config.gate)

    def light_share(self, general: Tensor, light: Tensor) -> Tensor:
        """The per-pixel weight of the light network's output, (N, 1, H, W) in [0, gate.weight]."""
        gate = self.gate
        disagreement = self.box((general - light).abs().mean(dim=1, keepdim=True))
        return gate.weight * torch.clamp((gate.high - disagreement) / (gate.high - gate.low), 0.0, 1.0)

    def forward(self, image: Tensor) -> Tensor:
        general, light = self.general(image), self.light(image)
        return general + self.light_share(general, light) * (light - general)


# What a checkpoint holds: one network, or a pair of them.
Network = MSPFN | AgreementPair


def build_network(config: dict[str, object]) -> Network:
    """The (untrained) network a checkpoint's `config` metadata describes."""
    if "gate" in config:
        return AgreementPair.from_config(PairConfig.from_dict(config))
    return MSPFN(MSPFNConfig.from_dict(config))


def pad_to_multiple(image: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right of an NCHW tensor so H and W are multiples; returns the original size.

    Reflection needs the pad to be smaller than the side, so tiny images are reflected repeatedly.
    """
    height, width = image.shape[-2:]
    padded = image
    while padded.shape[-2] % multiple or padded.shape[-1] % multiple:
        ph = min((-padded.shape[-2]) % multiple, padded.shape[-2] - 1)
        pw = min((-padded.shape[-1]) % multiple, padded.shape[-1] - 1)
        if ph == 0 and pw == 0:  # a 1-pixel side cannot be reflected: repeat it instead
            mode = "replicate"
            ph, pw = (-padded.shape[-2]) % multiple, (-padded.shape[-1]) % multiple
        else:
            mode = "reflect"
        padded = F.pad(padded, (0, pw, 0, ph), mode=mode)
    return padded, (height, width)


def derain(model: Network, image: Tensor) -> Tensor:
    """Run the model on an NCHW image of any size (1x1 included): pad, infer, crop back."""
    padded, (height, width) = pad_to_multiple(image, model.pad_multiple)
    return model(padded)[..., :height, :width]


_EXTRA_RCAB = re.compile(r"\.rcabs\.[1-9][0-9]*\.")  # the 2nd and later RCAB of a U-block


def grow_state(model: MSPFN, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's state dict made to fit `model`, which may have more RCABs per U-block (lite ->
    lite-133) but is otherwise the same network. Every tensor of the checkpoint is kept; each extra
    RCAB keeps `model`'s fresh initialisation except its body's last convolution, zeroed, so the block
    starts as the identity (x + 0 * attention) and the grown network computes exactly what the
    checkpoint did (zero-initialised residual branches: Goyal et al. 2017; deepening as in Net2Net,
    Chen et al. 2016). Raises ValueError for any other mismatch."""
    target = model.state_dict()
    unknown = sorted(set(state) - set(target))
    if unknown:
        raise ValueError(f"the checkpoint has tensors this network lacks, e.g. {unknown[0]}")
    grown: dict[str, Tensor] = {}
    for key, fresh in target.items():
        if key in state:
            if state[key].shape != fresh.shape:
                raise ValueError(
                    f"{key}: {tuple(state[key].shape)} in the checkpoint, {tuple(fresh.shape)} here"
                )
            grown[key] = state[key]
        elif _EXTRA_RCAB.search(key) is None:
            raise ValueError(f"the checkpoint lacks {key}")
        else:
            grown[key] = torch.zeros_like(fresh) if ".body.2." in key else fresh
    return grown


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MSPFN",
    "AgreementPair",
    "GateConfig",
    "MSPFNConfig",
    "Network",
    "PairConfig",
    "PAD_MULTIPLE",
    "PRESETS",
    "build_network",
    "count_parameters",
    "derain",
    "grow_state",
    "pad_to_multiple",
    "preset",
]

"""AgreementPair: the gate on pixels, its checkpoint, its export, and the `mspfn.pair` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from mspfn.checkpoint import file_sha256, load_model, save_model
from mspfn.complexity import macs_per_pixel
from mspfn.model import MSPFN, AgreementPair, GateConfig, PairConfig
from tests.conftest import make_tiny_model


class AddMap(nn.Module):
    """A stand-in network: returns its input plus a fixed (1, 1, H, W) map."""

    def __init__(self, offset: Tensor) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, image: Tensor) -> Tensor:
        return image + self.offset


def stub_pair(light_offset: Tensor, gate: GateConfig) -> AgreementPair:
    general = AddMap(torch.zeros_like(light_offset))
    return AgreementPair(cast(MSPFN, general), cast(MSPFN, AddMap(light_offset)), gate)


def test_the_gate_averages_where_the_networks_agree_and_keeps_the_general_output_where_they_do_not() -> None:
    # Three bands of known disagreement |light - general|: 0.005 (agree), 0.02 (between), 0.05 (not).
    offset = torch.zeros(1, 1, 16, 96)
    offset[..., :32], offset[..., 32:64], offset[..., 64:] = 0.005, 0.02, 0.05
    gate = GateConfig(weight=0.5, low=0.01, high=0.03, window=3)
    image = torch.full((1, 3, 16, 96), 0.4)
    with torch.no_grad():
        output = stub_pair(offset, gate)(image) - image
    # Away from the bands' edges (the 3 px box): the light network's share is 0.5, 0.25 and 0.
    assert torch.allclose(output[..., 2:30], torch.tensor(0.5 * 0.005), atol=1e-6)
    assert torch.allclose(output[..., 34:62], torch.tensor(0.25 * 0.02), atol=1e-6)
    assert torch.equal(output[..., 66:], torch.zeros_like(output[..., 66:]))


def test_the_gate_is_local_to_its_window() -> None:
    """A spot of disagreement lowers the light network's share only within window // 2 px of it."""
    offset = torch.full((1, 1, 64, 64), 0.005)
    offset[..., 31:33, 31:33] = 1.0  # strong disagreement on 2x2 pixels
    pair = stub_pair(offset, GateConfig(weight=0.5, low=0.01, high=0.03, window=9))
    with torch.no_grad():
        share = pair.light_share(torch.zeros(1, 3, 64, 64), offset.expand(1, 3, 64, 64))[0, 0]
    assert float(share[32, 32]) == 0.0
    near = torch.zeros_like(share, dtype=torch.bool)
    near[31 - 4 : 33 + 4, 31 - 4 : 33 + 4] = True
    assert torch.allclose(share[~near], torch.tensor(0.5))
    assert float(share[near].max()) < 0.5


@pytest.mark.parametrize(
    "gate",
    [{"weight": 1.5}, {"low": 0.03, "high": 0.02}, {"window": 8}, {"window": 0}],
    ids=["weight", "thresholds", "even-window", "no-window"],
)
def test_bad_gates_are_refused(gate: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad gate"):
        GateConfig(**gate)  # type: ignore[arg-type]


def tiny_pair(gate: GateConfig | None = None) -> AgreementPair:
    return AgreementPair(make_tiny_model(seed=1), make_tiny_model(seed=2, attention_window=16), gate).eval()


def test_a_pair_checkpoint_loads_back_as_the_same_network(tmp_path: Path) -> None:
    pair = tiny_pair(GateConfig(weight=0.4, low=0.001, high=0.2, window=5))
    save_model(tmp_path / "pair.safetensors", pair, "tiny-pair")
    loaded, metadata = load_model(tmp_path / "pair.safetensors")
    assert isinstance(loaded, AgreementPair)
    assert loaded.config == pair.config == PairConfig.from_dict(json.loads(metadata["config"]))
    image = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        expected, actual = pair(image), loaded(image)
        general, light = pair.general(image), pair.light(image)
    assert torch.equal(actual, expected)
    # The gate is live in this pair: its output is neither member's.
    assert float((actual - general).abs().max()) > 1e-4 and float((actual - light).abs().max()) > 1e-4


@pytest.mark.slow
def test_a_pair_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    from model_export import export_onnx

    pair = tiny_pair(GateConfig(weight=0.5, low=0.001, high=0.2, window=7))
    save_model(tmp_path / "pair.safetensors", pair, "tiny-pair")
    report = export_onnx(tmp_path / "pair.safetensors", tmp_path / "pair.onnx", optimize=True)
    assert report.max_abs_diff <= 1e-4
    image = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        expected = pair(image).numpy()
    for graph in ("pair.onnx", "pair.opt.onnx"):
        session = ort.InferenceSession(str(tmp_path / graph), providers=["CPUExecutionProvider"])
        (actual,) = session.run(["output"], {"input": image.numpy()})
        assert np.abs(actual - expected).max() <= 1e-4


@pytest.mark.slow
def test_the_pair_cli_writes_the_pair_and_a_card_scored_by_evaluate(tmp_path: Path) -> None:
    from mspfn.data import load_pairs
    from mspfn.evaluate import model_predictor, score
    from mspfn.pair import main
    from tests.mspfn.pairs import write_pairs

    data = write_pairs(tmp_path / "data", 2)
    for name, model, steps in (
        ("general", make_tiny_model(seed=1), 300),
        ("light", make_tiny_model(seed=2), 200),
    ):
        save_model(tmp_path / f"{name}.safetensors", model, "tiny")
        (tmp_path / f"{name}.json").write_text(json.dumps({"steps": steps, "wall_time_s": steps / 10}))
    argv = [
        "--general",
        str(tmp_path / "general.safetensors"),
        "--light",
        str(tmp_path / "light.safetensors"),
    ]
    argv += ["--name", "p", "--weights-dir", str(tmp_path / "w"), "--val", str(data), "--low", "0.001"]
    assert main(argv) == 0

    target = tmp_path / "w" / "p.safetensors"
    card = json.loads(target.with_suffix(".json").read_text())
    assert card["sha256"] == file_sha256(target) and card["preset"] == "tiny-pair"
    assert card["gate"] == {
        "weight": 0.5,
        "low": 0.001,
        "high": GateConfig().high,
        "window": GateConfig().window,
    }
    assert card["members"]["general"]["sha256"] == file_sha256(tmp_path / "general.safetensors")
    assert card["members"]["light"]["card"] == {"steps": 200, "wall_time_s": 20.0}
    assert card["steps"] == 500 and card["wall_time_s"] == 50.0
    assert card["macs_per_pixel"] == round(2 * macs_per_pixel(make_tiny_model()))  # both members run
    # The card's figures are the evaluate CLI's, for the pair that was written.
    pair, _ = load_model(target)
    assert isinstance(pair, AgreementPair)
    expected = score(model_predictor(pair), load_pairs(data), progress=False)
    assert card["validation"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-6)
    # A pair is not a member.
    with pytest.raises(SystemExit, match="already a pair"):
        main([*argv[:1], str(target), *argv[2:]])

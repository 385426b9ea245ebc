"""Shared fixtures: tiny MSPFN checkpoints and ONNX models made on the spot (no downloads, no GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.paths import DATA, RAIN12, REAL, REPO, SHIPPED_WEIGHTS  # noqa: F401  (tests import them here too)

TINY = {
    "width": 8,
    "stages": 1,
    "rcabs": (1, 1, 1),
    "lstm_in": 4,
    "lstm_hidden": (4, 4, 8),
    "recon_width": 4,
    "reduction": 4,
    "pad_multiple": 8,
}


# `make test-fast` runs the tests that take under a second each, fixtures included. These fixtures cost
# more (torch and a model export, a running server, a browser), so every test that uses one is `slow`;
# a slow test without one says so itself (@pytest.mark.slow or a module's pytestmark).
SLOW_FIXTURES = frozenset({"tiny_weights", "tiny_onnx", "server_url", "chromium_path"})
SLOW_MODULES = frozenset({"test_training.py"})  # every test in it trains a network


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_derain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests state their settings; a developer's DERAIN_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("DERAIN_"):
            monkeypatch.delenv(name)


def make_tiny_model(seed: int = 0, attention_window: int = 0):  # -> mspfn.model.MSPFN
    """A tiny network whose output differs from its input (the rain head is not left at zero); the
    window changes only the pooling, so the weights are the same for every window."""
    import torch

    from mspfn.model import MSPFN, MSPFNConfig

    torch.manual_seed(seed)
    model = MSPFN(MSPFNConfig.from_dict({**TINY, "attention_window": attention_window}))
    with torch.no_grad():
        model.reconstruct.rain.weight.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mspfn.checkpoint import save_model

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(path, make_tiny_model(), "tiny")
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported model (fp32, checked for parity) that the service can load."""
    from model_export import export_onnx

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export_onnx(tiny_weights, path)
    return path

"""Checkpoints as safetensors (no pickle): weights plus the network config in the file's metadata.

A training checkpoint adds the Adam state (`optimizer.N.exp_avg`, `optimizer.N.exp_avg_sq`, one per
parameter in `model.parameters()` order) and the training position in the metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mspfn.model import Network, build_network

FORMAT = "mspfn-checkpoint/1"


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    path: Path | str,
    model: Network,
    preset: str,
    extra: dict[str, str] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write weights (+ optional extra tensors) atomically, with config and preset in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state.update(tensors or {})
    metadata = {"format": FORMAT, "preset": preset, "config": json.dumps(model.config.to_dict())}
    metadata.update(extra or {})
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts of one architecture (Wortsman et al. 2022, "model soups")."""
    return {key: torch.stack([state[key].float() for state in states]).mean(dim=0) for key in states[0]}


def read_metadata(path: Path | str) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an MSPFN checkpoint (format {metadata.get('format')!r})")
    return metadata


def load_tensors(path: Path | str, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {k[len(prefix) :]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}  # noqa: SIM118


def load_model(path: Path | str) -> tuple[Network, dict[str, str]]:
    """Build the network described by a checkpoint (one MSPFN or an AgreementPair) and load its weights
    (float32, eval mode)."""
    metadata = read_metadata(path)
    model = build_network(json.loads(metadata["config"]))
    state = {k: v.float() for k, v in load_tensors(path, "model.").items()}
    model.load_state_dict(state)
    return model.eval(), metadata

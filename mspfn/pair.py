"""Join a general network and a light-rain specialist into one AgreementPair checkpoint, with its card.

    python -m mspfn.pair --general weights/mspfn-lite-general.safetensors \\
        --light weights/mspfn-lite-raintrainl.safetensors --name mspfn-lite \\
        --val ../shared/data/val/Rain12 --val data/val/heavy --val data/val/mixed --val data/val/fine

Nothing is trained: the pair holds both members' weights unchanged, and its gate (mspfn.model.GateConfig)
decides per pixel how much of the specialist's output to take. Writes weights/NAME.safetensors and
weights/NAME.json. The card embeds both members' cards (read from next to their weights) and scores the
pair with `python -m mspfn.evaluate` on each --val set; steps and wall time are the members' sums.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from mspfn.checkpoint import file_sha256, load_model, save_model
from mspfn.model import MSPFN, AgreementPair, GateConfig
from mspfn.publish import DEFAULT_VAL, file_entries, score_entries

DEFAULT_GATE = GateConfig()


def member(path: Path) -> tuple[MSPFN, dict[str, object]]:
    """A member network and what the pair's card records of it (its file, hash and card)."""
    model, metadata = load_model(path)
    if not isinstance(model, MSPFN):
        raise SystemExit(f"{path} is already a pair; a member must be one network")
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else None
    return model, {"file": path.name, "sha256": file_sha256(path), "preset": metadata["preset"], "card": card}


def write_pair(general: Path, light: Path, gate: GateConfig, target: Path) -> dict[str, dict[str, object]]:
    """Save the pair to TARGET; returns what the card records of each member."""
    (general_net, general_info), (light_net, light_info) = member(general), member(light)
    members = {"general": general_info, "light": light_info}
    extra = {
        "members": json.dumps(
            {role: {k: v for k, v in info.items() if k != "card"} for role, info in members.items()}
        )
    }
    preset = f"{general_info['preset']}-pair"
    save_model(target, AgreementPair(general_net, light_net, gate), preset, extra=extra)
    return members


def _member_total(members: dict[str, dict[str, object]], key: str) -> float:
    cards = [info["card"] for info in members.values()]
    return sum(float(card.get(key) or 0) for card in cards if isinstance(card, dict))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mspfn.pair", description=__doc__.split("\n")[0])
    parser.add_argument("--general", type=Path, required=True, help="the general network's .safetensors")
    parser.add_argument("--light", type=Path, required=True, help="the light-rain specialist's .safetensors")
    parser.add_argument("--name", required=True, help="weights/NAME.safetensors + weights/NAME.json")
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    parser.add_argument(
        "--weight", type=float, default=DEFAULT_GATE.weight, help="the specialist's share where they agree"
    )
    parser.add_argument(
        "--low", type=float, default=DEFAULT_GATE.low, help="disagreement where that share is full"
    )
    parser.add_argument(
        "--high", type=float, default=DEFAULT_GATE.high, help="disagreement where it reaches 0"
    )
    parser.add_argument(
        "--window", type=int, default=DEFAULT_GATE.window, help="px box the disagreement is averaged over"
    )
    parser.add_argument(
        "--val", type=Path, action="append", help="paired folder to score it on (repeatable; default Rain12)"
    )
    args = parser.parse_args(argv)
    try:
        gate = GateConfig(args.weight, args.low, args.high, args.window)
    except ValueError as error:
        parser.error(str(error))
    target = args.weights_dir / f"{args.name}.safetensors"
    members = write_pair(args.general, args.light, gate, target)
    model, metadata = load_model(target)
    card = {
        **file_entries(args.name, target, model, metadata["preset"]),
        "gate": dataclasses.asdict(gate),
        "members": members,
        "train_data": "its members' (members.general.card, members.light.card); the pair is not trained",
        "recipe": (
            f"an AgreementPair (mspfn.model): the general network's output, moved {gate.weight:g} of the way "
            f"towards the light-rain specialist's where their outputs differ by at most {gate.low:g} "
            f"(mean over channels and a {gate.window} px box, [0, 1] units), by nothing from "
            f"{gate.high:g} up, linearly between"
        ),
        "steps": int(_member_total(members, "steps")),
        "wall_time_s": round(_member_total(members, "wall_time_s"), 1),
        "hardware": "its members' (see their cards)",
        **score_entries(target, args.val or [DEFAULT_VAL]),
    }
    target.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["validation"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

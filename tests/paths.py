"""Where things are, for every test: the repository, the shared data sets, the shipped weights."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
RAIN12 = DATA / "val" / "Rain12"
REAL = DATA / "real" / "RealSIRR147"
SHIPPED_WEIGHTS = REPO / "weights" / "mspfn-lite.safetensors"

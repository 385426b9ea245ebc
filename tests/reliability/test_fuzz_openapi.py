"""Property-based fuzzing of the HTTP API from its own OpenAPI description (schemathesis).

The real service (tiny model, the production uvicorn configuration) runs on a loopback port;
schemathesis reads /openapi.json and runs its coverage phase (boundary and invalid values of every
parameter and body) and its fuzzing phase (Hypothesis-generated requests, valid and invalid) with all
of its checks: no 5xx, every status code, content type, header and JSON body as documented, invalid
input refused, valid input accepted (see schemathesis.toml for the statuses a valid-but-undecodable
upload may get), authentication enforced when a key is set. Bounded by EXAMPLES per operation and
phase (about 5 s a run here) and a hard TIMEOUT_S.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.reliability_helpers import live_server
from tests.service.svc_helpers import SettingsFactory

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 200  # per operation and phase; /derain is the only one with inputs
TIMEOUT_S = 120


@pytest.mark.slow
@pytest.mark.parametrize("api_key", [None, "fuzz-key-0123"], ids=["open", "with-api-key"])
def test_the_api_matches_its_openapi_description_under_fuzzing(
    make_settings: SettingsFactory, tmp_path: Path, api_key: str | None
) -> None:
    with live_server(make_settings(api_key=api_key, max_pixels=4_000_000)) as live:
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
            "run", f"{live.url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
            "--continue-on-failure", "--request-timeout", "30",
            "--phases", "examples,coverage,fuzzing",
        ]  # fmt: skip
        if api_key:
            command += ["--header", f"Authorization: Bearer {api_key}"]
        # cwd: schemathesis and Hypothesis keep their caches there, never in the repository.
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "No issues found" in done.stdout, report
    tested = [line for line in done.stdout.splitlines() if "Tested:" in line]
    assert tested and tested[0].split()[-1] == "4", report  # POST /derain and the three GETs

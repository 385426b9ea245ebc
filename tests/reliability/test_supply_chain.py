"""The service's runtime dependencies: pinned with hashes in requirements.lock, in step with pyproject.toml
and the image, and audited for known vulnerabilities.

requirements.lock is the CPU image's runtime set (pyproject's [project.dependencies] and its `cpu` extra,
onnxruntime, closed over, with onnxruntime at the Dockerfile's ORT_VERSION), regenerated with

    pip-compile --extra=cpu --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \\
        --upgrade-package onnxruntime==<ORT_VERSION> --output-file requirements.lock pyproject.toml

and installable as `pip install --require-hashes -r requirements.lock`. The audit needs PyPI's JSON
API (per-release vulnerability data); where it cannot be reached the audit test is skipped with the
reason, never passed silently: `pip-audit` itself exits 0 when it could audit nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.paths import REPO

LOCK = REPO / "requirements.lock"
SERVICE_REQUIREMENTS = REPO / "docker" / "requirements-service.txt"
AUDIT = f"pip-audit -r {LOCK.name} --require-hashes --disable-pip --strict"


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, sha256 hashes), from the lock's `name==version \\ --hash=...` entries."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())  # join continuation lines
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        name, _, version = spec.strip().partition("==")
        hashes = [option.strip().removeprefix("hash=sha256:") for option in options if "sha256:" in option]
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


def test_every_runtime_dependency_is_locked_with_hashes() -> None:
    entries = locked()
    assert entries, f"{LOCK} has no entries"
    for name, (version, hashes) in entries.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"{name} is not pinned to one version"
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["cpu"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} (pyproject.toml) is missing from {LOCK.name}: regenerate it"
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"{name}=={entries[name][0]} in {LOCK.name} does not satisfy pyproject's {requirement.specifier}"
        )


def test_the_lock_matches_what_the_image_installs() -> None:
    """docker/requirements-service.txt pins and the Dockerfile's ORT_VERSION are the lock's versions."""
    entries = locked()
    for line in SERVICE_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert requirement.specifier.contains(entries[name][0]), (
                f"image pins {requirement}, {LOCK.name} has {entries[name][0]}"
            )
    ort = re.search(r"^ARG ORT_VERSION=(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert ort is not None
    assert entries["onnxruntime"][0] == ort.group(1), "lock onnxruntime at the Dockerfile's ORT_VERSION"


@pytest.mark.slow
def test_no_locked_dependency_has_a_known_vulnerability(tmp_path: Path) -> None:
    executable = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which("pip-audit")
    assert executable is not None, "pip-audit (a dev dependency) is not installed: make venv"
    done = subprocess.run(
        [executable, "-r", str(LOCK), "--require-hashes", "--disable-pip", "--progress-spinner", "off",
         "--format", "json", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    if not done.stdout.strip():
        pytest.skip(f"pip-audit could not run ({done.stderr.strip().splitlines()[-1:]}); in CI run: {AUDIT}")
    dependencies = json.loads(done.stdout)["dependencies"]
    vulnerable = {
        f"{d['name']}=={d['version']}": [(v["id"], v.get("fix_versions")) for v in d["vulns"]]
        for d in dependencies
        if d.get("vulns")
    }
    assert not vulnerable, f"known vulnerabilities (id, fixed in): {vulnerable}"
    skipped = [d for d in dependencies if "skip_reason" in d]
    if skipped:
        pytest.skip(
            f"vulnerability service unreachable: {len(skipped)} of {len(dependencies)} locked dependencies "
            f"could not be audited ({skipped[0]['skip_reason']}); "
            f"where PyPI's JSON API is reachable run: {AUDIT}"
        )

"""A real `python -m service` process and a headless system Chromium driven by Playwright.

Shared by the end-to-end tests and by `make_screenshot.py` (which renders docs/page.png).
Playwright drives the distribution's Chromium (`executable_path`); its own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.loopback import free_port, wait_ready
from tests.paths import REAL, REPO

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ARTIFACTS = REPO / "test-artifacts"
START_TIMEOUT_S = 60.0  # model load and warm-up; the training job may be sharing the cores
CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian's package, and the name some distributions use
# Headless Chromium as root in a container, with nothing reaching outside the machine.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """DERAIN_E2E_CHROMIUM if set, else the first Chromium on PATH."""
    explicit = os.environ.get("DERAIN_E2E_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@contextmanager
def running_service(model: Path, log: Path, **settings: str) -> Iterator[str]:
    """`python -m service` on a free loopback port, CPU only, until ready; yields its base URL.

    `settings` are extra DERAIN_* values (api_key="..." -> DERAIN_API_KEY). Stopped with SIGTERM after.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DERAIN_")}
    env |= {
        "DERAIN_MODEL_PATH": str(model),
        "DERAIN_PROVIDERS": "CPUExecutionProvider",
        "DERAIN_THREADS": "1",
        "DERAIN_LOG_FORMAT": "text",
    }
    env |= {f"DERAIN_{name.upper()}": value for name, value in settings.items()}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(url, START_TIMEOUT_S, alive=lambda: process.poll() is None, interval=0.2)
        except AssertionError as error:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the service did not become ready ({error}):\n{tail}") from None
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def chromium(
    executable: str, profile: Path, width: int = 1100, height: int = 900
) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile directory (`profile` must not be in use), downloads on."""
    from playwright.sync_api import sync_playwright  # imported here: only the browser tests need it

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            accept_downloads=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()


def small_rainy_photo() -> Path | None:
    """The smallest real rainy JPEG of RealSIRR147 (a few hundred pixels a side), if the data is there."""
    real = REAL / "rain"
    photos = sorted(real.glob("*.jpg")) if real.is_dir() else []
    return min(photos, key=lambda path: (path.stat().st_size, path.name)) if photos else None

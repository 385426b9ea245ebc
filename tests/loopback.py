"""Loopback helpers shared by the tests that run a real server: a free port and a readiness probe."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_ready(url: str) -> bool:
    """True when GET {url}/readyz answers 200 (any connection error or other status: not yet)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    url: str, timeout: float, alive: Callable[[], bool] | None = None, interval: float = 0.05
) -> None:
    """Poll GET {url}/readyz until 200. AssertionError when `alive()` (if given) turns False first, or
    after `timeout` s; callers add what they know (a log tail) to the message."""
    deadline = time.monotonic() + timeout
    while not is_ready(url):
        if alive is not None and not alive():
            raise AssertionError(f"{url}: the server stopped before it was ready")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready within {timeout:g} s")
        time.sleep(interval)

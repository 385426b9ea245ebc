"""Fixtures of the browser tests: the system Chromium (skip when absent), a real service, a page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.e2e.e2e_harness import chromium, find_chromium, running_service, small_rainy_photo

if TYPE_CHECKING:
    from playwright.sync_api import Page

ServiceFactory = Callable[..., AbstractContextManager[str]]
T = TypeVar("T")


def found(thing: T | None, missing: str) -> T:
    """`thing`, or a skip saying what this machine lacks (a system package, the shared data)."""
    if thing is None:
        pytest.skip(missing)
    return thing


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return found(
        find_chromium(), "no Chromium binary found (apt-get install chromium, or set DERAIN_E2E_CHROMIUM)"
    )


@pytest.fixture(scope="session")
def rainy_photo() -> Path:
    return found(
        small_rainy_photo(), "the real rainy photos (../shared/data/real/RealSIRR147/rain) are not there"
    )


@pytest.fixture
def serve(tiny_onnx: Path, tmp_path: Path) -> ServiceFactory:
    """serve(**DERAIN settings) -> context manager yielding the base URL of a ready `python -m service`."""

    def start(**settings: str) -> AbstractContextManager[str]:
        return running_service(tiny_onnx, tmp_path / "service.log", tile_size="128", **settings)

    return start


@pytest.fixture
def page(chromium_path: str, tmp_path: Path) -> Iterator[Page]:
    with chromium(chromium_path, tmp_path / "profile") as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        yield page

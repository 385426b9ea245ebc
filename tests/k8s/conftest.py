"""Fixtures of the Kubernetes tests (helpers live in k8s_manifests.py: `conftest` is not importable)."""

from __future__ import annotations

import pytest
from k8s_manifests import OVERLAYS, Rendered, render_overlay


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """One overlay rendered (once per session)."""
    return render_overlay(request.param)

"""Fixtures of the deploy tests (tests/conftest.py provides `tiny_onnx`)."""

from live_service import running_service

__all__ = ["running_service"]

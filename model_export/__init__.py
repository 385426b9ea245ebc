"""Checkpoint -> ONNX with a parity contract and metadata the service checks at load.

`export_onnx` and friends need torch; they are imported on first use, so the torch-free parts
(`model_export.rewrite`, `model_export.phases`, `model_export.onnx_graph`) import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_export.export import EXPORTER_VERSION, ExportError, export_onnx

__all__ = ["EXPORTER_VERSION", "ExportError", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("model_export.export"), name)
    raise AttributeError(f"module 'model_export' has no attribute {name!r}")

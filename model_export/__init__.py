"""Checkpoint -> ONNX with a parity contract and metadata the service checks at load."""

from model_export.export import EXPORTER_VERSION, ExportError, export_onnx

__all__ = ["EXPORTER_VERSION", "ExportError", "export_onnx"]

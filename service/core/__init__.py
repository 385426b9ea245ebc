"""Pixels to pixels, shared by the service and the CLI: the derainer (one image end to end), the tile
batcher, the ONNX Runtime session (runtime: the only onnxruntime import) and the numpy pipeline.

Nothing here imports service.http or FastAPI.
"""

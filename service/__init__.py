"""The deraining service: FastAPI (api) -> numpy pipeline -> ONNX Runtime (runtime), with a tile batcher.

No torch anywhere under this package: the service image ships ONNX Runtime only.
"""

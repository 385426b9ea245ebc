"""The deraining service, in three layers, one direction: http (FastAPI, status codes) -> core (derainer,
batcher, numpy pipeline) -> core.runtime (ONNX Runtime); cli is the `derain` command over core or HTTP.
Settings, errors, metrics and logs are shared by all of them.

No torch anywhere under this package: the service image ships ONNX Runtime only.
"""

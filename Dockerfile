# syntax=docker/dockerfile:1
# The deraining service image. Stages:
#   export        CPU torch turns weights/$MODEL_NAME.safetensors into /models/$MODEL_NAME.onnx (+ .opt.onnx)
#   cpu           python:3.11-slim + onnxruntime            docker build --target cpu -t derain:cpu .
#   gpu-venv      CPython 3.11 + pinned dependencies + onnxruntime-gpu, copied into the gpu target
#   gpu (default) CUDA 12 + cuDNN 9 runtime image + that Python   docker build -t derain:gpu .
# Neither runtime image contains torch: only the service, its pinned dependencies and the exported model.

ARG PYTHON_IMAGE=python:3.11-slim
# onnxruntime-gpu 1.26 on PyPI is built for CUDA 12.x + cuDNN 9.x (1.27 and later need CUDA 13);
# CUDA minor-version compatibility lets it run on any 12.x runtime. 12.9.1 carries cuDNN 9.10.
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-cudnn-runtime-ubuntu22.04
# One ONNX Runtime version in every stage: the exporter's parity check and its optimized graph are
# made by the same version that serves them.
ARG ORT_VERSION=1.26.0
ARG TORCH_VERSION=2.13.0
ARG PIP_VERSION=26.3
# CPython of the gpu target (python-build-standalone, installed by uv; the cpu target uses PYTHON_IMAGE's).
ARG PYTHON_VERSION=3.11.18
ARG UV_VERSION=0.13.9
ARG MODEL_NAME=mspfn-lite

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS export
ARG ORT_VERSION
ARG TORCH_VERSION
ARG MODEL_NAME
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
# Metadata only: installs the [train] dependencies in a layer that code edits do not invalidate
# (no package sources yet, so the project itself installs empty; `python -m` below runs from /src).
# ".[train]" is this project by path; hadolint takes it for an unpinned package name.
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "onnxruntime==${ORT_VERSION}" ".[train]"
COPY mspfn/ mspfn/
COPY model_export/ model_export/
COPY weights/ weights/
# Refuses to write a model that fails the parity check against PyTorch, which fails the build.
RUN python -m model_export --weights "weights/${MODEL_NAME}.safetensors" \
        --out "/models/${MODEL_NAME}.onnx" --optimize

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG ORT_VERSION
ARG PIP_VERSION
ARG MODEL_NAME
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "pip==${PIP_VERSION}" \
    && groupadd --system --gid 10001 derain \
    && useradd --system --uid 10001 --gid derain --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin derain
WORKDIR /app
COPY docker/requirements-service.txt ./
RUN pip install --no-cache-dir -r requirements-service.txt "onnxruntime==${ORT_VERSION}"
COPY --from=export /models/ /models/
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install --no-cache-dir --no-deps .
# DERAIN_DRAIN_TIMEOUT_S: seconds in-flight requests get to finish after SIGTERM (keep it below the
# orchestrator's grace period: compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
ENV DERAIN_MODEL_PATH=/models/${MODEL_NAME}.onnx \
    DERAIN_PROVIDERS=CPUExecutionProvider \
    DERAIN_DRAIN_TIMEOUT_S=30
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------
# Python and dependencies for the gpu target. Ubuntu 22.04's own python3.11 package is a 3.11.0 release
# candidate, so this stage installs a current CPython 3.11 from python-build-standalone (through uv;
# self-contained, needs glibc >= 2.17) and the pinned dependencies; the gpu stage copies /opt/python and
# /opt/venv unchanged into the CUDA image.
FROM ${PYTHON_IMAGE} AS gpu-venv
ARG UV_VERSION
ARG PYTHON_VERSION
ARG ORT_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
    && uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --managed-python --python "${PYTHON_VERSION}" /opt/venv
COPY docker/requirements-service.txt /tmp/requirements-service.txt
RUN uv pip install --python /opt/venv/bin/python \
        -r /tmp/requirements-service.txt "onnxruntime-gpu==${ORT_VERSION}"

# ---------------------------------------------------------------------------------------------------
# Last stage, so the default target.
FROM ${CUDA_IMAGE} AS gpu
ARG MODEL_NAME
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 derain \
    && useradd --system --uid 10001 --gid derain --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin derain
COPY --from=gpu-venv /opt/python/ /opt/python/
COPY --from=gpu-venv /opt/venv/ /opt/venv/
WORKDIR /app
COPY --from=export /models/ /models/
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install --no-cache-dir --no-deps .
# The service's default provider list (CUDA, then CPU) applies; it reports a fallback to CPU in
# derain_provider_fallback and the logs.
ENV DERAIN_MODEL_PATH=/models/${MODEL_NAME}.onnx \
    DERAIN_DRAIN_TIMEOUT_S=30
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# Generous start period: CUDA context creation and cuDNN's algorithm search run during warm-up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

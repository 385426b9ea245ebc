# The deraining service image. Stages:
#   export        CPU torch turns weights/$MODEL_NAME.safetensors into /models/$MODEL_NAME.onnx (+ .opt.onnx)
#   cpu-venv      /opt/venv: pinned dependencies + onnxruntime + the service, copied into the cpu target
#   cpu           python:3.11-slim + that venv                docker build --target cpu -t derain:cpu .
#   gpu-venv      CPython 3.11 + pinned dependencies + onnxruntime-gpu + the service, copied into the gpu target
#   gpu (default) CUDA 12 + cuDNN 9 runtime image + that Python   docker build -t derain:gpu .
# Neither runtime image contains torch: only the service, its pinned dependencies and the exported model.
# No `# syntax=` line: BuildKit would pull its frontend image from a registry, which an offline build lacks.
#
# Offline (no registry, no PyPI; README, Docker): PYTHON_IMAGE names a local image with Python 3.11 and
# venv (docker/offline/base-image.sh builds one from Debian's packages) and WHEELS a folder of the build
# context holding every wheel the build installs (docker/offline/wheelhouse.sh fills one); pip and uv then
# run with --no-index --find-links. WHEELS empty (the default): wheels come from PyPI and PyTorch's index.

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
ARG WHEELS=

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS export
ARG ORT_VERSION
ARG TORCH_VERSION
ARG MODEL_NAME
ARG WHEELS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The wheels of an offline build, else only this small file (COPY needs a source that always exists).
# Every stage that installs copies them to /tmp/wheels; no runtime image keeps that layer.
COPY docker/requirements-service.txt ${WHEELS} /tmp/wheels/
# A venv, so that a base whose Python is Debian's (externally managed) works too.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} \
        --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
# Metadata only: installs the [train] dependencies in a layer that code edits do not invalidate
# (no package sources yet, so the project itself installs empty; `python -m` below runs from /src).
# ".[train]" is this project by path; hadolint takes it for an unpinned package name.
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} \
        "onnxruntime==${ORT_VERSION}" ".[train]"
COPY mspfn/ mspfn/
COPY model_export/ model_export/
COPY weights/ weights/
# Refuses to write a model that fails the parity check against PyTorch, which fails the build.
RUN python -m model_export --weights "weights/${MODEL_NAME}.safetensors" \
        --out "/models/${MODEL_NAME}.onnx" --optimize

# ---------------------------------------------------------------------------------------------------
# The cpu target's /opt/venv, built here so that the wheels of an offline build stay out of the image.
FROM ${PYTHON_IMAGE} AS cpu-venv
ARG ORT_VERSION
ARG PIP_VERSION
ARG WHEELS
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY docker/requirements-service.txt ${WHEELS} /tmp/wheels/
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} "pip==${PIP_VERSION}" \
    && pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} \
        -r /tmp/wheels/requirements-service.txt "onnxruntime==${ORT_VERSION}"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} --no-deps .

FROM ${PYTHON_IMAGE} AS cpu
ARG MODEL_NAME
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 derain \
    && useradd --system --uid 10001 --gid derain --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin derain
COPY --from=cpu-venv /opt/venv/ /opt/venv/
COPY --from=export /models/ /models/
WORKDIR /app
COPY service/ service/
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
# candidate, so this stage installs a current CPython 3.11 from python-build-standalone (through uv, which
# checks the archive's sha256; self-contained, needs glibc >= 2.17), the pinned dependencies and the
# service; the gpu stage copies /opt/python and /opt/venv unchanged into the CUDA image, whose glibc (2.35)
# every wheel installed here must accept (all are manylinux_2_28 or older).
# Offline: uv takes the CPython archive from WHEELS/python/, laid out as the release downloads are
# (WHEELS/python/<release>/cpython-<version>+<release>-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz),
# and uv itself, pip, setuptools and the pins from WHEELS (docker/offline/wheelhouse.sh DIR --gpu).
FROM ${PYTHON_IMAGE} AS gpu-venv
ARG UV_VERSION
ARG PYTHON_VERSION
ARG ORT_VERSION
ARG WHEELS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1
COPY docker/requirements-service.txt ${WHEELS} /tmp/wheels/
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir ${WHEELS:+--no-index --find-links /tmp/wheels} "uv==${UV_VERSION}" \
    && ${WHEELS:+env UV_PYTHON_INSTALL_MIRROR=file:///tmp/wheels/python} \
        /opt/uv/bin/uv python install "${PYTHON_VERSION}" \
    && /opt/uv/bin/uv venv --managed-python --python "${PYTHON_VERSION}" /opt/venv \
    && /opt/uv/bin/uv pip install --python /opt/venv/bin/python ${WHEELS:+--no-index --find-links /tmp/wheels} \
        -r /tmp/wheels/requirements-service.txt "onnxruntime-gpu==${ORT_VERSION}"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python ${WHEELS:+--no-index --find-links /tmp/wheels} \
        --no-deps .

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
COPY --from=export /models/ /models/
WORKDIR /app
COPY service/ service/
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

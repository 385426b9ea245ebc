#!/usr/bin/env bash
# Every wheel the image build installs, downloaded here (where PyPI answers) for a build that has no index:
#   docker/offline/wheelhouse.sh DIR [--gpu]     (DIR inside the build context, e.g. build/wheels)
# Then: docker build --build-arg WHEELS=DIR --build-arg PYTHON_IMAGE=... (README, Docker).
# The same pins as the online build: requirements.lock (with its hashes, checked by pip) is the cpu image's
# runtime set, versions come from the Dockerfile's ARGs; the export stage's torch and [train] tools and,
# with --gpu, uv and onnxruntime-gpu for the gpu image. Wheels only (--only-binary), for this machine's
# Python tag and platform: run it on the architecture and Python minor version (3.11) of the images.
# Reruns reuse what DIR already holds.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:?usage: $0 DIR [--gpu]}
gpu=${2:-}
pip=${PIP:-python3 -m pip}
arg() { sed -n "s/^ARG $1=//p" Dockerfile | head -1; }
ort=$(arg ORT_VERSION) torch=$(arg TORCH_VERSION) pipv=$(arg PIP_VERSION) uv=$(arg UV_VERSION)
mkdir -p "$dir"
download() { $pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$dir" "$@"; }
# cpu image (runtime set, hashes checked) and the tools pip needs to build the project without an index
download --require-hashes -r requirements.lock
download "pip==$pipv" "setuptools>=68" wheel
# export stage: CPU torch and the [train] extra (pyproject's ranges), at the same ONNX Runtime
train=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["train"]))')
mapfile -t train_reqs <<<"$train"
download "torch==$torch" "onnxruntime==$ort" "${train_reqs[@]}" -r docker/requirements-service.txt
if [ "$gpu" = --gpu ]; then
  download "uv==$uv" "onnxruntime-gpu==$ort" -r docker/requirements-service.txt
fi
echo "wheelhouse $dir: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1)"

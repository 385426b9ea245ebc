#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11 and venv, built from Debian's packages alone (no registry):
#   docker/offline/base-image.sh [TAG]        (default derain-base:bookworm; root, debootstrap, docker)
# Then build offline from it: docker build --build-arg PYTHON_IMAGE=TAG --build-arg WHEELS=... (README, Docker).
# Does nothing when TAG already exists (remove the image to rebuild it).
set -euo pipefail
tag=${1:-derain-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists (cached)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d "${TMPDIR:-/var/tmp}/derain-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
# minbase: Debian's required packages and apt; Python 3.11 with venv (ensurepip) on top, `python` on PATH.
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Slimmer and reproducible enough: no package lists, caches, docs or logs in the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "base image $tag built from debootstrap bookworm ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"

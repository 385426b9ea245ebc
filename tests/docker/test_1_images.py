"""The offline build: base image, wheelhouse, export stage and cpu image, and what each contains."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.docker.docker_harness import FIGURES, REPO, WHEELS, image_size, run, step

# The cpu image's service may not exceed this (measured 434 MB on the debootstrap base: 124 MB Debian +
# Python, ~300 MB venv, of which onnxruntime and numpy are most). torch alone would add ~700 MB.
CPU_IMAGE_LIMIT_BYTES = 600_000_000


def dockerfile_arg(name: str) -> str:
    found = re.search(rf"^ARG {name}=(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert found, name
    return found.group(1)


def test_base_image_is_debian_bookworm_with_python_311(base_image: str) -> None:
    with step("2 base image (debootstrap bookworm, docker import)"):
        done = run(
            ["docker", "run", "--rm", base_image, "sh", "-c", "cat /etc/debian_version; python --version"],
            timeout=60,
        )
    debian, python = done.stdout.split()[0], done.stdout.split()[-1]
    assert debian.startswith("12."), done.stdout
    assert re.fullmatch(r"3\.11\.\d+", python), done.stdout


def locked_versions() -> dict[str, str]:
    """name -> version of each `name==version` entry of requirements.lock."""
    text = (REPO / "requirements.lock").read_text()
    return {
        canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.MULTILINE)
    }


def test_wheelhouse_holds_every_locked_wheel_at_its_pin(wheelhouse: str) -> None:
    wheels: dict[str, set[str]] = {}
    for path in WHEELS.glob("*.whl"):
        wheel_name, wheel_version, *_ = parse_wheel_filename(path.name)
        wheels.setdefault(canonicalize_name(wheel_name), set()).add(str(wheel_version))
    locked = locked_versions()
    assert len(locked) > 20 and locked["onnxruntime"] == dockerfile_arg("ORT_VERSION")
    for name, version in locked.items():
        assert version in wheels.get(name, set()), (
            f"{name}=={version} (requirements.lock) missing from {WHEELS}"
        )
    assert {v.split("+")[0] for v in wheels["torch"]} == {"2.13.0"} and any(
        "+cpu" in v for v in wheels["torch"]
    )


def test_export_stage_wrote_the_models(export_image: str) -> None:
    done = run(
        ["docker", "run", "--rm", "--entrypoint", "sh", export_image, "-c", "ls -l /models"], timeout=60
    )
    sizes = {line.split()[-1]: int(line.split()[4]) for line in done.stdout.splitlines()[1:]}
    assert set(sizes) == {"mspfn-lite.onnx", "mspfn-lite.opt.onnx"}, done.stdout
    assert all(size > 100_000 for size in sizes.values()), sizes


def test_cpu_image_serves_without_torch_as_non_root_and_is_small(cpu_image: str) -> None:
    probe = (
        "import importlib.util as u, os;"
        "print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None, os.getuid())"
    )
    done = run(["docker", "run", "--rm", "--entrypoint", "python", cpu_image, "-c", probe], timeout=60)
    assert done.stdout.split() == ["True", "True", "10001"], done.stdout
    models = run(
        ["docker", "run", "--rm", "--entrypoint", "ls", cpu_image, "/models"], timeout=60
    ).stdout.split()
    assert models == ["mspfn-lite.onnx", "mspfn-lite.opt.onnx"]
    size = image_size(cpu_image)
    FIGURES["cpu image bytes"] = size
    assert size < CPU_IMAGE_LIMIT_BYTES, f"cpu image is {size / 1e6:.0f} MB"
    no_wheels = run(
        ["docker", "run", "--rm", "--entrypoint", "sh", cpu_image, "-c", "ls /tmp/wheels 2>&1 || true"],
        timeout=60,
    )
    assert "No such file" in no_wheels.stdout, "the offline build's wheels leaked into the runtime image"

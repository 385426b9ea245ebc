"""The service's layers run one way: http -> core -> core.runtime; nothing runs back up.

Checked twice: statically, every import statement of every module (functions' own imports included),
and by importing the lower layers in a fresh interpreter and looking at what came in with them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

SERVICE = REPO / "service"
WEB = ("fastapi", "starlette", "uvicorn", "h11", "python_multipart")


def imported(path: Path) -> set[str]:
    """Every module an import statement in `path` names (`from a.b import c`: a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    found = sorted((SERVICE / folder).rglob("*.py"))
    assert found, f"service/{folder} has no modules"
    return found


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for path in paths:
        hits = [
            name for name in imported(path) if name.split(".")[0] in forbidden or name.startswith(forbidden)
        ]
        if hits:
            bad[str(path.relative_to(SERVICE.parent))] = sorted(hits)
    return bad


def test_imported_sees_every_kind_of_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import a.b\nfrom c import d\n\ndef f():\n    from service.http import app\n")
    assert imported(module) == {"a.b", "c", "c.d", "service.http", "service.http.app"}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("core", ("service.http", "service.cli", *WEB)),  # core never imports http (nor the CLI)
        ("core/pipeline", ("onnxruntime", "service.core.runtime", "service.core.batcher", *WEB)),
        ("cli", ("service.http", *WEB)),  # the CLI reaches a service over HTTP with urllib, not its code
        ("", ("torch", "mspfn", "model_export")),  # the service image has no torch
    ],
)
def test_no_layer_imports_upwards(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(modules(folder), forbidden) == {}


def test_only_the_runtime_imports_onnxruntime() -> None:
    users = offending(modules(""), ("onnxruntime",))
    assert users == {"service/core/runtime.py": ["onnxruntime"]}


@pytest.mark.slow  # a fresh interpreter
def test_the_lower_layers_import_without_the_web_stack() -> None:
    """What really comes in (transitively) with the pipeline and with the core."""
    code = (
        "import sys\n"
        "import service.core.pipeline\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'onnxruntime'}))\n"
        "import service.core.derainer, service.core.runtime, service.cli\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'torch'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('service.http')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]", "[]"]

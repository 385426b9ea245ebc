"""Readers for the deployment files (Dockerfile, compose, .dockerignore) shared by the deploy tests."""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
DOCKERIGNORE = REPO / ".dockerignore"
REQUIREMENTS = REPO / "docker" / "requirements-service.txt"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"
ALERTS = REPO / "docker" / "prometheus" / "alerts.yml"
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "derain.json"


# --- YAML -----------------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """Safe YAML plus Compose's merge tags `!reset` and `!override` (read as their plain value)."""


def _tagged_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _tagged_value)
ComposeLoader.add_constructor("!override", _tagged_value)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass


# --- Compose --------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<default>[^}]*))?\}")


def default_value(value: Any) -> str | None:
    """A compose value with `${VAR:-default}` replaced by its default; None for a pass-through."""
    if value is None:
        return None
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = {key: value for key, value in pairs}
    return env


def parse_port(spec: str | int | dict[str, Any]) -> tuple[int | None, int]:
    """(host port, container port) of a compose `ports` entry."""
    if isinstance(spec, dict):
        published = spec.get("published")
        return (int(published) if published is not None else None, int(spec["target"]))
    parts = str(spec).split("/")[0].split(":")
    container = int(parts[-1])
    host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
    return host, container


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of each `./source:/target[:ro]` volume."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = (
            (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        )
        if source.startswith((".", "/")):
            mounts[target] = (REPO / source).resolve()
    return mounts


def host_path(mounts: dict[str, Path], container_path: str) -> Path | None:
    """Where a container path of a service lives in the repository, through its bind mounts."""
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target) :].lstrip("/")
    return None


# --- Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def index(self, keyword: str, contains: str) -> int:
        """Position of the first `keyword` instruction whose arguments contain `contains`."""
        for i, (kw, args) in enumerate(self.instructions):
            if kw == keyword and contains in args:
                return i
        raise AssertionError(f"stage {self.name}: no {keyword} with {contains!r}")

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
                values[key] = value.strip('"')
        return values


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with `${ARG}` in FROM lines resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


# --- .dockerignore --------------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> str:
    """Docker's pattern syntax: `*` and `?` stay within one path element, `**` spans several."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return regex


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` keep `path` (relative, no leading ./) out of the context."""
    candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _ignore_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- The service's settings -----------------------------------------------------------------------


def settings_class() -> type:
    """The service's pydantic-settings class; skips the test while service/settings.py does not exist."""
    if importlib.util.find_spec("service") is None or importlib.util.find_spec("service.settings") is None:
        pytest.skip("service/settings.py does not exist yet")
    from pydantic_settings import BaseSettings

    module = importlib.import_module("service.settings")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"expected one settings class in service/settings.py, found {classes}"
    return classes[0]


def setting_env_names(cls: type) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")  # type: ignore[attr-defined]
    names = set()
    for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        names.add((alias or f"{prefix}{name}").upper())
    return names

"""The `derain` command: files and folders through the service's core in this process (backends.LocalBackend)
or through a running service's HTTP API (backends.ServerBackend)."""

from service.cli.command import main

__all__ = ["main"]

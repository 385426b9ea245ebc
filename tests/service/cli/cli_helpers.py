"""Constants of the CLI tests and their fixtures (`from tests.service.cli.cli_helpers import ...`)."""

API_KEY = "cli-test-key"  # the test server's key
TILE = {"tile_size": 64, "tile_overlap": 16}  # small tiles: the test images take the tiled path
